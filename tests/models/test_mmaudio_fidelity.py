"""An MMAudio state dict imported into FoleyGenExNetwork computes MMAudio's function.

The reference is a compact transcription, written here, of MMAudio's published forward
(hkchengrex/MMAudio: ``model/networks.py`` MMAudio.preprocess_conditions / predict_flow /
get_empty_conditions, ``model/transformer_layers.py`` MMDitSingleBlock / JointBlock / FinalBlock,
``model/low_level.py`` MLP / ConvMLP / ChannelLastConv1d, ``model/embeddings.py``
TimestepEmbedder, ``ext/rotary_embeddings.py``, ``model/flow_matching.py`` Euler). It reads the
weights in MMAudio's own key layout, so it shares nothing with avgen's importer. Weights are random
with every zero-initialised tensor (adaLN, final layer, null features, position embedding)
perturbed, so every path is live. Shape: small_16k's layout (20 latent channels, joint blocks of
which the last is pre-only, then single blocks) at toy width and depth.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from avgen.flow import euler_sample, sampling_times
from avgen.flow.guidance import ClassifierFreeGuidance, concat_conditions, guided_velocity_fn
from avgen.models.foleygenex import FoleyGenExNetwork
from avgen.models.foleygenex.mmaudio_checkpoint import (
    avgen_to_mmaudio_key,
    export_mmaudio_state_dict,
    load_mmaudio_checkpoint,
)

from .test_foleygenex_network import _mmaudio_state_dict_shapes

HEADS, HEAD_DIM = 2, 32
TOY = dict(latent=20, heads=HEADS, joint=2, single=2, clip=32, sync=24, text=16, text_len=7, head_dim=HEAD_DIM)
T, F_CLIP, SYNC_TOKENS = 25, 8, 16  # latent frames, CLIP frames, Synchformer tokens (2 segments)


def assert_matches(got, expected, tol=1e-5):
    """|got - expected| <= tol, relative to the output's scale when that exceeds 1 (fp32 rounding)."""
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tol * max(1.0, expected.abs().max().item()))


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)


# ----------------------------------------------------------------------------- MMAudio, transcribed
def layer(sd, p, x):
    """MMAudio's nn.Linear or ChannelLastConv1d (padding k // 2) named p, on (B, N, C)."""
    w, b = sd[f"{p}.weight"], sd.get(f"{p}.bias")
    if w.dim() == 2:
        return F.linear(x, w, b)
    return F.conv1d(x.transpose(1, 2), w, b, padding=w.shape[-1] // 2).transpose(1, 2)


def mlp(sd, p, x):
    """low_level.MLP / ConvMLP: w2(silu(w1 x) * w3 x)."""
    return layer(sd, f"{p}.w2", F.silu(layer(sd, f"{p}.w1", x)) * layer(sd, f"{p}.w3", x))


def ln(x):
    """nn.LayerNorm(dim, elementwise_affine=False): torch's default eps 1e-5."""
    return F.layer_norm(x, x.shape[-1:])


def rope_rotations(length, dim, freq_scaling=1.0):
    """compute_rope_rotations(length, dim, 10000, freq_scaling=...): (1, N, dim/2, 2, 2)."""
    pos = torch.arange(length, dtype=torch.float32)
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = freqs * freq_scaling
    rot = torch.einsum("n,f->nf", pos, freqs)
    rot = torch.stack([rot.cos(), -rot.sin(), rot.sin(), rot.cos()], dim=-1)
    return rearrange(rot, "n d (i j) -> 1 n d i j", i=2, j=2)


def apply_rot(x, rot):
    """apply_rope: interleaved pairs times the 2x2 rotation."""
    pairs = x.float().view(*x.shape[:-1], -1, 1, 2)
    out = rot[..., 0] * pairs[..., 0] + rot[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).to(x.dtype)


def attention(q, k, v):
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")


def block_pre(sd, p, x, c, rot):
    """MMDitSingleBlock.pre_attention (+ SelfAttention.pre_attention)."""
    pre_only = sd[f"{p}.adaLN_modulation.1.bias"].numel() == 2 * x.shape[-1]
    mod = layer(sd, f"{p}.adaLN_modulation.1", F.silu(c)).chunk(2 if pre_only else 6, dim=-1)
    x = ln(x) * (1 + mod[1]) + mod[0]
    q, k, v = rearrange(layer(sd, f"{p}.attn.qkv", x), "b n (h d j) -> j b h n d", h=HEADS, j=3)
    q = F.rms_norm(q, q.shape[-1:], sd[f"{p}.attn.q_norm.weight"])  # nn.RMSNorm: eps None
    k = F.rms_norm(k, k.shape[-1:], sd[f"{p}.attn.k_norm.weight"])
    if rot is not None:
        q, k = apply_rot(q, rot), apply_rot(k, rot)
    return (q, k, v), mod


def block_post(sd, p, x, attn_out, mod):
    """MMDitSingleBlock.post_attention; pre-only blocks return x."""
    if len(mod) == 2:
        return x
    _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
    x = x + layer(sd, f"{p}.linear1", attn_out) * gate_msa
    return x + mlp(sd, f"{p}.ffn", ln(x) * (1 + scale_mlp) + shift_mlp) * gate_mlp


def single_block(sd, p, x, c, rot):
    qkv, mod = block_pre(sd, p, x, c, rot)
    return block_post(sd, p, x, attention(*qkv), mod)


def joint_block(sd, p, latent, clip, text, global_c, extended_c, latent_rot, clip_rot):
    """JointBlock.forward: [latent | clip | text] in one attention."""
    streams = [("latent", latent, extended_c, latent_rot), ("clip", clip, global_c, clip_rot), ("text", text, global_c, None)]
    pres = [block_pre(sd, f"{p}.{name}_block", x, c, rot) for name, x, c, rot in streams]
    out = attention(*[torch.cat([qkv[i] for qkv, _ in pres], dim=2) for i in range(3)])
    outs = out.split([x.shape[1] for _, x, _, _ in streams], dim=1)
    return [block_post(sd, f"{p}.{name}_block", x, o, mod) for (name, x, _, _), o, (_, mod) in zip(streams, outs, pres)]


def preprocess(sd, clip_f, sync_f, text_f, latent_len):
    """MMAudio.preprocess_conditions."""
    b = clip_f.shape[0]
    sync_f = (sync_f.view(b, -1, 8, sync_f.shape[-1]) + sd["sync_pos_emb"]).flatten(1, 2)
    clip_f = mlp(sd, "clip_input_proj.1", layer(sd, "clip_input_proj.0", clip_f))
    sync_f = mlp(sd, "sync_input_proj.2", F.selu(layer(sd, "sync_input_proj.0", sync_f)))
    text_f = mlp(sd, "text_input_proj.1", layer(sd, "text_input_proj.0", text_f))
    sync_f = F.interpolate(sync_f.transpose(1, 2), size=latent_len, mode="nearest-exact").transpose(1, 2)
    return dict(clip_f=clip_f, sync_f=sync_f, text_f=text_f,
                clip_f_c=layer(sd, "clip_cond_proj", clip_f.mean(dim=1)),
                text_f_c=layer(sd, "text_cond_proj", text_f.mean(dim=1)))


def empty_conditions(sd, batch, clip_len, sync_len, latent_len):
    """MMAudio.get_empty_conditions: the learned empty clip/sync features and CLIP("")."""
    cond = preprocess(sd, sd["empty_clip_feat"].unsqueeze(0).expand(1, clip_len, -1),
                      sd["empty_sync_feat"].unsqueeze(0).expand(1, sync_len, -1),
                      sd["empty_string_feat"].unsqueeze(0), latent_len)
    return {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}


def timestep(sd, t):
    """TimestepEmbedder (v1): 256 frequencies, max_period 10000, [cos, sin]."""
    freqs = 1.0 / (10000 ** (torch.arange(0, 256, 2, dtype=torch.float32) / 256))
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return layer(sd, "t_embed.mlp.2", F.silu(layer(sd, "t_embed.mlp.0", emb)))


def count(sd, prefix):
    return len({k.split(".")[1] for k in sd if k.startswith(prefix)})


def predict_flow(sd, latent, t, cond):
    """MMAudio.predict_flow (rotations from initialize_rotations)."""
    n, f = latent.shape[1], cond["clip_f"].shape[1]
    head_dim = sd["joint_blocks.0.latent_block.attn.q_norm.weight"].numel()
    latent_rot = rope_rotations(n, head_dim)
    clip_rot = rope_rotations(f, head_dim, freq_scaling=n / f)
    latent = mlp(sd, "audio_input_proj.2", F.selu(layer(sd, "audio_input_proj.0", latent)))
    global_c = mlp(sd, "global_cond_mlp", cond["clip_f_c"] + cond["text_f_c"])
    global_c = timestep(sd, t).unsqueeze(1) + global_c.unsqueeze(1)
    extended_c = global_c + cond["sync_f"]
    clip, text = cond["clip_f"], cond["text_f"]
    for i in range(count(sd, "joint_blocks.")):
        latent, clip, text = joint_block(sd, f"joint_blocks.{i}", latent, clip, text, global_c, extended_c,
                                         latent_rot, clip_rot)
    for i in range(count(sd, "fused_blocks.")):
        latent = single_block(sd, f"fused_blocks.{i}", latent, extended_c, latent_rot)
    shift, scale = layer(sd, "final_layer.adaLN_modulation.1", F.silu(global_c)).chunk(2, dim=-1)
    return layer(sd, "final_layer.conv", ln(latent) * (1 + scale) + shift)


def mmaudio_sample(sd, x0, cond, empty, num_steps, cfg_strength):
    """FlowMatching.to_data (Euler on linspace(0, 1, steps + 1)) of MMAudio.ode_wrapper."""
    steps = torch.linspace(0, 1, num_steps + 1)
    x = x0
    for i in range(num_steps):
        t = steps[i] * torch.ones(len(x))
        flow = cfg_strength * predict_flow(sd, x, t, cond) + (1 - cfg_strength) * predict_flow(sd, x, t, empty)
        x = x + (steps[i + 1] - steps[i]) * flow
    return x


# ----------------------------------------------------------------------------- fixtures
def random_mmaudio_state_dict(seed=0):
    """Random weights in MMAudio's layout; every zero-initialised tensor gets a non-zero value."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _mmaudio_state_dict_shapes(**TOY).items():
        value = torch.randn(shape, generator=g)
        if key.endswith("norm.weight"):
            value = 1 + 0.2 * value  # QK-norm gains around 1
        elif len(shape) >= 2 and not key.startswith(("empty_", "sync_pos_emb", "latent_")):
            value = value / math.sqrt(math.prod(shape[1:]))  # fan-in scaled, keeps activations O(1)
        elif key.endswith(".bias"):
            value = 0.1 * value
        elif key == "latent_std":
            value = value.abs() + 0.5
        state[key] = value
    return state


def toy_network(conditional_injection=False):
    return FoleyGenExNetwork(latent_channels=TOY["latent"], semantic_dim=TOY["clip"], sync_dim=TOY["sync"],
                             text_dim=TOY["text"], text_length=TOY["text_len"], hidden_dim=HEADS * HEAD_DIM,
                             num_heads=HEADS, num_joint_blocks=TOY["joint"], num_single_blocks=TOY["single"],
                             conditional_injection=conditional_injection)


@pytest.fixture(scope="module")
def mmaudio_state():
    return random_mmaudio_state_dict()


@pytest.fixture(scope="module")
def imported(mmaudio_state):
    net = toy_network()
    report = load_mmaudio_checkpoint(net, mmaudio_state)
    assert report.ok
    return net.eval()


def features(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, F_CLIP, TOY["clip"], generator=g), torch.randn(batch, SYNC_TOKENS, TOY["sync"], generator=g),
            torch.randn(batch, TOY["text_len"], TOY["text"], generator=g))


def avgen_conditions(net, clip, sync, text, present):
    flags = torch.full((clip.shape[0],), present, dtype=torch.bool)
    return net.preprocess_conditions(clip, sync, text, video_present=flags, text_present=flags, latent_length=T)


def stream_inputs(seed=2, batch=2):
    g = torch.Generator().manual_seed(seed)
    d = HEADS * HEAD_DIM
    return dict(latent=torch.randn(batch, T, d, generator=g), clip=torch.randn(batch, F_CLIP, d, generator=g),
                text=torch.randn(batch, TOY["text_len"], d, generator=g), global_c=torch.randn(batch, 1, d, generator=g),
                frame_c=torch.randn(batch, T, d, generator=g))


def rotations():
    return rope_rotations(T, HEAD_DIM), rope_rotations(F_CLIP, HEAD_DIM, freq_scaling=T / F_CLIP)


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("index", [0, TOY["joint"] - 1], ids=["joint", "last_pre_only"])
@torch.no_grad()
def test_joint_block_matches_mmaudio(mmaudio_state, imported, index):
    s = stream_inputs()
    latent_rot, clip_rot = rotations()
    expected = joint_block(mmaudio_state, f"joint_blocks.{index}", s["latent"], s["clip"], s["text"], s["global_c"],
                           s["frame_c"], latent_rot, clip_rot)
    got = imported.joint_blocks[index](s["latent"], s["clip"], s["text"], s["global_c"], s["frame_c"],
                                       imported._angles(T, T, "cpu"), imported._angles(F_CLIP, T, "cpu"))
    for e, o in zip(expected, got):  # latent, clip, text streams
        assert_matches(o, e)
    if index == TOY["joint"] - 1:  # pre-only streams pass through, only the latent is updated
        assert torch.equal(got[1], s["clip"]) and torch.equal(got[2], s["text"])
        assert not torch.allclose(got[0], s["latent"])


@torch.no_grad()
def test_single_block_matches_mmaudio(mmaudio_state, imported):
    s = stream_inputs(seed=3)
    expected = single_block(mmaudio_state, "fused_blocks.1", s["latent"], s["frame_c"], rotations()[0])
    got = imported.single_blocks[1](s["latent"], s["frame_c"], imported._angles(T, T, "cpu"))
    assert_matches(got, expected)


# ----------------------------------------------------------------------------- whole network
@pytest.mark.parametrize("present", [True, False], ids=["conditional", "null_condition"])
@torch.no_grad()
def test_velocity_matches_mmaudio(mmaudio_state, imported, present):
    clip, sync, text = features()
    x = torch.randn(2, T, TOY["latent"], generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.3, 0.8])
    if present:
        cond = preprocess(mmaudio_state, clip, sync, text, T)
    else:
        cond = empty_conditions(mmaudio_state, 2, F_CLIP, SYNC_TOKENS, T)
    expected = predict_flow(mmaudio_state, x, t, cond)
    got = imported.predict_velocity(x, t, avgen_conditions(imported, clip, sync, text, present))
    assert expected.abs().mean() > 0.1  # the check is not vacuous: a live, non-zero velocity
    assert_matches(got, expected)


@torch.no_grad()
def test_imported_25_step_cfg_sample_matches_mmaudio(mmaudio_state, imported):
    """The user's path: MMAudio weights imported, avgen's Euler grid, batched CFG 4.5, 25 steps."""
    clip, sync, text = features(batch=1, seed=5)
    x0 = torch.randn(1, T, TOY["latent"], generator=torch.Generator().manual_seed(6))
    expected = mmaudio_sample(mmaudio_state, x0, preprocess(mmaudio_state, clip, sync, text, T),
                              empty_conditions(mmaudio_state, 1, F_CLIP, SYNC_TOKENS, T), 25, 4.5)
    branches = concat_conditions([avgen_conditions(imported, clip, sync, text, True),
                                  avgen_conditions(imported, clip, sync, text, False)])
    velocity = guided_velocity_fn(imported.predict_velocity, branches, ClassifierFreeGuidance(4.5))
    got = euler_sample(velocity, x0, sampling_times(25))
    assert (expected - x0).abs().mean() > 0.1
    assert_matches(got, expected)


@torch.no_grad()
def test_fresh_conditional_injection_keeps_mmaudio_velocity(mmaudio_state):
    """FoleyGenEx's InputEmbedding starts as the identity: injecting + imported is still MMAudio's function."""
    net = toy_network(conditional_injection=True).eval()
    assert load_mmaudio_checkpoint(net, mmaudio_state).fresh
    clip, sync, text = features()
    x, t = torch.randn(2, T, TOY["latent"]), torch.tensor([0.1, 0.6])
    expected = predict_flow(mmaudio_state, x, t, preprocess(mmaudio_state, clip, sync, text, T))
    assert_matches(net.predict_velocity(x, t, avgen_conditions(net, clip, sync, text, True)), expected)


@torch.no_grad()
def test_the_check_sees_a_wrong_qkv_layout(mmaudio_state):
    """Loading MMAudio's fused qkv rows unpermuted (the old importer) is caught by the velocity check."""
    net = toy_network().eval()
    own = net.state_dict()
    load_mmaudio_checkpoint(net, mmaudio_state)
    for key in own:
        if key.endswith(".attn.qkv.weight") or key.endswith(".attn.qkv.bias"):
            own[key].copy_(mmaudio_state[avgen_to_mmaudio_key(key)])
    clip, sync, text = features()
    x, t = torch.randn(2, T, TOY["latent"]), torch.tensor([0.3, 0.8])
    expected = predict_flow(mmaudio_state, x, t, preprocess(mmaudio_state, clip, sync, text, T))
    got = net.predict_velocity(x, t, avgen_conditions(net, clip, sync, text, True))
    assert (got - expected).norm() / expected.norm() > 1e-2


def test_export_inverts_import(mmaudio_state, imported):
    exported = export_mmaudio_state_dict(imported)
    expected = {k: v for k, v in mmaudio_state.items() if not k.startswith("latent_")}
    assert exported.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(exported[key], value), key
