"""Synchformer-style sync encoder: token counts, window independence, attention against a direct
transcription of divided space-time attention, and loading checkpoints in the official naming."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from avgen.conditioning import SyncEncoder, tiny_sync_kwargs
from avgen.conditioning.sync import DividedAttention


@pytest.fixture(scope="module")
def enc() -> SyncEncoder:
    return SyncEncoder(**tiny_sync_kwargs())


@pytest.mark.parametrize("num_frames", [16, 17, 23, 24, 31, 40, 57])
def test_token_count_formula(enc, num_frames):
    expected = ((num_frames - 16) // 8 + 1) * 8
    assert enc.num_tokens(num_frames) == expected
    out = enc(torch.rand(1, num_frames, 3, 32, 32))
    assert out.shape == (1, expected, 32)
    assert torch.isfinite(out).all()


def test_paper_token_count_and_too_short_video(enc):
    with torch.device("meta"):
        real = SyncEncoder()
    assert real.num_tokens(25 * 8) == 192  # MMAudio's 8 s clip
    with pytest.raises(ValueError, match="at least 16 frames"):
        enc(torch.rand(1, 15, 3, 32, 32))


def test_windows_are_independent(enc):
    # 40 frames -> windows [0,16) [8,24) [16,32) [24,40), 8 tokens each.
    frames = torch.rand(1, 40, 3, 32, 32)
    base = enc(frames)

    def changed_windows(frame_indices):
        other = frames.clone()
        other[:, frame_indices] = torch.rand_like(other[:, frame_indices])
        diff = (enc(other) - base).abs().amax(dim=-1)[0].view(4, 8).amax(dim=-1)
        return [w for w in range(4) if diff[w] > 1e-6]

    assert changed_windows([34, 39]) == [3]
    assert changed_windows([20]) == [1, 2]
    assert changed_windows([2]) == [0]
    # and the batch does not leak either
    pair = enc(torch.cat([frames, torch.rand_like(frames)]))
    torch.testing.assert_close(pair[:1], base, rtol=1e-5, atol=1e-6)


def test_resizes_short_side_and_centre_crops(enc):
    frames = torch.rand(1, 16, 3, 32, 32)
    # Pad the frames left/right with noise: resize is a no-op (short side already 32) and the
    # centre crop must remove exactly the padding.
    padded = torch.cat([torch.rand(1, 16, 3, 32, 6), frames, torch.rand(1, 16, 3, 32, 6)], dim=-1)
    torch.testing.assert_close(enc(padded), enc(frames))


def reference_divided_attention(x, attn: DividedAttention, axis: str, num_times: int, num_patches: int):
    """Direct transcription of divided attention with explicit softmax, one query token at a time.

    Token layout [CLS, (t p)]: CLS attends to all tokens; the patch at (t, p) attends to CLS and the
    patches with the same p (axis="time") or the same t (axis="space")."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (z.view(b, n, h, d // h).transpose(1, 2) for z in (q, k, v))  # (b, h, n, dh)
    scale = (d // h) ** -0.5
    out = torch.zeros_like(q)
    for i in range(n):
        if i == 0:
            keys = list(range(n))
        else:
            t, p = divmod(i - 1, num_patches)
            same = [1 + tt * num_patches + p for tt in range(num_times)] if axis == "time" else \
                   [1 + t * num_patches + pp for pp in range(num_patches)]
            keys = [0] + same
        logits = torch.einsum("bhd,bhkd->bhk", q[:, :, i], k[:, :, keys]) * scale
        out[:, :, i] = torch.einsum("bhk,bhkd->bhd", logits.softmax(dim=-1), v[:, :, keys])
    return attn.proj(out.transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("axis", ["time", "space"])
def test_divided_attention_matches_direct_transcription(axis):
    torch.manual_seed(1)
    attn = DividedAttention(dim=8, num_heads=2)
    num_times, num_patches = 3, 4
    x = torch.randn(2, 1 + num_times * num_patches, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            attn(x, axis, num_times, num_patches),
            reference_divided_attention(x, attn, axis, num_times, num_patches),
            rtol=1e-5, atol=1e-5,
        )


# ---- checkpoints in the official naming ------------------------------------------------------

# nn.TransformerEncoderLayer parameter names of Synchformer's spatial aggregation layer, written
# from torch's module definition: which of our timm Block parameters each corresponds to.
TORCH_LAYER_NAMES = {
    "block.attn.qkv.weight": "self_attn.in_proj_weight",
    "block.attn.qkv.bias": "self_attn.in_proj_bias",
    "block.attn.proj.weight": "self_attn.out_proj.weight",
    "block.attn.proj.bias": "self_attn.out_proj.bias",
    "block.mlp.fc1.weight": "linear1.weight",
    "block.mlp.fc1.bias": "linear1.bias",
    "block.mlp.fc2.weight": "linear2.weight",
    "block.mlp.fc2.bias": "linear2.bias",
    "block.norm1.weight": "norm1.weight",
    "block.norm1.bias": "norm1.bias",
    "block.norm2.weight": "norm2.weight",
    "block.norm2.bias": "norm2.bias",
    "cls_token": "cls_token",
}


def official_state_dict(encoder: SyncEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights as a full Synchformer checkpoint names them."""
    sd = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("spatial_attn_agg."):
            key = "spatial_attn_agg." + TORCH_LAYER_NAMES[key.removeprefix("spatial_attn_agg.")]
        sd["vfeat_extractor." + key] = value.clone()
    d = encoder.embed_dim
    # entries the official checkpoint also carries: the unused 2-D patch embedding and the audio branch
    sd["vfeat_extractor.patch_embed.proj.weight"] = torch.randn(d, 3, 8, 8)
    sd["vfeat_extractor.patch_embed.proj.bias"] = torch.randn(d)
    sd["afeat_extractor.patch_embed.proj.weight"] = torch.randn(d, 1, 16, 16)
    sd["transformer.logit_scale"] = torch.zeros(())
    return sd


def test_official_spatial_aggregator_is_torch_transformer_layer():
    """Our timm-Block aggregator loaded from official names equals nn.TransformerEncoderLayer(+CLS)."""
    src = SyncEncoder(**tiny_sync_kwargs(), init_seed=3)
    d = src.embed_dim
    layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=4 * d, dropout=0.0, activation=nn.GELU(),
                                       layer_norm_eps=1e-6, batch_first=True, norm_first=True).eval()
    official = official_state_dict(src)
    prefix = "vfeat_extractor.spatial_attn_agg."
    layer.load_state_dict({k[len(prefix):]: v for k, v in official.items()
                           if k.startswith(prefix) and k != prefix + "cls_token"})
    cls = official[prefix + "cls_token"]
    x = torch.randn(5, 16, d)
    expected = layer(torch.cat([cls.expand(5, -1, -1), x], dim=1))[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(src.spatial_attn_agg(x), expected, rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip_in_official_naming(tmp_path):
    src = SyncEncoder(**tiny_sync_kwargs(), init_seed=7)
    path = tmp_path / "synchformer.pt"
    torch.save({"state_dict": official_state_dict(src)}, path)
    loaded = SyncEncoder(**tiny_sync_kwargs(), pretrained=str(path))  # init_seed 0: differs before loading
    frames = torch.rand(1, 24, 3, 32, 32)
    assert not torch.allclose(SyncEncoder(**tiny_sync_kwargs())(frames), src(frames))
    torch.testing.assert_close(loaded(frames), src(frames), rtol=0, atol=0)
    report = loaded.load_synchformer_checkpoint(str(path))
    assert report.ok and "patch_embed.proj.weight" in report.ignored
    assert len(report.loaded) == len(src.state_dict())


def test_checkpoint_unmatched_keys_are_reported(tmp_path):
    src = SyncEncoder(**tiny_sync_kwargs(), init_seed=7)
    sd = official_state_dict(src)
    sd["vfeat_extractor.blocks.0.bogus.weight"] = torch.zeros(3)
    del sd["vfeat_extractor.blocks.1.timeattn.qkv.bias"]
    sd["vfeat_extractor.temp_embed"] = torch.zeros(1, 4, src.embed_dim)  # wrong window length
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        SyncEncoder(**tiny_sync_kwargs(), pretrained=str(path))
    message = str(err.value)
    for needle in ("bad.pt", "blocks.0.bogus.weight", "blocks.1.timeattn.qkv.bias", "temp_embed"):
        assert needle in message
    enc = SyncEncoder(**tiny_sync_kwargs())
    report = enc.load_synchformer_checkpoint(str(path), strict=False)
    assert report.unexpected == ["blocks.0.bogus.weight"]
    assert report.missing == ["blocks.1.timeattn.qkv.bias"]
    assert len(report.mismatched) == 1 and report.mismatched[0].startswith("temp_embed")
    # everything that did match was loaded
    torch.testing.assert_close(enc.blocks[1].timeattn.qkv.weight, src.blocks[1].timeattn.qkv.weight)


def test_checkpoint_with_pickled_objects_is_refused_safely(tmp_path):
    path = tmp_path / "pickled.pt"
    # training checkpoints often pickle their config object, which weights_only loading refuses
    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        SyncEncoder(**tiny_sync_kwargs(), pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        SyncEncoder(**tiny_sync_kwargs(), pretrained=str(tmp_path / "nowhere.pt"))


def paper_parameter_count(d=768, depth=12, patch=16, tubelet=2, image=224, times=8, mlp=4) -> int:
    """MotionFormer divided_224_16x4 visual branch, counted from its layer list."""
    layer_norm = 2 * d
    attention = (3 * d * d + 3 * d) + (d * d + d)
    mlp_params = (d * mlp * d + mlp * d) + (mlp * d * d + d)
    block = 3 * layer_norm + 2 * attention + mlp_params
    embed = 3 * tubelet * patch * patch * d + d
    tokens = d + ((image // patch) ** 2 + 1) * d + times * d  # cls, spatial pos, temporal pos
    aggregator = d + 2 * layer_norm + attention + mlp_params  # cls + pre-norm transformer layer
    return embed + tokens + depth * block + layer_norm + aggregator


def test_meta_build_counts_paper_size_without_allocating():
    with torch.device("meta"):
        real = SyncEncoder()
    assert all(p.is_meta for p in real.parameters())
    assert sum(p.numel() for p in real.parameters()) == paper_parameter_count()


def test_init_seed_determinism_frozen_and_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = SyncEncoder(**tiny_sync_kwargs(), init_seed=2), SyncEncoder(**tiny_sync_kwargs(), init_seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    nn.ModuleList([a]).train()
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    assert not a(torch.rand(1, 16, 3, 32, 32)).requires_grad
