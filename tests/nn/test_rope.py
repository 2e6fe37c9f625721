"""RoPE: direct complex-number transcription, relative-position invariance, rescaling, segments, 3-D split."""


import pytest
import torch

from avgen.nn import (
    apply_rope,
    apply_rope_to_segment,
    rescaled_positions,
    rope_3d_angles,
    rope_3d_split,
    rope_angles,
)


def _rope_direct(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoFormer as complex multiplication: pair j of token at p times exp(i p theta^(-2j/d))."""
    d = x.shape[-1]
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    j = torch.arange(d // 2, dtype=torch.float64)
    phase = positions.double()[:, None] * theta ** (-2 * j / d)
    return torch.view_as_real(z * torch.polar(torch.ones_like(phase), phase)).reshape(x.shape)


def _scores(q, k, q_pos, k_pos):
    return apply_rope(q, rope_angles(q_pos, q.shape[-1])) @ apply_rope(k, rope_angles(k_pos, k.shape[-1])).transpose(-1, -2)


def test_apply_rope_matches_complex_rotation():
    x = torch.randn(2, 3, 11, 16)
    pos = torch.arange(11, dtype=torch.float32) * 1.7
    out = apply_rope(x, rope_angles(pos, 16))
    torch.testing.assert_close(out.double(), _rope_direct(x, pos), atol=1e-4, rtol=1e-4)


def test_scores_depend_only_on_relative_position():
    q, k = torch.randn(1, 2, 5, 32), torch.randn(1, 2, 7, 32)
    q_pos, k_pos = torch.arange(5.0) * 3, torch.arange(7.0) + 2
    base = _scores(q, k, q_pos, k_pos)
    shifted = _scores(q, k, q_pos + 41.0, k_pos + 41.0)
    torch.testing.assert_close(base, shifted, atol=1e-4, rtol=1e-4)
    # and they do depend on the relative offset
    assert not torch.allclose(base, _scores(q, k, q_pos + 5.0, k_pos), atol=1e-3)


def test_rescaled_positions_place_tokens_on_target_timeline():
    positions = rescaled_positions(64, 250)
    torch.testing.assert_close(positions, torch.tensor([i * 250 / 64 for i in range(64)]))
    # a clip token at rescaled position scores with a latent token exactly as if both sat at integer grid shifted
    q, k = torch.randn(1, 1, 250, 8), torch.randn(1, 1, 64, 8)
    lat_pos = torch.arange(250.0)
    scores = _scores(q, k, lat_pos, positions)
    direct = _rope_direct(q, lat_pos) @ _rope_direct(k, torch.tensor([i * 250 / 64 for i in range(64)])).transpose(-1, -2)
    torch.testing.assert_close(scores.double(), direct, atol=2e-4, rtol=1e-4)


def test_partial_rotary_dim_leaves_tail_untouched():
    x = torch.randn(1, 2, 6, 128)
    pos = torch.arange(6.0)
    out = apply_rope(x, rope_angles(pos, 44), rotary_dim=44)
    torch.testing.assert_close(out[..., 44:], x[..., 44:])
    torch.testing.assert_close(out[..., :44].double(), _rope_direct(x[..., :44], pos), atol=1e-4, rtol=1e-4)


def test_segment_rope_rotates_only_segment():
    x = torch.randn(2, 2, 10, 8)
    seg_pos = torch.arange(4.0) * 2.5
    out = apply_rope_to_segment(x, rope_angles(seg_pos, 8), 3, 7)
    torch.testing.assert_close(out[..., :3, :], x[..., :3, :])
    torch.testing.assert_close(out[..., 7:, :], x[..., 7:, :])
    torch.testing.assert_close(out[..., 3:7, :].double(), _rope_direct(x[..., 3:7, :], seg_pos), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="segment"):
        apply_rope_to_segment(x, rope_angles(seg_pos, 8), 8, 12)


def test_rope_3d_split_and_angles():
    assert rope_3d_split(128) == (44, 42, 42)  # Wan2.x head_dim 128
    t, h, w, d = 3, 2, 4, 24
    dt, dh, dw = rope_3d_split(d)
    angles = rope_3d_angles(t, h, w, d)
    assert angles.shape == (t * h * w, d // 2)
    for index, (f, r, c) in enumerate((f, r, c) for f in range(t) for r in range(h) for c in range(w)):
        expected = []
        for p, band in ((f, dt), (r, dh), (c, dw)):
            expected += [p * 10000.0 ** (-2 * j / band) for j in range(band // 2)]
        torch.testing.assert_close(angles[index], torch.tensor(expected, dtype=torch.float32))


def test_positions_at_rate_depend_on_time_not_on_clip_length():
    from avgen.nn import positions_at_rate

    # 8 fps CLIP frames on a 43.066 Hz latent timeline: frame i at i * 43.066 / 8 whatever the clip length
    short, long = positions_at_rate(8, 8.0, 43.066), positions_at_rate(80, 8.0, 43.066)
    torch.testing.assert_close(long[:8], short)
    assert long[8].item() == pytest.approx(43.066)  # one second later = 43.066 latent frames later
    # equals MMAudio's length-based rescaling only when the lengths match the rates exactly
    torch.testing.assert_close(positions_at_rate(64, 8.0, 31.25), rescaled_positions(64, 250))
    assert not torch.allclose(positions_at_rate(8, 8.0, 43.066), rescaled_positions(8, 44))
    with pytest.raises(ValueError, match="rates must be > 0"):
        positions_at_rate(4, 0.0, 1.0)


def test_rope_3d_scores_depend_only_on_relative_grid_offsets():
    """q.k between tokens at (t, h, w) grid cells is a function of the offset alone (Wan's 3-D RoPE)."""
    d, (t, h, w) = 24, (4, 3, 5)
    angles = rope_3d_angles(t, h, w, d).reshape(t, h, w, d // 2)
    q, k = torch.randn(d), torch.randn(d)

    def score(a, b):
        rq = apply_rope(q.view(1, 1, 1, d), angles[a].view(1, -1))
        rk = apply_rope(k.view(1, 1, 1, d), angles[b].view(1, -1))
        return (rq * rk).sum()

    offset = (1, 1, -2)
    pairs = [((0, 0, 2), (1, 1, 0)), ((2, 1, 4), (3, 2, 2)), ((1, 0, 3), (2, 1, 1))]
    for a, b in pairs:
        assert tuple(bb - aa for aa, bb in zip(a, b)) == offset
    scores = torch.stack([score(a, b) for a, b in pairs])
    torch.testing.assert_close(scores, scores[0].expand(3), atol=1e-5, rtol=1e-5)
    # each axis matters: moving along t, h or w alone changes the score
    for other in ((1, 0, 2), (0, 1, 2), (0, 0, 3)):
        assert not torch.allclose(score((0, 0, 2), other), score((0, 0, 2), (0, 0, 2)), atol=1e-4)
