"""Learning-rate schedules of the papers, as torch schedulers (their state loads with ``weights_only=True``).

Where torch has the schedule, avgen only names it with the papers' arguments:

* :class:`LinearWarmupLR` (MMAudio ``linear_warmup_steps``): torch's ``LinearLR`` from 1/W to 1 over W
  steps, factor(step) = min(1, (step + 1) / W).
* :class:`WarmupStepLR` (MMAudio ``lr_schedule: step``): ``LinearLR`` chained with ``MultiStepLR``,
  factor(step) = min(1, (step + 1) / W) * gamma^(number of milestones <= step).

Schedules torch lacks (AudioGen-Omni's InverseLR, stable-audio-tools' formula) get their own class here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, MultiStepLR

__all__ = ["LinearWarmupLR", "WarmupStepLR"]


class LinearWarmupLR(LinearLR):
    """Linear warm-up from lr / W to lr over W = ``warmup_steps`` steps, then constant (MMAudio)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 1000, last_epoch: int = -1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps <= 1:  # no warm-up: factor 1 from the first step
            super().__init__(optimizer, start_factor=1.0, end_factor=1.0, total_iters=0, last_epoch=last_epoch)
        else:
            super().__init__(optimizer, start_factor=1.0 / self.warmup_steps, end_factor=1.0,
                             total_iters=self.warmup_steps - 1, last_epoch=last_epoch)


class WarmupStepLR(ChainedScheduler):
    """Linear warm-up over ``warmup_steps``, then x ``gamma`` at each milestone step (MMAudio's "step" schedule).

    MMAudio (config ``linear_warmup_steps: 1000``, ``lr_schedule: step``, ``lr_schedule_steps:
    [240000, 270000]``, ``lr_schedule_gamma: 0.1``): factor(step) = warm-up(step) * gamma^(number of
    milestones <= step).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 1000,
        milestones: Sequence[int] = (240_000, 270_000),
        gamma: float = 0.1,
    ):
        milestones = sorted(int(m) for m in milestones)
        if any(m < 0 for m in milestones) or gamma <= 0:
            raise ValueError(f"milestones must be >= 0 and gamma > 0, got {milestones}, {gamma}")
        self.warmup_steps, self.milestones, self.gamma = int(warmup_steps), milestones, float(gamma)
        super().__init__(
            [LinearWarmupLR(optimizer, warmup_steps), MultiStepLR(optimizer, milestones=milestones, gamma=gamma)],
            optimizer=optimizer,
        )
