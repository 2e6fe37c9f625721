"""Convolutions over time for channel-last (B, T, D) sequences, with an optional padding mask."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ChannelLastConv1d", "masked_fill_padding"]


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the valid positions: x (B, L, D), mask (B, L) bool (None: all valid) -> (B, D); 0 where none is."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_fill_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the padded frames of x (B, T, D); mask (B, T) bool, True = valid.

    A convolution then sees zeros past a sample's end, exactly as at the sequence edge, so the
    content of padded frames cannot leak into valid ones.
    """
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


class ChannelLastConv1d(nn.Conv1d):
    """nn.Conv1d applied to (B, T, D) -> (B, T, D_out), 'same' padding for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the length, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = masked_fill_padding(x, mask)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)
