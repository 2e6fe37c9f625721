"""An exponential moving average of a network's parameters, kept next to the network it averages."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMANetwork"]


class EMANetwork(nn.Module):
    """Exponential moving average of a network's parameters (buffers are copied).

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so short runs
    are not dominated by the random initialisation.
    """

    def __init__(self, network: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(network)
        self.module.requires_grad_(False)
        self.module.eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates.item())
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in network.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("EMA network and network have different parameter lists")
        # lerp(ema, p, 1 - decay) = decay * ema + (1 - decay) * p
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params)], 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), network.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def train(self, mode: bool = True) -> "EMANetwork":
        # The average is only ever evaluated, never trained.
        return super().train(False)
