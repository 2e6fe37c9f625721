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
    velocity_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, times: Tensor, *, progress: bool = False
) -> Tensor:
    """Integrate dx/dt = v(x, t) with explicit Euler from times[0] to times[-1].

    velocity_fn(x (B, ...), t (B,)) -> v; x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i).
    Runs under ``torch.no_grad`` (sampling never needs the graph of 25+ network calls).
    """
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D grid with at least 2 points, got {tuple(times.shape)}")
    x = x0
    steps = range(times.numel() - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    times = times.to(x0.device)
    for i in steps:
        t = times[i].expand(x.shape[0]).to(x.dtype)
        x = x + (times[i + 1] - times[i]).to(x.dtype) * velocity_fn(x, t)
    return x
