"""Probability path, time samplers, masked loss (FoleyGenEx Eq. 3-4) and span masks."""

import torch

from avgen.flow import (
    TimeSampler,
    flow_matching_loss,
    frame_losses,
    interpolate,
    shift_sigma,
    span_mask,
    target_velocity,
)


def test_interpolate_endpoints_and_velocity_is_derivative():
    x0, x1 = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(3)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(3)), x1)
    t, h = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64), 1e-6
    x0, x1 = x0.double(), x1.double()
    derivative = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t)) / h
    torch.testing.assert_close(derivative, target_velocity(x0, x1), atol=1e-6, rtol=1e-6)
    # per-sample t
    torch.testing.assert_close(interpolate(x0, x1, t)[1], 0.5 * x0[1] + 0.5 * x1[1])


def test_time_sampler_distributions():
    gen = torch.Generator().manual_seed(0)
    t = TimeSampler("logit_normal", mean=0.5, std=0.8)(20000, generator=gen)
    assert ((t > 0) & (t < 1)).all()
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 0.5) < 0.03 and abs(logit.std().item() - 0.8) < 0.03
    u = TimeSampler("uniform")(20000, generator=gen)
    assert abs(u.mean().item() - 0.5) < 0.01
    shifted = TimeSampler("shifted", shift=3.0)(20000, generator=gen)
    # t = 1 - sigma'(sigma) with sigma uniform: P(t < 1 - sigma'(0.5)) = 0.5
    median_expected = 1 - shift_sigma(0.5, 3.0)
    assert abs(shifted.median().item() - median_expected) < 0.02
    again = TimeSampler("logit_normal", mean=0.5, std=0.8)(5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, TimeSampler("logit_normal", mean=0.5, std=0.8)(5, generator=torch.Generator().manual_seed(1)))


def test_frame_losses_and_masked_loss_match_direct_transcription():
    pred, target = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    mask = torch.rand(3, 6) > 0.5
    mask[0, 0] = True
    frame = frame_losses(pred, target)
    for b in range(3):
        for t in range(6):
            assert abs(frame[b, t].item() - sum((pred[b, t, f] - target[b, t, f]).item() ** 2 for f in range(4)) / 4) < 1e-5
    n = int(mask.sum())
    direct = sum(frame[b, t].item() for b in range(3) for t in range(6) if mask[b, t]) / n
    assert abs(flow_matching_loss(pred, target, mask).item() - direct) < 1e-5
    torch.testing.assert_close(flow_matching_loss(pred, target), ((pred - target) ** 2).mean())


def test_masked_loss_ignores_unmasked_frames():
    pred, target = torch.randn(2, 8, 3), torch.randn(2, 8, 3)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 6:] = True
    loss = flow_matching_loss(pred, target, mask)
    changed = pred.clone()
    changed[~mask] += 100
    torch.testing.assert_close(flow_matching_loss(changed, target, mask), loss)
    changed[0, 3] += 1
    assert flow_matching_loss(changed, target, mask) != loss
    empty = torch.zeros(2, 8, dtype=torch.bool)
    assert flow_matching_loss(pred.requires_grad_(), target, empty).item() == 0.0


def test_span_mask_is_contiguous_inside_valid_frames():
    lengths = torch.tensor([100, 37, 250, 8, 1])
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        mask = span_mask(lengths, 0.7, 1.0, generator=gen, max_length=260)
        assert mask.shape == (5, 260)
        for b, length in enumerate(lengths.tolist()):
            idx = mask[b].nonzero().flatten()
            count = idx.numel()
            assert int(0.7 * length) <= count <= length
            if count:
                assert idx[-1] - idx[0] + 1 == count  # contiguous
                assert idx[-1] < length  # inside valid frames
    with torch.no_grad():
        a = span_mask(lengths, generator=torch.Generator().manual_seed(9))
        b = span_mask(lengths, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and a.shape == (5, 250)
