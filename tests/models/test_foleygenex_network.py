"""FoleyGenEx (MMAudio) backbone: MMAudio parameter shapes, adaLN-Zero init, null tokens, padding, training."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from avgen.flow import ClassifierFreeGuidance, concat_conditions, flow_matching_loss, guided_velocity_fn, interpolate
from avgen.models.foleygenex.network import FoleyGenExNetwork, StreamBlock
from avgen.nn.rope import rope_rotation

# Parameter names and shapes of MMAudio's public small_16k / large_44k network checkpoints (a dump of
# their state dicts, no weights). The tests check the network against the transcription below, and
# the transcription against this dump.
SHAPES_FILE = Path(__file__).resolve().parent / "data" / "mmaudio_state_dict_shapes.json"
# MMAudio keeps the dataset latent statistics inside the network; avgen codecs return normalised latents.
NOT_IN_AVGEN = {"latent_mean", "latent_std"}

TINY = dict(latent_channels=4, semantic_dim=8, sync_dim=6, text_dim=5, text_length=6, hidden_dim=32,
            num_heads=2, num_joint_blocks=2, num_single_blocks=1)

MMAUDIO = {
    "small_16k": dict(latent=20, heads=7, joint=4, single=8),
    "large_44k": dict(latent=40, heads=14, joint=7, single=14),
}


def _mmaudio_state_dict_shapes(latent, heads, joint, single, clip=1024, sync=768, text=1024, text_len=77, head_dim=64):
    """MMAudio's state dict, key -> shape, transcribed from its networks.py / transformer_layers.py.

    head_dim is 64 in every MMAudio size; smaller values give toy-width networks of the same layout.
    """
    d = head_dim * heads
    h = 256 * math.ceil(int(2 * 4 * d / 3) / 256)  # SwiGLU width, LLaMA rounding
    shapes = {
        "sync_pos_emb": (1, 1, 8, sync), "latent_mean": (1, 1, latent), "latent_std": (1, 1, latent),
        "empty_string_feat": (text_len, text), "empty_clip_feat": (1, clip), "empty_sync_feat": (1, sync),
        "audio_input_proj.0.weight": (d, latent, 7), "audio_input_proj.0.bias": (d,),
        "clip_input_proj.0.weight": (d, clip), "clip_input_proj.0.bias": (d,),
        "sync_input_proj.0.weight": (d, sync, 7), "sync_input_proj.0.bias": (d,),
        "text_input_proj.0.weight": (d, text), "text_input_proj.0.bias": (d,),
        "clip_cond_proj.weight": (d, d), "clip_cond_proj.bias": (d,),
        "text_cond_proj.weight": (d, d), "text_cond_proj.bias": (d,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.conv.weight": (latent, d, 7), "final_layer.conv.bias": (latent,),
        "t_embed.mlp.0.weight": (d, 256), "t_embed.mlp.0.bias": (d,),
        "t_embed.mlp.2.weight": (d, d), "t_embed.mlp.2.bias": (d,),
    }

    def swiglu(prefix, k=None):
        tail = () if k is None else (k,)
        shapes.update({f"{prefix}.w1.weight": (h, d, *tail), f"{prefix}.w2.weight": (d, h, *tail),
                       f"{prefix}.w3.weight": (h, d, *tail)})

    def block(prefix, k, pre_only=False):
        shapes.update({f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                       f"{prefix}.attn.q_norm.weight": (head_dim,), f"{prefix}.attn.k_norm.weight": (head_dim,)})
        n = 2 if pre_only else 6
        shapes.update({f"{prefix}.adaLN_modulation.1.weight": (n * d, d), f"{prefix}.adaLN_modulation.1.bias": (n * d,)})
        if not pre_only:
            shapes.update({f"{prefix}.linear1.weight": (d, d) if k is None else (d, d, k), f"{prefix}.linear1.bias": (d,)})
            swiglu(f"{prefix}.ffn", k)

    swiglu("audio_input_proj.2", 7)
    swiglu("clip_input_proj.1", 3)
    swiglu("sync_input_proj.2", 3)
    swiglu("text_input_proj.1")
    swiglu("global_cond_mlp")
    for i in range(joint):
        last = i == joint - 1
        block(f"joint_blocks.{i}.latent_block", 3)
        block(f"joint_blocks.{i}.clip_block", 3, pre_only=last)
        block(f"joint_blocks.{i}.text_block", None, pre_only=last)
    for i in range(single):
        block(f"fused_blocks.{i}", 3)
    return shapes


def _network_kwargs(name):
    cfg = MMAUDIO[name]
    return dict(latent_channels=cfg["latent"], semantic_dim=1024, sync_dim=768, text_dim=1024, text_length=77,
                hidden_dim=64 * cfg["heads"], num_heads=cfg["heads"], num_joint_blocks=cfg["joint"],
                num_single_blocks=cfg["single"])


@pytest.mark.parametrize("name", sorted(MMAUDIO))
def test_shape_transcription_matches_mmaudio_dump(name):
    dump = {k: tuple(v) for k, v in json.loads(SHAPES_FILE.read_text())[name].items()}
    assert _mmaudio_state_dict_shapes(**MMAUDIO[name]) == dump


def test_parameter_shapes_match_mmaudio_small_16k():
    with torch.device("meta"):
        net = FoleyGenExNetwork(**_network_kwargs("small_16k"))
    reference = _mmaudio_state_dict_shapes(**MMAUDIO["small_16k"])
    expected = Counter(v for k, v in reference.items() if k not in NOT_IN_AVGEN)
    mine = Counter(tuple(p.shape) for p in net.parameters())
    assert mine == expected, (mine - expected, expected - mine)
    total = sum(math.prod(v) for k, v in reference.items() if k not in NOT_IN_AVGEN)
    assert sum(p.numel() for p in net.parameters()) == total == 157_283_604
    assert not list(net.buffers())  # RoPE tables are computed per length, never stored


def test_parameter_count_large_44k_within_half_percent():
    with torch.device("meta"):
        net = FoleyGenExNetwork(**_network_kwargs("large_44k"))
    total = sum(math.prod(v) for v in _mmaudio_state_dict_shapes(**MMAUDIO["large_44k"]).values())
    assert abs(sum(p.numel() for p in net.parameters()) - total) / total < 0.005


def _inputs(batch=3, length=20, frames=5, sync=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x_t=torch.randn(batch, length, 4, generator=g),
        t=torch.rand(batch, generator=g),
        semantic_features=torch.randn(batch, frames, 8, generator=g),
        sync_features=torch.randn(batch, sync, 6, generator=g),
        text_features=torch.randn(batch, 6, 5, generator=g),
        video_present=torch.ones(batch, dtype=torch.bool),
        text_present=torch.ones(batch, dtype=torch.bool),
    )


def _randomised(**overrides):
    """A tiny network with every parameter (zero-init ones included) perturbed, so outputs are non-trivial."""
    net = FoleyGenExNetwork(**{**TINY, **overrides})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_velocity_is_zero_at_init_and_blocks_start_as_identity():
    net = FoleyGenExNetwork(**TINY)
    assert torch.count_nonzero(net(**_inputs())) == 0
    block = StreamBlock(32, 2, mlp_ratio=4.0, kernel_size=3, qk_norm=True)
    x, c = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(block(x, c), x)


def test_absent_conditions_use_null_tokens():
    net = _randomised()
    inputs = _inputs()
    inputs["video_present"] = torch.tensor([False, True, False])
    inputs["text_present"] = torch.tensor([True, False, False])
    out = net(**inputs)
    changed = dict(inputs)
    changed["semantic_features"] = inputs["semantic_features"] + 5 * torch.randn_like(inputs["semantic_features"])
    changed["sync_features"] = inputs["sync_features"] + 5 * torch.randn_like(inputs["sync_features"])
    changed["text_features"] = inputs["text_features"] + 5 * torch.randn_like(inputs["text_features"])
    out2 = net(**changed)
    torch.testing.assert_close(out2[2], out[2])  # nothing present: independent of every feature
    assert not torch.allclose(out2[0], out[0]) and not torch.allclose(out2[1], out[1])
    # sample 0 has no video: its output equals the one with the video features alone changed back
    only_text = dict(changed, text_features=inputs["text_features"])
    torch.testing.assert_close(net(**only_text)[0], out[0])
    only_video = dict(changed, semantic_features=inputs["semantic_features"], sync_features=inputs["sync_features"])
    torch.testing.assert_close(net(**only_video)[1], out[1])


@pytest.mark.parametrize("final_layer_condition", ["global", "frame_aligned"])
def test_latent_padding_does_not_change_valid_frames(final_layer_condition):
    net = _randomised(final_layer_condition=final_layer_condition)
    inputs = _inputs()
    lengths = torch.tensor([20, 13, 7])
    mask = torch.arange(20)[None] < lengths[:, None]
    out = net(**inputs, latent_mask=mask)
    assert torch.count_nonzero(out[~mask]) == 0
    garbage = dict(inputs)
    garbage["x_t"] = inputs["x_t"].masked_fill(~mask[..., None], 0) + 50 * torch.randn(3, 20, 4) * (~mask[..., None])
    torch.testing.assert_close(net(**garbage, latent_mask=mask)[mask], out[mask], atol=1e-5, rtol=1e-5)
    # without the mask the padded content does leak (the test can see a leak)
    assert not torch.allclose(net(**garbage)[mask], net(**inputs)[mask], atol=1e-4)
    # garbage injected into the hidden states of padded frames (after the input projection) must not
    # reach valid frames either: attention keys and every time convolution have to be masked
    original = net.embed_latent

    def noisy_embed(x_t, latent_mask=None, cond_latent=None):
        h = original(x_t, latent_mask, cond_latent)
        return h + 50 * torch.randn_like(h) * (~mask[..., None])

    net.embed_latent = noisy_embed
    torch.testing.assert_close(net(**inputs, latent_mask=mask)[mask], out[mask], atol=1e-5, rtol=1e-5)


def test_frame_aligned_condition_is_local_in_time():
    net = _randomised()
    inputs = _inputs(sync=32)

    def sync_condition(sync):
        return net.preprocess_conditions(
            inputs["semantic_features"], sync, inputs["text_features"],
            video_present=inputs["video_present"], text_present=inputs["text_present"], latent_length=20,
        ).sync

    base = sync_condition(inputs["sync_features"])
    sync = inputs["sync_features"].clone()
    sync[:, 24:] += 3.0  # the last of 4 sync segments
    changed = sync_condition(sync)
    # projection convs (k7, k3, k3) reach 5 tokens back: tokens < 19 are untouched, and nearest-exact
    # maps latent frame i to token floor((i + 0.5) * 32 / 20), so frames 0..10 keep their condition
    torch.testing.assert_close(changed[:, :11], base[:, :11])
    assert not torch.allclose(changed[:, -1], base[:, -1])


def test_rope_positions_latent_integer_clip_rescaled_text_none():
    net = _randomised()
    seen = {}
    for name in ("latent_block", "clip_block", "text_block"):
        module = getattr(net.joint_blocks[0], name).attn
        module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[1]))
    net(**_inputs(length=20, frames=5))
    head_dim = 16
    freqs = 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)
    # the blocks get the cached rotation (cos / signed sin on the interleaved channels) of these angles
    torch.testing.assert_close(tuple(seen["latent_block"]), tuple(rope_rotation(torch.arange(20.0)[:, None] * freqs)))
    # 5 CLIP frames spanning the same time as 20 latents sit at latent positions 0, 4, 8, 12, 16
    torch.testing.assert_close(tuple(seen["clip_block"]),
                               tuple(rope_rotation(torch.tensor([0.0, 4, 8, 12, 16])[:, None] * freqs)))
    assert seen["text_block"] is None


def test_preprocessed_conditions_reuse_and_batched_cfg():
    net = _randomised()
    inputs = _inputs(batch=2)
    cond = net.preprocess_conditions(
        inputs["semantic_features"], inputs["sync_features"], inputs["text_features"],
        video_present=inputs["video_present"], text_present=inputs["text_present"], latent_length=20,
    )
    absent = torch.zeros(2, dtype=torch.bool)
    uncond = net.preprocess_conditions(
        inputs["semantic_features"], inputs["sync_features"], inputs["text_features"],
        video_present=absent, text_present=absent, latent_length=20,
    )
    x, t = inputs["x_t"], inputs["t"]
    v_c = net.predict_velocity(x, t, cond)
    v_u = net.predict_velocity(x, t, uncond)
    torch.testing.assert_close(v_c, net(**inputs))
    fn = guided_velocity_fn(net.predict_velocity, concat_conditions([cond, uncond]), ClassifierFreeGuidance(4.5))
    torch.testing.assert_close(fn(x, t), v_u + 4.5 * (v_c - v_u), atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    net = FoleyGenExNetwork(**TINY)
    inputs = _inputs()
    with pytest.raises(ValueError, match="multiple of 8"):
        net(**dict(inputs, sync_features=torch.randn(3, 12, 6)))
    with pytest.raises(ValueError, match="text_length"):
        net(**dict(inputs, text_features=torch.randn(3, 7, 5)))
    with pytest.raises(ValueError, match="semantic_features"):
        net(**dict(inputs, semantic_features=torch.randn(3, 5, 9)))
    cond = net.preprocess_conditions(
        inputs["semantic_features"], inputs["sync_features"], inputs["text_features"],
        video_present=inputs["video_present"], text_present=inputs["text_present"], latent_length=16,
    )
    with pytest.raises(ValueError, match="latent_length=20"):
        net.predict_velocity(inputs["x_t"], inputs["t"], cond)


def test_adam_steps_reduce_loss_on_fixed_batch():
    torch.manual_seed(0)
    net = FoleyGenExNetwork(**TINY)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    inputs = _inputs(batch=4, length=16, seed=1)
    x1 = torch.randn(4, 16, 4, generator=torch.Generator().manual_seed(2))
    x0 = torch.randn(4, 16, 4, generator=torch.Generator().manual_seed(3))
    t = torch.rand(4, generator=torch.Generator().manual_seed(4))
    inputs.update(x_t=interpolate(x0, x1, t), t=t)
    losses = []
    for _ in range(15):
        loss = flow_matching_loss(net(**inputs), x1 - x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
