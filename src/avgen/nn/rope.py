"""Rotary position embeddings (RoFormer), angles-based.

Everything here works on *angles* of shape (..., L, D/2) computed in fp32, so one code path covers
1-D RoPE on audio frames (MMAudio, AudioGen-Omni PAAPI), positions rescaled onto another stream's
timeline (MMAudio aligns 64 CLIP frames to 250 latents; Harmony's RoPE-aligned frame-wise
attention), Wan's 3-D (t, h, w) split, rotating only part of the head (Ovi rotates 44 of 128
channels) and rotating only one segment of a sequence (OmniSonic Eq. 7: visual tokens inside a
text+visual key sequence).

Pairs are interleaved, (x0, x1), (x2, x3), ... as in Flux/MMAudio: pair i is rotated by angle
``position * theta ** (-2i / dim)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rope_frequencies",
    "rope_angles",
    "apply_rope",
    "apply_rope_to_segment",
    "rescaled_positions",
    "positions_at_rate",
    "rope_3d_split",
    "rope_3d_angles",
]


def rope_frequencies(dim: int, theta: float = 10000.0, device=None) -> Tensor:
    """Inverse frequencies theta^(-2i/dim), i = 0..dim/2-1, fp32 (dim/2,)."""
    if dim % 2 != 0:
        raise ValueError(f"RoPE needs an even number of rotated channels, got dim={dim}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
    return 1.0 / (theta**exponents)


def rope_angles(positions: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    """Rotation angles for (possibly fractional) positions.

    positions: (..., L) -> angles (..., L, dim/2) in fp32.
    """
    freqs = rope_frequencies(dim, theta, device=positions.device)
    return positions.to(torch.float32).unsqueeze(-1) * freqs


def rescaled_positions(length: int, target_length: int | float, device=None) -> Tensor:
    """Positions i * target_length / length, i = 0..length-1 (fp32).

    Places ``length`` tokens of one stream on the timeline of a stream of ``target_length`` tokens
    covering the same time span (MMAudio: CLIP frame i sits at latent position i * N / 64).
    """
    return torch.arange(length, dtype=torch.float32, device=device) * (float(target_length) / length)


def positions_at_rate(length: int, rate: float, target_rate: float, device=None) -> Tensor:
    """Positions i * target_rate / rate, i = 0..length-1 (fp32): a stream sampled at ``rate`` Hz
    placed on the timeline of a stream at ``target_rate`` Hz (AudioGen-Omni PAAPI, §3.4).

    Unlike :func:`rescaled_positions` (which divides by the stream's *length*), the position of a
    token depends only on its time, so clips of different durations in one padded batch stay
    phase-aligned: CLIP frame i of any clip sits at latent position i * 43.07 / 8.
    """
    if rate <= 0 or target_rate <= 0:
        raise ValueError(f"rates must be > 0, got rate={rate}, target_rate={target_rate}")
    return torch.arange(length, dtype=torch.float32, device=device) * (float(target_rate) / float(rate))


def apply_rope(x: Tensor, angles: Tensor, rotary_dim: int | None = None) -> Tensor:
    """Rotate interleaved channel pairs of x by ``angles``.

    x: (B, H, L, D); angles: broadcastable to (B, H, L, rotary_dim/2), e.g. (L, r/2) or
    (B, 1, L, r/2). Only the first ``rotary_dim`` channels (default: all D) are rotated, the rest
    pass through (Ovi). Computed in fp32 and cast back to x's dtype.
    """
    rotary_dim = x.shape[-1] if rotary_dim is None else rotary_dim
    if angles.shape[-1] * 2 != rotary_dim:
        raise ValueError(f"angles carry {angles.shape[-1]} pairs but rotary_dim is {rotary_dim}")
    if rotary_dim > x.shape[-1]:
        raise ValueError(f"rotary_dim {rotary_dim} exceeds head dim {x.shape[-1]}")
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    pairs = rot.float().unflatten(-1, (-1, 2))  # (..., L, r/2, 2)
    x_even, x_odd = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos(), angles.sin()
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    rotated = rotated.flatten(-2).to(x.dtype)
    return torch.cat((rotated, rest), dim=-1) if rest.shape[-1] else rotated


def apply_rope_to_segment(
    x: Tensor, angles: Tensor, start: int, end: int, rotary_dim: int | None = None
) -> Tensor:
    """Rotate only the tokens x[:, :, start:end] (OmniSonic Eq. 7, AudioGen-Omni PAAPI).

    x: (B, H, L, D); angles: (..., end-start, r/2). Tokens outside [start, end) are returned
    unchanged, e.g. the caption tokens of a [caption | visual] key sequence.
    """
    length = x.shape[-2]
    if not 0 <= start <= end <= length:
        raise ValueError(f"segment [{start}, {end}) is outside a sequence of length {length}")
    if angles.shape[-2] != end - start:
        raise ValueError(f"angles cover {angles.shape[-2]} positions, segment has {end - start}")
    segment = apply_rope(x[..., start:end, :], angles, rotary_dim)
    return torch.cat((x[..., :start, :], segment, x[..., end:, :]), dim=-2)


def rope_3d_split(head_dim: int) -> tuple[int, int, int]:
    """Wan's channel split of a head over (t, h, w): (d - 4*(d//6), 2*(d//6), 2*(d//6))."""
    band = 2 * (head_dim // 6)
    return head_dim - 2 * band, band, band


def rope_3d_angles(t: int, h: int, w: int, head_dim: int, theta: float = 10000.0, device=None) -> Tensor:
    """Angles (t*h*w, head_dim/2) for a (t, h, w) token grid flattened t-major (Wan 2.x).

    Each band has its own frequency table over its own width (Wan's rope_params(1024, band)):
    the first pairs encode the frame index, then the row, then the column.
    """
    dt, dh, dw = rope_3d_split(head_dim)
    grid = torch.meshgrid(
        torch.arange(t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    bands = [rope_angles(g.reshape(-1), d, theta) for g, d in zip(grid, (dt, dh, dw))]
    return torch.cat(bands, dim=-1)
