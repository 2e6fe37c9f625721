"""Attention against a direct softmax(QK^T / sqrt d) V transcription, masks, joint attention."""

import math

import pytest
import torch

from avgen.nn import CrossAttention, RMSNorm, SelfAttention, joint_attention, rope_angles, scaled_dot_product_attention


def _direct_attention(q, k, v, mask=None):
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[:, None, None, :]
        else:
            mask = mask[:, None]
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v.double()).float()


def test_sdpa_matches_direct_with_key_padding_mask():
    q, k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0, 1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), _direct_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), _direct_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_sdpa_matches_direct_with_per_query_mask():
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.rand(2, 4, 6) > 0.4
    mask[..., 0] = True
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), _direct_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_give_zeros_not_nan():
    q = torch.randn(2, 2, 3, 8, requires_grad=True)
    k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.tensor([[0] * 5, [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1:], _direct_attention(q[1:], k[1:], v[1:], mask[1:]), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0]))  # a sample with no keys passes no gradient


def test_joint_attention_equals_attention_over_concatenation():
    streams = [tuple(torch.randn(2, 2, n, 8) for _ in range(3)) for n in (5, 3, 4)]
    masks = [torch.tensor([[1, 1, 1, 0, 0], [1] * 5], dtype=torch.bool), None, torch.tensor([[1, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)]
    outs = joint_attention(streams, masks)
    q, k, v = (torch.cat([s[i] for s in streams], dim=2) for i in range(3))
    full_mask = torch.cat([masks[0], torch.ones(2, 3, dtype=torch.bool), masks[2]], dim=1)
    expected = _direct_attention(q, k, v, full_mask).split([5, 3, 4], dim=2)
    for out, exp in zip(outs, expected):
        torch.testing.assert_close(out, exp, atol=1e-5, rtol=1e-5)


def test_joint_attention_stream_without_queries_gives_keys_only():
    """q = None (a key/value-only stream): the others' outputs are those of the full call, its own is None."""
    g = torch.Generator().manual_seed(5)
    streams = [tuple(torch.randn(2, 2, n, 8, generator=g) for _ in range(3)) for n in (5, 3, 4)]
    masks = [None, torch.tensor([[True, True, False], [True, True, True]]), None]
    full = joint_attention(streams, masks)
    kv_only = joint_attention([streams[0], (None, *streams[1][1:]), streams[2]], masks)
    assert kv_only[1] is None
    torch.testing.assert_close(kv_only[0], full[0])
    torch.testing.assert_close(kv_only[2], full[2])


def test_rmsnorm_formula():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(3, 4, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_default_eps_matches_torch_rmsnorm(dtype):
    """eps=None computes what torch.nn.RMSNorm(eps=None) (MMAudio's QK-norm) computes, in fp32 and bf16."""
    ours, theirs = RMSNorm(8, eps=None), torch.nn.RMSNorm(8)
    with torch.no_grad():
        ours.weight.copy_(1 + 0.2 * torch.randn(8))
        theirs.weight.copy_(ours.weight)
    x = (1e-3 * torch.randn(3, 4, 8)).to(dtype)  # mean square ~1e-6: tiny activations, where eps matters
    eps = torch.finfo(torch.float32).eps  # torch takes the upcast (fp32) type's epsilon for bf16 too
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps) * ours.weight
    torch.testing.assert_close(ours(x), expected.to(dtype))
    torch.testing.assert_close(ours(x), theirs.to(dtype)(x))
    assert not torch.allclose(RMSNorm(8, eps=1e-6)(x).float(), expected, rtol=2e-2, atol=0)  # the test can fail


def test_self_attention_ignores_masked_tokens():
    attn = SelfAttention(16, 2)
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    angles = rope_angles(torch.arange(6.0), 8)
    out = attn(x, angles, mask)
    x2 = x.clone()
    x2[1, 4:] = 100 * torch.randn(2, 16)
    out2 = attn(x2, angles, mask)
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    torch.testing.assert_close(out[0], out2[0])


def test_cross_attention_segment_rope_matches_direct_and_mask_respected():
    attn = CrossAttention(16, 12, 2)
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 9, 12)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :2] = False  # e.g. padding of a caption
    q_pos, k_pos = torch.arange(5.0), torch.arange(4.0) * 1.25
    out = attn(x, context, context_mask=mask, query_angles=rope_angles(q_pos, 8),
               key_angles=rope_angles(k_pos, 8), key_rope_range=(5, 9))

    # direct: project, per-head RMS-norm, rotate queries and keys 5..8 only (OmniSonic Eq. 7)
    def heads(t):
        return t.reshape(2, -1, 2, 8).transpose(1, 2)

    def rms(t, w):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def rotate(t, pos):
        pairs = t.reshape(*t.shape[:-1], 4, 2)
        ang = pos[:, None] * 10000.0 ** (-torch.arange(4) * 2 / 8)
        c, s = ang.cos(), ang.sin()
        return torch.stack((pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 0] * s + pairs[..., 1] * c), -1).flatten(-2)

    q = rotate(rms(heads(x @ attn.q.weight.T + attn.q.bias), attn.q_norm.weight), q_pos)
    kv = context @ attn.kv.weight.T + attn.kv.bias
    k = rms(heads(kv[..., :16]), attn.k_norm.weight)
    v = heads(kv[..., 16:])
    k = torch.cat((k[:, :, :5], rotate(k[:, :, 5:], k_pos)), dim=2)
    o = _direct_attention(q, k, v, mask).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(out, attn.proj(o), atol=1e-5, rtol=1e-5)

    ctx2 = context.clone()
    ctx2[1, :2] = 50 * torch.randn(2, 12)
    out2 = attn(x, ctx2, context_mask=mask, query_angles=rope_angles(q_pos, 8),
                key_angles=rope_angles(k_pos, 8), key_rope_range=(5, 9))
    torch.testing.assert_close(out, out2)
