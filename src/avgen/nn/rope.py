"""Rotary position embeddings (RoFormer), angles-based.

Everything here works on *angles* of shape (..., L, D/2) computed in fp32, so one code path covers
1-D RoPE on audio frames (MMAudio, AudioGen-Omni PAAPI), positions rescaled onto another stream's
timeline (MMAudio aligns 64 CLIP frames to 250 latents; Harmony's RoPE-aligned frame-wise
attention), Wan's 3-D (t, h, w) split, rotating only part of the head (Ovi rotates 44 of 128
channels) and rotating only one segment of a sequence (OmniSonic Eq. 7: visual tokens inside a
text+visual key sequence).

Pairs are interleaved, (x0, x1), (x2, x3), ... as in Flux/MMAudio: pair i is rotated by angle
``position * theta ** (-2i / dim)``.

Speed: :func:`rope_rotation` turns angles into a :class:`RopeRotation` (cos and signed sin laid out
on the interleaved channels, and the unit complex numbers e^{i angle}) once, instead of recomputing
cos/sin and splitting pairs per call; :class:`RopeCache` keeps the rotations of a network per
(positions, dim, dtype, device) across forwards. In eager mode :func:`apply_rope` rotates a pair as
one complex multiplication, (x0 + i x1) e^{i angle}: one pass over the head, about 4x faster on a
CPU than ``x * cos + swap_pairs(x) * sin``, whose pair swap is a ``flip`` copy
(``bench/bench_rope.py``). While ``torch.compile`` traces, the real-valued form is used: inductor
fuses it into one kernel and does not lower complex tensors. Both give the same numbers as the
angle formula (to fp32 rounding).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

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
    "RopeRotation",
    "rope_rotation",
    "RopeCache",
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


class RopeRotation(NamedTuple):
    """cos / signed sin of RoPE angles on the interleaved channel layout, (..., L, r) each.

    ``cos`` repeats each pair's cos over its two channels; ``sin`` is (-sin, +sin) per pair, so a
    rotation is ``x * cos + swap_pairs(x) * sin`` with swap_pairs (x0, x1) -> (x1, x0): RoFormer's
    (x0 cos - x1 sin, x1 cos + x0 sin) exactly. A NamedTuple so ``torch.compile`` traces it as a tuple.

    ``turn`` is the same rotation as complex numbers cos + i sin, (..., L, r/2), for the eager
    complex-multiply path of :func:`apply_rope`; None when ``cos`` is neither fp32 nor fp64 (torch
    has no bf16 complex type), and then the real-valued form is used.
    """

    cos: Tensor
    sin: Tensor
    turn: Tensor | None = None

    def tokens(self, span: slice) -> RopeRotation:
        """The rotation of the positions ``span`` (a slice of the L axis) of every field."""
        turn = None if self.turn is None else self.turn[..., span, :]
        return RopeRotation(self.cos[..., span, :], self.sin[..., span, :], turn)

    @property
    def pairs(self) -> int:
        """Rotated channel pairs (r / 2), as ``angles.shape[-1]``."""
        return self.cos.shape[-1] // 2


def rope_rotation(angles: Tensor, dtype: torch.dtype = torch.float32) -> RopeRotation:
    """Angles (..., L, r/2) -> :class:`RopeRotation` (..., L, r), computed in fp32, stored in ``dtype``."""
    no_autocast = (contextlib.nullcontext() if angles.device.type == "meta"
                   else torch.autocast(device_type=angles.device.type, enabled=False))
    with no_autocast:
        angles = angles.float()
        cos, sin = angles.cos(), angles.sin()
        turn = None  # traced graphs use the real form (no complex tensors in an inductor graph)
        if dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
            turn = torch.complex(cos.to(dtype), sin.to(dtype))  # the same cos / sin values as below
        cos = torch.stack((cos, cos), dim=-1).flatten(-2)
        sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
    return RopeRotation(cos.to(dtype), sin.to(dtype), turn)


def apply_rope(
    x: Tensor, angles: Tensor | RopeRotation, rotary_dim: int | None = None, out_dtype: torch.dtype | None = None
) -> Tensor:
    """Rotate interleaved channel pairs of x by ``angles``.

    x: (B, H, L, D); angles: broadcastable to (B, H, L, rotary_dim/2), e.g. (L, r/2) or
    (B, 1, L, r/2), or their precomputed :class:`RopeRotation` (cached by :class:`RopeCache`). Only
    the first ``rotary_dim`` channels (default: all D) are rotated, the rest pass through (Ovi).
    Computed in the rotation's dtype (fp32 unless the caller cached another) and returned in
    ``out_dtype`` (default: x's dtype; a caller that casts the result anyway passes its dtype and
    saves a round trip).
    """
    rotation = angles if isinstance(angles, RopeRotation) else rope_rotation(angles)
    rotary_dim = x.shape[-1] if rotary_dim is None else rotary_dim
    if rotation.pairs * 2 != rotary_dim:
        raise ValueError(f"angles carry {rotation.pairs} pairs but rotary_dim is {rotary_dim}")
    if rotary_dim > x.shape[-1]:
        raise ValueError(f"rotary_dim {rotary_dim} exceeds head dim {x.shape[-1]}")
    out_dtype = x.dtype if out_dtype is None else out_dtype
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot.to(rotation.cos.dtype)
    if not torch.compiler.is_compiling() and rotation.turn is not None and _complex_viewable(rot):
        pairs = torch.view_as_complex(rot.unflatten(-1, (-1, 2)))  # x0 + i x1, (B, H, L, r/2)
        rotated = torch.view_as_real(pairs * rotation.turn).flatten(-2).to(out_dtype)
    else:
        swapped = rot.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0, x3, x2, ...)
        rotated = torch.addcmul(rot * rotation.cos, swapped, rotation.sin).to(out_dtype)
    return torch.cat((rotated, rest.to(out_dtype)), dim=-1) if rest.shape[-1] else rotated


def _complex_viewable(x: Tensor) -> bool:
    """Whether ``view_as_complex`` can read x's channel pairs in place (fp32 / fp64, pairs adjacent)."""
    return (
        x.dtype in (torch.float32, torch.float64)
        and x.device.type != "meta"
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for size, stride in zip(x.shape[:-1], x.stride()[:-1]) if size > 1)
    )


class RopeCache:
    """A bounded LRU of :class:`RopeRotation` per (key, dtype, device), one per network.

    ``get(key, make_angles, device)``: ``key`` names the positions (e.g. ``("rescaled", length,
    target_length)``) and everything else the angles depend on (head dim, theta); ``make_angles()``
    computes the fp32 angles on a miss. Nothing is cached on the meta device (FSDP / deferred init
    builds there) or while ``torch.compile`` traces (the compiled graph computes the rotation itself,
    and a Python dict lookup would only add guards). The rotation is computed with autocast off, so
    an entry made under autocast equals one made outside it. Entries are plain tensors, never
    parameters or buffers: they are not in the state dict and do not follow ``.to()``, hence the
    device in the key.
    """

    def __init__(self, max_entries: int = 32):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, RopeRotation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(
        self,
        key: Hashable,
        make_angles: Callable[[], Tensor],
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> RopeRotation:
        device = torch.device(device)
        if device.type == "meta" or torch.compiler.is_compiling():
            return rope_rotation(make_angles(), dtype)
        full_key = (key, dtype, str(device))
        rotation = self._entries.get(full_key)
        if rotation is None:
            rotation = rope_rotation(make_angles(), dtype)
            self._entries[full_key] = rotation
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(full_key)
        return rotation

    def __deepcopy__(self, memo: dict) -> RopeCache:
        return RopeCache(self.max_entries)  # an EMA copy starts empty (entries are recomputable)


def apply_rope_to_segment(
    x: Tensor, angles: Tensor | RopeRotation, start: int, end: int, rotary_dim: int | None = None
) -> Tensor:
    """Rotate only the tokens x[:, :, start:end] (OmniSonic Eq. 7, AudioGen-Omni PAAPI).

    x: (B, H, L, D); angles: (..., end-start, r/2). Tokens outside [start, end) are returned
    unchanged, e.g. the caption tokens of a [caption | visual] key sequence.
    """
    length = x.shape[-2]
    if not 0 <= start <= end <= length:
        raise ValueError(f"segment [{start}, {end}) is outside a sequence of length {length}")
    if (angles.cos if isinstance(angles, RopeRotation) else angles).shape[-2] != end - start:
        raise ValueError(f"angles cover {(angles.cos if isinstance(angles, RopeRotation) else angles).shape[-2]} "
                         f"positions, segment has {end - start}")
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
