"""FoleyGenEx as a LightningModule: the MMAudio backbone trained by the shared flow-matching recipe.

Conditions (FoleyGenEx §3, MMAudio §3): CLIP frame embeddings (8 fps) and Synchformer features
(25 fps input, 8 tokens per 16-frame window) of the video, CLIP per-token states of the caption.
Precomputed features in the batch are used when present, otherwise the frozen encoders run on the
decoded frames, once per batch (never per ODE step). A sample without video (text-to-audio) or
without caption gets the network's learned null tokens, looking only at the batch's presence flags.

Classifier-free guidance training (MMAudio ``null_condition_probability``): per sample, video
(CLIP and sync together) is dropped with p = ``video_dropout`` and text, independently, with
p = ``text_dropout``. Inference: 25 Euler steps, CFG scale 4.5 (FoleyGenEx §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.conditioning.clip import CLIPTextEncoder, CLIPVisionEncoder
from avgen.data.batch import AVBatch
from avgen.models.base import FlowMatchingModule
from avgen.models.foleygenex.network import SYNC_SEGMENT_TOKENS, FoleyGenExConditions, FoleyGenExNetwork

try:  # the sync encoder module may be split from the CLIP one
    from avgen.conditioning import SyncEncoder
except ImportError:  # pragma: no cover - resolved once avgen.conditioning exports it
    SyncEncoder = nn.Module  # type: ignore[misc,assignment]

__all__ = ["FoleyGenEx", "FoleyGenExEncoded"]


@dataclass
class FoleyGenExEncoded:
    """Encoder outputs of one batch: the raw condition features and what each sample carries."""

    semantic_features: Tensor  # (B, F, Ds)
    sync_features: Tensor  # (B, Ts, Dy)
    text_features: Tensor  # (B, L, Dt)
    video_present: Tensor  # (B,) bool
    text_present: Tensor  # (B,) bool


class FoleyGenEx(FlowMatchingModule):
    """FoleyGenEx / MMAudio video(+text)-to-audio flow-matching model.

    Args:
        codec: audio codec (x1 = its latents); the network's latent channels follow it.
        vision_encoder: CLIP image tower for the semantic stream (MMAudio: DFN5B-CLIP-ViT-H-14-384).
        text_encoder: CLIP text tower for captions (per-token states, ``context_length`` tokens).
        sync_encoder: Synchformer visual branch for the synchronisation stream.
        hidden_dim, num_heads, num_joint_blocks, num_single_blocks, mlp_ratio: backbone size
            (paper: 896, 14, 7, 14, 4 = MMAudio-L-44.1kHz).
        final_layer_condition: ``"global"`` (MMAudio's checkpoints) or ``"frame_aligned"``.
        video_dropout, text_dropout: per-sample CFG condition dropout probabilities.
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
        hidden_dim: int = 896,
        num_heads: int = 14,
        num_joint_blocks: int = 7,
        num_single_blocks: int = 14,
        mlp_ratio: float = 4.0,
        final_layer_condition: str = "global",
        cfg_scale: float = 4.5,
        num_sampling_steps: int = 25,
        video_dropout: float = 0.1,
        text_dropout: float = 0.1,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        **kwargs: Any,
    ):
        for name, p in (("video_dropout", video_dropout), ("text_dropout", text_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        network = FoleyGenExNetwork(
            latent_channels=codec.latent_channels,
            semantic_dim=vision_encoder.output_dim,
            sync_dim=sync_encoder.output_dim,
            text_dim=text_encoder.output_dim,
            text_length=text_encoder.context_length,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_joint_blocks=num_joint_blocks,
            num_single_blocks=num_single_blocks,
            mlp_ratio=mlp_ratio,
            final_layer_condition=final_layer_condition,
        )
        super().__init__(network, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.sync_encoder = sync_encoder
        self.video_dropout = video_dropout
        self.text_dropout = text_dropout
        self.semantic_fps = semantic_fps
        self.sync_fps = sync_fps

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
        return network.preprocess_conditions(
            encoded.semantic_features,
            encoded.sync_features,
            encoded.text_features,
            video_present=video,
            text_present=text,
            latent_length=latent_length,
        )
