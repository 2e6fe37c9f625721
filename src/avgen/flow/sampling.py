"""Timestep grids and the Euler ODE sampler (t = 0 noise -> t = 1 data)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from avgen.flow.path import shift_sigma

__all__ = ["sampling_times", "euler_sample"]


def sampling_times(num_steps: int, shift: float = 1.0) -> Tensor:
    """Euler grid (num_steps + 1,), increasing from 0 (noise) to 1 (data), fp32.

    t_i = 1 - sigma'(u_i), u = linspace(1, 0, N + 1), sigma' = s u / (1 + (s - 1) u): Wan's shifted
    grid mapped onto t = 1 - sigma; shift 1 gives MMAudio's linspace(0, 1, N + 1).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (1 - shift_sigma(u, shift)).to(torch.float32)


@torch.no_grad()
def euler_sample(
    velocity_fn: Callable[..., Tensor | tuple[Tensor, ...]], x0: Tensor | tuple[Tensor, ...], times: Tensor, *,
    progress: bool = False,
) -> Tensor | tuple[Tensor, ...]:
    """Integrate dx/dt = v(x, t) with explicit Euler from times[0] to times[-1].

    velocity_fn(x (B, ...), t (B,)) -> v; x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i).
    Several modalities on one time grid (Harmony's audio and video latents): x0 is a tuple of
    tensors with the same batch size, velocity_fn returns a tuple of the same length, and each
    element takes the same Euler step (t has the dtype of the first).
    Runs under ``torch.no_grad`` (sampling never needs the graph of 25+ network calls).
    """
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D grid with at least 2 points, got {tuple(times.shape)}")
    x = x0
    first = x0[0] if isinstance(x0, tuple) else x0
    steps = range(times.numel() - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    times = times.to(first.device)
    for i in steps:
        t = times[i].expand(first.shape[0]).to(first.dtype)
        dt = times[i + 1] - times[i]
        v = velocity_fn(x, t)
        if isinstance(x, tuple):
            if not isinstance(v, tuple) or len(v) != len(x):
                raise ValueError(f"velocity_fn must return {len(x)} tensors for a tuple state")
            x = tuple(xi + dt.to(xi.dtype) * vi for xi, vi in zip(x, v))
        else:
            x = x + dt.to(x.dtype) * v
    return x
