"""The one batch schema every datamodule produces and every model consumes.

A sample is a :class:`Sample` (one clip, unbatched tensors); :func:`collate` stacks samples into an
:class:`AVBatch`. Every optional modality carries a per-sample presence flag (``has_<name>``): a
missing modality is explicit, never silent zeros. Where a modality is absent for a sample, its slot
in the padded tensor is zero *and* its flag is False; where it is absent for the whole batch, the
field is ``None`` and all flags are False. Models replace absent (or CFG-dropped) conditions with
their learned null tokens, looking only at the flags.

Shapes (B = batch):

* ``audio``            (B, S) float32 mono waveform at ``sample_rate``; ``audio_lengths`` (B,) valid samples
* ``latents``          (B, T, C) precomputed codec latents; ``latent_lengths`` (B,) valid frames
* ``video_semantic``   (B, F, 3, H, W) float32 in [0, 1] at the semantic frame rate (CLIP stream, 8 fps)
* ``video_sync``       (B, F, 3, H, W) float32 in [0, 1] at the sync frame rate (Synchformer stream, 25 fps)
* ``semantic_features`` (B, F, D) / ``sync_features`` (B, T_sync, D): precomputed visual features
* ``posterior_mean`` / ``posterior_std`` (B, T, C): the codec's *raw* (unnormalised) posterior,
  precomputed by ``avgen precompute``; the model samples x1 from it and normalises it with the codec's
  statistics (MMAudio re-samples the VAE posterior every step); ``latent_lengths`` (B,) valid frames
* ``caption_features`` / ``offscreen_caption_features`` (B, L, D) with ``caption_mask`` /
  ``offscreen_caption_mask`` (B, L) bool (None: the encoder gives no mask): a paper's frozen text
  encoder's output for the caption, precomputed; a model skips its text encoder when present
* ``reference_audio``  (B, S_ref) waveform with ``reference_audio_lengths`` (B,)
* ``target_video``     (B, F, 3, H, W) float32 in [0, 1]: the video to *generate* (Harmony), at the
  model's ``video_fps`` / ``video_size``; ``target_video_lengths`` (B,) valid frames; ``video_fps``
  its frame rate. Flag ``has_target_video`` (``has_video`` keeps meaning the conditioning streams)
* ``reference_image``  (B, 3, H, W) float32 in [0, 1]: the first frame of the target video (TI2V
  image condition); flag ``has_reference_image``
* text fields are ``list[str]`` with ``""`` where absent (and the flag False). A text flag means "the
  text is non-empty": ``""`` and ``None`` both give False. A model for which an empty text is itself a
  condition (OmniSonic's ``empty_caption="encode"``: FLAN-T5 encodes ``""``) decides that from the flag
  in its own ``encode_conditions``, so every other model keeps reading False as "use the null token".
* ``seconds_start`` / ``seconds_total`` (B,) float32: where the clip starts in its source and its length
* ``meta``             list of per-sample dicts with ground truth (ToyWorld event onsets, classes, words)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

# Text conditions a sample may carry; each has a matching ``has_<name>`` flag.
TEXT_FIELDS: tuple[str, ...] = (
    "caption",  # on-screen (or the only) sound caption
    "offscreen_caption",  # off-screen environmental sound caption (OmniSonic)
    "transcript",  # speech transcript
    "lyrics",  # song lyrics (AudioGen-Omni)
    "video_caption",  # description of the video itself (Harmony)
)
# Tensor modalities with a presence flag. ``video`` covers both frame streams and their features.
TENSOR_MODALITIES: tuple[str, ...] = ("audio", "video", "reference_audio", "target_video", "reference_image")
PRESENCE_FLAGS: tuple[str, ...] = tuple(f"has_{n}" for n in TENSOR_MODALITIES + TEXT_FIELDS)


@dataclass
class Sample:
    """One clip before batching. Tensors carry no batch dimension; ``None`` means absent."""

    id: str
    sample_rate: int
    audio: Tensor | None = None  # (S,)
    # Valid samples of ``audio`` when it was padded to a fixed clip length (None: all of it is real).
    audio_length: int | None = None
    latents: Tensor | None = None  # (T, C)
    video_semantic: Tensor | None = None  # (F, 3, H, W) in [0, 1]
    video_sync: Tensor | None = None  # (F, 3, H, W) in [0, 1]
    semantic_features: Tensor | None = None  # (F, D)
    sync_features: Tensor | None = None  # (T_sync, D)
    reference_audio: Tensor | None = None  # (S_ref,)
    # Precomputed by ``avgen precompute`` (shards): raw codec posterior and frozen text features.
    posterior_mean: Tensor | None = None  # (T, C)
    posterior_std: Tensor | None = None  # (T, C)
    latent_length: int | None = None  # valid frames of latents / posterior (None: all of them)
    caption_features: Tensor | None = None  # (L, D)
    caption_mask: Tensor | None = None  # (L,) bool
    offscreen_caption_features: Tensor | None = None  # (L, D)
    offscreen_caption_mask: Tensor | None = None  # (L,) bool
    target_video: Tensor | None = None  # (F, 3, H, W) in [0, 1] at ``video_fps``: the video to generate
    reference_image: Tensor | None = None  # (3, H, W) in [0, 1]: the first frame of the target video
    video_fps: float | None = None  # frame rate of ``target_video``
    caption: str | None = None
    offscreen_caption: str | None = None
    transcript: str | None = None
    lyrics: str | None = None
    video_caption: str | None = None
    task: str = ""
    seconds_start: float = 0.0
    seconds_total: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_video(self) -> bool:
        return any(
            x is not None
            for x in (self.video_semantic, self.video_sync, self.semantic_features, self.sync_features)
        )


@dataclass
class AVBatch:
    """A collated batch. See the module docstring for shapes and the presence-flag contract."""

    ids: list[str]
    sample_rate: int
    has_audio: Tensor
    has_video: Tensor
    has_reference_audio: Tensor
    has_caption: Tensor
    has_offscreen_caption: Tensor
    has_transcript: Tensor
    has_lyrics: Tensor
    has_video_caption: Tensor
    audio: Tensor | None = None
    audio_lengths: Tensor | None = None
    latents: Tensor | None = None
    latent_lengths: Tensor | None = None
    video_semantic: Tensor | None = None
    video_sync: Tensor | None = None
    semantic_features: Tensor | None = None
    sync_features: Tensor | None = None
    reference_audio: Tensor | None = None
    reference_audio_lengths: Tensor | None = None
    caption: list[str] = field(default_factory=list)
    offscreen_caption: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    lyrics: list[str] = field(default_factory=list)
    video_caption: list[str] = field(default_factory=list)
    task: list[str] = field(default_factory=list)
    seconds_start: Tensor | None = None
    seconds_total: Tensor | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)
    target_video: Tensor | None = None
    target_video_lengths: Tensor | None = None
    reference_image: Tensor | None = None
    video_fps: float | None = None
    # Flags of the generated-video streams; None (a batch built by hand) means absent for every sample.
    has_target_video: Tensor | None = None
    has_reference_image: Tensor | None = None
    # Precomputed features (streaming shards); see the module docstring.
    posterior_mean: Tensor | None = None
    posterior_std: Tensor | None = None
    caption_features: Tensor | None = None
    caption_mask: Tensor | None = None
    offscreen_caption_features: Tensor | None = None
    offscreen_caption_mask: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("has_target_video", "has_reference_image"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(len(self.ids), dtype=torch.bool))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def batch_size(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> "AVBatch":
        """Move every tensor to ``device`` (Lightning does this itself; handy in notebooks)."""
        changes = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **changes)

    def select(self, index: Sequence[int] | Tensor) -> "AVBatch":
        """The sub-batch at ``index`` (used by samplers that split a batch by task)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = value[idx.to(value.device)]
            elif isinstance(value, list) and value:
                changes[f.name] = [value[i] for i in idx.tolist()]
        return dataclasses.replace(self, **changes)


def _pad_stack(tensors: list[Tensor | None], *, what: str, ids: list[str]) -> tuple[Tensor, Tensor]:
    """Right-pad along dim 0 and stack. Absent entries become zeros of length 0.

    Returns the stacked tensor (B, L_max, ...) and the lengths (B,).
    """
    present = [t for t in tensors if t is not None]
    trailing = present[0].shape[1:]
    for t, sid in zip(tensors, ids):
        if t is not None and t.shape[1:] != trailing:
            raise ValueError(
                f"sample {sid!r}: {what} has trailing shape {tuple(t.shape[1:])}, but other samples in the "
                f"batch have {tuple(trailing)}; all samples of a batch must share frame size / channels"
            )
    max_len = max(t.shape[0] for t in present)
    out = present[0].new_zeros((len(tensors), max_len, *trailing))
    lengths = torch.zeros(len(tensors), dtype=torch.long)
    for i, t in enumerate(tensors):
        if t is not None:
            out[i, : t.shape[0]] = t
            lengths[i] = t.shape[0]
    return out, lengths


def collate(samples: Sequence[Sample]) -> AVBatch:
    """Stack :class:`Sample` objects into an :class:`AVBatch` (pads variable lengths with zeros)."""
    if not samples:
        raise ValueError("collate() got an empty list of samples")
    ids = [s.id for s in samples]
    rates = {s.sample_rate for s in samples}
    if len(rates) != 1:
        raise ValueError(f"samples {ids} mix sample rates {sorted(rates)}; resample them to one rate first")

    def flags(values: list[Any]) -> Tensor:
        return torch.tensor([v is not None for v in values], dtype=torch.bool)

    kwargs: dict[str, Any] = {"ids": ids, "sample_rate": rates.pop()}
    for name in ("audio", "latents", "reference_audio"):
        values = [getattr(s, name) for s in samples]
        if any(v is not None for v in values):
            stacked, lengths = _pad_stack(values, what=name, ids=ids)
            if name == "audio":  # a clip padded to the fixed duration keeps its real length
                for i, s in enumerate(samples):
                    if s.audio is not None and s.audio_length is not None:
                        lengths[i] = min(int(s.audio_length), s.audio.shape[0])
            kwargs[name] = stacked
            kwargs[{"audio": "audio_lengths", "latents": "latent_lengths"}.get(name, f"{name}_lengths")] = lengths
    if "audio" not in kwargs and any(s.audio_length is not None for s in samples):
        # precomputed clips (no waveform) keep their real length: AudioGen-Omni's timing reads it
        kwargs["audio_lengths"] = torch.tensor([int(s.audio_length or 0) for s in samples], dtype=torch.long)
    posterior = [s.posterior_mean for s in samples]
    if any(v is not None for v in posterior):
        kwargs["posterior_mean"], kwargs["latent_lengths"] = _pad_stack(posterior, what="posterior_mean", ids=ids)
        kwargs["posterior_std"], _ = _pad_stack([s.posterior_std for s in samples], what="posterior_std", ids=ids)
    if "latent_lengths" in kwargs:  # a latent computed from a padded clip keeps its real length
        for i, s in enumerate(samples):
            if s.latent_length is not None:
                kwargs["latent_lengths"][i] = min(int(s.latent_length), int(kwargs["latent_lengths"][i]))
    for name in ("caption_features", "offscreen_caption_features", "caption_mask", "offscreen_caption_mask"):
        values = [getattr(s, name) for s in samples]
        if any(v is not None for v in values):
            kwargs[name], _ = _pad_stack(values, what=name, ids=ids)
    for name in ("video_semantic", "video_sync", "semantic_features", "sync_features"):
        values = [getattr(s, name) for s in samples]
        if any(v is not None for v in values):
            kwargs[name], _ = _pad_stack(values, what=name, ids=ids)
    target = [s.target_video for s in samples]
    if any(v is not None for v in target):
        kwargs["target_video"], kwargs["target_video_lengths"] = _pad_stack(target, what="target_video", ids=ids)
        rates = {s.video_fps for s, v in zip(samples, target) if v is not None}
        if len(rates) != 1 or None in rates:
            raise ValueError(f"samples {ids} carry target video at frame rates {sorted(map(str, rates))}; "
                             "decode every target video at one video_fps")
        kwargs["video_fps"] = float(rates.pop())
    images = [s.reference_image for s in samples]
    if any(v is not None for v in images):
        kwargs["reference_image"], _ = _pad_stack([None if v is None else v[None] for v in images],
                                                  what="reference_image", ids=ids)
        kwargs["reference_image"] = kwargs["reference_image"][:, 0]
    kwargs["has_target_video"] = flags(target)
    kwargs["has_reference_image"] = flags(images)
    kwargs["has_audio"] = flags([next((x for x in (s.audio, s.latents, s.posterior_mean) if x is not None), None)
                                 for s in samples])
    kwargs["has_video"] = torch.tensor([s.has_video for s in samples], dtype=torch.bool)
    kwargs["has_reference_audio"] = flags([s.reference_audio for s in samples])
    for name in TEXT_FIELDS:
        values = [getattr(s, name) for s in samples]
        kwargs[name] = [v if v is not None else "" for v in values]
        kwargs[f"has_{name}"] = torch.tensor([v is not None and v != "" for v in values], dtype=torch.bool)
    kwargs["task"] = [s.task for s in samples]
    kwargs["seconds_start"] = torch.tensor([s.seconds_start for s in samples], dtype=torch.float32)
    kwargs["seconds_total"] = torch.tensor([s.seconds_total for s in samples], dtype=torch.float32)
    kwargs["meta"] = [s.meta for s in samples]
    return AVBatch(**kwargs)


def length_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B,) lengths -> (B, max_length) bool mask, True on valid positions."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]
