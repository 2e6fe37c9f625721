"""CondFoleyGen's onset synchronisation metrics (Du et al. 2023, §5; FoleyGenEx's Greatest Hits table).

Onsets are detected in the generated and in the target (ground-truth) audio with the same detector
(:func:`avgen.eval.oracle.detect_onsets`; CondFoleyGen uses librosa's onset detector, which avgen
does not depend on - the protocol below is the same, the detector differs). Per clip:

* **onset accuracy**: 1 if both clips have the same number of onsets, else 0.
* **onset AP**: each generated onset gets a confidence, the peak of the peak-normalised absolute
  waveform within +-``confidence_window`` (50 ms) of it; ranked by confidence, an onset is a hit if
  it lies within ``delta`` (0.1 s) of a target onset not yet matched. AP = sum over hits of the
  precision at that rank / the number of target onsets (the area under the precision-recall curve
  without interpolation). A clip with no target onset is not scored.

Both are averaged over clips. Weight-free, so they run anywhere.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from avgen.eval.oracle import _as_numpy, detect_onsets

__all__ = ["onset_confidences", "onset_average_precision", "onset_sync_scores", "OnsetSync"]


def onset_confidences(waveform: np.ndarray, sample_rate: int, onsets: Sequence[float], window: float = 0.05) -> np.ndarray:
    x = np.abs(_as_numpy(waveform))
    x = x / max(float(x.max()), 1e-12)
    half = int(round(window * sample_rate))
    out = []
    for t in onsets:
        centre = int(round(t * sample_rate))
        segment = x[max(centre - half, 0) : centre + half]
        out.append(float(segment.max()) if segment.size else 0.0)
    return np.asarray(out)


def onset_average_precision(detected: Sequence[float], confidences: Sequence[float], targets: Sequence[float], delta: float = 0.1) -> float:
    """AP of ``detected`` onsets ranked by ``confidences`` against ``targets`` (tolerance ``delta`` s)."""
    targets = list(targets)
    if not targets:
        return float("nan")
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    unmatched = set(range(len(targets)))
    hits, precision_sum = 0, 0.0
    for rank, index in enumerate(order, start=1):
        t = detected[index]
        candidates = [j for j in unmatched if abs(targets[j] - t) <= delta]
        if candidates:
            unmatched.remove(min(candidates, key=lambda j: abs(targets[j] - t)))
            hits += 1
            precision_sum += hits / rank
    return precision_sum / len(targets)


def onset_sync_scores(generated, target, sample_rate: int, delta: float = 0.1) -> tuple[float, float]:
    """(onset accuracy, onset AP) of one clip; AP is nan when the target has no onset."""
    gen, tar = _as_numpy(generated), _as_numpy(target)
    gen_onsets, tar_onsets = detect_onsets(gen, sample_rate), detect_onsets(tar, sample_rate)
    accuracy = float(len(gen_onsets) == len(tar_onsets))
    ap = onset_average_precision(gen_onsets, onset_confidences(gen, sample_rate, gen_onsets), tar_onsets, delta)
    return accuracy, ap


class OnsetSync(Metric):
    """``update(generated, target)`` lists of mono waveforms; ``compute()`` -> (accuracy, AP) means over clips."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, sample_rate: int, delta: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate, self.delta = sample_rate, delta
        for name in ("acc_sum", "ap_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("acc_num", "ap_num"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, generated: Sequence[Tensor], target: Sequence[Tensor]) -> None:
        for gen, tar in zip(generated, target, strict=True):
            accuracy, ap = onset_sync_scores(gen, tar, self.sample_rate, self.delta)
            self.acc_sum += accuracy
            self.acc_num += 1
            if not np.isnan(ap):
                self.ap_sum += ap
                self.ap_num += 1

    def compute(self) -> tuple[Tensor, Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        accuracy = self.acc_sum / self.acc_num if self.acc_num else nan
        ap = self.ap_sum / self.ap_num if self.ap_num else nan
        return accuracy, ap
