"""fastest_adam: the fused Adam(W) kernel gives torch's default (per-parameter loop) update within fp32 rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avgen.training import fastest_adam


def _params(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(shape, generator=g)) for shape in ((64, 32), (32,), (3, 16, 5))]


@pytest.mark.parametrize("cls, kwargs", [(torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=1e-2)),
                                         (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-3))])
def test_fused_adam_steps_equal_the_default_implementation(cls, kwargs):
    plain_params, fused_params = _params(), _params()
    plain = cls(plain_params, **kwargs)
    fused = fastest_adam(cls(fused_params, **kwargs))
    assert type(fused) is cls and all(g["fused"] for g in fused.param_groups)
    assert all(g["fused"] is None for g in plain.param_groups)
    assert fused.param_groups[0]["lr"] == kwargs["lr"] and fused.param_groups[0]["weight_decay"] == kwargs["weight_decay"]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(plain_params, fused_params):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        plain.step()
        fused.step()
    for a, b, start in zip(plain_params, fused_params, _params()):
        assert (a - start).abs().max() > 1e-2  # the parameters moved
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_a_chosen_implementation_or_another_optimizer_is_kept():
    for optimizer in (torch.optim.AdamW(_params(), foreach=True), torch.optim.AdamW(_params(), fused=False),
                      torch.optim.SGD(_params(), lr=0.1)):
        assert fastest_adam(optimizer) is optimizer
