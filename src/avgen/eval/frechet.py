"""Frechet distance between two sets of embeddings (FD_PaSST / FD_PANNs / FD_VGGish / FAD / FD_mel).

FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) (Heusel et al. 2017, Eq. 6), with the
matrix square root from ``scipy.linalg.sqrtm`` and the eps-offset fallback when the product is
singular, as av-benchmark (MMAudio) takes it from audioldm_eval. Means and covariances are
accumulated in float64 as sums (so DDP sums them across processes); the covariance is the unbiased
one (``np.cov``). Reference statistics can be saved to / loaded from an ``.npz`` so a reference set
is embedded once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from torch import Tensor
from torchmetrics import Metric

__all__ = ["frechet_distance", "GaussianStats", "FrechetDistance"]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different dimensions: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        # Singular product (fewer samples than dimensions): offset both diagonals, as audioldm_eval does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@dataclass
class GaussianStats:
    """Mean (D,), covariance (D, D) and the number of embeddings they summarise."""

    mu: np.ndarray
    sigma: np.ndarray
    num: int

    @classmethod
    def from_features(cls, features: np.ndarray | Tensor) -> "GaussianStats":
        x = features.detach().cpu().double().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need (N >= 2, D) embeddings for a covariance, got {x.shape}")
        return cls(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), x.shape[0])

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, mu=self.mu, sigma=self.sigma, num=np.asarray(self.num))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GaussianStats":
        try:
            data = np.load(path)
            return cls(data["mu"], data["sigma"], int(data["num"]))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"reference statistics {os.fspath(path)} cannot be read ({err}); recompute them") from None


class FrechetDistance(Metric):
    """Frechet distance of generated embeddings to real ones (``update(x, real=...)``) or saved statistics.

    Args:
        num_features: embedding width D.
        reference: statistics of the real set (:class:`GaussianStats` or an ``.npz`` path); when given,
            ``update(..., real=True)`` is refused.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, num_features: int, reference: GaussianStats | str | os.PathLike | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_features = num_features
        if reference is not None and not isinstance(reference, GaussianStats):
            reference = GaussianStats.load(reference)
        self.reference = reference
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_num", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, features: Tensor, real: bool = False) -> None:
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected embeddings (N, {self.num_features}), got {tuple(features.shape)}")
        if real and self.reference is not None:
            raise ValueError("this FrechetDistance has saved reference statistics; update it with generated embeddings only")
        side = "real" if real else "fake"
        x = features.detach().to(torch.float64)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + x.T @ x)
        setattr(self, f"{side}_num", getattr(self, f"{side}_num") + x.shape[0])

    def _stats(self, side: str) -> GaussianStats:
        n = int(getattr(self, f"{side}_num"))
        if n < 2:
            raise ValueError(f"FrechetDistance needs at least 2 {side} embeddings, got {n}")
        total, outer = getattr(self, f"{side}_sum").cpu().numpy(), getattr(self, f"{side}_outer").cpu().numpy()
        mu = total / n
        sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
        return GaussianStats(mu, sigma, n)

    def real_stats(self) -> GaussianStats:
        return self.reference if self.reference is not None else self._stats("real")

    def compute(self) -> Tensor:
        fake, real = self._stats("fake"), self.real_stats()
        return torch.tensor(frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma), dtype=torch.float64)
