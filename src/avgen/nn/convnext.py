"""1-D ConvNeXt-V2 block with Global Response Normalisation (Woo et al. 2023; F5-TTS text encoder,
AudioGen-Omni lyrics-transcription module), padding-mask aware."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avgen.nn.conv import masked_fill_padding

__all__ = ["GRN", "ConvNeXtV2Block"]


class GRN(nn.Module):
    """Global Response Normalisation over time, (B, T, D) -> (B, T, D).

    G = ||x||_2 over valid frames (B, 1, D); N = G / (mean_D G + eps);
    out = gamma * (x * N) + beta + x, with gamma = beta = 0 at init (identity).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # The norm runs over time, so padded frames must be excluded or they change valid outputs.
        gx = torch.norm(masked_fill_padding(x, mask), p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """x + Linear(GRN(GELU(Linear(LayerNorm(DepthwiseConv(x)))))) (F5-TTS modules.py order).

    With a padding mask the depthwise conv sees zeros at padded frames, GRN pools over valid
    frames only, and padded outputs are zeroed, so padding never changes valid outputs.
    """

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 7, dilation: int = 1):
        super().__init__()
        padding = (dilation * (kernel_size - 1)) // 2
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=padding, groups=dim, dilation=dilation)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.grn = GRN(hidden_dim)
        self.pwconv2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        residual = x
        x = self.dwconv(masked_fill_padding(x, mask).transpose(1, 2)).transpose(1, 2)
        x = self.act(self.pwconv1(self.norm(x)))
        x = self.pwconv2(self.grn(x, mask))
        return masked_fill_padding(residual + x, mask)
