"""Shared MMDiT blocks: stream roles (full / pre_only / kv_only), per-stream RoPE, masks, kernels."""

from __future__ import annotations

import math

import pytest
import torch

from avgen.nn import JointBlock, StreamBlock, StreamInput, StreamSpec, rope_angles

DIM, HEADS = 32, 2
HEAD_DIM = DIM // HEADS


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)


def perturbed(module, seed=0, std=0.2):
    """Every parameter (zero-initialised adaLN included) gets a random offset, so every path is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return module.eval()


def four_streams(caption_role="kv_only", clip_role="full"):
    """AudioGen-Omni's layout: audio (k3), video (k3), lyrics (linear), caption (linear)."""
    return [StreamSpec("audio", kernel_size=3), StreamSpec("video", role=clip_role, kernel_size=3),
            StreamSpec("lyrics"), StreamSpec("caption", role=caption_role)]


def inputs(batch=2, lengths=(9, 4, 9, 5), seed=1, rope=(True, True, True, False)):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(batch, DIM, generator=g)
    out = []
    for length, rotate in zip(lengths, rope):
        angles = rope_angles(torch.arange(length, dtype=torch.float32) * 9 / length, HEAD_DIM) if rotate else None
        out.append(StreamInput(torch.randn(batch, length, DIM, generator=g), c, angles=angles))
    out[0].c = c[:, None] + torch.randn(batch, lengths[0], DIM, generator=g)  # frame-aligned condition
    return out


def assert_matches(got, expected, tol=1e-5):
    """Equal up to fp32 rounding, relative to the tensor's scale (perturbed weights give large activations)."""
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tol * max(1.0, expected.abs().max().item()))


def with_x(stream_inputs, index, x=None, mask=None):
    changed = list(stream_inputs)
    old = changed[index]
    changed[index] = StreamInput(old.x if x is None else x, old.c, old.angles, old.mask if mask is None else mask)
    return changed


@torch.no_grad()
def test_joint_attention_equals_attention_over_the_concatenation_computed_directly():
    block = perturbed(JointBlock(DIM, HEADS, four_streams(caption_role="full")))
    ins = inputs()
    ins[2].mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    got = block(ins)

    blocks = [block.stream_block(s.name) for s in block.streams]
    pre = [b.pre_attention(s.x, s.c, s.angles) for b, s in zip(blocks, ins)]
    q, k, v = (torch.cat([qkv[i] for qkv, _ in pre], dim=2) for i in range(3))
    keep = torch.cat([s.mask if s.mask is not None else torch.ones(2, s.x.shape[1], dtype=torch.bool) for s in ins], 1)
    logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(HEAD_DIM)
    weights = logits.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(dim=-1)
    attended = torch.einsum("bhqk,bhkd->bhqd", weights, v).split([s.x.shape[1] for s in ins], dim=2)
    for b, s, out, (_, params), result in zip(blocks, ins, attended, pre, got):
        assert_matches(result, b.post_attention(s.x, out, params, s.mask))


@torch.no_grad()
def test_kv_only_stream_is_returned_unchanged_and_influences_others_only_through_attention():
    block = perturbed(JointBlock(DIM, HEADS, four_streams()))
    ins = inputs()
    out = block(ins)
    assert out[3] is ins[3].x  # never updated
    other = torch.randn_like(ins[3].x)
    changed = block(with_x(ins, 3, x=other))
    assert not torch.allclose(changed[0], out[0], atol=1e-4)  # its keys/values are attended
    # with all its tokens masked as keys, the others compute exactly what a block without it computes
    hidden = torch.zeros(2, 5, dtype=torch.bool)
    without = JointBlock(DIM, HEADS, four_streams()[:3])
    without.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("caption_block.")})
    reference = without(ins[:3])
    for masked in (block(with_x(ins, 3, mask=hidden)), block(with_x(ins, 3, x=other, mask=hidden))):
        for a, b in zip(masked[:3], reference):
            assert_matches(a, b)


@torch.no_grad()
def test_permuting_kv_only_tokens_without_rope_leaves_every_output_unchanged():
    block = perturbed(JointBlock(DIM, HEADS, four_streams()))
    ins = inputs()
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    out, permuted = block(ins), block(with_x(ins, 3, x=ins[3].x[:, perm]))
    for a, b in zip(out[:3], permuted[:3]):
        assert_matches(a, b)
    # permuting a linear stream WITH RoPE does change the others (its positions matter)
    perm9 = torch.randperm(9, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(block(with_x(ins, 2, x=ins[2].x[:, perm9]))[0], out[0], atol=1e-4)


@torch.no_grad()
def test_kv_only_never_forms_queries():
    block = perturbed(JointBlock(DIM, HEADS, four_streams()))
    ins = inputs()
    out = block(ins)
    assert isinstance(block.caption_block.attn.q_norm, torch.nn.Identity)
    block.caption_block.attn.qkv.weight[:DIM].normal_()  # the q rows: unused
    block.caption_block.attn.qkv.bias[:DIM].normal_()
    for a, b in zip(block(ins), out):
        torch.testing.assert_close(a, b)


@torch.no_grad()
def test_pre_only_stream_returns_no_update_and_acts_like_kv_only_on_the_others():
    pre_only = perturbed(JointBlock(DIM, HEADS, four_streams(caption_role="pre_only", clip_role="pre_only")))
    ins = inputs()
    out = pre_only(ins)
    assert out[1] is ins[1].x and out[3] is ins[3].x
    assert not hasattr(pre_only.video_block, "ffn") and pre_only.video_block.modulation.num_params == 2
    kv_only = JointBlock(DIM, HEADS, four_streams(caption_role="kv_only", clip_role="kv_only"))
    missing, unexpected = kv_only.load_state_dict(pre_only.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == ["caption_block.attn.q_norm.weight", "video_block.attn.q_norm.weight"]
    for a, b in zip(kv_only(ins), out):  # a discarded query changes nothing
        assert_matches(a, b)


@torch.no_grad()
def test_masked_tokens_do_not_leak():
    block = perturbed(JointBlock(DIM, HEADS, four_streams()))
    ins = inputs()
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    ins[0].mask = mask
    noisy = ins[0].x.clone()
    noisy[1, 6:] = 100 * torch.randn(3, DIM)
    a, b = block(ins), block(with_x(ins, 0, x=noisy))
    torch.testing.assert_close(a[0][mask], b[0][mask])  # conv stream: padded frames zeroed before the kernels
    for x, y in zip(a[1:3], b[1:3]):
        torch.testing.assert_close(x, y)


def test_every_parameter_gets_a_gradient():
    """DDP needs every parameter in the graph: kv_only has no q-norm, its unused q rows get zeros."""
    block = perturbed(JointBlock(DIM, HEADS, four_streams(clip_role="pre_only"))).train()
    sum(o.square().sum() for o in block(inputs())).backward()
    assert all(p.grad is not None for p in block.parameters())
    assert block.caption_block.attn.qkv.weight.grad[:DIM].abs().max() == 0


def test_stream_kernel_sizes_and_roles_build_the_right_layers():
    block = JointBlock(DIM, HEADS, four_streams())
    assert block.audio_block.attn_out.weight.shape == (DIM, DIM, 3)
    assert block.lyrics_block.attn_out.weight.shape == (DIM, DIM)
    assert not hasattr(block.caption_block, "attn_out") and block.caption_block.pre_only
    assert [k for k in block.state_dict() if k.startswith("caption_block.")] == [
        "caption_block.attn.qkv.weight", "caption_block.attn.qkv.bias", "caption_block.attn.k_norm.weight",
        "caption_block.modulation.adaLN_modulation.1.weight", "caption_block.modulation.adaLN_modulation.1.bias"]


def test_bad_declarations_and_calls_raise():
    with pytest.raises(ValueError, match="role"):
        StreamSpec("x", role="query_only")
    with pytest.raises(ValueError, match="unique"):
        JointBlock(DIM, HEADS, [StreamSpec("a"), StreamSpec("a")])
    with pytest.raises(ValueError, match="queried"):
        JointBlock(DIM, HEADS, [StreamSpec("a", role="kv_only")])
    block = JointBlock(DIM, HEADS, four_streams())
    with pytest.raises(ValueError, match="4 streams"):
        block(inputs()[:3])
    with pytest.raises(ValueError, match="single-stream"):
        StreamBlock(DIM, HEADS, role="pre_only")(torch.randn(1, 3, DIM), torch.randn(1, DIM))
