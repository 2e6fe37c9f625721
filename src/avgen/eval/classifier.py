"""Metrics on audio-classifier logits (AudioSet's 527 classes from PaSST or PANNs).

* :class:`PairedKL` - KL(p_gt || p_gen) of the softmax class distributions of each ground-truth /
  generated pair, summed and divided by the number of pairs: av-benchmark's "AudioGen formulation"
  (MMAudio Table 1's KL_PANNs / KL_PaSST).
* :class:`InceptionScore` - exp(E_x KL(p(y|x) || p(y))) per split, mean (and std) over ``splits``
  (10) after shuffling with a fixed seed (2020), as av-benchmark computes IS on PANNs logits.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["PairedKL", "InceptionScore"]


class PairedKL(Metric):
    """Mean over pairs of KL(softmax(gt_logits) || softmax(gen_logits)); ``update(gt_logits, gen_logits)`` (N, K)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("kl_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, gt_logits: Tensor, gen_logits: Tensor) -> None:
        if gt_logits.shape != gen_logits.shape or gt_logits.ndim != 2:
            raise ValueError(f"paired logits must both be (N, K), got {tuple(gt_logits.shape)} and {tuple(gen_logits.shape)}")
        log_p = torch.log_softmax(gt_logits.double(), dim=-1)
        log_q = torch.log_softmax(gen_logits.double(), dim=-1)
        self.kl_sum += (log_p.exp() * (log_p - log_q)).sum()
        self.num += gt_logits.shape[0]

    def compute(self) -> Tensor:
        return self.kl_sum / self.num.clamp(min=1)


class InceptionScore(Metric):
    """Inception score of classifier logits; ``compute()`` -> (mean, std) over ``splits``."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, splits: int = 10, shuffle_seed: int | None = 2020, **kwargs) -> None:
        super().__init__(**kwargs)
        self.splits, self.shuffle_seed = splits, shuffle_seed
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, logits: Tensor) -> None:
        if logits.ndim != 2:
            raise ValueError(f"expected logits (N, K), got {tuple(logits.shape)}")
        self.logits.append(logits.detach().double())

    def compute(self) -> tuple[Tensor, Tensor]:
        logits = dim_zero_cat(self.logits).double()
        if logits.shape[0] < self.splits:
            raise ValueError(f"InceptionScore with {self.splits} splits needs >= {self.splits} clips, got {logits.shape[0]}")
        if self.shuffle_seed is not None:
            logits = logits[torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(self.shuffle_seed))]
        scores = []
        for part in logits.chunk(self.splits, dim=0):
            log_p = torch.log_softmax(part, dim=-1)
            log_marginal = torch.log(log_p.exp().mean(dim=0, keepdim=True))
            scores.append(torch.exp((log_p.exp() * (log_p - log_marginal)).sum(dim=-1).mean()))
        scores_t = torch.stack(scores)
        return scores_t.mean(), scores_t.std()
