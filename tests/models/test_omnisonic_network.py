"""TriAttn-DiT (OmniSonic §3.2.2): Eq. 5-8 against direct transcriptions, routing, RoPE, gating switches."""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch
import torch.nn.functional as F

import avgen.nn.attention as attention_module
from avgen.models.omnisonic.network import CONDITIONS, OmniSonicConditions, OmniSonicNetwork

B, N_FRAMES, ENV, SP, VIS = 3, 5, 12, 10, 8
L_ON, L_OFF, L_SP = 4, 3, 6


def make_network(gating: str = "moe", randomise: bool = True, **kwargs) -> OmniSonicNetwork:
    torch.manual_seed(0)
    net = OmniSonicNetwork(
        latent_channels=2, frequency_bins=6, env_dim=ENV, speech_dim=SP, visual_dim=VIS,
        hidden_dim=32, depth=2, num_heads=4, gating=gating, gate_hidden_dim=16, **kwargs,
    )
    if randomise:  # zero-init (adaLN-Zero, gates, outputs) would hide every term of the equations
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
    return net.eval()


def make_conditions(net: OmniSonicNetwork, route=(True, False, True), present=None) -> OmniSonicConditions:
    g = torch.Generator().manual_seed(1)
    on_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    off_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    sp_mask = torch.ones(B, L_SP, dtype=torch.bool)
    sp_mask[0, 4:] = False
    present = present or {}
    flag = lambda name: torch.tensor(present.get(name, (True,) * B), dtype=torch.bool)  # noqa: E731
    return net.preprocess_conditions(
        (torch.randn(B, L_ON, ENV, generator=g), on_mask),
        (torch.randn(B, L_OFF, ENV, generator=g), off_mask),
        (torch.randn(B, L_SP, SP, generator=g), sp_mask),
        torch.randn(B, N_FRAMES, VIS, generator=g),
        onscreen_present=flag("onscreen"),
        offscreen_present=flag("offscreen"),
        speech_present=flag("speech"),
        visual_present=flag("visual"),
        visual_to_onscreen=torch.tensor(route),
    )


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Direct RoFormer rotation of interleaved pairs: x (..., L, D), positions (L,)."""
    d = x.shape[-1]
    out = x.clone()
    for i in range(d // 2):
        angle = positions * theta ** (-2 * i / d)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., 2 * i + 1] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


def test_eq5_frame_aligned_adaln_is_upsample_of_projected_visual_plus_timestep():
    net = make_network()
    cond = make_conditions(net)
    t = torch.tensor([0.1, 0.5, 0.9])
    columns = 13
    block = net.blocks[0]
    got = block.modulation(net.frame_condition(t, cond.visual, columns))  # 6 x (B, T', D)

    # Direct: c_vt = c_v W_v + t (per visual frame), Proj_adaLN per frame, then nearest upsampling.
    t_emb = net.timestep_embed(t)
    c_vt = cond.visual @ net.visual_to_adaln.weight.T + net.visual_to_adaln.bias + t_emb[:, None]
    linear = block.modulation.adaLN_modulation[1]
    params = F.silu(c_vt) @ linear.weight.T + linear.bias  # (B, N, 6D)
    source = [min(N_FRAMES - 1, math.floor((i + 0.5) * N_FRAMES / columns)) for i in range(columns)]
    expected = params[:, source].chunk(6, dim=-1)
    assert len(got) == 6
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # every column holds the parameters of the visual frame covering it: frames differ -> params differ
    assert not torch.allclose(got[0][:, 0], got[0][:, -1])


def test_eq6_visual_tokens_join_onscreen_caption_else_transcript_and_zero_blocks_are_the_bias():
    net = make_network()
    route = (True, False, True)
    cond = make_conditions(net, route=route)
    contexts, masks, ranges = net.visual_contexts(cond)
    v_env = cond.visual @ net.visual_to_env.weight.T + net.visual_to_env.bias
    v_sp = cond.visual @ net.visual_to_speech.weight.T + net.visual_to_speech.bias
    zero_env = net.visual_to_env.bias.expand(N_FRAMES, ENV)  # 0 W_env + b
    zero_sp = net.visual_to_speech.bias.expand(N_FRAMES, SP)
    for i, on in enumerate(route):
        # on-screen: [c_on | c_v W_env] if its caption is non-empty, else [c_on | 0 W_env]
        torch.testing.assert_close(contexts["onscreen"][i, :L_ON], cond.onscreen[i])
        torch.testing.assert_close(contexts["onscreen"][i, L_ON:], v_env[i] if on else zero_env)
        torch.testing.assert_close(contexts["offscreen"][i, :L_OFF], cond.offscreen[i])
        torch.testing.assert_close(contexts["offscreen"][i, L_OFF:], zero_env)
        torch.testing.assert_close(contexts["speech"][i, :L_SP], cond.speech[i])
        torch.testing.assert_close(contexts["speech"][i, L_SP:], zero_sp if on else v_sp[i])
    assert ranges == {"onscreen": (L_ON, L_ON + N_FRAMES), "offscreen": (L_OFF, L_OFF + N_FRAMES),
                      "speech": (L_SP, L_SP + N_FRAMES)}
    for name, length in (("onscreen", L_ON), ("offscreen", L_OFF), ("speech", L_SP)):
        assert masks[name][:, length:].all()  # visual tokens are always attendable
    assert torch.equal(masks["onscreen"][:, :L_ON], cond.onscreen_mask)


def test_visual_routes_to_speech_when_onscreen_caption_is_empty_behaviourally():
    """Changing only the video changes CA_sp (not CA_on) for a sample whose on-screen caption is empty."""
    net = make_network()
    cond = make_conditions(net, route=(True, False, True))
    other = OmniSonicConditions(**{**cond.__dict__, "visual": cond.visual + 1.0})
    x = torch.randn(B, 7, 32)

    def attend(c, name):
        contexts, masks, ranges = net.visual_contexts(c)
        return net.blocks[0].cross.attn[name](x, contexts[name], context_mask=masks[name])

    d_on = (attend(cond, "onscreen") - attend(other, "onscreen")).abs().amax(dim=(1, 2))
    d_sp = (attend(cond, "speech") - attend(other, "speech")).abs().amax(dim=(1, 2))
    d_off = (attend(cond, "offscreen") - attend(other, "offscreen")).abs().amax(dim=(1, 2))
    assert d_on[1] == 0 and d_sp[1] > 1e-4  # sample 1: no on-screen caption -> speech sees the video
    assert d_on[0] > 1e-4 and d_sp[0] == 0  # sample 0: on-screen caption -> on-screen sees the video
    assert (d_off == 0).all()  # off-screen never sees the video


def test_eq7_cross_attention_rotates_queries_and_only_the_visual_keys(monkeypatch):
    net = make_network(gating="sum")
    cond = make_conditions(net)
    x_t = torch.randn(B, 2, 10, 6)
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = attention_module.scaled_dot_product_attention

    def spy(q, k, v, mask=None):
        recorded.append((q, k))
        return original(q, k, v, mask)

    monkeypatch.setattr(attention_module, "scaled_dot_product_attention", spy)
    captured: list[torch.Tensor] = []
    net.blocks[0].norm_cross.register_forward_hook(lambda module, args, out: captured.append(out))
    net(x_t, torch.rand(B), cond)
    # per block: self-attention, then CA_on, CA_off, CA_sp
    q_on, k_on = recorded[1]
    q_sp, k_sp = recorded[3]
    columns, rows = 5, 3
    cross = net.blocks[0].cross.attn
    contexts, _, _ = net.visual_contexts(cond)
    for name, (q_got, k_got), length in (("onscreen", (q_on, k_on), L_ON), ("speech", (q_sp, k_sp), L_SP)):
        attn = cross[name]
        k_plain = attn.k_norm(attn.kv(contexts[name]).unflatten(-1, (2, 4, 8))[:, :, 0].transpose(1, 2))
        # text keys untouched
        torch.testing.assert_close(k_got[:, :, :length], k_plain[:, :, :length])
        # visual keys rotated at positions k * T' / N on the audio column timeline
        positions = torch.arange(N_FRAMES, dtype=torch.float32) * columns / N_FRAMES
        torch.testing.assert_close(k_got[:, :, length:], rope_rotate(k_plain[:, :, length:], positions),
                                   rtol=1e-5, atol=1e-5)
        assert not torch.allclose(k_got[:, :, length:], k_plain[:, :, length:])
    # queries: every token rotated by its patch-time column index (the input of CA is norm_cross's output)
    q_plain = cross["onscreen"].q_norm(cross["onscreen"].q(captured[0]).unflatten(-1, (4, 8)).transpose(1, 2))
    q_positions = torch.arange(columns, dtype=torch.float32).repeat_interleave(rows)
    torch.testing.assert_close(q_on, rope_rotate(q_plain, q_positions), rtol=1e-4, atol=1e-4)


def test_eq8_gates_are_softmax_of_mlp_over_masked_mean_tokens_and_sum_to_one():
    net = make_network()
    cond = make_conditions(net)
    mean = lambda x, m: (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # noqa: E731
    pooled = torch.cat([mean(cond.onscreen, cond.onscreen_mask), mean(cond.offscreen, cond.offscreen_mask),
                        mean(cond.speech, cond.speech_mask)], dim=-1)
    gate = net.blocks[1].cross.gate
    expected = torch.softmax(gate.fc2(F.gelu(gate.fc1(pooled), approximate="tanh")), dim=-1)
    got = net.blocks[1].cross.gate_weights(net.pooled_conditions(cond))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(B))
    # returned for logging by a forward that asks for them: (B, depth, 3), summing to one
    _, gate_weights = net.predict_velocity(torch.randn(B, 2, 8, 6), torch.rand(B), cond, return_gate_weights=True)
    torch.testing.assert_close(gate_weights.sum(-1), torch.ones(B, 2))
    torch.testing.assert_close(gate_weights[:, 1], expected)


def test_eq8_fused_output_is_gate_weighted_sum_of_three_attentions():
    net = make_network()
    cond = make_conditions(net)
    x = torch.randn(B, 9, 32)
    contexts, masks, ranges = net.visual_contexts(cond)
    q_angles = torch.rand(9, 4)
    k_angles = torch.rand(N_FRAMES, 4)
    cross = net.blocks[0].cross
    pooled = net.pooled_conditions(cond)
    fused, w = cross(x, contexts, masks, pooled, query_angles=q_angles, key_angles=k_angles, visual_ranges=ranges)
    z = {n: cross.attn[n](x, contexts[n], context_mask=masks[n], query_angles=q_angles, key_angles=k_angles,
                          key_rope_range=ranges[n]) for n in CONDITIONS}
    expected = sum(w[:, i, None, None] * z[n] for i, n in enumerate(CONDITIONS))
    torch.testing.assert_close(fused, expected)


def test_gating_switch_and_logit_override_change_the_output():
    cond_net = make_network("moe")
    x_t, t = torch.randn(B, 2, 8, 6), torch.rand(B)
    cond = make_conditions(cond_net)
    v_moe = cond_net(x_t, t, cond)
    for gating, weight in (("sum", 1.0), ("mean", 1 / 3)):
        other = make_network(gating)
        missing = other.load_state_dict(cond_net.state_dict(), strict=False)
        assert all(".gate." in k for k in missing.unexpected_keys) and not missing.missing_keys
        v, gate_weights = other.predict_velocity(x_t, t, cond, return_gate_weights=True)
        assert not torch.allclose(v, v_moe, atol=1e-4)
        torch.testing.assert_close(gate_weights, torch.full((B, 2, 3), weight))
    # Fig. 4: override the speech score only; the others keep the MLP's scores
    pooled = cond_net.pooled_conditions(cond)
    gate = cond_net.blocks[0].cross
    logits = gate.gate(pooled)
    logits[:, 2] = -5.0
    torch.testing.assert_close(gate.gate_weights(pooled, {"speech": -5.0}), logits.softmax(-1))
    # the override travels in the conditions of the sampling call (nothing is set on the network)
    override = dataclasses.replace(cond, gate_logits_override={"speech": -5.0})
    v_override, gate_weights = cond_net.predict_velocity(x_t, t, override, return_gate_weights=True)
    assert (gate_weights[..., 2] < 0.05).all()
    assert not torch.allclose(v_override, v_moe, atol=1e-4)
    with pytest.raises(ValueError, match="unknown conditions"):
        cond_net(x_t, t, dataclasses.replace(cond, gate_logits_override={"music": 0.0}))


def test_block_matches_direct_transcription_of_the_layout():
    net = make_network()
    cond = make_conditions(net)
    block = net.blocks[0]
    columns, rows = 4, 3
    x = torch.randn(B, columns * rows, 32)
    c = torch.randn(B, columns, 32)
    contexts, masks, ranges = net.visual_contexts(cond)
    inputs = dict(contexts=contexts, masks=masks, pooled=net.pooled_conditions(cond), query_angles=None,
                  key_angles=None, visual_ranges=ranges)
    got, _ = block(x, c, rows, inputs)

    a1, b1, g1, a2, b2, g2 = (p.repeat_interleave(rows, 1) for p in block.modulation(c))
    ln = lambda h: F.layer_norm(h, (32,), eps=1e-6)  # noqa: E731
    h = x + g1 * block.attn(ln(x) * (1 + a1) + b1)
    fused, _ = block.cross(block.norm_cross(h), **inputs)
    h = h + fused
    expected = h + g2 * block.mlp(ln(h) * (1 + a2) + b2)
    torch.testing.assert_close(got, expected)


def test_zero_init_network_predicts_zero_and_uniform_gates():
    net = make_network(randomise=False)
    cond = make_conditions(net)
    v, gate_weights = net.predict_velocity(torch.randn(B, 2, 9, 6), torch.rand(B), cond, return_gate_weights=True)
    assert v.shape == (B, 2, 9, 6)  # odd T, padded internally and cropped back
    assert torch.count_nonzero(v) == 0
    torch.testing.assert_close(gate_weights, torch.full((B, 2, 3), 1 / 3))


def test_absent_conditions_become_learned_null_tokens_and_do_not_read_the_input():
    net = make_network()
    absent = {"onscreen": (False, True, True), "speech": (True, False, True), "visual": (False, True, True)}
    cond = make_conditions(net, present=absent)
    assert torch.equal(cond.onscreen_mask[0], torch.tensor([True, False, False, False]))
    torch.testing.assert_close(cond.onscreen[0], net.null_onscreen.expand(L_ON, ENV))
    torch.testing.assert_close(cond.speech[1, 0], net.null_speech)
    torch.testing.assert_close(cond.visual[0], net.null_visual.expand(N_FRAMES, VIS))
    # the velocity of an absent-condition sample does not depend on the (ignored) raw features
    g = torch.Generator().manual_seed(5)
    other = net.preprocess_conditions(
        (torch.randn(B, L_ON, ENV, generator=g), torch.ones(B, L_ON, dtype=torch.bool)),
        (cond.offscreen, cond.offscreen_mask), (cond.speech, cond.speech_mask), torch.randn(B, N_FRAMES, VIS),
        onscreen_present=torch.tensor([False, False, False]), offscreen_present=torch.ones(B, dtype=torch.bool),
        speech_present=torch.ones(B, dtype=torch.bool), visual_present=torch.tensor([False, True, True]),
        visual_to_onscreen=cond.visual_to_onscreen,
    )
    x_t, t = torch.randn(B, 2, 8, 6), torch.rand(B)
    torch.testing.assert_close(net(x_t, t, cond)[0], net(x_t, t, other)[0])


def test_padded_latent_frames_do_not_change_valid_outputs_through_self_attention():
    net = make_network()
    cond = make_conditions(net)
    x_t, t = torch.randn(B, 2, 8, 6), torch.rand(B)
    mask = torch.ones(B, 8, dtype=torch.bool)
    mask[:, 6:] = False
    x_other = x_t.clone()
    x_other[:, :, 6:] = torch.randn(B, 2, 2, 6)
    v1, v2 = net(x_t, t, cond, mask), net(x_other, t, cond, mask)
    torch.testing.assert_close(v1[:, :, :6], v2[:, :, :6])
