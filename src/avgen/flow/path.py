"""The linear probability path of rectified flow / flow matching and training-time samplers.

Convention (design §2): t = 0 is noise x0, t = 1 is data x1,
x_t = (1 - t) x0 + t x1 and the target velocity is v = x1 - x0
(OmniSonic Eq. 1-2, AudioGen-Omni Eq. 1, FoleyGenEx Eq. 2, MMAudio with sigma_min = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interpolate", "target_velocity", "shift_sigma", "TimeSampler", "span_mask"]


def _expand_like(t: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcasting against x."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be (B,) with B={x.shape[0]}, got {tuple(t.shape)}")
    return t.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t x1, t (B,) broadcast over the remaining axes."""
    t = _expand_like(t, x0)
    return (1 - t) * x0 + t * x1


def target_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """d x_t / dt = x1 - x0."""
    return x1 - x0


def shift_sigma(sigma: Tensor | float, shift: float) -> Tensor | float:
    """Timestep shift of SD3/Wan in noise-level form: sigma' = s sigma / (1 + (s - 1) sigma).

    sigma = 1 - t is the noise level; s > 1 spends more of the schedule at high noise.
    """
    return shift * sigma / (1 + (shift - 1) * sigma)


class TimeSampler:
    """Draws training times t in (0, 1).

    kinds: "uniform" (F5-TTS), "logit_normal" = sigmoid(N(mean, std)) (SD3, MMAudio's
    ``log_normal_sample``), "shifted" = uniform then the SD3/Wan shift. A shift != 1 is applied
    to any kind through sigma = 1 - t.
    """

    KINDS = ("uniform", "logit_normal", "shifted")

    def __init__(self, kind: str = "logit_normal", mean: float = 0.0, std: float = 1.0, shift: float = 1.0,
                 eps: float = 1e-5):
        if kind not in self.KINDS:
            raise ValueError(f"unknown time sampler kind {kind!r}; choose one of {self.KINDS}")
        if std <= 0 or shift <= 0:
            raise ValueError(f"std and shift must be positive, got std={std}, shift={shift}")
        self.kind, self.mean, self.std, self.shift, self.eps = kind, mean, std, shift, eps

    def __call__(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        # draw on the generator's device (a CPU generator keeps runs reproducible across devices)
        draw_device = generator.device if generator is not None else device
        if self.kind == "logit_normal":
            normal = torch.randn(batch_size, device=draw_device, generator=generator)
            t = torch.sigmoid(normal * self.std + self.mean)
        else:
            t = torch.rand(batch_size, device=draw_device, generator=generator)
        t = t.to(device) if device is not None else t
        if self.shift != 1.0:
            t = 1 - shift_sigma(1 - t, self.shift)
        # keep away from the end points: t = 0 or 1 exactly gives a degenerate x_t
        return t.clamp(self.eps, 1 - self.eps)

    def __repr__(self) -> str:
        return f"TimeSampler(kind={self.kind!r}, mean={self.mean}, std={self.std}, shift={self.shift})"


def span_mask(
    lengths: Tensor,
    min_fraction: float = 0.7,
    max_fraction: float = 1.0,
    generator: torch.Generator | None = None,
    max_length: int | None = None,
) -> Tensor:
    """One contiguous random span per sample (F5-TTS infilling; FoleyGenEx masks 70-100%).

    lengths (B,) valid frames -> (B, T) bool, T = max_length or max(lengths). For sample b the span
    holds floor(frac * len_b) frames, frac ~ U(min_fraction, max_fraction), starting at
    floor(U * (len_b - span)), so it always lies inside the valid frames.
    """
    if not 0.0 <= min_fraction <= max_fraction <= 1.0:
        raise ValueError(f"need 0 <= min_fraction <= max_fraction <= 1, got {min_fraction}, {max_fraction}")
    lengths = lengths.long()
    device = lengths.device
    total = int(lengths.max().item()) if max_length is None else max_length
    if lengths.numel() and int(lengths.max().item()) > total:
        raise ValueError(f"a length {int(lengths.max())} exceeds max_length {total}")
    batch = lengths.shape[0]
    gen_device = generator.device if generator is not None else device
    fraction = torch.rand(batch, generator=generator, device=gen_device).to(device)
    fraction = min_fraction + (max_fraction - min_fraction) * fraction
    span = (fraction * lengths).floor().long()
    start = (torch.rand(batch, generator=generator, device=gen_device).to(device) * (lengths - span)).floor().long()
    frames = torch.arange(total, device=device)
    return (frames >= start[:, None]) & (frames < (start + span)[:, None])
