"""Speed rewrites of the shared ops compute what the plain formulas compute (issue 15).

Each optimised op (cached RoPE rotation, fused modulate / gate / residual, the 1 folded into the adaLN
bias, SiLU computed once, F.rms_norm, fp32 norm -> RoPE without a bf16 round trip, no mask when all
frames are valid) is checked against the formula transcribed here: fp32 tight, bf16 autocast loose.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from avgen.nn import AdaLNZero, RMSNorm, StreamBlock, gated_residual, modulate, modulate_unit
from avgen.nn.rope import RopeCache, RopeRotation, apply_rope, apply_rope_to_segment, rope_angles, rope_rotation

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)


def assert_matches(got, expected, tol=1e-5):
    """|got - expected| <= tol relative to the output's scale when that exceeds 1 (fp32 rounding)."""
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tol * max(1.0, expected.abs().max().item()))


def rope_formula(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """RoFormer on interleaved pairs, in fp32: (x0 cos - x1 sin, x0 sin + x1 cos)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)


def test_rope_rotation_equals_the_angle_formula_fp32_and_partial():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 16, generator=g)
    angles = rope_angles(torch.arange(7.0) * 1.7, 16)
    torch.testing.assert_close(apply_rope(x, rope_rotation(angles)), rope_formula(x, angles), rtol=0, atol=2e-6)
    torch.testing.assert_close(apply_rope(x, angles), rope_formula(x, angles), rtol=0, atol=2e-6)  # raw angles too
    # only the first 8 channels rotated (Ovi), the rest pass through untouched
    part = apply_rope(x, rope_rotation(angles[:, :4]), rotary_dim=8)
    torch.testing.assert_close(part[..., :8], rope_formula(x[..., :8], angles[:, :4]), rtol=0, atol=2e-6)
    assert torch.equal(part[..., 8:], x[..., 8:])
    seg = apply_rope_to_segment(x, rope_rotation(angles[2:5]), 2, 5)
    torch.testing.assert_close(seg[:, :, 2:5], rope_formula(x[:, :, 2:5], angles[2:5]), rtol=0, atol=2e-6)
    assert torch.equal(seg[:, :, :2], x[:, :, :2]) and torch.equal(seg[:, :, 5:], x[:, :, 5:])


def test_rope_complex_multiply_equals_the_real_form_on_head_views_and_in_backward():
    """Eager RoPE is one complex multiply; traced RoPE (and a rotation without ``turn``) the real form.

    Both must give the angle formula on the layouts attention passes: a (B, H, L, Dh) view of a fused
    projection (not contiguous), a partial rotary dim, an odd storage offset (no complex view
    possible: real form), and the same gradients.
    """
    g = torch.Generator().manual_seed(3)
    heads, length, head_dim = 3, 9, 16
    fused = torch.randn(2, length, 3 * heads * head_dim, generator=g, requires_grad=True)
    view = fused[..., heads * head_dim: 2 * heads * head_dim].unflatten(-1, (heads, head_dim)).transpose(1, 2)
    angles = rope_angles(torch.arange(float(length)) * 0.7, head_dim)
    rotation = rope_rotation(angles)
    assert rotation.turn is not None and rope_rotation(angles, torch.bfloat16).turn is None
    real_only = RopeRotation(rotation.cos, rotation.sin)  # no turn: the form torch.compile traces

    complex_out = apply_rope(view, rotation)
    real_out = apply_rope(view, real_only)
    assert_matches(complex_out, rope_formula(view, angles), tol=2e-6)
    assert_matches(complex_out, real_out, tol=2e-6)
    weights = torch.randn(complex_out.shape, generator=g)
    grad_complex, = torch.autograd.grad((complex_out * weights).sum(), fused)
    grad_real, = torch.autograd.grad((real_out * weights).sum(), fused)
    assert_matches(grad_complex, grad_real, tol=2e-6)
    assert grad_complex[..., : heads * head_dim].abs().max() == 0  # only the k block was rotated

    odd = torch.randn(2 * heads * length * head_dim + 1, generator=g)[1:].view(2, heads, length, head_dim)
    assert_matches(apply_rope(odd, rotation), rope_formula(odd, angles), tol=2e-6)
    part = apply_rope(view, rope_rotation(angles[:, :4]), rotary_dim=8)
    assert_matches(part[..., :8], rope_formula(view[..., :8], angles[:, :4]), tol=2e-6)
    assert torch.equal(part[..., 8:], view[..., 8:])


def test_rope_bf16_input_rotates_in_fp32_and_out_dtype_skips_the_round_trip():
    x = torch.randn(1, 2, 5, 8)
    angles = rope_angles(torch.arange(5.0), 8)
    out = apply_rope(x.bfloat16(), rope_rotation(angles))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, rope_formula(x.bfloat16(), angles), rtol=0, atol=0)  # both fp32 then one cast
    kept = apply_rope(x, rope_rotation(angles), out_dtype=torch.bfloat16)
    torch.testing.assert_close(kept.float(), rope_formula(x, angles), rtol=1e-2, atol=1e-2)


def test_rope_cache_returns_equal_tensors_keyed_by_positions_dtype_and_device():
    cache = RopeCache(max_entries=3)
    calls = []

    def make(length):
        def angles():
            calls.append(length)
            return rope_angles(torch.arange(float(length)), 8)
        return angles

    first = cache.get(("frames", 5), make(5), "cpu")
    again = cache.get(("frames", 5), make(5), "cpu")
    assert again is first and calls == [5]  # a hit computes nothing
    fresh = rope_rotation(rope_angles(torch.arange(5.0), 8))
    assert torch.equal(first.cos, fresh.cos) and torch.equal(first.sin, fresh.sin)
    other_length = cache.get(("frames", 6), make(6), "cpu")
    assert other_length.cos.shape[0] == 6 and calls == [5, 6]
    half = cache.get(("frames", 5), make(5), "cpu", dtype=torch.bfloat16)
    assert half.cos.dtype == torch.bfloat16 and half is not first and calls == [5, 6, 5]
    # bounded LRU: a 4th entry evicts the least recently used ("frames", 6)
    cache.get(("frames", 5), make(5), "cpu")
    cache.get(("frames", 7), make(7), "cpu")
    assert len(cache) == 3
    cache.get(("frames", 6), make(6), "cpu")
    assert calls[-1] == 6 and len(cache) == 3
    # under autocast the entry equals the one made outside it (computed with autocast off)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = RopeCache().get(("frames", 5), make(5), "cpu")
    assert auto.cos.dtype == torch.float32 and torch.equal(auto.cos, fresh.cos)
    # nothing cached on the meta device (deferred / FSDP init); an EMA deepcopy starts empty
    meta = RopeCache()
    meta.get(("frames", 5), lambda: torch.zeros(5, 4, device="meta"), "meta")
    assert len(meta) == 0 and len(copy.deepcopy(cache)) == 0


def test_fused_modulate_gate_residual_equal_the_formulas():
    g = torch.Generator().manual_seed(1)
    x, shift, scale, update, gate = (torch.randn(2, 5, 8, generator=g) for _ in range(5))
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(modulate_unit(x, shift, 1 + scale), x * (1 + scale) + shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(gated_residual(x, update, gate), x + update * gate, rtol=0, atol=1e-6)
    # dtype promotion as the formula: bf16 x with fp32 parameters gives fp32
    assert modulate(x.bfloat16(), shift, scale).dtype == (x.bfloat16() * (1 + scale) + shift).dtype


def test_adaln_unit_scales_fold_the_one_and_activated_input_skips_silu():
    g = torch.Generator().manual_seed(2)
    plain = AdaLNZero(8, num_params=6)
    folded = AdaLNZero(8, num_params=6, unit_scales=(1, 4))
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folded.load_state_dict(plain.state_dict())  # same parameters, same keys
    c = torch.randn(2, 5, 8, generator=g)
    raw, unit = plain(c), folded(c)
    for i in range(6):
        expected = raw[i] + 1 if i in (1, 4) else raw[i]
        torch.testing.assert_close(unit[i], expected, rtol=0, atol=1e-6)
    for a, b in zip(folded(F.silu(c), activated=True), unit):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unit_scales"):
        AdaLNZero(8, num_params=2, unit_scales=(2,))


@pytest.mark.parametrize("eps", [1e-6, None])
def test_rms_norm_equals_the_formula_and_keeps_fp32_for_rope(eps):
    norm = RMSNorm(16, eps)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(16))
    x = torch.randn(3, 4, 16)
    e = torch.finfo(torch.float32).eps if eps is None else eps
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6)
    half = norm(x.bfloat16())
    assert half.dtype == torch.bfloat16
    kept = norm(x.bfloat16(), keep_compute_dtype=True)
    assert kept.dtype == torch.float32 and torch.equal(kept.bfloat16(), half)


# ----------------------------------------------------------------------------- a whole stream block
def block_reference(block: StreamBlock, x, c, angles, mask=None):
    """StreamBlock as the unfused formulas (MMAudio's MMDitSingleBlock): no fold, no fused ops, masks applied."""
    sd = block.state_dict()
    heads = block.attn.num_heads

    def conv(p, h):
        if mask is not None:
            h = h * mask[..., None].to(h.dtype)
        return F.conv1d(h.transpose(1, 2), sd[f"{p}.weight"], sd.get(f"{p}.bias"), padding=1).transpose(1, 2)

    def rms(h, w):
        hf = h.float()
        return (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps) * w).to(h.dtype)

    mod = F.linear(F.silu(c), sd["modulation.adaLN_modulation.1.weight"], sd["modulation.adaLN_modulation.1.bias"])
    shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
    ln = lambda h: F.layer_norm(h, h.shape[-1:])  # noqa: E731
    q, k, v = rearrange(F.linear(ln(x) * (1 + scale1) + shift1, sd["attn.qkv.weight"], sd["attn.qkv.bias"]),
                        "b l (n h d) -> n b h l d", n=3, h=heads)
    q, k = rms(q, sd["attn.q_norm.weight"]), rms(k, sd["attn.k_norm.weight"])
    q, k = rope_formula(q, angles), rope_formula(k, angles)
    attn_mask = None if mask is None else mask[:, None, None, :]
    out = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), "b h l d -> b l (h d)")
    x = x + conv("attn_out", out) * gate1
    h = ln(x) * (1 + scale2) + shift2
    hidden = F.silu(conv("ffn.w1", h)) * conv("ffn.w3", h)
    return x + conv("ffn.w2", hidden) * gate2


@pytest.fixture(scope="module")
def stream_block():
    torch.manual_seed(3)
    block = StreamBlock(32, 2, kernel_size=3)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p))
    return block.eval()


@torch.no_grad()
def test_stream_block_equals_the_unfused_formulas_fp32_and_bf16(stream_block):
    g = torch.Generator().manual_seed(4)
    x, c = torch.randn(2, 9, 32, generator=g), torch.randn(2, 9, 32, generator=g)
    angles = rope_angles(torch.arange(9.0), 16)
    expected = block_reference(stream_block, x, c, angles)
    assert_matches(stream_block(x, c, rope_rotation(angles)), expected)
    assert_matches(stream_block(x, F.silu(c), rope_rotation(angles), c_activated=True), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = stream_block(x, c, rope_rotation(angles)).float()
        ref = block_reference(stream_block, x, c, angles).float()
    scale = expected.abs().max()
    assert (got - ref).abs().max() <= 3e-2 * scale, (got - ref).abs().max()  # bf16 rounding, both paths
    assert (got - expected).abs().max() <= 5e-2 * scale


@torch.no_grad()
def test_no_mask_equals_all_valid_mask_and_masks_still_matter(stream_block):
    g = torch.Generator().manual_seed(5)
    x, c = torch.randn(2, 9, 32, generator=g), torch.randn(2, 1, 32, generator=g)
    rotation = rope_rotation(rope_angles(torch.arange(9.0), 16))
    all_valid = torch.ones(2, 9, dtype=torch.bool)
    assert_matches(stream_block(x, c, rotation, None), stream_block(x, c, rotation, all_valid), tol=2e-6)
    padded = all_valid.clone()
    padded[1, 6:] = False
    got = stream_block(x, c, rotation, padded)
    expected = block_reference(stream_block, x, c, rope_angles(torch.arange(9.0), 16), padded)
    assert_matches(got[1, :6], expected[1, :6])
    assert not torch.allclose(got[1, :6], stream_block(x, c, rotation, None)[1, :6])  # the mask mattered
