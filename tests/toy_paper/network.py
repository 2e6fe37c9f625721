"""ToyNetwork: a per-frame MLP velocity field conditioned on t and the mean colour of the video."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avgen.models import register_network
from avgen.nn import TimestepEmbedding


@dataclass
class ToyConditions:
    """Computed once per sample, reused at every ODE step."""

    video: Tensor  # (B, D): projected mean frame colour, or the learned null where video is absent


class ToyNetwork(nn.Module):
    def __init__(self, latent_channels: int, hidden_dim: int = 32, depth: int = 2, colour_dim: int = 3):
        super().__init__()
        self.latent_channels = latent_channels
        self.video_proj = nn.Linear(colour_dim, hidden_dim)
        self.null_video = nn.Parameter(torch.zeros(hidden_dim))
        self.time_embed = TimestepEmbedding(hidden_dim)
        self.input_proj = nn.Linear(latent_channels, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, hidden_dim), nn.GELU()) for _ in range(depth)
        )
        self.output_proj = nn.Linear(hidden_dim, latent_channels)

    def preprocess_conditions(self, colour: Tensor, *, video_present: Tensor) -> ToyConditions:
        """colour (B, 3) mean frame colour; video_present (B,) bool -> conditions (absent -> null)."""
        video = self.video_proj(colour)
        return ToyConditions(torch.where(video_present[:, None], video, self.null_video.to(video)))

    def predict_velocity(self, x_t: Tensor, t: Tensor, conditions: ToyConditions,
                         latent_mask: Tensor | None = None) -> Tensor:
        """x_t (B, T, C), t (B,) -> velocity (B, T, C); padded frames are zero."""
        h = self.input_proj(x_t) + (self.time_embed(t) + conditions.video)[:, None]
        for block in self.blocks:
            h = h + block(h)
        v = self.output_proj(h)
        return v if latent_mask is None else v * latent_mask[..., None].to(v.dtype)


register_network("toy-s", ToyNetwork, latent_channels=16, hidden_dim=32, depth=2, description="the toy paper, tiny")
register_network("toy-m", ToyNetwork, latent_channels=16, hidden_dim=96, depth=4, description="the toy paper, wider")
