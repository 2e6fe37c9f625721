"""Inverse-decay learning-rate schedule with exponential warm-up (stable-audio-tools ``InverseLR``).

AudioGen-Omni §4: "the InverseLR optimizer with a base learning rate of 1e-5 ... a learning rate
scheduler that incorporates exponential warm-up and decay phases" (spec §1.5 eq. 8). With s the
optimizer step (Lightning ``interval: "step"``):

    lr(s) = (1 - warmup ** (s + 1)) * max(final_lr, base_lr * (1 + s / inv_gamma) ** (-power))

stable-audio-tools' diffusion configs use inv_gamma 1e6, power 0.5, warmup 0.99 (99 % of the rate
after about 460 steps). The state dict holds only numbers and lists, so it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["InverseLR", "inverse_lr_factor"]


def inverse_lr_factor(step: int, inv_gamma: float, power: float, warmup: float) -> float:
    """Warm-up times decay at ``step`` (without the ``final_lr`` floor): a multiplier of base_lr."""
    return (1.0 - warmup ** (step + 1)) * (1.0 + step / inv_gamma) ** (-power)


class InverseLR(LRScheduler):
    """lr(s) = (1 - warmup^(s+1)) * max(final_lr, base_lr * (1 + s/inv_gamma)^(-power)).

    Args:
        optimizer: the wrapped optimizer; its initial ``lr`` of each group is base_lr.
        inv_gamma: steps over which the rate decays by (1 + 1)^(-power) (SAT 1e6).
        power: decay exponent (SAT 0.5).
        warmup: exponential warm-up factor in [0, 1) (SAT 0.99; 0 disables warm-up).
        final_lr: floor of the decayed rate (before warm-up), SAT 0.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        inv_gamma: float = 1.0,
        power: float = 1.0,
        warmup: float = 0.0,
        final_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if inv_gamma <= 0:
            raise ValueError(f"InverseLR: inv_gamma must be > 0, got {inv_gamma}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"InverseLR: warmup must be in [0, 1), got {warmup}")
        if final_lr < 0:
            raise ValueError(f"InverseLR: final_lr must be >= 0, got {final_lr}")
        self.inv_gamma, self.power = float(inv_gamma), float(power)
        self.warmup, self.final_lr = float(warmup), float(final_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        warm = 1.0 - self.warmup ** (step + 1)
        decay = (1.0 + step / self.inv_gamma) ** (-self.power)
        return [warm * max(self.final_lr, base_lr * decay) for base_lr in self.base_lrs]
