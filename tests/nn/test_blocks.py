"""Embeddings, MLPs and ConvNeXt-V2 against direct formulas; padding never changes valid frames."""

import math

import torch
import torch.nn.functional as F

from avgen.nn import (
    GRN,
    ConvMLP,
    ConvNeXtV2Block,
    ConvPositionEmbedding,
    NumberEmbedding,
    PerSecondEmbedding,
    SwiGLU,
    TimestepEmbedding,
    mmaudio_hidden_dim,
    sinusoidal_embedding,
)


def _lengths_mask(lengths, total):
    return torch.arange(total)[None] < torch.tensor(lengths)[:, None]


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def test_sinusoidal_matches_mmaudio_and_f5_formulas():
    t = torch.rand(5)
    # MMAudio v1: freqs 1 / 10000^(2i/256), [cos, sin]
    freqs = 1.0 / 10000 ** (torch.arange(0, 256, 2) / 256)
    args = t[:, None] * freqs
    torch.testing.assert_close(sinusoidal_embedding(t, 256), torch.cat([args.cos(), args.sin()], -1))
    # F5-TTS: scale 1000, exp(-log(1e4) i / (half - 1)), [sin, cos]
    f5 = torch.exp(torch.arange(128) * -(math.log(10000) / 127))
    args = 1000 * t[:, None] * f5
    out = sinusoidal_embedding(t, 256, scale=1000.0, order="sin_cos", frequency_shift=1)
    torch.testing.assert_close(out, torch.cat([args.sin(), args.cos()], -1), atol=1e-4, rtol=1e-5)


def test_timestep_embedding_scale_option():
    emb = TimestepEmbedding(8, frequency_dim=16, scale=1000.0)
    t = torch.rand(3)
    expected = emb.mlp(sinusoidal_embedding(t * 1000, 16))
    torch.testing.assert_close(emb(t), expected)


def test_number_and_per_second_embeddings():
    num = NumberEmbedding(4, min_value=0.0, max_value=10.0, frequency_dim=6)
    x = torch.tensor([-1.0, 2.5, 20.0])
    xn = torch.tensor([0.0, 0.25, 1.0])[:, None]
    feats = torch.cat([xn, torch.sin(2 * math.pi * xn * num.weights), torch.cos(2 * math.pi * xn * num.weights)], -1)
    torch.testing.assert_close(num(x), num.proj(feats))
    per = PerSecondEmbedding(3, max_seconds=10)
    out = per(torch.tensor([1.9, 0.2]), torch.tensor([12.0, 8.5]))
    torch.testing.assert_close(out[0], torch.cat([per.start.weight[1], per.duration.weight[10]]))
    torch.testing.assert_close(out[1], torch.cat([per.start.weight[0], per.duration.weight[8]]))


def test_mmaudio_hidden_dim():
    assert mmaudio_hidden_dim(448) == 1280 and mmaudio_hidden_dim(896) == 2560


def test_swiglu_formula_and_convmlp_kernel1_equivalence():
    mlp = SwiGLU(6, 10)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(mlp(x), mlp.w2(F.silu(mlp.w1(x)) * mlp.w3(x)))
    conv = ConvMLP(6, 10, kernel_size=1)
    with torch.no_grad():
        for name in ("w1", "w2", "w3"):
            getattr(conv, name).weight.copy_(getattr(mlp, name).weight[..., None])
    torch.testing.assert_close(conv(x), mlp(x), atol=1e-5, rtol=1e-5)


def _check_padding_invariance(module, dim, lengths=(9, 5), total=9):
    x = torch.randn(len(lengths), total, dim)
    mask = _lengths_mask(lengths, total)
    out = module(x, mask)
    garbage = x.clone()
    garbage[~mask] = 30 * torch.randn(int((~mask).sum()), dim)
    torch.testing.assert_close(module(garbage, mask)[mask], out[mask], atol=1e-5, rtol=1e-5)
    # padded sample == the same sample alone, unpadded
    n = lengths[1]
    alone = module(x[1:, :n], None)
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-5)
    return out, mask


def test_convmlp_padding_invariance():
    _check_padding_invariance(ConvMLP(6, 12, kernel_size=7), 6)


def test_conv_position_embedding_padding_invariance():
    out, mask = _check_padding_invariance(_randomise(ConvPositionEmbedding(16, kernel_size=5, groups=4)), 16)
    assert torch.count_nonzero(out[~mask]) == 0


def test_grn_matches_direct_formula_and_masks():
    grn = _randomise(GRN(6))
    x = torch.randn(2, 7, 6)
    gx = torch.sqrt((x**2).sum(dim=1, keepdim=True))
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(grn(x), grn.gamma * (x * nx) + grn.beta + x)
    mask = _lengths_mask([7, 4], 7)
    alone = grn(x[1:, :4])
    torch.testing.assert_close(grn(x, mask)[1, :4], alone[0])


def test_convnext_block_padding_invariance():
    out, mask = _check_padding_invariance(_randomise(ConvNeXtV2Block(8, 16, kernel_size=7)), 8)
    assert torch.count_nonzero(out[~mask]) == 0
