"""Embeddings of scalars and positions: timesteps, numbers, seconds, convolutional positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgen.nn.conv import masked_fill_padding

__all__ = [
    "sinusoidal_embedding",
    "TimestepEmbedding",
    "ConvPositionEmbedding",
    "PerSecondEmbedding",
    "NumberEmbedding",
]


def sinusoidal_embedding(
    positions: Tensor,
    dim: int,
    max_period: float = 10000.0,
    scale: float = 1.0,
    *,
    order: str = "cos_sin",
    frequency_shift: float = 0.0,
) -> Tensor:
    """Transformer sinusoids of (possibly fractional) positions: (...,) -> (..., dim), fp32.

    freq_i = max_period ** (-i / (dim/2 - frequency_shift)), i = 0..dim/2-1, argument
    scale * position * freq_i. MMAudio v1/DiT: scale 1, shift 0, [cos, sin]; F5-TTS: scale 1000,
    shift 1, [sin, cos].
    """
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    if order not in ("cos_sin", "sin_cos"):
        raise ValueError(f"order must be 'cos_sin' or 'sin_cos', got {order!r}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=positions.device) / (half - frequency_shift)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = scale * positions.to(torch.float32).unsqueeze(-1) * freqs
    parts = (args.cos(), args.sin()) if order == "cos_sin" else (args.sin(), args.cos())
    return torch.cat(parts, dim=-1)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t -> Linear -> SiLU -> Linear (DiT).

    MMAudio v1 feeds the raw t in [0, 1] (scale 1); F5-TTS multiplies by 1000 (scale=1000).
    (B,) -> (B, dim).
    """

    def __init__(
        self,
        dim: int,
        frequency_dim: int = 256,
        max_period: float = 10000.0,
        scale: float = 1.0,
        order: str = "cos_sin",
        frequency_shift: float = 0.0,
    ):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.scale = scale
        self.order = order
        self.frequency_shift = frequency_shift
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.normal_(self.mlp[0].weight, std=0.02)
        nn.init.normal_(self.mlp[2].weight, std=0.02)

    def forward(self, t: Tensor) -> Tensor:
        features = sinusoidal_embedding(
            t, self.frequency_dim, self.max_period, self.scale, order=self.order, frequency_shift=self.frequency_shift
        )
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ConvPositionEmbedding(nn.Module):
    """Two grouped Conv1d (k=31, 16 groups) each followed by Mish (F5-TTS, FoleyGenEx §3).

    Returns the positional term only; callers add the residual (x + cpe(x)). Padded frames are
    zeroed before and after each convolution so they do not leak into valid frames.
    """

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = masked_fill_padding(x, mask).transpose(1, 2)  # (B, D, T)
        x = F.mish(self.conv1(x))
        x = masked_fill_padding(x.transpose(1, 2), mask).transpose(1, 2)
        x = F.mish(self.conv2(x))
        return masked_fill_padding(x.transpose(1, 2), mask)


class PerSecondEmbedding(nn.Module):
    """Learnable per-second embeddings of a clip's start time and duration (AudioGen-Omni §3.3).

    Seconds are floored to whole seconds and clamped to [0, max_seconds]. forward(start (B,),
    total (B,)) -> (B, 2*dim) = [start embedding | duration embedding], ready to be concatenated
    with pooled text/visual features into the global condition.
    """

    def __init__(self, dim: int, max_seconds: int = 30):
        super().__init__()
        self.max_seconds = max_seconds
        self.start = nn.Embedding(max_seconds + 1, dim)
        self.duration = nn.Embedding(max_seconds + 1, dim)

    def _index(self, seconds: Tensor) -> Tensor:
        return seconds.floor().clamp(0, self.max_seconds).long()

    def forward(self, seconds_start: Tensor, seconds_total: Tensor) -> Tensor:
        return torch.cat((self.start(self._index(seconds_start)), self.duration(self._index(seconds_total))), dim=-1)


class NumberEmbedding(nn.Module):
    """Learned-frequency embedding of a bounded number (stable-audio-tools NumberEmbedder).

    x is clamped to [min_value, max_value] and normalised to [0, 1]; features
    [x, sin(2 pi x w), cos(2 pi x w)] with learnable w (frequency_dim/2) -> Linear -> (B, dim).
    """

    def __init__(self, dim: int, min_value: float = 0.0, max_value: float = 512.0, frequency_dim: int = 256):
        super().__init__()
        if frequency_dim % 2 != 0:
            raise ValueError(f"frequency_dim must be even, got {frequency_dim}")
        if max_value <= min_value:
            raise ValueError(f"max_value {max_value} must exceed min_value {min_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.weights = nn.Parameter(torch.randn(frequency_dim // 2))
        self.proj = nn.Linear(frequency_dim + 1, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = (x.float().clamp(self.min_value, self.max_value) - self.min_value) / (self.max_value - self.min_value)
        x = x.unsqueeze(-1)  # (B, 1)
        args = 2 * math.pi * x * self.weights
        return self.proj(torch.cat((x, args.sin(), args.cos()), dim=-1))
