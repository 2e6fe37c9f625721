"""Feed-forward blocks: MLP, SwiGLU and its convolutional variant ConvMLP (MMAudio)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from avgen.nn.conv import ChannelLastConv1d, masked_fill_padding

__all__ = ["MLP", "SwiGLU", "ConvMLP", "mmaudio_hidden_dim"]


def mmaudio_hidden_dim(dim: int, mlp_ratio: float = 4.0, multiple_of: int = 256) -> int:
    """SwiGLU hidden width of MMAudio/LLaMA: int(2/3 * ratio * dim) rounded up to ``multiple_of``.

    2/3 keeps the parameter count of a plain ratio-4 MLP with three matrices instead of two;
    448 -> 1280 and 896 -> 2560.
    """
    hidden = int(2 * int(dim * mlp_ratio) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class MLP(nn.Module):
    """Linear -> activation -> Linear (DiT, F5, Wan FFN)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, activation: nn.Module | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = activation if activation is not None else nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), bias-free (Shazeer 2020; MMAudio's ``MLP``)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, out_dim or dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # mask is accepted for interface parity with ConvMLP: a per-token MLP cannot leak.
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """SwiGLU whose three projections are Conv1d over time (MMAudio), (B, T, D) -> (B, T, D).

    With a padding mask, the input and the hidden activation are zeroed at padded frames, so
    padded content never reaches valid frames through the kernels.
    """

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3, out_dim: int | None = None):
        super().__init__()
        self.w1 = ChannelLastConv1d(dim, hidden_dim, kernel_size, bias=False)
        self.w2 = ChannelLastConv1d(hidden_dim, out_dim or dim, kernel_size, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden_dim, kernel_size, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = masked_fill_padding(x, mask)
        hidden = F.silu(self.w1(x)) * self.w3(x)
        return self.w2(hidden, mask)
