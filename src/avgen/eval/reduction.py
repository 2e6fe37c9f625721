"""The reduction most per-item metrics share: a mean of per-item scores, DDP-synchronised.

Sums and counts are states reduced by ``sum`` across processes (float64 sum, integer count), so the
mean over all processes' items is exact; an empty metric raises instead of returning NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ScoreMean"]


class ScoreMean(Metric):
    """Mean of per-item scores; subclasses turn their inputs into scores and call :meth:`add`."""

    full_state_update = False
    nothing_scored = "nothing was scored"  # the error of an empty metric, in the subclass's words

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def add(self, scores: Tensor | float) -> None:
        """Add one score (a float / 0-d tensor) or a 1-d tensor of scores."""
        scores = torch.as_tensor(scores, dtype=torch.float64).detach().cpu().reshape(-1)
        self.total += scores.sum()
        self.num += scores.numel()

    def compute(self) -> Tensor:
        if int(self.num) == 0:
            raise ValueError(f"{type(self).__name__}: {self.nothing_scored}")
        return self.total / self.num
