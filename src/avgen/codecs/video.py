"""The codec interface every video autoencoder implements, and a weight-free pixel codec.

Frames are (B, F, 3, H, W) floats in [0, 1] (the batch layout, ``AVBatch.target_video``).
Latents are (B, T, C, h, w): time first, then channels, like the audio codecs' (B, T, C).
``encode`` returns *normalised* latents (roughly zero mean, unit variance per channel), ready to be
the flow-matching data point x1; ``decode`` inverts that and returns frames in [0, 1].

Causal codecs (the Wan VAEs) encode the first frame alone and every following group of
``temporal_stride`` frames into one latent frame: F frames -> (F - 1) / s + 1 latents, valid only
when (F - 1) is a multiple of s (Wan2.2: 121 frames -> 31 latents). Non-causal ones need F to be a
multiple of s and give F / s latents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

__all__ = ["VideoCodec", "PixelVideoCodec"]


class VideoCodec(nn.Module, ABC):
    """Frames (B, F, 3, H, W) in [0, 1] <-> normalised latents (B, T, C, h, w).

    Subclasses set ``latent_channels``, ``temporal_stride``, ``spatial_stride`` and ``causal``.
    Codecs are frozen by default: their parameters are excluded from training.
    """

    latent_channels: int
    temporal_stride: int
    spatial_stride: int
    causal: bool

    # ------------------------------------------------------------------ length math
    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames ``encode`` gives for ``num_frames`` frames; raises if that count is not encodable."""
        s = self.temporal_stride
        if self.causal:
            if num_frames < 1 or (num_frames - 1) % s:
                raise ValueError(
                    f"{type(self).__name__} encodes 1 + {s}k frames (causal first frame); got {num_frames}. "
                    f"Use valid_num_frames({num_frames}) = {self.valid_num_frames(num_frames)} frames"
                )
            return (num_frames - 1) // s + 1
        if num_frames < 1 or num_frames % s:
            raise ValueError(f"{type(self).__name__} encodes multiples of {s} frames; got {num_frames}")
        return num_frames // s

    def num_frames(self, num_latent_frames: int) -> int:
        """Frames ``decode`` gives for ``num_latent_frames`` latent frames."""
        s = self.temporal_stride
        return (num_latent_frames - 1) * s + 1 if self.causal else num_latent_frames * s

    def valid_num_frames(self, num_frames: int) -> int:
        """The largest encodable frame count <= num_frames (crop clips to it)."""
        s = self.temporal_stride
        if num_frames < 1:
            raise ValueError(f"need at least one frame, got {num_frames}")
        return ((num_frames - 1) // s) * s + 1 if self.causal else max(s, (num_frames // s) * s)

    def latent_lengths(self, frame_lengths: Tensor) -> Tensor:
        """Latent frames that hold at least one valid frame, for valid frame counts (B,) -> (B,)."""
        s = self.temporal_stride
        if self.causal:
            return torch.div(frame_lengths.clamp(min=1) - 1 + s - 1, s, rounding_mode="floor") + 1
        return torch.div(frame_lengths + s - 1, s, rounding_mode="floor")

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) pixels -> (h, w) latent cells; raises unless both are multiples of the spatial stride."""
        s = self.spatial_stride
        if height % s or width % s:
            raise ValueError(f"{type(self).__name__} needs frame sizes divisible by {s}, got {height}x{width}")
        return height // s, width // s

    def check_frames(self, frames: Tensor) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, F, 3, H, W) in [0, 1], got {tuple(frames.shape)}")
        self.num_latent_frames(frames.shape[1])
        self.latent_size(*frames.shape[-2:])

    # ------------------------------------------------------------------ codec
    @abstractmethod
    def encode(self, frames: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1] -> (B, T, C, h, w) normalised latents."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """(B, T, C, h, w) normalised latents -> (B, F, 3, H, W) in [0, 1]."""

    def freeze(self) -> "VideoCodec":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "VideoCodec":
        # A frozen codec stays in eval mode under Lightning's .train().
        return super().train(False)


class PixelVideoCodec(VideoCodec):
    """Weight-free codec for tiny runs: fixed average-pool downsampling, then space-to-depth patchify.

    encode: x = 2 * frames - 1; average over ``temporal_stride`` frames (causal: the first frame
    alone, like the Wan VAE) and over ``pool`` x ``pool`` pixels; then each ``patch_size`` x
    ``patch_size`` block of the pooled frame becomes 3 * p^2 channels of one latent cell.
    decode repeats each pooled value over the frames / pixels it covers and undoes the patchify.

    Patchify alone (temporal_stride = pool = 1) is exactly invertible. With pooling, decode(encode(x))
    = x exactly for videos that are constant inside each pooled group (and is the group mean
    otherwise). Latents are in [-1, 1] (scale ``latent_scale``).
    """

    def __init__(
        self, patch_size: int = 2, temporal_stride: int = 1, pool: int = 1, causal: bool = True, latent_scale: float = 1.0
    ):
        super().__init__()
        if patch_size < 1 or temporal_stride < 1 or pool < 1:
            raise ValueError(f"patch_size, temporal_stride and pool must be >= 1 (got {patch_size}, {temporal_stride}, {pool})")
        self.patch_size = patch_size
        self.pool = pool
        self.temporal_stride = temporal_stride
        self.spatial_stride = patch_size * pool
        self.causal = causal
        self.latent_channels = 3 * patch_size**2
        self.latent_scale = latent_scale

    def _temporal_groups(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """(B, F, ...) -> (first frame or None, the rest grouped (B, G, s, ...))."""
        s = self.temporal_stride
        if self.causal:
            return x[:, :1], rearrange(x[:, 1:], "b (g s) ... -> b g s ...", s=s)
        return None, rearrange(x, "b (g s) ... -> b g s ...", s=s)

    def encode(self, frames: Tensor) -> Tensor:
        self.check_frames(frames)
        x = frames.float() * 2.0 - 1.0
        first, groups = self._temporal_groups(x)
        x = groups.mean(dim=2)
        if first is not None:
            x = torch.cat((first, x), dim=1)
        if self.pool > 1:
            batch = x.shape[0]
            x = F.avg_pool2d(x.flatten(0, 1), self.pool).unflatten(0, (batch, -1))
        p = self.patch_size
        x = rearrange(x, "b t c (h p) (w q) -> b t (c p q) h w", p=p, q=p)
        return x / self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        if latents.dim() != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"latents must be (B, T, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        p = self.patch_size
        x = rearrange(latents.float() * self.latent_scale, "b t (c p q) h w -> b t c (h p) (w q)", p=p, q=p)
        if self.pool > 1:
            x = repeat(x, "b t c h w -> b t c (h i) (w j)", i=self.pool, j=self.pool)
        s = self.temporal_stride
        if self.causal:
            x = torch.cat((x[:, :1], repeat(x[:, 1:], "b g ... -> b (g s) ...", s=s)), dim=1)
        else:
            x = repeat(x, "b g ... -> b (g s) ...", s=s)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
