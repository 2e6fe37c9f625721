"""Timestep grids, Euler integration of a known ODE, and batched guidance against direct forwards."""

import dataclasses

import pytest
import torch

from avgen.flow import (
    ClassifierFreeGuidance,
    MultiConditionGuidance,
    NoGuidance,
    concat_conditions,
    euler_sample,
    guided_velocity_fn,
    sampling_times,
)


def test_sampling_times_shift_one_is_linspace():
    torch.testing.assert_close(sampling_times(25), torch.linspace(0, 1, 26))


def test_sampling_times_shift_five_is_wan_grid():
    times = sampling_times(40, shift=5.0)
    sigmas = [1 - i / 40 for i in range(41)]  # Wan: sigma from 1 (noise) to 0 (data)
    expected = torch.tensor([1 - 5 * s / (1 + 4 * s) for s in sigmas])
    torch.testing.assert_close(times, expected)
    assert times[0] == 0 and times[-1] == 1 and (times.diff() > 0).all()
    assert times[1] < 1 / 40  # the shift spends more steps near the noise end


def test_euler_integrates_linear_ode():
    a = torch.tensor([[-1.3], [0.7]])
    x0 = torch.randn(2, 3)
    times = sampling_times(200)
    out = euler_sample(lambda x, t: a * x, x0, times)
    # explicit Euler on dx/dt = a x is exactly prod(1 + a dt); and close to exp(a)
    torch.testing.assert_close(out, x0 * (1 + a / 200) ** 200, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, x0 * torch.exp(a), atol=1e-2, rtol=1e-2)
    # the straight flow-matching path is integrated exactly in one step
    x1 = torch.randn(2, 3)
    one = euler_sample(lambda x, t: x1 - x0, x0, sampling_times(1))
    torch.testing.assert_close(one, x1)
    seen = []
    euler_sample(lambda x, t: seen.append(t.clone()) or torch.zeros_like(x), x0, sampling_times(4, 3.0))
    torch.testing.assert_close(torch.stack(seen)[:, 0], sampling_times(4, 3.0)[:-1])


@dataclasses.dataclass
class ToyConditions:
    tokens: torch.Tensor
    pooled: torch.Tensor
    extra: torch.Tensor | None = None


def _toy_predict(calls):
    weight = torch.randn(3, 3)

    def predict(x, t, cond, mask=None):
        calls.append(x.shape[0])
        v = torch.tanh(x @ weight) * t[:, None, None] + cond.tokens.mean(1, keepdim=True) + cond.pooled[:, None]
        return v if mask is None else v * mask[..., None]

    return predict


def _branch(seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    return ToyConditions(torch.randn(batch, 4, 3, generator=g), torch.randn(batch, 3, generator=g))


def test_cfg_scale_one_equals_conditional_and_batched_equals_separate():
    calls = []
    predict = _toy_predict(calls)
    cond, uncond = _branch(1), _branch(2)
    x, t = torch.randn(2, 5, 3), torch.rand(2)
    v_c, v_u = predict(x, t, cond), predict(x, t, uncond)
    calls.clear()
    fn = guided_velocity_fn(predict, concat_conditions([cond, uncond]), ClassifierFreeGuidance(1.0))
    torch.testing.assert_close(fn(x, t), v_c)
    fn = guided_velocity_fn(predict, concat_conditions([cond, uncond]), ClassifierFreeGuidance(4.5))
    torch.testing.assert_close(fn(x, t), 4.5 * v_c + (1 - 4.5) * v_u)  # MMAudio's form
    assert calls == [4, 4]  # one batched forward per call


def test_guided_velocity_repeats_tensor_kwargs():
    calls = []
    predict = _toy_predict(calls)
    cond, uncond = _branch(1), _branch(2)
    x, t = torch.randn(2, 5, 3), torch.rand(2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5], dtype=torch.bool)
    fn = guided_velocity_fn(predict, concat_conditions([cond, uncond]), ClassifierFreeGuidance(3.0), mask=mask)
    expected = predict(x, t, uncond, mask) + 3.0 * (predict(x, t, cond, mask) - predict(x, t, uncond, mask))
    torch.testing.assert_close(fn(x, t), expected)
    single = guided_velocity_fn(predict, cond, NoGuidance(), mask=mask)
    torch.testing.assert_close(single(x, t), predict(x, t, cond, mask))


def test_multi_condition_guidance_matches_omnisonic_formula():
    calls = []
    predict = _toy_predict(calls)
    branches = [_branch(s) for s in range(5)]  # all, c1 only, c2 only, c3 only, none
    scales = [2.0, 3.5, 1.5]
    guidance = MultiConditionGuidance(scales)
    assert guidance.num_branches == 5
    x, t = torch.randn(2, 5, 3), torch.rand(2)
    fn = guided_velocity_fn(predict, concat_conditions(branches), guidance)
    v = [predict(x, t, b) for b in branches]
    expected = v[0] + scales[0] * (v[1] - v[4]) + scales[1] * (v[2] - v[4]) + scales[2] * (v[3] - v[4])
    calls.clear()
    torch.testing.assert_close(fn(x, t), expected, atol=1e-5, rtol=1e-5)
    assert calls == [10]
    with pytest.raises(ValueError, match="expects 5 branches"):
        guidance.combine(v[:4])


def test_concat_conditions_keeps_none_and_rejects_mixed():
    a, b = _branch(1), _branch(2)
    joined = concat_conditions([a, b])
    assert joined.extra is None
    torch.testing.assert_close(joined.tokens, torch.cat([a.tokens, b.tokens]))
    with pytest.raises(ValueError, match="extra"):
        concat_conditions([a, dataclasses.replace(b, extra=torch.zeros(2))])
    torch.testing.assert_close(concat_conditions([a.pooled, b.pooled]), torch.cat([a.pooled, b.pooled]))


def test_multi_condition_guidance_with_per_sample_scales_matches_eq9_per_sample():
    from avgen.flow import MultiConditionGuidance

    torch.manual_seed(0)
    velocities = [torch.randn(3, 4, 2) for _ in range(5)]  # [all, c1, c2, c3, none] for 3 samples
    scales = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0], [2.0, 2.0, 2.0]])
    out = MultiConditionGuidance(scales).combine(velocities)
    for b in range(3):
        v_all, v_none = velocities[0][b], velocities[4][b]
        expected = v_all + sum(float(scales[b, i]) * (velocities[1 + i][b] - v_none) for i in range(3))
        torch.testing.assert_close(out[b], expected)
    with pytest.raises(ValueError, match="per-sample scales"):
        MultiConditionGuidance(scales[:2]).combine(velocities)
