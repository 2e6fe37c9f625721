"""AudioGen-Omni as a LightningModule: the MMDiT of :mod:`.network` trained by the shared flow-matching
recipe on mixed audio / speech / song data (arXiv 2508.00733 §3.3, §3.4.2, §4).

Conditions per sample, any subset present (§3.3: "masking absent inputs ... permitting arbitrary
subsets of conditioning inputs during inference without retraining"):

* video: MetaCLIP frames (8 fps) and Synchformer features (frozen encoders, run once per batch);
* caption: Flan-T5 token states (frozen, Fig. 1);
* lyrics or transcript: VoiceBPE ids for the trainable LT-encoder inside the network. One stream
  serves both (§3.2 "a unified lyrics-transcription encoder"): a sample's lyrics if it has them,
  else its transcript;
* timing: ``seconds_start`` and ``seconds_total`` of the batch (ToyWorld sets them per clip).

Absent conditions come from the batch's presence flags; CFG dropout (spec §1.4.6: the paper gives no
rate, MMAudio's 0.1) drops video (CLIP + sync together), caption and lyrics independently per sample.
Variable length (§3.3): clips of different durations share a padded batch; the latent mask keeps the
padded frames out of attention and of the loss (the shared masked flow-matching loss).

Inference (§4): 25 Euler steps, CFG 4.5, the unconditional branch nulls video, caption and lyrics and
keeps the timing. Tasks (:mod:`avgen.models.audiogen_omni.tasks`) only choose which conditions a sample
keeps; ``generate(batch, AudioGenOmniSampling(task=...))`` or :meth:`AudioGenOmni.generate_task`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.conditioning._common import building_on_meta
from avgen.conditioning.clip import CLIPVisionEncoder
from avgen.conditioning.lyrics import VoiceBPETokenizer
from avgen.conditioning.sync import SyncEncoder
from avgen.conditioning.t5 import T5TextEncoder
from avgen.data.batch import AVBatch, length_mask
from avgen.models.audiogen_omni.network import AudioGenOmniConditions
from avgen.models.audiogen_omni.tasks import TASK_CONDITIONS, AudioGenOmniGeneration, AudioGenOmniSampling
from avgen.models.base import FlowMatchingModule
from avgen.models.generation import SamplingOptions
from avgen.models.registry import create_network
from avgen.conditioning.sync import SYNC_SEGMENT_TOKENS

__all__ = ["AudioGenOmni", "AudioGenOmniEncoded", "TINY_LYRICS_TOKENIZER"]

TINY_LYRICS_TOKENIZER = "tiny"


def tiny_lyrics_tokenizer() -> VoiceBPETokenizer:
    """A small VoiceBPE-style tokenizer trained in memory on ToyWorld's words and the alphabet (no file)."""
    from avgen.data.speech import VOCABULARY

    corpus = [" ".join(VOCABULARY), "abcdefghijklmnopqrstuvwxyz", "la la la yo oh"]
    return VoiceBPETokenizer.train(corpus, vocab_size=96)


@dataclass
class AudioGenOmniEncoded:
    """Encoder outputs of one batch (computed once, reused by every CFG branch and ODE step)."""

    semantic_features: Tensor  # (B, F, Ds)
    semantic_mask: Tensor  # (B, F)
    sync_features: Tensor  # (B, Ts, Dy)
    sync_lengths: Tensor  # (B,)
    caption_features: Tensor  # (B, L, Dc)
    caption_mask: Tensor  # (B, L)
    lyrics_ids: Tensor  # (B, K), -1 padded
    latent_lengths: Tensor  # (B,) valid latent frames of each clip
    video_present: Tensor  # (B,) bool
    caption_present: Tensor
    lyrics_present: Tensor
    seconds_start: Tensor  # (B,)
    seconds_total: Tensor  # (B,)


class AudioGenOmni(FlowMatchingModule):
    """AudioGen-Omni: video / caption / lyrics / transcript (any subset) to audio, speech and song.

    ``generation``: :class:`~avgen.models.audiogen_omni.tasks.AudioGenOmniGeneration` (``avgen generate``
    options and tasks).

    Args:
        codec: audio codec (paper: Kling-Foley's private Mel-VAE; here the MMAudio 44.1 kHz mel-VAE +
            BigVGAN with the same 43 Hz / 1024x rates, see docs/codecs.md).
        vision_encoder: semantic video encoder (MetaCLIP ViT-bigG-14-quickgelu, 8 fps).
        text_encoder: caption encoder (Flan-T5-base, frozen).
        sync_encoder: Synchformer visual branch.
        lyrics_tokenizer: VoiceBPE vocabulary file (XTTS-v2 / ACE-Step ``vocab.json``) or hub name,
            or ``"tiny"`` (a BPE trained in memory on ToyWorld's words; no file).
        lyrics_filename: file inside the hub repository when ``lyrics_tokenizer`` is a hub name.
        lyrics_vocab_size: vocabulary size when the tokenizer is not loaded (meta-device builds for
            ``avgen summary``); must agree with the tokenizer when both are known.
        lyrics_lang: language of lyrics / transcripts (a sample's ``meta["lang"]`` overrides it).
        network: size preset (``avgen.models.list_networks("audiogen-omni*")``): ``"audiogen-omni"``
            (paper, 1.556B) or ``"audiogen-omni-tiny"``; the encoders' widths, the tokenizer's vocabulary
            and the codec's channels and rate always come from the components.
        lyrics_dim, lyrics_max_positions, lyrics_blocks, hidden_dim, num_heads, num_joint_blocks,
            num_single_blocks, mlp_ratio: override the preset's LT-encoder (768, 4000, 4) and backbone
            (1024, 16, 8, 16, 4) sizes; None keeps the preset's.
        paapi, paapi_text, mask_caption_padding, mask_lyrics_filler, pooled_fusion, max_seconds:
            see :class:`~avgen.models.audiogen_omni.network.AudioGenOmniNetwork`.
        video_dropout, caption_dropout, lyrics_dropout: per-sample CFG drop probabilities (0.1).
        semantic_fps, sync_fps: frame rates of the two video streams (valid-frame counts of
            variable-length clips and placeholders of clips without video).
        max_duration: longest clip the model generates (paper: 10 s).
        gradient_checkpointing: recompute each transformer block in backward (the 1.55B size).
        **kwargs: the shared recipe (optimizer, lr_scheduler, ema_decay, duration, sampling, ...).
    """

    generation = AudioGenOmniGeneration()

    def __init__(
        self,
        codec: AudioCodec,
        vision_encoder: CLIPVisionEncoder,
        text_encoder: T5TextEncoder,
        sync_encoder: SyncEncoder,
        *,
        lyrics_tokenizer: str = TINY_LYRICS_TOKENIZER,
        lyrics_filename: str | None = None,
        lyrics_vocab_size: int | None = None,
        lyrics_lang: str = "en",
        network: str = "audiogen-omni",
        lyrics_dim: int | None = None,
        lyrics_max_positions: int | None = None,
        lyrics_blocks: int | None = None,
        hidden_dim: int | None = None,
        num_heads: int | None = None,
        num_joint_blocks: int | None = None,
        num_single_blocks: int | None = None,
        mlp_ratio: float | None = None,
        paapi: bool = True,
        paapi_text: bool = True,
        mask_caption_padding: bool = False,
        mask_lyrics_filler: bool = False,
        pooled_fusion: str = "concat",
        max_seconds: int = 30,
        video_dropout: float = 0.1,
        caption_dropout: float = 0.1,
        lyrics_dropout: float = 0.1,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        max_duration: float = 10.0,
        cfg_scale: float = 4.5,
        num_sampling_steps: int = 25,
        gradient_checkpointing: bool = False,
        **kwargs: Any,
    ):
        for name, p in (("video_dropout", video_dropout), ("caption_dropout", caption_dropout),
                        ("lyrics_dropout", lyrics_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        tokenizer = None
        if lyrics_tokenizer == TINY_LYRICS_TOKENIZER:
            tokenizer = tiny_lyrics_tokenizer()
        elif not building_on_meta():
            tokenizer = VoiceBPETokenizer(lyrics_tokenizer, filename=lyrics_filename, default_lang=lyrics_lang)
        if tokenizer is not None:
            if lyrics_vocab_size is not None and lyrics_vocab_size != tokenizer.vocab_size:
                raise ValueError(
                    f"lyrics_vocab_size={lyrics_vocab_size} but the tokenizer {lyrics_tokenizer!r} has "
                    f"{tokenizer.vocab_size} entries; drop lyrics_vocab_size or fix it"
                )
            lyrics_vocab_size = tokenizer.vocab_size
        elif lyrics_vocab_size is None:
            raise ValueError("lyrics_vocab_size is needed when the tokenizer is not loaded (meta-device build)")
        sizes = dict(lyrics_dim=lyrics_dim, lyrics_max_positions=lyrics_max_positions, lyrics_blocks=lyrics_blocks,
                     hidden_dim=hidden_dim, num_heads=num_heads, num_joint_blocks=num_joint_blocks,
                     num_single_blocks=num_single_blocks, mlp_ratio=mlp_ratio)
        backbone = create_network(
            network,
            **{name: value for name, value in sizes.items() if value is not None},
            latent_channels=codec.latent_channels,
            semantic_dim=vision_encoder.output_dim,
            sync_dim=sync_encoder.output_dim,
            caption_dim=text_encoder.output_dim,
            caption_length=text_encoder.max_length,
            lyrics_vocab_size=lyrics_vocab_size,
            latent_rate=codec.sample_rate / codec.hop_length,
            semantic_rate=semantic_fps,
            paapi=paapi,
            paapi_text=paapi_text,
            mask_caption_padding=mask_caption_padding,
            mask_lyrics_filler=mask_lyrics_filler,
            pooled_fusion=pooled_fusion,
            max_seconds=max_seconds,
            gradient_checkpointing=gradient_checkpointing,
        )
        super().__init__(backbone, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.sync_encoder = sync_encoder
        self.tokenizer = tokenizer
        self.lyrics_lang = lyrics_lang
        self.video_dropout, self.caption_dropout, self.lyrics_dropout = video_dropout, caption_dropout, lyrics_dropout
        self.semantic_fps, self.sync_fps = float(semantic_fps), float(sync_fps)
        self.max_duration = float(max_duration)

    # ------------------------------------------------------------------ conditions
    def _clip_seconds(self, batch: AVBatch) -> Tensor:
        """Each clip's duration (B,): its audio length, else seconds_total, else ``duration``."""
        size = len(batch)
        seconds = torch.full((size,), float(self.duration))
        if batch.seconds_total is not None:
            total = batch.seconds_total.float().cpu()
            seconds = torch.where(total > 0, total, seconds)
        if batch.audio_lengths is not None:  # the waveform's, or a precomputed clip's stored length
            from_audio = batch.audio_lengths.float().cpu() / batch.sample_rate
            seconds = torch.where(batch.has_audio.cpu(), from_audio, seconds)
        return seconds

    def _sync_tokens(self, seconds: float) -> int:
        try:
            tokens = self.sync_encoder.num_tokens(max(1, round(seconds * self.sync_fps)))
        except ValueError:  # shorter than one window
            tokens = 0
        return max(SYNC_SEGMENT_TOKENS, tokens)

    def _video_features(self, batch: AVBatch, seconds: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(semantic (B, F, Ds), semantic mask (B, F), sync (B, Ts, Dy), sync lengths (B,))."""
        size, device = len(batch), self.device
        semantic, sync = batch.semantic_features, batch.sync_features
        if semantic is None and batch.video_semantic is not None:
            semantic = self.vision_encoder(batch.video_semantic)
        if sync is None and batch.video_sync is not None:
            sync = self.sync_encoder(batch.video_sync)
        if (semantic is None) != (sync is None):
            raise ValueError(f"batch {batch.ids[:4]} carries one video stream but not the other; AudioGen-Omni needs both")
        frames = [max(1, round(float(s) * self.semantic_fps)) for s in seconds]
        tokens = [self._sync_tokens(float(s)) for s in seconds]
        if semantic is None:
            if bool(batch.has_video.any()):
                raise ValueError(f"batch {batch.ids[:4]} flags video as present but carries no frames or features")
            semantic = torch.zeros(size, max(frames), self.vision_encoder.output_dim, device=device)
            sync = torch.zeros(size, max(tokens), self.sync_encoder.output_dim, device=device)
        # Valid frames / tokens of each clip (the batch pads shorter clips with zero frames).
        frames = torch.tensor(frames).clamp(max=semantic.shape[1]).to(device)
        tokens = torch.tensor(tokens).clamp(max=sync.shape[1]).to(device)
        return semantic, length_mask(frames, semantic.shape[1]), sync, tokens

    def _lyrics_texts(self, batch: AVBatch) -> tuple[list[str], Tensor]:
        """One text per sample for the LT-encoder: its lyrics, else its transcript."""
        texts = [lyr if has_l else tr for lyr, tr, has_l in zip(batch.lyrics, batch.transcript, batch.has_lyrics.tolist())]
        return texts, (batch.has_lyrics | batch.has_transcript)

    def _langs(self, batch: AVBatch) -> list[str]:
        metas = batch.meta or [{} for _ in range(len(batch))]
        return [str(m.get("lang", self.lyrics_lang)) if isinstance(m, dict) else self.lyrics_lang for m in metas]

    def encode_conditions(self, batch: AVBatch) -> AudioGenOmniEncoded:
        if self.tokenizer is None:
            raise RuntimeError("AudioGenOmni was built on the meta device (no tokenizer); rebuild it on a real device")
        seconds = self._clip_seconds(batch)
        num_samples = torch.round(seconds * self.codec.sample_rate).long()
        if batch.audio_lengths is not None:
            num_samples = torch.where(batch.has_audio.cpu(), batch.audio_lengths.cpu(), num_samples)
        latent_lengths = self.codec.latent_lengths(num_samples)
        semantic, semantic_mask, sync, sync_lengths = self._video_features(batch, seconds)
        caption = self.precomputed(batch, "caption_features", self.text_encoder.output_dim)
        if caption is None:
            caption, caption_mask = self.text_encoder(list(batch.caption))
        else:
            caption_mask = batch.caption_mask.to(caption.device)
        texts, lyrics_present = self._lyrics_texts(batch)
        ids = self.tokenizer.batch(texts, latent_lengths, langs=self._langs(batch), names=list(batch.ids),
                                   present=lyrics_present)
        device = semantic.device
        start = batch.seconds_start if batch.seconds_start is not None else torch.zeros(len(batch))
        total = batch.seconds_total if batch.seconds_total is not None else torch.zeros(len(batch))
        total = torch.where(total > 0, total, seconds)  # data without a source length: the clip's own
        return AudioGenOmniEncoded(
            semantic_features=semantic,
            semantic_mask=semantic_mask,
            sync_features=sync,
            sync_lengths=sync_lengths,
            caption_features=caption,
            caption_mask=caption_mask,
            lyrics_ids=ids.to(device),
            latent_lengths=latent_lengths.to(device),
            video_present=batch.has_video.to(device),
            caption_present=batch.has_caption.to(device),
            lyrics_present=lyrics_present.to(device),
            seconds_start=start.float().to(device),
            seconds_total=total.float().to(device),
        )

    def precompute_features(self, batch: AVBatch) -> dict[str, Tensor]:
        """CLIP frames, Synchformer and T5 caption states (with mask), for ``avgen precompute``."""
        features: dict[str, Tensor] = {}
        features["caption_features"], features["caption_mask"] = self.text_encoder(list(batch.caption))
        if batch.video_semantic is not None:
            features["semantic_features"] = self.vision_encoder(batch.video_semantic)
        if batch.video_sync is not None:
            features["sync_features"] = self.sync_encoder(batch.video_sync)
        return features

    def make_conditions(
        self,
        network: nn.Module,
        encoded: AudioGenOmniEncoded,
        batch: AVBatch,
        *,
        latent_length: int,
        branch: str,
        options: SamplingOptions | None = None,
    ) -> AudioGenOmniConditions:
        video, caption, lyrics = encoded.video_present, encoded.caption_present, encoded.lyrics_present
        if branch == "train":
            video = video & (self.training_rand(video) >= self.video_dropout)
            caption = caption & (self.training_rand(caption) >= self.caption_dropout)
            lyrics = lyrics & (self.training_rand(lyrics) >= self.lyrics_dropout)
        elif branch == "unconditional":  # timing is kept: it defines the length
            video, caption, lyrics = torch.zeros_like(video), torch.zeros_like(caption), torch.zeros_like(lyrics)
        elif branch != "conditional":
            raise ValueError(f"unknown condition branch {branch!r}")
        latent_mask = length_mask(encoded.latent_lengths.clamp(max=latent_length), latent_length)
        return network.preprocess_conditions(
            semantic_features=encoded.semantic_features,
            semantic_mask=encoded.semantic_mask,
            sync_features=encoded.sync_features,
            sync_lengths=encoded.sync_lengths,
            caption_features=encoded.caption_features,
            caption_mask=encoded.caption_mask,
            lyrics_ids=encoded.lyrics_ids,
            video_present=video,
            caption_present=caption,
            lyrics_present=lyrics,
            seconds_start=encoded.seconds_start,
            seconds_total=encoded.seconds_total,
            latent_mask=latent_mask,
        )

    # ------------------------------------------------------------------ tasks
    def apply_task(
        self,
        batch: AVBatch,
        task: str,
        *,
        caption: str | None = None,
        lyrics: str | None = None,
        transcript: str | None = None,
    ) -> AVBatch:
        """The batch with only the task's conditions present (and the given texts filled in)."""
        if task not in TASK_CONDITIONS:
            raise ValueError(f"unknown AudioGen-Omni task {task!r}; choose one of {', '.join(TASK_CONDITIONS)}")
        spec = TASK_CONDITIONS[task]
        size = len(batch)

        def filled(name: str, text: str | None) -> tuple[list[str], Tensor]:
            if text is None:
                return list(getattr(batch, name)), getattr(batch, f"has_{name}")
            return [text] * size, torch.full((size,), bool(text), dtype=torch.bool)

        captions, has_caption = filled("caption", caption)
        lyr, has_lyrics = filled("lyrics", lyrics)
        trs, has_transcript = filled("transcript", transcript)
        if spec.video and not bool(batch.has_video.all()):
            lacking = [i for i, h in zip(batch.ids, batch.has_video.tolist()) if not h]
            alternative = {"none": "t2a", "transcript": "tts", "lyrics": "t2song"}[spec.text]
            raise ValueError(f"task {task!r} needs video but samples {lacking[:4]} have none; give --video or use {alternative}")
        if spec.text == "transcript" and not bool(has_transcript.all()):
            lacking = [i for i, h in zip(batch.ids, has_transcript.tolist()) if not h]
            raise ValueError(f"task {task!r} speaks a transcript but samples {lacking[:4]} have none: give --transcript TEXT")
        if spec.caption_required and not bool(has_caption.all()):
            raise ValueError(f"task {task!r} needs a caption: give --caption TEXT")
        # lyrics tasks accept empty lyrics: instrumental music (the paper's demo)
        return replace(
            batch,
            has_video=batch.has_video & spec.video,
            caption=captions,
            has_caption=has_caption,
            lyrics=lyr,
            has_lyrics=has_lyrics & (spec.text == "lyrics"),
            transcript=trs,
            has_transcript=has_transcript & (spec.text == "transcript"),
        )

    def _with_duration(self, batch: AVBatch, duration: float) -> AVBatch:
        """``duration`` seconds of output for every sample (the batch's audio only sets no length then)."""
        if not 0 < duration <= self.max_duration + 1e-6:
            raise ValueError(f"duration {duration} s is outside (0, {self.max_duration:g}] s, the model's range (max_duration)")
        size = len(batch)
        return replace(batch, audio=None, audio_lengths=None, has_audio=torch.zeros(size, dtype=torch.bool),
                       seconds_total=torch.full((size,), float(duration)))

    @torch.no_grad()
    def generate(
        self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False, **fields: Any
    ) -> tuple[Tensor, Tensor]:
        """Waveforms (B, S) and lengths (B,) for ``options`` (:class:`AudioGenOmniSampling`): its task keeps
        only that task's conditions; ``duration`` (<= ``max_duration``) sets every output's length."""
        options = self.sampling_options(options, **fields)
        task = getattr(options, "task", None)
        if task is not None:
            batch = self.apply_task(batch, task)
        if options.duration is not None:
            batch = self._with_duration(batch, options.duration)
        return super().generate(batch, options, progress=progress)

    @torch.no_grad()
    def solve_flow(self, batch: AVBatch, encoded: Any, x: Tensor, times: Tensor, *, options: SamplingOptions,
                   latent_mask: Tensor | None, progress: bool = False) -> Tensor:
        """The shared solver; a forward grid starts at ``options.t_start`` (spec §1.7's reading of "t = 0.05")."""
        t_start = float(getattr(options, "t_start", 0.0) or 0.0)
        if t_start > 0 and bool(times[0] < times[-1]):
            times = t_start + (1.0 - t_start) * times
        return super().solve_flow(batch, encoded, x, times, options=options, latent_mask=latent_mask, progress=progress)

    @torch.no_grad()
    def generate_task(
        self,
        batch: AVBatch,
        task: str = "v2a",
        *,
        caption: str | None = None,
        lyrics: str | None = None,
        transcript: str | None = None,
        duration: float | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One task (:data:`~avgen.models.audiogen_omni.tasks.TASKS`) with explicit texts -> (waveforms, lengths)."""
        batch = self.apply_task(batch, task, caption=caption, lyrics=lyrics, transcript=transcript)
        options = AudioGenOmniSampling(task=task, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, duration=duration)
        return self.generate(batch, options, progress=progress)
