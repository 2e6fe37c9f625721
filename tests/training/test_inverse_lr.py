"""InverseLR (stable-audio-tools' formula, AudioGen-Omni spec §1.5 eq. 8)."""

import io

import pytest
import torch

from avgen.training.inverse_lr import InverseLR


def _sat(step, base_lr, inv_gamma, power, warmup, final_lr):
    """stable-audio-tools ``InverseLR.get_lr`` written out for one step."""
    warmup = 1 - warmup ** (step + 1)
    lr_mult = (1 + step / inv_gamma) ** -power
    return warmup * max(final_lr, base_lr * lr_mult)


def _optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=lr, weight_decay=1e-3)


@pytest.mark.parametrize("inv_gamma, power, warmup, final_lr", [(1e6, 0.5, 0.99, 0.0), (20.0, 1.0, 0.9, 2e-4)])
def test_rate_follows_the_formula_step_by_step(inv_gamma, power, warmup, final_lr):
    opt = _optimizer()
    sched = InverseLR(opt, inv_gamma=inv_gamma, power=power, warmup=warmup, final_lr=final_lr)
    for step in range(200):
        assert opt.param_groups[0]["lr"] == pytest.approx(_sat(step, 1e-3, inv_gamma, power, warmup, final_lr), rel=1e-12)
        opt.step()
        sched.step()


def test_paper_warmup_reaches_99_percent_after_about_460_steps():
    opt = _optimizer(1e-5)
    sched = InverseLR(opt, inv_gamma=1e6, power=0.5, warmup=0.99)
    lrs = []
    for _ in range(600):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    first = next(i for i, lr in enumerate(lrs) if lr >= 0.99 * 1e-5 * (1 + i / 1e6) ** -0.5)
    assert 455 <= first <= 462
    assert lrs[0] == pytest.approx(1e-7)  # (1 - 0.99) * 1e-5 at step 0


def test_state_dict_round_trips_with_weights_only():
    opt = _optimizer()
    sched = InverseLR(opt, inv_gamma=10.0, power=0.5, warmup=0.9)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = _optimizer()
    resumed = InverseLR(opt2, inv_gamma=1.0, power=1.0, warmup=0.0)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 7 and resumed.inv_gamma == 10.0
    opt.step(), sched.step(), opt2.step(), resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="warmup"):
        InverseLR(_optimizer(), warmup=1.0)
    with pytest.raises(ValueError, match="inv_gamma"):
        InverseLR(_optimizer(), inv_gamma=0.0)
