"""FoleyGenEx as a LightningModule: the MMAudio backbone trained by the shared flow-matching recipe.

Conditions (FoleyGenEx §3, MMAudio §3): CLIP frame embeddings (8 fps) and Synchformer features
(25 fps input, 8 tokens per 16-frame window) of the video, CLIP per-token states of the caption.
Precomputed features in the batch are used when present, otherwise the frozen encoders run on the
decoded frames, once per batch (never per ODE step). A sample without video (text-to-audio) or
without caption gets the network's learned null tokens, looking only at the batch's presence flags.

Classifier-free guidance training (MMAudio ``null_condition_probability``): per sample, video
(CLIP and sync together) is dropped with p = ``video_dropout`` and text, independently, with
p = ``text_dropout``. Inference: 25 Euler steps, CFG scale 4.5 (FoleyGenEx §4).

Masked multimodal training (FoleyGenEx §3.1, Eq. 3-4) and its ablations (Fig. 6, Tables 5 and 7),
chosen by ``mask_strategy``:

========  ==============  ====================  =====================
strategy  span mask+loss  InputEmbedding        video masking
========  ==============  ====================  =====================
none      no              no                    no   (plain MMAudio)
m1        yes             no                    no
m2        yes             no                    yes
m3        yes             yes                   no
full      yes             yes                   yes  (FoleyGenEx)
========  ==============  ====================  =====================

Per sample, a contiguous span of 70-100 % of the valid latent frames is the region to generate
and the only one in the loss; the rest is the context. With the InputEmbedding, the context's
clean latent (zeros on the span) is injected, zeroed with p = ``cond_drop_prob`` = 0.3 so that
reference-free tasks stay in distribution. The paper does not say whether that drop is per sample
or per batch (F5-TTS draws once per batch); the default ``cond_drop_per_sample=True`` draws per
sample, which gives every batch both kinds of samples and the same expected rate with lower
gradient variance. Video masking zeroes the context's CLIP frames (bilinear mapping) and sync
condition (see :mod:`avgen.models.foleygenex.masking`).

Inference tasks (§3.2, Fig. 3, Fig. 7): :data:`TASKS` through :meth:`FoleyGenEx.generate_task`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.conditioning.clip import CLIPTextEncoder, CLIPVisionEncoder
from avgen.data.batch import AVBatch, length_mask
from avgen.flow import sampling_times
from avgen.models.base import FlowMatchingModule
from avgen.models.foleygenex.masking import semantic_mask_weights, time_window_mask, training_generate_mask
from avgen.models.foleygenex.mmaudio_checkpoint import MMAudioImport, load_mmaudio_checkpoint
from avgen.models.foleygenex.network import SYNC_SEGMENT_TOKENS, FoleyGenExConditions
from avgen.models.foleygenex.tasks import TASKS as TASK_TABLE
from avgen.models.foleygenex.tasks import FoleyGenExGeneration
from avgen.models.generation import SamplingOptions
from avgen.models.registry import create_network

try:  # the sync encoder module may be split from the CLIP one
    from avgen.conditioning import SyncEncoder
except ImportError:  # pragma: no cover - resolved once avgen.conditioning exports it
    SyncEncoder = nn.Module  # type: ignore[misc,assignment]

__all__ = ["FoleyGenEx", "FoleyGenExEncoded", "MASK_STRATEGIES", "TASKS"]

MASK_STRATEGIES = ("none", "m1", "m2", "m3", "full")
TASKS = tuple(TASK_TABLE)


@dataclass
class FoleyGenExEncoded:
    """Encoder outputs of one batch: the raw condition features and what each sample carries."""

    semantic_features: Tensor  # (B, F, Ds)
    sync_features: Tensor  # (B, Ts, Dy)
    text_features: Tensor  # (B, L, Dt)
    video_present: Tensor  # (B,) bool
    text_present: Tensor  # (B,) bool
    # FoleyGenEx masking (None = no masking: every frame is generated, no context)
    generate_mask: Tensor | None = None  # (B, T) bool: frames generated / in the loss
    cond_latent: Tensor | None = None  # (B, T, C) clean context latent, zeros on the generated frames


class FoleyGenEx(FlowMatchingModule):
    """FoleyGenEx / MMAudio video(+text)-to-audio flow-matching model.

    Generation: :meth:`generate` with :class:`~avgen.models.foleygenex.tasks.FoleyGenExSampling`
    options (``task=None``: plain generation from the batch's video and caption; a task name: one of
    the six tasks of §3.2 through :meth:`generate_task`).

    Args:
        codec: audio codec (x1 = its latents); the network's latent channels follow it.
        vision_encoder: CLIP image tower for the semantic stream (MMAudio: DFN5B-CLIP-ViT-H-14-384).
        text_encoder: CLIP text tower for captions (per-token states, ``context_length`` tokens).
        sync_encoder: Synchformer visual branch for the synchronisation stream.
        network: a size preset of :func:`avgen.models.list_networks` (default ``mmaudio-l-44k``, the
            paper's MMAudio-L-44.1kHz); its input widths are replaced by what the encoders and codec give.
        hidden_dim, num_heads, num_joint_blocks, num_single_blocks, mlp_ratio: override the preset's
            backbone size (paper: 896, 14, 7, 14, 4).
        final_layer_condition: ``"global"`` (MMAudio's checkpoints) or ``"frame_aligned"``.
        video_dropout, text_dropout: per-sample CFG condition dropout probabilities.
        mask_strategy: ``"full"`` (FoleyGenEx) or an ablation ``"m1" | "m2" | "m3"`` (Fig. 6), or
            ``"none"`` (MMAudio's recipe); see the module docstring.
        span_min_fraction, span_max_fraction: fraction of the valid frames in the generated span (0.7, 1.0).
        cond_drop_prob, cond_drop_per_sample: the conditional latent is zeroed with p = 0.3, per
            sample (default) or once per batch (F5-TTS).
        noise_summation: at inference, add the conditional latent to the initial noise (Fig. 7);
            False is Table 7's "w/o summation".
        input_embedding_kernel_size, input_embedding_groups: ConvPositionEmbedding (31, gcd(C, 16)).
        extension_context: seconds of generated audio each chained Foley-extension window
            conditions on (None: the reference's duration).
        semantic_fps, sync_fps: frame rates of the two video streams; only used to size the null
            video placeholders of a batch that carries no video at all (text-to-audio).
        **kwargs: the shared recipe of :class:`~avgen.models.base.FlowMatchingModule` (optimizer,
            lr_scheduler, ema_decay, time sampling, validation generation, ...).
    """

    def __init__(
        self,
        codec: AudioCodec,
        vision_encoder: CLIPVisionEncoder,
        text_encoder: CLIPTextEncoder,
        sync_encoder: SyncEncoder,
        *,
        network: str = "mmaudio-l-44k",
        hidden_dim: int | None = None,
        num_heads: int | None = None,
        num_joint_blocks: int | None = None,
        num_single_blocks: int | None = None,
        mlp_ratio: float | None = None,
        final_layer_condition: str = "global",
        cfg_scale: float = 4.5,
        num_sampling_steps: int = 25,
        video_dropout: float = 0.1,
        text_dropout: float = 0.1,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        mask_strategy: str = "full",
        span_min_fraction: float = 0.7,
        span_max_fraction: float = 1.0,
        cond_drop_prob: float = 0.3,
        cond_drop_per_sample: bool = True,
        noise_summation: bool = True,
        input_embedding_kernel_size: int = 31,
        input_embedding_groups: int | None = None,
        extension_context: float | None = None,
        **kwargs: Any,
    ):
        for name, p in (("video_dropout", video_dropout), ("text_dropout", text_dropout), ("cond_drop_prob", cond_drop_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if mask_strategy not in MASK_STRATEGIES:
            raise ValueError(f"mask_strategy must be one of {MASK_STRATEGIES}, got {mask_strategy!r}")
        if not 0.0 < span_min_fraction <= span_max_fraction <= 1.0:
            raise ValueError(f"need 0 < span_min_fraction <= span_max_fraction <= 1, got {span_min_fraction}, {span_max_fraction}")
        sizes = dict(hidden_dim=hidden_dim, num_heads=num_heads, num_joint_blocks=num_joint_blocks,
                     num_single_blocks=num_single_blocks, mlp_ratio=mlp_ratio)
        backbone = create_network(
            network,
            **{name: value for name, value in sizes.items() if value is not None},
            latent_channels=codec.latent_channels,
            semantic_dim=vision_encoder.output_dim,
            sync_dim=sync_encoder.output_dim,
            text_dim=text_encoder.output_dim,
            text_length=text_encoder.context_length,
            final_layer_condition=final_layer_condition,
            conditional_injection=mask_strategy in ("m3", "full"),
            input_embedding_kernel_size=input_embedding_kernel_size,
            input_embedding_groups=input_embedding_groups,
        )
        super().__init__(backbone, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.sync_encoder = sync_encoder
        self.video_dropout = video_dropout
        self.text_dropout = text_dropout
        self.semantic_fps = semantic_fps
        self.sync_fps = sync_fps
        self.mask_strategy = mask_strategy
        self.audio_masking = mask_strategy != "none"
        self.injection = mask_strategy in ("m3", "full")
        self.video_masking = mask_strategy in ("m2", "full")
        self.span_min_fraction = span_min_fraction
        self.span_max_fraction = span_max_fraction
        self.cond_drop_prob = cond_drop_prob
        self.cond_drop_per_sample = cond_drop_per_sample
        self.noise_summation = noise_summation
        self.extension_context = extension_context

    # ------------------------------------------------------------------ conditions
    def _clip_seconds(self, batch: AVBatch) -> float:
        if batch.audio is not None:
            return batch.audio.shape[1] / batch.sample_rate
        return self.duration

    def _video_features(self, batch: AVBatch) -> tuple[Tensor, Tensor]:
        """(semantic (B, F, Ds), sync (B, Ts, Dy)): precomputed, encoded, or null placeholders."""
        batch_size, device = len(batch), self.device
        semantic, sync = batch.semantic_features, batch.sync_features
        if semantic is None and batch.video_semantic is not None:
            semantic = self.vision_encoder(batch.video_semantic)
        if sync is None and batch.video_sync is not None:
            sync = self.sync_encoder(batch.video_sync)
        if (semantic is None) != (sync is None):
            missing = "semantic (CLIP, 8 fps)" if semantic is None else "sync (Synchformer, 25 fps)"
            raise ValueError(
                f"batch {batch.ids[:4]} carries one video stream but not the {missing} stream; FoleyGenEx needs "
                "both (frames or precomputed features)"
            )
        if semantic is None:
            # No sample carries video (text-to-audio): placeholders sized like a real clip, which the
            # network replaces by its null tokens because every has_video flag is False.
            if bool(batch.has_video.any()):
                raise ValueError(f"batch {batch.ids[:4]} flags video as present but carries no frames or features")
            seconds = self._clip_seconds(batch)
            num_frames = max(1, round(seconds * self.semantic_fps))
            num_sync = self.sync_encoder.num_tokens(round(seconds * self.sync_fps))
            num_sync = max(SYNC_SEGMENT_TOKENS, num_sync)
            semantic = torch.zeros(batch_size, num_frames, self.vision_encoder.output_dim, device=device)
            sync = torch.zeros(batch_size, num_sync, self.sync_encoder.output_dim, device=device)
        return semantic, sync

    def encode_conditions(self, batch: AVBatch) -> FoleyGenExEncoded:
        semantic, sync = self._video_features(batch)
        text = self.text_encoder(list(batch.caption))  # frozen encoders run under no_grad themselves
        return FoleyGenExEncoded(
            semantic_features=semantic,
            sync_features=sync,
            text_features=text,
            video_present=batch.has_video.to(semantic.device),
            text_present=batch.has_caption.to(semantic.device),
        )

    def make_conditions(
        self,
        network: nn.Module,
        encoded: FoleyGenExEncoded,
        batch: AVBatch,
        *,
        latent_length: int,
        branch: str,
        options: SamplingOptions | None = None,
    ) -> FoleyGenExConditions:
        video, text = encoded.video_present, encoded.text_present
        if branch == "train":
            # MMAudio: independent per-sample drops; video drops CLIP and sync together.
            video = video & (torch.rand(video.shape, device=video.device) >= self.video_dropout)
            text = text & (torch.rand(text.shape, device=text.device) >= self.text_dropout)
        elif branch == "unconditional":
            video, text = torch.zeros_like(video), torch.zeros_like(text)
        elif branch != "conditional":
            raise ValueError(f"unknown condition branch {branch!r}")
        generate = encoded.generate_mask
        if generate is not None and generate.shape[1] != latent_length:
            raise ValueError(f"generate_mask covers {generate.shape[1]} frames, the latent has {latent_length}")
        video_masks = self.video_masking and generate is not None
        return network.preprocess_conditions(
            encoded.semantic_features,
            encoded.sync_features,
            encoded.text_features,
            video_present=video,
            text_present=text,
            latent_length=latent_length,
            cond_latent=encoded.cond_latent if self.injection else None,
            semantic_weights=semantic_mask_weights(generate, encoded.semantic_features.shape[1]) if video_masks else None,
            sync_frame_mask=generate if video_masks else None,
        )

    # ------------------------------------------------------------------ masked training (§3.1)
    def prepare_targets(
        self,
        encoded: FoleyGenExEncoded,
        batch: AVBatch,
        x1: Tensor,
        latent_mask: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> FoleyGenExEncoded:
        """Draw the 70-100 % span to generate and the masked conditional latent (zeroed with p = 0.3)."""
        if not self.audio_masking:
            return encoded
        generate = training_generate_mask(
            latent_mask, self.span_min_fraction, self.span_max_fraction, generator=generator
        ).to(x1.device)
        cond_latent = None
        if self.injection:
            context = latent_mask & ~generate
            draw_device = generator.device if generator is not None else x1.device
            draws = 1 if not self.cond_drop_per_sample else x1.shape[0]
            keep = torch.rand(draws, generator=generator, device=draw_device).to(x1.device) >= self.cond_drop_prob
            keep = keep.expand(x1.shape[0])
            cond_latent = x1 * (context & keep[:, None]).unsqueeze(-1).to(x1.dtype)
        return replace(encoded, generate_mask=generate, cond_latent=cond_latent)

    def loss_frame_mask(self, batch: AVBatch, latents: Tensor, encoded: Any = None) -> Tensor | None:
        """Eq. 4's rand_span_mask: only the generated span enters the loss."""
        if encoded is None or getattr(encoded, "generate_mask", None) is None:
            return None
        return encoded.generate_mask

    # ------------------------------------------------------------------ MMAudio weights
    def load_mmaudio(self, source: Any, *, strict: bool = True) -> MMAudioImport:
        """Load an MMAudio network checkpoint (path or state dict) into the network (and its EMA).

        Returns the import report with MMAudio's latent_mean / latent_std for the codec.
        """
        report = load_mmaudio_checkpoint(self.network, source, strict=strict)
        if self.ema_network is not None:
            self.ema_network.module.load_state_dict(self.network.state_dict())
        return report

    # ------------------------------------------------------------------ inference tasks (§3.2)
    def _encode_text(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        features = self.text_encoder(list(captions))
        present = torch.tensor([bool(c) for c in captions], dtype=torch.bool, device=features.device)
        return features, present

    def _reference(self, batch: AVBatch, audio: Tensor | None, lengths: Tensor | None, task: str,
                   fallback_to_own_audio: bool = False) -> tuple[Tensor, Tensor]:
        """Reference waveforms (B, S) and lengths (B,): the argument, the batch's, or (FE) the own audio."""
        if audio is not None:
            audio = audio.to(self.device).float()
            if audio.dim() != 2 or audio.shape[0] != len(batch):
                raise ValueError(f"reference_audio must be (B={len(batch)}, S), got {tuple(audio.shape)}")
            if lengths is None:
                lengths = torch.full((len(batch),), audio.shape[1], dtype=torch.long)
            return audio, lengths.to(self.device).long()
        has = batch.has_reference_audio if batch.reference_audio is not None else torch.zeros(len(batch), dtype=torch.bool)
        if bool(has.all()):
            return batch.reference_audio.to(self.device).float(), batch.reference_audio_lengths.to(self.device).long()
        if fallback_to_own_audio and batch.audio is not None and bool(batch.has_audio.all()):
            # Foley extension of the clip itself: its first quarter-window is the reference.
            seconds = self.duration / 4
            n = min(batch.audio.shape[1], max(1, round(seconds * self.codec.sample_rate)))
            audio = batch.audio[:, :n].to(self.device).float()
            if bool(has.any()):
                own = audio.clone()
                ref = batch.reference_audio[:, :n].to(self.device).float()
                if ref.shape[1] < n:
                    ref = nn.functional.pad(ref, (0, n - ref.shape[1]))
                audio = torch.where(has.to(self.device)[:, None], ref, own)
            return audio, torch.full((len(batch),), n, dtype=torch.long, device=self.device)
        missing = [batch.ids[i] for i in range(len(batch)) if not bool(has[i])]
        raise ValueError(
            f"task {task!r} needs reference audio but samples {missing[:5]} carry none; pass reference_audio "
            "(`avgen generate --reference_audio FILE`) or use data with a reference_audio column"
        )

    def _reference_latents(self, reference: Tensor, lengths: Tensor, window: int) -> Tensor:
        """Encode references and crop them to one common length R (the shortest one), (B, R, C)."""
        latents = self._encode_audio(reference)
        num = int(self.codec.latent_lengths(lengths).clamp(max=latents.shape[1]).min().item())
        if num < 1:
            raise ValueError("a reference audio is empty; pass at least one latent frame of reference")
        if num >= window:
            raise ValueError(
                f"the reference covers {num} latent frames but the window holds {window}; use a reference shorter "
                f"than the training window ({self.duration} s)"
            )
        return latents[:, :num]

    def _sync_segments(self, sync: Tensor, start_segment: int, count: int) -> Tensor:
        """Segments [start, start + count) of a sync stream (B, S*8, D), the last one repeated past the end."""
        segments = sync.unflatten(1, (-1, SYNC_SEGMENT_TOKENS))  # (B, S, 8, D)
        index = torch.arange(start_segment, start_segment + count, device=sync.device).clamp(max=segments.shape[1] - 1)
        return segments[:, index].flatten(1, 2)

    def _num_sync_segments(self, seconds: float) -> int:
        """Synchformer segments of a clip of ``seconds`` (at least one: shorter clips get one segment)."""
        try:
            tokens = self.sync_encoder.num_tokens(round(seconds * self.sync_fps))
        except ValueError:  # shorter than one 16-frame window
            return 1
        return max(1, tokens // SYNC_SEGMENT_TOKENS)

    def _video_window(self, encoded: FoleyGenExEncoded, start: float, seconds: float) -> tuple[Tensor, Tensor]:
        """CLIP frames and sync segments of the video window [start, start + seconds) (time-sliced features)."""
        semantic = encoded.semantic_features
        first = min(round(start * self.semantic_fps), semantic.shape[1] - 1)
        count = max(1, round(seconds * self.semantic_fps))
        index = torch.arange(first, first + count, device=semantic.device).clamp(max=semantic.shape[1] - 1)
        sync = self._sync_segments(
            encoded.sync_features, round(start * self.sync_fps / SYNC_SEGMENT_TOKENS), self._num_sync_segments(seconds)
        )
        return semantic[:, index], sync

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator).to(self.device)

    def _initial_noise(self, shape: tuple[int, ...], cond_latent: Tensor, generator: torch.Generator | None) -> Tensor:
        """x0 ~ N(0, I), plus the conditional latent when ``noise_summation`` (Fig. 7)."""
        x0 = self._noise(shape, generator)
        return x0 + cond_latent if self.noise_summation else x0

    def _task_caption(self, batch: AVBatch, caption: list[str] | None, contradicting: bool) -> list[str]:
        if caption is not None:
            if len(caption) != len(batch):
                raise ValueError(f"caption must hold one string per sample ({len(batch)}), got {len(caption)}")
            return list(caption)
        if not contradicting:
            return list(batch.caption)
        metas = batch.meta or [{} for _ in range(len(batch))]
        return [
            str(m.get("contradicting_caption")) if isinstance(m, dict) and m.get("contradicting_caption") else c
            for m, c in zip(metas, batch.caption)
        ]

    def _require_video(self, encoded: FoleyGenExEncoded, batch: AVBatch, task: str) -> None:
        if not bool(encoded.video_present.any()):
            raise ValueError(
                f"task {task!r} needs video but no sample of {batch.ids[:4]} carries any; use task 'tta' for text only"
            )

    generation = FoleyGenExGeneration()

    @torch.no_grad()
    def generate(
        self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False, **fields: Any
    ) -> tuple[Tensor, Tensor]:
        """Waveforms (B, S) and lengths (B,) for ``options`` (:class:`FoleyGenExSampling`): its task, or
        plain generation when ``options.task`` is None (the shared recipe)."""
        options = self.sampling_options(options, **fields)
        task = getattr(options, "task", None)
        if task is None:
            return super().generate(batch, options, progress=progress)
        return self.generate_task(
            batch, task, num_steps=options.num_steps, cfg_scale=options.cfg_scale, seed=options.seed,
            edit_window=options.edit_window, total_duration=options.total_duration, progress=progress,
        )

    @torch.no_grad()
    def generate_task(
        self,
        batch: AVBatch,
        task: str = "vta",
        *,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        reference_audio: Tensor | None = None,
        reference_lengths: Tensor | None = None,
        caption: list[str] | None = None,
        edit_window: tuple[float, float] | None = None,
        total_duration: float | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One of the six tasks of §3.2 / Fig. 3 for a batch -> (waveforms (B, S), lengths (B,)).

        * ``tta``: text only, the video streams are the null tokens.
        * ``vta``: video (+ the batch's caption, which should agree with it).
        * ``tc-vta``: CLIP semantics all-zero (FV0), sync kept, any text (``caption``, else each
          sample's ``meta["contradicting_caption"]``, else its caption).
        * ``ac-vta``: the reference latent is injected and summed with the noise (Fig. 7) in front of
          the target; a surrogate reference video (the target's sync segments cropped / repeated to
          the reference length) is prepended to the target's sync features; CLIP semantics FV0,
          text FT0 (the null text: the "no text" input the network was trained with). Output:
          the target part.
        * ``fe``: continue the reference (the argument, the batch's reference audio, or the first
          quarter window of the clip's own audio) along the batch's video; the output spans
          ``total_duration`` (default: the training window) and starts with the reference. Past the
          window, windows are chained in the latent domain (:meth:`extend_latents`).
        * ``edit``: regenerate ``edit_window`` (seconds; else ``meta["edit_window"]``, else the middle
          third) of the existing audio (``reference_audio`` or the batch's audio) by latent
          inversion; the rest of the latent is kept exactly (:meth:`edit_latents`).
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        self._check_sample_rate(batch)
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        sample_rate = self.codec.sample_rate
        opts = dict(num_steps=num_steps, cfg_scale=cfg_scale, generator=generator, progress=progress)

        if task == "fe":
            latents, num_samples = self.extend_latents(
                batch, reference_audio, reference_lengths, total_duration=total_duration, **opts
            )
            lengths = torch.full((len(batch),), num_samples, dtype=torch.long, device=self.device)
            return self.decode(latents, num_samples, lengths), lengths
        if task == "edit":
            latents, lengths, num_samples = self.edit_latents(
                batch, reference_audio, reference_lengths, caption=caption, edit_window=edit_window, **opts
            )
            return self.decode(latents, num_samples, lengths), lengths

        if total_duration is not None:
            num_samples = round(total_duration * sample_rate)
            lengths = torch.full((len(batch),), num_samples, dtype=torch.long, device=self.device)
        else:
            num_samples, lengths = self._output_lengths(batch)
        num_latents = self.codec.num_latents(num_samples)
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=num_latents), num_latents)
        encoded = self.encode_conditions(batch)

        if task == "ac-vta":
            latents = self._ac_vta_latents(batch, encoded, reference_audio, reference_lengths, latent_mask, **opts)
            return self.decode(latents, num_samples, lengths), lengths

        if task == "tta":
            encoded = replace(encoded, video_present=torch.zeros_like(encoded.video_present))
        else:
            self._require_video(encoded, batch, task)
        if task == "tc-vta":
            text, present = self._encode_text(self._task_caption(batch, caption, contradicting=True))
            encoded = replace(encoded, semantic_features=torch.zeros_like(encoded.semantic_features),
                              text_features=text, text_present=present)
        elif caption is not None:
            text, present = self._encode_text(self._task_caption(batch, caption, contradicting=False))
            encoded = replace(encoded, text_features=text, text_present=present)
        x0 = self._noise((len(batch), num_latents, self.codec.latent_channels), generator)
        times = sampling_times(num_steps, self.sampling_shift)
        latents = self.solve_flow(batch, encoded, x0, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                  progress=progress)
        return self.decode(latents, num_samples, lengths), lengths

    def _ac_vta_latents(self, batch, encoded, reference_audio, reference_lengths, target_mask, *, num_steps,
                        cfg_scale, generator, progress) -> Tensor:
        """Fig. 7: [reference | target] timeline; returns the target's latents (B, T, C)."""
        self._require_video(encoded, batch, "ac-vta")
        num_target = target_mask.shape[1]
        reference, ref_lengths = self._reference(batch, reference_audio, reference_lengths, "ac-vta")
        ref_latents = self._reference_latents(reference, ref_lengths, window=10**9)
        batch_size, num_ref, channels = ref_latents.shape
        total = num_ref + num_target
        ref_seconds = num_ref / self.codec.latent_rate
        cond_latent = torch.zeros(batch_size, total, channels, device=self.device)
        cond_latent[:, :num_ref] = ref_latents
        generate = torch.cat([torch.zeros(batch_size, num_ref, dtype=torch.bool, device=self.device), target_mask], 1)
        latent_mask = torch.cat([torch.ones_like(generate[:, :num_ref]), target_mask], 1)
        # Surrogate reference video: the target's sync segments cropped / repeated to the reference length.
        target_segments = encoded.sync_features.shape[1] // SYNC_SEGMENT_TOKENS
        segments = torch.arange(self._num_sync_segments(ref_seconds)) % target_segments
        surrogate = encoded.sync_features.unflatten(1, (-1, SYNC_SEGMENT_TOKENS))[:, segments.to(self.device)]
        sync = torch.cat([surrogate.flatten(1, 2), encoded.sync_features], dim=1)  # [FRS | FS]
        num_frames = max(1, round(ref_seconds * self.semantic_fps)) + encoded.semantic_features.shape[1]
        semantic = encoded.semantic_features.new_zeros(batch_size, num_frames, encoded.semantic_features.shape[2])
        task_encoded = replace(
            encoded, semantic_features=semantic, sync_features=sync,  # FV0 and [FRS | FS]
            text_present=torch.zeros_like(encoded.text_present),  # FT0
            generate_mask=generate, cond_latent=cond_latent,
        )
        x0 = self._initial_noise((batch_size, total, channels), cond_latent, generator)
        times = sampling_times(num_steps, self.sampling_shift)
        latents = self.solve_flow(batch, task_encoded, x0, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                  progress=progress)
        return latents[:, num_ref:]

    @torch.no_grad()
    def extend_latents(
        self,
        batch: AVBatch,
        reference_audio: Tensor | None = None,
        reference_lengths: Tensor | None = None,
        *,
        total_duration: float | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, int]:
        """Foley extension (§3.2 FE), chained past the training window -> (latents (B, N, C), samples S).

        Window 1 covers [0, W) with the reference latent injected on its first R frames and summed
        with the noise; window k + 1 starts ``extension_context`` seconds (default R) before the end
        of what exists and injects that tail as its context. Every window sees the time slice of
        the batch's video under it (context video masked as in training). Frames already generated
        are never rewritten, so consecutive windows join inside one latent sequence, decoded once:
        no waveform crossfade.
        """
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        sample_rate, rate = self.codec.sample_rate, self.codec.latent_rate
        window_seconds = self.duration
        total_seconds = window_seconds if total_duration is None else float(total_duration)
        num_samples = round(total_seconds * sample_rate)
        total = self.codec.num_latents(num_samples)
        window = self.codec.num_latents(round(window_seconds * sample_rate))
        encoded = self.encode_conditions(batch)
        have_video = bool(encoded.video_present.any())
        if have_video:
            video_seconds = encoded.semantic_features.shape[1] / self.semantic_fps
            if video_seconds + 1.0 / self.semantic_fps < total_seconds:
                raise ValueError(
                    f"samples {batch.ids[:4]}: the video covers {video_seconds:.2f} s but Foley extension to "
                    f"total_duration={total_seconds:.2f} s needs video over the whole span; pass a longer video "
                    "(e.g. a larger data.init_args.duration for prediction) or a shorter total_duration"
                )
        reference, ref_lengths = self._reference(batch, reference_audio, reference_lengths, "fe",
                                                 fallback_to_own_audio=True)
        ref_latents = self._reference_latents(reference, ref_lengths, window=window)
        batch_size, num_ref, channels = ref_latents.shape
        if num_ref >= total:
            raise ValueError(f"the reference ({num_ref} frames) already covers total_duration ({total} frames)")
        context = num_ref if self.extension_context is None else max(1, round(self.extension_context * rate))
        if context >= window:
            raise ValueError(f"extension_context ({context} frames) must be shorter than the window ({window})")
        out = torch.zeros(batch_size, total, channels, device=self.device)
        out[:, :num_ref] = ref_latents
        filled, first = num_ref, True
        times = sampling_times(num_steps, self.sampling_shift)
        while filled < total:
            ctx = num_ref if first else min(context, filled)
            start = filled - ctx
            end = min(start + window, total)
            length = end - start
            cond_latent = torch.zeros(batch_size, length, channels, device=self.device)
            cond_latent[:, :ctx] = out[:, start:filled]
            generate = torch.zeros(batch_size, length, dtype=torch.bool, device=self.device)
            generate[:, ctx:] = True
            semantic, sync = self._video_window(encoded, start / rate, length / rate)
            window_encoded = replace(encoded, semantic_features=semantic, sync_features=sync,
                                     generate_mask=generate, cond_latent=cond_latent)
            x0 = self._initial_noise((batch_size, length, channels), cond_latent, generator)
            latents = self.solve_flow(batch, window_encoded, x0, times, latent_mask=None, options=SamplingOptions(cfg_scale=cfg_scale),
                                      progress=progress)
            out[:, filled:end] = latents[:, ctx:]
            filled, first = end, False
        return out, num_samples

    @torch.no_grad()
    def edit_latents(
        self,
        batch: AVBatch,
        audio: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        *,
        caption: list[str] | None = None,
        edit_window: tuple[float, float] | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor, int]:
        """Editing by latent inversion (§3.2 "Editing") -> (latents (B, T, C), lengths (B,), samples S).

        1. x1 = the codec latent of the existing audio (``audio``, else the batch's audio).
        2. Inversion: integrate the ODE backwards, t = 1 -> 0 on the same Euler grid, with the
           conditional velocity (CFG off, as in DDIM / rectified-flow inversion) under the source
           conditions (the sample's video and caption, the untouched region injected as context,
           the window as the generated span): x1 -> z.
        3. Regeneration from z under the target conditions: the new caption (``caption``, else
           ``meta["contradicting_caption"]``, else the source caption) with the video semantics
           zeroed as in TC-VTA when the caption changes, CFG at ``cfg_scale``.
        4. Splice in the latent domain: the window comes from the regeneration, every other frame
           is x1 itself (bit-exact), so there is no waveform seam.
        """
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        if audio is not None:
            audio = audio.to(self.device).float()
            lengths = (torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long) if audio_lengths is None
                       else audio_lengths).to(self.device).long()
        elif batch.audio is not None and bool(batch.has_audio.all()):
            audio, lengths = batch.audio.to(self.device).float(), batch.audio_lengths.to(self.device).long()
        else:
            raise ValueError(
                f"task 'edit' needs the audio to edit but samples {batch.ids[:4]} carry none; pass reference_audio "
                "(`avgen generate --reference_audio FILE`)"
            )
        x1 = self._encode_audio(audio)
        num_samples = audio.shape[1]
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=x1.shape[1]), x1.shape[1])
        seconds = lengths.double() / self.codec.sample_rate
        if edit_window is not None:
            start = torch.full_like(seconds, float(edit_window[0]))
            end = torch.full_like(seconds, float(edit_window[1]))
        else:
            metas = batch.meta or [{} for _ in range(len(batch))]
            windows = [m.get("edit_window") if isinstance(m, dict) else None for m in metas]
            start = torch.stack([torch.tensor(float(w[0])) if w else s / 3 for w, s in zip(windows, seconds.cpu())])
            end = torch.stack([torch.tensor(float(w[1])) if w else 2 * s / 3 for w, s in zip(windows, seconds.cpu())])
        edit = time_window_mask(x1.shape[1], self.codec.latent_rate, start.to(self.device), end.to(self.device))
        edit = edit & latent_mask
        if not bool(edit.any(dim=1).all()):
            raise ValueError(f"the edit window {edit_window} selects no latent frame of some of {batch.ids[:4]}")

        encoded = self.encode_conditions(batch)
        cond_latent = x1 * (latent_mask & ~edit).unsqueeze(-1).to(x1.dtype)
        source = replace(encoded, generate_mask=edit, cond_latent=cond_latent)
        captions = self._task_caption(batch, caption, contradicting=True)
        target = source
        if captions != list(batch.caption):
            text, present = self._encode_text(captions)
            target = replace(source, semantic_features=torch.zeros_like(encoded.semantic_features),
                             text_features=text, text_present=present)
        times = sampling_times(num_steps, self.sampling_shift)
        noise = self.solve_flow(batch, source, x1, times.flip(0), latent_mask=latent_mask, options=SamplingOptions(cfg_scale=1.0),
                                progress=progress)
        regenerated = self.solve_flow(batch, target, noise, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                      progress=progress)
        return torch.where(edit.unsqueeze(-1), regenerated, x1), lengths, num_samples
