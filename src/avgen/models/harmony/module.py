"""Harmony as a LightningModule: Cross-Task Synergy training, reference audio and SyncCFG generation
(Harmony, arXiv 2511.21579; supplement "Supp §n"; spec ``harmony.md`` §1.1, 1.2, 1.5-1.7).

Time convention (spec "read this first"): avgen time t = 1 - σ, data at t = 1. The paper's "clean
modality at t = 0" is avgen t = 1 with x = x1; the network maps t to Wan timesteps and returns avgen
velocities for both modalities (``models/harmony/network.py``).

Training (Supp §2, Main Eq. 3-4; spec §1.5 items 6-7):

* flow matching with shift 5: σ = 5u / (1 + 4u), u ~ U(0, 1), i.e. ``TimeSampler("shifted", shift=5)``
  on t = 1 - σ; one t per sample shared by video and audio (Eq. 3 writes a single t);
* **Cross-Task Synergy**: L = L_joint + λ_v L_audio-driven + λ_a L_video-driven with λ_v = 0.1 and
  λ_a = 0.3 (Supp §2). L_joint is the video + audio loss with both noisy; L_audio-driven the video
  loss with the audio given clean (t_a = 1, x_a = x1_a); L_video-driven the audio loss with the
  video given clean. ``cts_mode="sum"`` stacks the three tasks of every sample along the batch and
  runs ONE forward of 3B rows (same noise and t in the three copies); ``"split"`` gives each sample
  one task (probability 1/3) with per-sample weights (3, 3λ_v, 3λ_a), the same loss in expectation.
  Each term is a masked MSE per modality over the valid target tokens (variable lengths), against
  the velocity x1 - x0. Reference-audio tokens, the speech / prompt tokens and the clean TI2V first
  video frame never enter the loss;
* audio-only networks (stages 1-2, no video branch) train the audio flow-matching loss alone;
* reference audio (voice cloning, Supp §10): the clean reference latent is prepended by the network
  at negative positions and excluded from the loss. ``reference="segment"`` (stage 1, Supp §2: "a
  randomly selected 1-3 second segment from the ground-truth clip") cuts it from the target's own
  latents; ``reference="data"`` (stage 2: "cross-utterance data from the same speaker" / "a
  non-overlapping reference clip from the same long recording") encodes the datamodule's
  ``reference_audio``, and samples without one fall back to ``reference_fallback``: ``"disjoint"``
  (a segment cut from the clip whose frames are then left out of the target's loss, so copying
  the reference is never rewarded; [D], our stand-in for a non-overlapping segment), ``"segment"``
  (stage 1's overlapping cut) or ``"none"``;
* condition dropout [D] 0.1 per prompt (the audio caption, the video prompt, the transcript; spec
  §1.6, needed by text CFG): a dropped prompt becomes the text encoder's encoding of "" (Wan / Ovi
  use the empty prompt as the unconditional one), a dropped transcript all filler (F5-TTS's drop_text).

Generation (Supp §2, spec §1.7): 40 Euler steps on Wan's shifted grid (shift 5) over the pair
(audio latents, video latents) (:func:`avgen.flow.euler_sample` with a tuple state), SyncCFG with
s_v = 3, s_a = 2, its branches in ONE batched forward per step (:mod:`.sync_cfg`). Anchors: the mute
audio is the codec latent of silence, the static video the video latent of the reference image
repeated over the clip's frames (without a reference image: mid-grey frames, [D]). The TI2V first
frame is the reference image's latent (Wan2.2 TI2V; the network keeps it clean).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.codecs.video import VideoCodec
from avgen.conditioning._common import building_on_meta
from avgen.conditioning.t5 import T5TextEncoder
from avgen.data.batch import AVBatch, length_mask
from avgen.flow import concat_conditions, euler_sample, flow_matching_loss, frame_losses, interpolate, sampling_times
from avgen.models.base import FlowMatchingModule, unless_all_valid
from avgen.models.generation import GenerationRequest, SamplingOptions
from avgen.models.harmony import network as _network  # noqa: F401  (registers the harmony* presets)
from avgen.models.harmony.sync_cfg import HarmonyGuidance, guidance_plan
from avgen.models.harmony.tasks import HarmonyGeneration, HarmonySampling
from avgen.models.registry import create_network

__all__ = [
    "CharTokenizer",
    "HarmonyEncoded",
    "HarmonyModule",
    "HarmonyTargets",
    "WAN22_VAE_CONFIG",
]

# Wan2.2's VAE (``Wan2.2_VAE.pth`` = diffusers ``AutoencoderKLWan``; spec §1.3): built from this table on the
# meta device (``avgen summary``), where no file is read.
WAN22_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_temporal=4, scale_factor_spatial=16,
    latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
)
# F5-TTS's Emilia character / pinyin vocabulary (``vocab.txt``) has 2545 entries (spec §1.3).
F5_VOCAB_SIZE = 2545
_TINY_ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789'.,?!-"


class CharTokenizer:
    """F5-TTS's character tokenizer (``list_str_to_idx``): one id per character, unknown characters -> 0.

    ``vocab``: an F5-TTS ``vocab.txt`` (one token per line, id = line number; Emilia's has 2545 lines, the
    space first), or None for a built-in lower-case Latin alphabet (tiny configs). Ids of a batch are
    right-padded with -1 (F5's padding; the network's ``TextEmbedding`` shifts them so -1 is the filler).
    Chinese text would need F5's pinyin conversion first (not applied here).
    """

    def __init__(self, vocab: str | None = None):
        if vocab is None:
            tokens = list(_TINY_ALPHABET)
            self.lowercase = True
        else:
            if not os.path.isfile(vocab):
                raise FileNotFoundError(f"transcript vocabulary {vocab} does not exist; give F5-TTS's vocab.txt "
                                        "(one token per line) or leave transcript_vocab unset for the built-in alphabet")
            with open(vocab, encoding="utf-8") as f:
                tokens = [line[:-1] if line.endswith("\n") else line for line in f]
            self.lowercase = False
        self.index = {token: i for i, token in enumerate(tokens)}
        self.vocab_size = len(tokens)

    def encode(self, text: str) -> list[int]:
        text = text.lower() if self.lowercase else text
        return [self.index.get(c, 0) for c in text]

    def batch(self, texts: list[str], present: Tensor) -> Tensor:
        """(B,) texts -> (B, K) ids padded with -1; absent texts are all padding (filler)."""
        rows = [self.encode(t) if bool(p) else [] for t, p in zip(texts, present.tolist())]
        width = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), width), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, : len(row)] = torch.tensor(row)
        return ids


@dataclass
class HarmonyEncoded:
    """Frozen-encoder outputs of one batch (computed once, reused by every branch and ODE step)."""

    audio_prompt: Tensor  # (B, L, D) audio caption states
    audio_prompt_mask: Tensor  # (B, L)
    video_prompt: Tensor  # (B, L, D) video prompt states
    video_prompt_mask: Tensor
    null_prompt: Tensor  # (1, L, D): the encoding of "" (dropped / unconditional prompts)
    null_prompt_mask: Tensor  # (1, L)
    transcript_ids: Tensor  # (B, K) char ids, -1 padded
    caption_present: Tensor  # (B,) bool
    video_caption_present: Tensor
    transcript_present: Tensor
    image_latent: Tensor | None = None  # (B, 1, C_v, h, w) the reference image (TI2V first frame)
    reference_latent: Tensor | None = None  # (B, L_r, C_a) clean reference audio latent
    reference_mask: Tensor | None = None  # (B, L_r)


@dataclass
class HarmonyTargets:
    """x1 of both modalities, their valid tokens and the tokens that enter the loss."""

    audio: Tensor  # (B, T_a, C_a)
    audio_mask: Tensor  # (B, T_a) valid latents (attention)
    audio_loss_mask: Tensor  # (B, T_a)
    video: Tensor | None = None  # (B, T_v, C_v, h, w)
    video_frame_lengths: Tensor | None = None  # (B,) valid latent frames (>= 1)
    video_loss_mask: Tensor | None = None  # (B, T_v)


class HarmonyModule(FlowMatchingModule):
    """Harmony: joint video + audio generation with a twin Wan-style DiT, trained with Cross-Task Synergy.

    ``generation``: :class:`~avgen.models.harmony.tasks.HarmonyGeneration` (``avgen generate`` options and tasks).

    Args:
        codec: the audio codec (paper: MMAudio 16 kHz VAE + BigVGAN, ``MMAudioCodec(mode="16k")``).
        text_encoder: the frozen prompt encoder, run for the audio caption and the video prompt (paper:
            umT5-XXL, 512 tokens, one instance for both; spec §1.3).
        video_codec: the video autoencoder (paper: the Wan2.2 VAE; ``WanVideoCodec`` or a name / folder
            of it, e.g. ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``); None for an audio-only network (stages 1-2).
        network: size preset (``avgen.models.list_networks("harmony*")``).
        network_kwargs: flat constructor overrides of the preset (e.g. ``gldi``, ``rope_align``,
            ``wan_checkpoint`` to start the video branch from Wan2.2's weights).
        transcript_vocab: F5-TTS ``vocab.txt`` of the transcript characters; None: the built-in alphabet.
        transcript_vocab_size: the vocabulary size when the file is not read (meta-device builds).
        cts_mode: ``"sum"`` (the three CTS tasks of every sample in one 3B forward) or ``"split"``.
        lambda_video, lambda_audio: λ_v (audio-driven video) and λ_a (video-driven audio), 0.1 / 0.3.
        reference: ``"none"``, ``"segment"`` (stage 1) or ``"data"`` (stage 2); see the module docstring.
        reference_fallback: for ``reference="data"`` samples without a reference: ``"disjoint"``,
            ``"segment"`` or ``"none"``.
        reference_duration: (min, max) length of a cut reference (Supp §2 / §10: 1-3 s).
        reference_probability: fraction of training samples that get a reference (others train without).
        prompt_dropout: per-prompt condition dropout (audio caption, video prompt, transcript), 0.1 [D].
        output_video_fps, output_video_size: the generated video's rate and (height, width) when the data gives neither.
        video_scale, audio_scale: SyncCFG's s_v = 3 and s_a = 2 (Supp §2).
        guidance: default guidance of generation, ``"sync"`` (SyncCFG) / ``"text"`` / ``"none"``.
        video_checkpoint: Wan2.2-TI2V-5B DiT weights (the release folder or the diffusers one, either layout;
            :mod:`~avgen.models.harmony.wan_checkpoint`) copied into ``network.video`` at the start of a new fit
            (stage 3: "initialize our model with the pre-trained weights of Wan2.2-5B", Supp §2).
        init_checkpoint (shared recipe): a previous stage's checkpoint. From an audio-only stage (1-2) into a
            network with video, its audio branch is loaded and the video branch and GLDI keep their own
            initialisation (Wan weights, zero-initialised GLDI outputs); any other mismatch is an error.
        **kwargs: the shared recipe (optimizer, lr_scheduler, ema_decay, duration, ...). Defaults follow
            Supp §2: time_sampling ``"shifted"`` with time_shift 5, 40 sampling steps, sampling_shift 5.
    """

    generation = HarmonyGeneration()

    def __init__(
        self,
        codec: AudioCodec,
        text_encoder: T5TextEncoder,
        video_codec: VideoCodec | str | None = None,
        *,
        network: str = "harmony",
        network_kwargs: dict[str, Any] | None = None,
        transcript_vocab: str | None = None,
        transcript_vocab_size: int | None = None,
        cts_mode: str = "sum",
        lambda_video: float = 0.1,
        lambda_audio: float = 0.3,
        reference: str = "segment",
        reference_fallback: str = "disjoint",
        reference_duration: tuple[float, float] = (1.0, 3.0),
        reference_probability: float = 1.0,
        prompt_dropout: float = 0.1,
        output_video_fps: float = 24.0,
        output_video_size: tuple[int, int] = (704, 1280),
        video_scale: float = 3.0,
        audio_scale: float = 2.0,
        guidance: str = "sync",
        video_checkpoint: str | None = None,
        time_sampling: str = "shifted",
        time_shift: float = 5.0,
        num_sampling_steps: int = 40,
        sampling_shift: float = 5.0,
        **kwargs: Any,
    ):
        if cts_mode not in ("sum", "split"):
            raise ValueError(f"cts_mode must be 'sum' or 'split', got {cts_mode!r}")
        if reference not in ("none", "segment", "data"):
            raise ValueError(f"reference must be 'none', 'segment' or 'data', got {reference!r}")
        if reference_fallback not in ("none", "segment", "disjoint"):
            raise ValueError(f"reference_fallback must be 'none', 'segment' or 'disjoint', got {reference_fallback!r}")
        low, high = (float(s) for s in reference_duration)
        if not 0 < low <= high:
            raise ValueError(f"reference_duration must be (min, max) with 0 < min <= max, got {reference_duration}")
        for name, p in (("prompt_dropout", prompt_dropout), ("reference_probability", reference_probability)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if guidance not in ("sync", "text", "none"):
            raise ValueError(f"guidance must be 'sync', 'text' or 'none', got {guidance!r}")
        if isinstance(video_codec, str):
            video_codec = _wan_video_codec(video_codec)
        tokenizer = None
        if transcript_vocab is not None and building_on_meta():
            vocab_size = transcript_vocab_size or F5_VOCAB_SIZE
        else:
            tokenizer = CharTokenizer(transcript_vocab)
            if transcript_vocab_size is not None and transcript_vocab_size != tokenizer.vocab_size:
                raise ValueError(f"transcript_vocab_size={transcript_vocab_size} but the vocabulary has "
                                 f"{tokenizer.vocab_size} entries; drop transcript_vocab_size or fix it")
            vocab_size = tokenizer.vocab_size
        widths = dict(
            audio_latent_channels=codec.latent_channels,
            audio_prompt_dim=text_encoder.output_dim,
            speech_vocab_size=vocab_size,
        )
        if video_codec is not None:
            widths.update(video_latent_channels=video_codec.latent_channels, video_text_dim=text_encoder.output_dim)
        backbone = create_network(network, **{**widths, **(network_kwargs or {})})
        if getattr(backbone, "has_video", False) and video_codec is None:
            raise ValueError(f"network {network!r} has a video branch; give model.init_args.video_codec "
                             "(or use an audio-only preset for stages 1-2)")
        super().__init__(backbone, codec, time_sampling=time_sampling, time_shift=time_shift,
                         num_sampling_steps=num_sampling_steps, sampling_shift=sampling_shift, **kwargs)
        self.text_encoder = text_encoder
        self.video_codec = video_codec
        self.tokenizer = tokenizer
        self.cts_mode = cts_mode
        self.lambda_video, self.lambda_audio = float(lambda_video), float(lambda_audio)
        self.reference, self.reference_fallback = reference, reference_fallback
        self.reference_duration = (low, high)
        self.reference_probability = float(reference_probability)
        self.prompt_dropout = float(prompt_dropout)
        self.output_video_fps = float(output_video_fps)
        self.output_video_size = (int(output_video_size[0]), int(output_video_size[1]))
        self.video_scale, self.audio_scale = float(video_scale), float(audio_scale)
        self.default_guidance = guidance
        self.video_checkpoint = video_checkpoint
        self._null_prompt: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def has_video(self) -> bool:
        return bool(getattr(self.network, "has_video", False))

    @property
    def latent_rate(self) -> float:
        return self.codec.sample_rate / self.codec.hop_length

    @torch.no_grad()
    def _encode_video(self, frames: Tensor) -> Tensor:
        with torch.autocast(device_type=frames.device.type, enabled=False):
            return self.video_codec.encode(frames.float())

    @torch.no_grad()
    def _decode_video(self, latents: Tensor) -> Tensor:
        with torch.autocast(device_type=latents.device.type, enabled=False):
            return self.video_codec.decode(latents.float())

    def _prompts(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.text_encoder(list(texts))

    def null_prompt(self) -> tuple[Tensor, Tensor]:
        """The encoding of "" (1, L, D) and its mask: the prompt of dropped / unconditional branches."""
        if self._null_prompt is None or self._null_prompt[0].device != self.device:
            states, mask = self._prompts([""])
            self._null_prompt = (states.to(self.device), mask.to(self.device))
        return self._null_prompt

    # ------------------------------------------------------------------ conditions
    def encode_conditions(self, batch: AVBatch) -> HarmonyEncoded:
        if self.tokenizer is None:
            raise RuntimeError("HarmonyModule was built on the meta device (no tokenizer); rebuild it on a real device")
        size = len(batch)
        captions = list(batch.caption) or [""] * size
        video_captions = list(batch.video_caption) or [""] * size
        # One run of the encoder for both prompts (spec §1.3: one umT5 instance).
        states, mask = self._prompts(captions + video_captions)
        null_states, null_mask = self.null_prompt()
        device = states.device
        image_latent = None
        if self.has_video and batch.reference_image is not None and bool(batch.has_reference_image.any()):
            image_latent = self._encode_video(batch.reference_image[:, None].to(device))
        transcripts = list(batch.transcript) or [""] * size
        return HarmonyEncoded(
            audio_prompt=states[:size], audio_prompt_mask=mask[:size],
            video_prompt=states[size:], video_prompt_mask=mask[size:],
            null_prompt=null_states, null_prompt_mask=null_mask,
            transcript_ids=self.tokenizer.batch(transcripts, batch.has_transcript.cpu()).to(device),
            caption_present=batch.has_caption.to(device),
            video_caption_present=batch.has_video_caption.to(device),
            transcript_present=batch.has_transcript.to(device),
            image_latent=image_latent,
        )

    def make_conditions(
        self,
        network: nn.Module,
        encoded: HarmonyEncoded,
        batch: AVBatch,
        *,
        latent_length: int,
        branch: str,
        options: SamplingOptions | None = None,
    ) -> Any:
        """The network's conditions for one branch: ``"train"`` (prompt dropout), ``"conditional"`` or
        ``"unconditional"`` (every prompt null, the transcript all filler; the reference audio and the
        reference image are kept: they are inputs, not prompts)."""
        caption, video_caption, transcript = encoded.caption_present, encoded.video_caption_present, encoded.transcript_present
        if branch == "train":
            keep = [self.training_rand(caption) >= self.prompt_dropout for _ in range(3)]
            caption, video_caption, transcript = caption & keep[0], video_caption & keep[1], transcript & keep[2]
        elif branch == "unconditional":
            caption, video_caption, transcript = (torch.zeros_like(caption),) * 3
        elif branch != "conditional":
            raise ValueError(f"unknown condition branch {branch!r}")

        def prompt(states: Tensor, mask: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
            # Absent / dropped prompts are the encoding of "" (Wan / Ovi's unconditional prompt).
            null, null_mask = encoded.null_prompt.to(states), encoded.null_prompt_mask
            return (torch.where(present[:, None, None], states, null.expand_as(states)),
                    torch.where(present[:, None], mask, null_mask.expand_as(mask)))

        audio_prompt, audio_prompt_mask = prompt(encoded.audio_prompt, encoded.audio_prompt_mask, caption)
        ids = encoded.transcript_ids.masked_fill(~transcript[:, None], -1)
        kwargs: dict[str, Any] = dict(
            audio_prompt_features=audio_prompt, audio_prompt_mask=audio_prompt_mask, transcript_ids=ids,
            audio_length=latent_length, reference_latent=encoded.reference_latent, reference_mask=encoded.reference_mask,
        )
        if getattr(network, "has_video", False):
            video_prompt, video_prompt_mask = prompt(encoded.video_prompt, encoded.video_prompt_mask, video_caption)
            kwargs.update(video_text_features=video_prompt, video_text_mask=video_prompt_mask,
                          image_latent=encoded.image_latent)
        return network.preprocess_conditions(**kwargs)

    # ------------------------------------------------------------------ reference audio
    def _cut_segments(self, lengths: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Random (start, length) in latents of a reference_duration segment inside each clip (<= half of it)."""
        low, high = self.reference_duration
        u = torch.rand(lengths.shape[0], generator=generator)
        seconds = low + (high - low) * u
        want = torch.round(seconds * self.latent_rate).long()
        lengths = lengths.cpu()
        size = torch.minimum(want, lengths // 2).clamp(min=0)
        start = (torch.rand(lengths.shape[0], generator=generator) * (lengths - size + 1).float()).floor().long()
        start = torch.minimum(start, (lengths - size).clamp(min=0))
        return start, size

    def reference_inputs(
        self, batch: AVBatch, x1: Tensor, audio_mask: Tensor, *, generator: torch.Generator | None = None,
        mode: str | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(reference latent (B, L_r, C) | None, its mask (B, L_r) | None, target frames excluded from the loss (B, T)).

        ``mode`` (default: the module's ``reference``): see the class docstring.
        """
        mode = self.reference if mode is None else mode
        size, num_latents, channels = x1.shape
        excluded = torch.zeros_like(audio_mask)
        if mode == "none":
            return None, None, excluded
        lengths = audio_mask.sum(dim=1)
        start, cut = self._cut_segments(lengths, generator)
        from_data = torch.zeros(size, dtype=torch.bool)
        data_latents = data_lengths = None
        if mode == "data" and batch.reference_audio is not None and bool(batch.has_reference_audio.any()):
            from_data = batch.has_reference_audio.cpu().clone()
            data_latents = self._encode_audio(batch.reference_audio.to(x1.device)).to(x1.dtype)
            data_lengths = self.codec.latent_lengths(batch.reference_audio_lengths.cpu()).clamp(max=data_latents.shape[1])
            # Not longer than the longest configured reference.
            data_lengths = data_lengths.clamp(max=int(round(self.reference_duration[1] * self.latent_rate)))
        use_cut = ~from_data
        if mode == "data" and self.reference_fallback == "none":
            use_cut = torch.zeros_like(use_cut)
        ref_lengths = torch.where(from_data, data_lengths if data_lengths is not None else cut, torch.where(use_cut, cut, 0))
        keep = torch.rand(size, generator=generator) < self.reference_probability
        ref_lengths = torch.where(keep, ref_lengths, 0)
        width = int(ref_lengths.max())
        if width == 0:
            return None, None, excluded
        reference = x1.new_zeros(size, width, channels)
        for b in range(size):
            n = int(ref_lengths[b])
            if n == 0:
                continue
            if bool(from_data[b]):
                reference[b, :n] = data_latents[b, :n]
            else:
                s = int(start[b])
                reference[b, :n] = x1[b, s : s + n]
                if mode == "data" and self.reference_fallback == "disjoint":
                    excluded[b, s : s + n] = True
        return reference, length_mask(ref_lengths.to(x1.device), width), excluded

    # ------------------------------------------------------------------ targets
    def harmony_targets(
        self, batch: AVBatch, encoded: HarmonyEncoded, *, generator: torch.Generator | None = None
    ) -> tuple[HarmonyTargets, HarmonyEncoded]:
        """x1 of both modalities and the loss masks; the reference audio goes into ``encoded``."""
        xa, audio_mask = self.target_latents(batch)
        reference, reference_mask, excluded = self.reference_inputs(batch, xa, audio_mask, generator=generator)
        encoded = replace(encoded, reference_latent=reference, reference_mask=reference_mask)
        targets = HarmonyTargets(audio=xa, audio_mask=audio_mask, audio_loss_mask=audio_mask & ~excluded)
        if not self.has_video:
            return targets, encoded
        if batch.target_video is None or not bool(batch.has_target_video.any()):
            raise ValueError(f"batch {batch.ids[:4]} carries no target video; a Harmony network with a video branch "
                             "trains on audio + video (set data.init_args.video_fps, or use an audio-only network)")
        frames = batch.target_video
        usable = self.video_codec.valid_num_frames(frames.shape[1])
        xv = self._encode_video(frames[:, :usable])
        frame_lengths = self.video_codec.latent_lengths(batch.target_video_lengths.clamp(max=usable)).clamp(max=xv.shape[1])
        frame_lengths = torch.where(batch.has_target_video.cpu(), frame_lengths.cpu(), 0).to(xv.device)
        loss_mask = length_mask(frame_lengths, xv.shape[1])
        if encoded.image_latent is not None:
            loss_mask[:, 0] = False  # the TI2V first frame is given (the reference image), not generated
        targets.video = xv
        targets.video_frame_lengths = frame_lengths.clamp(min=1)
        targets.video_loss_mask = loss_mask
        return targets, encoded

    # ------------------------------------------------------------------ stage initialisation
    def setup(self, stage: str) -> None:
        """A new ``fit`` starts from ``init_checkpoint`` (the previous stage) and ``video_checkpoint`` (Wan2.2)."""
        if stage != "fit" or getattr(self, "_initialised_from", None):
            return
        if self.init_checkpoint:
            self.initialise_from_stage(self.init_checkpoint)
        if self.video_checkpoint:
            self.load_video_checkpoint(self.video_checkpoint)
        self._initialised_from = self.init_checkpoint or self.video_checkpoint

    def initialise_from_stage(self, path: str) -> None:
        """Copy a previous stage's weights; an audio-only stage fills the audio branch of a video network."""
        from avgen.checkpoints import (
            CheckpointMismatchError,
            check_checkpoint_class,
            initialise_from_checkpoint,
            read_training_checkpoint,
        )

        checkpoint = read_training_checkpoint(path)
        check_checkpoint_class(checkpoint, f"{type(self).__module__}.{type(self).__qualname__}", path)
        state = checkpoint["state_dict"]
        video_parts = ("video.", "gldi.")
        source_has_video = any(k.startswith(tuple(f"network.{p}" for p in video_parts)) for k in state)
        if source_has_video or not self.has_video:
            initialise_from_checkpoint(self, path)  # same architecture: strict
            return
        own = nn.Module.state_dict(self)
        unexpected = sorted(k for k in state if k not in own)
        if unexpected:
            raise CheckpointMismatchError(f"init_checkpoint {path}: {len(unexpected)} keys do not fit {type(self).__name__} "
                                          f"(e.g. {unexpected[:5]}); was it trained with other audio-branch sizes?")
        result = nn.Module.load_state_dict(self, {k: v for k, v in state.items()}, strict=False)
        frozen = tuple(f"{name}." for name in self.frozen_module_names())
        trainable_missing = [k for k in result.missing_keys if not k.startswith(frozen)]
        not_video = [k for k in trainable_missing
                     if not any(k.startswith(f"{root}{p}") for root in ("network.", "ema_network.module.") for p in video_parts)]
        if not_video:
            raise CheckpointMismatchError(f"init_checkpoint {path} lacks {len(not_video)} audio-branch weights "
                                          f"(e.g. {not_video[:5]}); give the stage-2 checkpoint of this network size")
        if self.ema_network is not None and not any(k.startswith("ema_network.") for k in state):
            self.ema_network.module.load_state_dict(self.network.state_dict())

    def load_video_checkpoint(self, source: str) -> None:
        """Wan2.2 DiT weights into ``network.video`` (strict: every Wan key must fit the video branch)."""
        from avgen.models.harmony.wan_checkpoint import load_wan_state_dict, read_wan_checkpoint

        if not self.has_video:
            raise ValueError(f"video_checkpoint {source} given but the network has no video branch")
        state, _ = read_wan_checkpoint(source)
        load_wan_state_dict(self.network.video, state, strict=True, source=str(source))
        if self.ema_network is not None:
            self.ema_network.module.video.load_state_dict(self.network.video.state_dict())

    # ------------------------------------------------------------------ the Cross-Task Synergy loss
    def cross_task_losses(
        self,
        network: nn.Module,
        targets: HarmonyTargets,
        conditions: Any,
        t: Tensor,
        audio_noise: Tensor,
        video_noise: Tensor | None = None,
        *,
        mode: str | None = None,
        tasks: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The CTS loss (Main Eq. 3-4) and its terms at times t (B,) from the given noise.

        Returns ``loss`` and the terms: ``loss_joint`` (= ``loss_joint_video`` + ``loss_joint_audio``),
        ``loss_audio_driven`` (video loss with the audio clean) and ``loss_video_driven`` (audio loss
        with the video clean). ``mode``: ``"sum"`` (one 3B forward) or ``"split"`` (``tasks`` (B,) in
        {0 joint, 1 audio-driven, 2 video-driven}, drawn uniformly when None). Audio-only networks
        (or targets without video) return the audio flow-matching loss as ``loss``.
        """
        mode = self.cts_mode if mode is None else mode
        xa1, amask = targets.audio, targets.audio_loss_mask
        # nothing padded: no masks, the networks' unmasked paths (the same numbers, fewer ops)
        audio_mask = unless_all_valid(targets.audio_mask)
        frame_lengths = None if targets.video is None else _unless_all_frames(targets.video_frame_lengths,
                                                                               targets.video.shape[1])
        xa_t = interpolate(audio_noise, xa1, t)
        ua = (xa1 - audio_noise).float()
        if targets.video is None or not getattr(network, "has_video", False):
            va, _ = network(xa_t, t, conditions, audio_mask=audio_mask)
            loss = flow_matching_loss(va.float(), ua, amask)
            return {"loss": loss, "loss_audio": loss.detach()}
        xv1, vmask = targets.video, targets.video_loss_mask
        xv_t = interpolate(video_noise, xv1, t)
        uv = (xv1 - video_noise).float()
        ones = torch.ones_like(t)
        if mode == "sum":
            # Rows [joint | audio-driven video | video-driven audio]; the driving modality is clean (t = 1).
            audio_x, audio_t = torch.cat([xa_t, xa1, xa_t]), torch.cat([t, ones, t])
            video_x, video_t = torch.cat([xv_t, xv_t, xv1]), torch.cat([t, t, ones])
            va, vv = network(audio_x, audio_t, concat_conditions([conditions] * 3), video_x=video_x, video_t=video_t,
                             audio_mask=_repeat(audio_mask, 3), video_frame_lengths=_repeat(frame_lengths, 3))
            va_joint, _, va_driven = va.float().chunk(3)
            vv_joint, vv_driven, _ = vv.float().chunk(3)
            joint_video, joint_audio = flow_matching_loss(vv_joint, uv, vmask), flow_matching_loss(va_joint, ua, amask)
            audio_driven = flow_matching_loss(vv_driven, uv, vmask)
            video_driven = flow_matching_loss(va_driven, ua, amask)
            loss = joint_video + joint_audio + self.lambda_video * audio_driven + self.lambda_audio * video_driven
        elif mode == "split":
            if tasks is None:
                tasks = torch.randint(0, 3, t.shape, device=t.device)
            audio_clean, video_clean = tasks == 1, tasks == 2
            audio_x = torch.where(audio_clean.view(-1, 1, 1), xa1, xa_t)
            video_x = torch.where(video_clean.view(-1, 1, 1, 1, 1), xv1, xv_t)
            va, vv = network(audio_x, torch.where(audio_clean, ones, t), conditions, video_x=video_x,
                             video_t=torch.where(video_clean, ones, t), audio_mask=audio_mask,
                             video_frame_lengths=frame_lengths)
            per_video = _per_sample_mse(vv.float(), uv, vmask)
            per_audio = _per_sample_mse(va.float(), ua, amask)
            # Weights (3, 3 λ_v, 3 λ_a): with tasks uniform over 3, the expectation equals the "sum" loss's.
            w_video = torch.stack([ones * 3, ones * 3 * self.lambda_video, ones * 0]).gather(0, tasks[None]).squeeze(0)
            w_audio = torch.stack([ones * 3, ones * 0, ones * 3 * self.lambda_audio]).gather(0, tasks[None]).squeeze(0)
            loss = (w_video * per_video + w_audio * per_audio).mean()
            joint, avd, vda = tasks == 0, tasks == 1, tasks == 2
            joint_video, joint_audio = _masked_mean(per_video, joint), _masked_mean(per_audio, joint)
            audio_driven, video_driven = _masked_mean(per_video, avd), _masked_mean(per_audio, vda)
        else:
            raise ValueError(f"cts mode must be 'sum' or 'split', got {mode!r}")
        return {
            "loss": loss,
            "loss_joint": (joint_video + joint_audio).detach(),
            "loss_joint_video": joint_video.detach(),
            "loss_joint_audio": joint_audio.detach(),
            "loss_audio_driven": audio_driven.detach(),
            "loss_video_driven": video_driven.detach(),
        }

    def _noise(self, targets: HarmonyTargets, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        audio = torch.randn(targets.audio.shape, generator=generator).to(targets.audio)
        video = None if targets.video is None else torch.randn(targets.video.shape, generator=generator).to(targets.video)
        return audio, video

    # ------------------------------------------------------------------ training / evaluation
    def training_step(self, batch: AVBatch, batch_idx: int) -> Tensor:
        # Every draw of the step comes from the step-seeded generator, so a resumed run is exact (DEVELOPERS.md).
        generator = self.training_generator("cpu")
        targets, encoded = self.harmony_targets(batch, self.encode_conditions(batch), generator=generator)
        conditions = self.make_conditions(self.network, encoded, batch, latent_length=targets.audio.shape[1], branch="train")
        audio_noise, video_noise = self._noise(targets, generator)
        t = self.time_sampler(len(batch), device="cpu", generator=generator).to(targets.audio.device)
        losses = self.cross_task_losses(self.network, targets, conditions, t, audio_noise, video_noise)
        size = len(batch)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=size)
        if self._trainer is not None and self._trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return losses["loss"]

    @torch.no_grad()
    def _binned_losses(self, batch: AVBatch, batch_idx: int) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The CTS loss at t = (k + 0.5) / bins (seeded noise and reference cuts), and the last bin's terms.

        The shared evaluation step logs them (``val/loss_t{k}``, ``val/loss``, ``val/loss_joint`` ...) and
        returns the generated audio of the first batches (``generate``: the joint task's sound).
        """
        network = self.inference_network
        generator = torch.Generator().manual_seed(self.val_seed + batch_idx)
        targets, encoded = self.harmony_targets(batch, self.encode_conditions(batch), generator=generator)
        conditions = self.make_conditions(network, encoded, batch, latent_length=targets.audio.shape[1], branch="conditional")
        losses, logs = [], {}
        for k in range(self.num_val_time_bins):
            audio_noise, video_noise = self._noise(targets, generator)
            t = torch.full((len(batch),), (k + 0.5) / self.num_val_time_bins, device=targets.audio.device)
            terms = self.cross_task_losses(network, targets, conditions, t, audio_noise, video_noise, mode="sum")
            losses.append(terms.pop("loss"))
            logs = terms
        return losses, logs

    # ------------------------------------------------------------------ generation
    def _task(self, options: HarmonySampling) -> str:
        task = options.task or "joint"
        if not self.has_video and task in ("joint", "clone"):
            return "audio"  # an audio-only checkpoint (stages 1-2) generates audio
        return task

    def _lengths(self, batch: AVBatch, options: HarmonySampling) -> tuple[int, Tensor, int, int, tuple[int, int]]:
        """(audio samples S, audio lengths (B,), frames F, latent frames T_v, pixel size (H, W))."""
        num_samples, lengths = self._output_lengths(batch, options.duration)
        fps = batch.video_fps or self.output_video_fps
        if batch.target_video is not None and options.duration is None:
            frames = batch.target_video.shape[1]
        else:
            frames = max(1, int(round(num_samples / self.codec.sample_rate * fps)))
        if batch.target_video is not None:
            size = tuple(batch.target_video.shape[-2:])
        elif batch.reference_image is not None:
            size = tuple(batch.reference_image.shape[-2:])
        else:
            size = self.output_video_size
        if self.video_codec is None:
            return num_samples, lengths, 0, 0, size
        frames = self.video_codec.valid_num_frames(frames)
        return num_samples, lengths, frames, self.video_codec.num_latent_frames(frames), size

    def _reference_for_generation(self, batch: AVBatch, options: HarmonySampling, task: str) -> tuple[Tensor | None, Tensor | None]:
        if task == "clone" and (batch.reference_audio is None or not bool(batch.has_reference_audio.all())):
            lacking = [i for i, h in zip(batch.ids, batch.has_reference_audio.tolist()) if not h]
            raise ValueError(f"--task clone needs a reference voice but samples {lacking[:4]} have none; "
                             "give --reference_audio PATH")
        use = task == "clone" or (options.use_reference and task in ("joint", "audio"))  # never in a2v / v2a
        if not use or batch.reference_audio is None or not bool(batch.has_reference_audio.any()):
            return None, None
        latents = self._encode_audio(batch.reference_audio.to(self.device))
        lengths = self.codec.latent_lengths(batch.reference_audio_lengths.cpu()).clamp(max=latents.shape[1])
        lengths = torch.where(batch.has_reference_audio.cpu(), lengths, 0).to(self.device)
        return latents, length_mask(lengths, latents.shape[1])

    @torch.no_grad()
    def generate_av(self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False,
                    **fields: Any) -> dict[str, Any]:
        """Generate for ``options`` (:class:`HarmonySampling`): a dict with ``ids``, ``waveforms`` (B, S),
        ``lengths`` (B,), ``sample_rate`` and, for tasks with video, ``video`` (B, F, 3, H, W) in [0, 1],
        ``video_lengths`` (B,) and ``video_fps``.

        The driving modality of a2v / v2a is the batch's own (audio / target video), given clean at
        t = 1 and returned unchanged; the generated one starts from noise seeded by ``options.seed``.
        """
        options = self.sampling_options(options, **fields)
        self._check_sample_rate(batch)
        task = self._task(options)
        if task in ("a2v", "v2a") and not self.has_video:
            raise ValueError(f"--task {task} needs a network with a video branch; this checkpoint is audio only "
                             "(stages 1-2): use --task audio or clone")
        mode = options.guidance or self.default_guidance
        if task == "audio" and mode == "sync":
            mode = "text"  # SyncCFG needs both modalities; audio alone uses text CFG (Eq. 8)
        with_video = task != "audio"
        num_steps = options.num_steps or self.num_sampling_steps
        shift = options.shift or self.sampling_shift
        num_samples, lengths, num_frames, num_video_latents, (height, width) = self._lengths(batch, options)
        num_latents = self.codec.num_latents(num_samples)
        audio_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=num_latents), num_latents)
        size, device = len(batch), self.device
        fps = batch.video_fps or self.output_video_fps

        encoded = self.encode_conditions(batch)
        if not with_video:
            encoded = replace(encoded, image_latent=None)
        requested = "clone" if options.task == "clone" else task  # an audio-only clone still needs its voice
        reference, reference_mask = self._reference_for_generation(batch, options, requested)
        encoded = replace(encoded, reference_latent=reference, reference_mask=reference_mask)
        generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
        xa = torch.randn((size, num_latents, self.codec.latent_channels), generator=generator).to(device)
        xv = frame_lengths = video_lengths = None
        if with_video:
            h, w = self.video_codec.latent_size(height, width)
            xv = torch.randn((size, num_video_latents, self.video_codec.latent_channels, h, w), generator=generator).to(device)
            video_lengths = torch.full((size,), num_frames, dtype=torch.long, device=device)
            if batch.target_video is not None and options.duration is None:
                video_lengths = batch.target_video_lengths.to(device).clamp(max=num_frames)
                video_lengths = torch.where(batch.has_target_video.to(device), video_lengths, num_frames)
            frame_lengths = self.video_codec.latent_lengths(video_lengths).clamp(1, num_video_latents)
        if task == "a2v":
            if batch.audio is None or not bool(batch.has_audio.all()):
                raise ValueError(f"--task a2v drives the video with the samples' audio; batch {batch.ids[:4]} lacks it")
            xa = self._encode_audio(batch.audio.to(device))[:, :num_latents]
        if task == "v2a":
            if batch.target_video is None or not bool(batch.has_target_video.all()):
                raise ValueError(f"--task v2a drives the audio with the samples' video; batch {batch.ids[:4]} lacks it "
                                 "(set data.init_args.video_fps)")
            xv = self._encode_video(batch.target_video[:, :num_frames].to(device))

        plan = guidance_plan("audio" if task in ("audio",) else ("joint" if task == "clone" else task), mode,
                             with_video=self.has_video)
        guidance = HarmonyGuidance(plan, video_scale=options.video_scale or self.video_scale,
                                   audio_scale=options.audio_scale or self.audio_scale)
        anchors = self._anchors(plan, batch, num_samples, num_latents, num_frames, (height, width), xv)
        network = self.inference_network
        branch_conditions = concat_conditions([
            self.make_conditions(network, encoded, batch, latent_length=num_latents, branch=b.text, options=options)
            for b in plan
        ])
        velocity_fn = self._velocity_fn(network, plan, guidance, branch_conditions, anchors, audio_mask, frame_lengths,
                                        num_video_latents)
        times = sampling_times(num_steps, shift).to(device)
        state = (xa,) if xv is None else (xa, xv)
        state = euler_sample(self.step_function(velocity_fn), state, times, progress=progress)
        xa = state[0]
        waveforms = batch.audio[:, :num_samples].to(device) if task == "a2v" else self.decode(xa, num_samples, lengths)
        if task == "a2v" and waveforms.shape[1] < num_samples:
            waveforms = nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        out: dict[str, Any] = {"ids": list(batch.ids), "waveforms": waveforms, "lengths": lengths,
                               "sample_rate": self.codec.sample_rate}
        if with_video:
            xv = state[1]
            if encoded.image_latent is not None:
                xv = torch.cat([encoded.image_latent.to(xv), xv[:, 1:]], dim=1)  # the TI2V first frame is the image
            video = batch.target_video[:, :num_frames].to(device) if task == "v2a" else self._decode_video(xv)[:, :num_frames]
            out.update(video=video, video_lengths=video_lengths, video_fps=float(fps))
        return out

    def _anchors(self, plan, batch: AVBatch, num_samples: int, num_latents: int, num_frames: int,
                 size: tuple[int, int], given_video: Tensor | None) -> dict[str, Tensor]:
        """SyncCFG's clean null anchors the plan uses: mute audio latents, static video latents."""
        anchors: dict[str, Tensor] = {}
        count, device = len(batch), self.device
        if any(b.audio == "anchor" for b in plan):
            silence = torch.zeros(count, num_samples, device=device)
            mute = self._encode_audio(silence)[:, :num_latents]
            anchors["audio"] = mute
        if any(b.video == "anchor" for b in plan):
            if batch.reference_image is not None and bool(batch.has_reference_image.all()):
                image = batch.reference_image.to(device)
            else:  # [D] no reference image: a mid-grey static frame
                image = torch.full((count, 3, *size), 0.5, device=device)
            static = image[:, None].expand(-1, num_frames, -1, -1, -1).contiguous()
            anchors["video"] = self._encode_video(static)
        return anchors

    def _velocity_fn(self, network, plan, guidance: HarmonyGuidance, conditions: Any, anchors: dict[str, Tensor],
                     audio_mask: Tensor, frame_lengths: Tensor | None, num_video_latents: int | None = None):
        """velocity_fn((xa[, xv]), t) for the Euler solver: every branch of the plan in ONE forward.

        Masks are decided once per sample, outside the step: none when nothing is padded (the audio mask
        all True, every video as long as ``num_video_latents``), so the network takes its unmasked paths.
        """
        branches = len(plan)
        audio_mask_all = _repeat(unless_all_valid(audio_mask), branches)
        lengths_all = _repeat(_unless_all_frames(frame_lengths, num_video_latents), branches)

        def inputs(source: str | None, state: Tensor | None, anchor: Tensor | None, t: Tensor) -> tuple[Tensor | None, Tensor]:
            if source == "noisy":
                return state, t
            if source == "clean":
                return state, torch.ones_like(t)
            if source == "anchor":
                return anchor.to(state), torch.ones_like(t)
            return None, t

        def velocity_fn(state: tuple[Tensor, ...], t: Tensor) -> tuple[Tensor, ...]:
            xa = state[0]
            xv = state[1] if len(state) > 1 else None
            rows = [(inputs(b.audio, xa, anchors.get("audio"), t), inputs(b.video, xv, anchors.get("video"), t)) for b in plan]
            audio_x = torch.cat([r[0][0] for r in rows])
            audio_t = torch.cat([r[0][1] for r in rows])
            kwargs: dict[str, Any] = {"audio_mask": audio_mask_all}
            if xv is not None:
                kwargs.update(video_x=torch.cat([r[1][0] for r in rows]), video_t=torch.cat([r[1][1] for r in rows]),
                              video_frame_lengths=lengths_all)
            va, vv = network(audio_x, audio_t, conditions, **kwargs)
            per_branch = [(a, None if vv is None else v) for a, v in
                          zip(va.chunk(branches), vv.chunk(branches) if vv is not None else [None] * branches)]
            ga, gv = guidance.combine(per_branch)
            ga = torch.zeros_like(xa) if ga is None else ga.to(xa.dtype)
            if xv is None:
                return (ga,)
            gv = torch.zeros_like(xv) if gv is None else gv.to(xv.dtype)
            return ga, gv

        return velocity_fn

    @torch.no_grad()
    def generate(self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False,
                 **fields: Any) -> tuple[Tensor, Tensor]:
        """The audio of :meth:`generate_av` (the shared ``generate`` contract: waveforms (B, S), lengths (B,))."""
        out = self.generate_av(batch, options, progress=progress, **fields)
        return out["waveforms"], out["lengths"]

    def predict_step(self, batch: AVBatch | GenerationRequest, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``avgen generate``: the audio and, for tasks with video, the frames (``WavWriter`` writes ``<id>.mp4``)."""
        if isinstance(batch, GenerationRequest):
            batch, options = batch.batch, batch.options
        else:
            options = self.sampling_options()
        return self.generate_av(batch, options.for_batch(batch_idx))


def _per_sample_mse(pred: Tensor, target: Tensor, frame_mask: Tensor) -> Tensor:
    """(B, T, ...) -> (B,) mean frame loss over each sample's masked frames (0 where none)."""
    losses = frame_losses(pred, target)
    weights = frame_mask.to(losses.dtype)
    return (losses * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _wan_video_codec(name_or_path: str) -> VideoCodec:
    """The Wan2.2 VAE by name / folder; on the meta device its architecture from :data:`WAN22_VAE_CONFIG`."""
    from avgen.codecs.wan import WanVideoCodec

    if building_on_meta():
        from diffusers import AutoencoderKLWan

        return WanVideoCodec(AutoencoderKLWan(**WAN22_VAE_CONFIG))
    return WanVideoCodec.from_pretrained(name_or_path)


def _unless_all_frames(frame_lengths: Tensor | None, num_frames: int | None) -> Tensor | None:
    """None when every video has all ``num_frames`` latent frames (no frame is padded), else the lengths."""
    if frame_lengths is None or num_frames is None or not bool((frame_lengths >= num_frames).all()):
        return frame_lengths
    return None


def _repeat(value: Tensor | None, times: int) -> Tensor | None:
    """A per-sample mask / length tensor repeated for ``times`` stacked row groups (None stays None)."""
    if value is None:
        return None
    return value.repeat(times, *([1] * (value.dim() - 1)))
