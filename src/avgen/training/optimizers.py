"""The fastest implementation of the optimizer a config names, with the same update.

torch's Adam / AdamW default to a per-parameter loop on the CPU (``foreach`` is the default only on
CUDA): 5-7 small element-wise kernels per parameter tensor, about 14 % of a FoleyGenEx training step
at the bench's quick size on a CPU (``bench/bench_speed.py``). The ``fused`` implementation (CPU
and CUDA) does the whole update of each tensor in one kernel; the arithmetic is the same Adam(W)
update, equal within fp32 rounding (tests/training/test_optimizers.py).
"""

from __future__ import annotations

import torch

__all__ = ["fastest_adam"]

_ADAM = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICES = ("cpu", "cuda")


def fastest_adam(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` rebuilt with ``fused=True`` when it is a fresh Adam / AdamW left to torch's default
    implementation (no ``fused`` / ``foreach`` / ``capturable`` / ``differentiable`` chosen) over
    floating-point parameters on the CPU or CUDA; any other optimizer is returned unchanged.

    Call it before building the learning-rate scheduler (which holds the optimizer).
    """
    if type(optimizer) not in _ADAM or optimizer.state:
        return optimizer
    groups = optimizer.param_groups
    if any(g.get("fused") is not None or g.get("foreach") is not None or g.get("capturable") or g.get("differentiable")
           for g in groups):
        return optimizer  # the config chose an implementation: keep it
    params = [p for g in groups for p in g["params"]]
    if not params or not all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params):
        return optimizer
    return type(optimizer)([{**g, "fused": True} for g in groups])
