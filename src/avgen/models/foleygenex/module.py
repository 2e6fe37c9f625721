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

Inference tasks (§3.2, Fig. 3, Fig. 7): :data:`TASKS` through :meth:`FoleyGenEx.generate_task`, implemented
in :mod:`avgen.models.foleygenex.tasks` (with their options and checks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.conditioning.clip import CLIPTextEncoder, CLIPVisionEncoder
from avgen.data.batch import AVBatch
from avgen.models.base import FlowMatchingModule
from avgen.models.foleygenex.masking import semantic_mask_weights, training_generate_mask
from avgen.models.foleygenex.mmaudio_checkpoint import MMAudioImport, load_mmaudio_checkpoint
from avgen.conditioning.sync import SYNC_SEGMENT_TOKENS
from avgen.models.foleygenex.network import FoleyGenExConditions
from avgen.models.foleygenex.tasks import TASKS as TASK_TABLE
from avgen.models.foleygenex.tasks import FoleyGenExGeneration, FoleyGenExTasks
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


class FoleyGenEx(FoleyGenExTasks, FlowMatchingModule):
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
        gradient_checkpointing: recompute each transformer block in backward (less memory; the
            large sizes). ``compile`` (shared recipe) compiles the blocks.
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
        gradient_checkpointing: bool = False,
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
            gradient_checkpointing=gradient_checkpointing,
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

    generation = FoleyGenExGeneration()

    # ------------------------------------------------------------------ conditions
    def _clip_seconds(self, batch: AVBatch) -> float:
        return self.clip_seconds(batch)

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
        text = self.precomputed(batch, "caption_features", self.text_encoder.output_dim)
        if text is None:
            text = self.text_encoder(list(batch.caption))  # frozen encoders run under no_grad themselves
        return FoleyGenExEncoded(
            semantic_features=semantic,
            sync_features=sync,
            text_features=text,
            video_present=batch.has_video.to(semantic.device),
            text_present=batch.has_caption.to(semantic.device),
        )

    def precompute_features(self, batch: AVBatch) -> dict[str, Tensor]:
        """CLIP frames, Synchformer and CLIP-text caption features, for ``avgen precompute``."""
        features = {"caption_features": self.text_encoder(list(batch.caption))}
        if batch.video_semantic is not None:
            features["semantic_features"] = self.vision_encoder(batch.video_semantic)
        if batch.video_sync is not None:
            features["sync_features"] = self.sync_encoder(batch.video_sync)
        return features

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
            video = video & (self.training_rand(video) >= self.video_dropout)
            text = text & (self.training_rand(text) >= self.text_dropout)
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
