"""Harmony's video DiT equals Wan2.2 as public code runs it (diffusers WanTransformer3DModel), through both key maps."""

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from avgen.models.harmony import (
    WanVideoNetwork,
    load_wan_state_dict,
    ti2v_inputs,
    wan_timestep,
    wan_video_network_from_pretrained,
)
from avgen.nn import MultiHeadAttention, RMSNorm

TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
    text_dim=16, freq_dim=32, ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=64,
)
TEXT_LEN = 10


def _tiny_diffusers() -> WanTransformer3DModel:
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).eval()
    with torch.no_grad():  # every tensor random, so norms, zero-init heads and tables all matter
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def _avgen_kwargs() -> dict:
    return dict(latent_channels=4, dim=24, ffn_dim=40, num_heads=2, num_layers=2, text_dim=16, text_len=TEXT_LEN,
                freq_dim=32, patch_size=(1, 2, 2))


# diffusers -> original Wan names, written from diffusers' scripts/convert_wan_to_diffusers.py (inverted by hand)
_TO_ORIGINAL = [
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (".attn1.to_out.0.", ".self_attn.o."), (".attn2.to_out.0.", ".cross_attn.o."),
    (".attn1.to_", ".self_attn."), (".attn2.to_", ".cross_attn."),
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
    (".norm2.", ".norm3."), (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."),
]


def _original_state_dict(diffusers_state: dict) -> dict:
    out = {}
    for key, value in diffusers_state.items():
        new = key
        if key == "scale_shift_table":
            new = "head.modulation"
        elif key.startswith("proj_out."):
            new = "head.head." + key[len("proj_out."):]
        elif key.endswith(".scale_shift_table"):
            new = key.replace(".scale_shift_table", ".modulation")
        else:
            for a, b in _TO_ORIGINAL:
                if a in new:
                    new = new.replace(a, b)
                    break
        out[new] = value
    return out


def _inputs(batch=2, frames=3, height=4, width=6):
    x = torch.randn(batch, frames, 4, height, width)
    lengths = torch.tensor([TEXT_LEN - 3, 4])
    text = torch.randn(batch, TEXT_LEN - 3, 16)
    mask = torch.arange(TEXT_LEN - 3)[None] < lengths[:, None].clamp(max=TEXT_LEN - 3)
    padded = torch.zeros(batch, TEXT_LEN, 16)  # what the Wan pipeline hands the transformer
    for b in range(batch):
        padded[b, : lengths[b]] = text[b, : lengths[b]]
    return x, text, mask, padded


def _diffusers_velocity(model, x, t, padded_text):
    """avgen velocity through the public model: timestep 1000(1 - t), output negated, layout (B,C,T,H,W)."""
    with torch.no_grad():
        v_wan = model(x.permute(0, 2, 1, 3, 4), 1000.0 * (1.0 - t), padded_text, return_dict=False)[0]
    return -v_wan.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_equals_diffusers_wan_with_global_and_per_token_timesteps(layout):
    reference = _tiny_diffusers()
    state = reference.state_dict()
    if layout == "original":
        state = _original_state_dict(state)
    network = WanVideoNetwork(**_avgen_kwargs()).eval()
    report = load_wan_state_dict(network, state)
    assert report.ok and report.source.endswith(f"({layout} layout)")

    x, text, mask, padded = _inputs()
    conditions = network.preprocess_conditions(text, mask)
    t = torch.tensor([0.3, 0.85])
    with torch.no_grad():
        ours = network.predict_velocity(x, t, conditions)
    torch.testing.assert_close(ours, _diffusers_velocity(reference, x, t, padded), atol=1e-5, rtol=1e-5)

    # per-token times (Wan2.2 TI2V): first-frame tokens clean, the rest at t
    x_cond, t_tokens = ti2v_inputs(x, t, torch.randn(2, 4, 4, 6))
    assert t_tokens.shape == (2, 3 * 2 * 3)
    assert torch.all(t_tokens[:, :6] == 1.0) and torch.all(t_tokens[0, 6:] == 0.3)
    with torch.no_grad():
        ours = network.predict_velocity(x_cond, t_tokens, conditions)
    expected = _diffusers_velocity(reference, x_cond, t_tokens, padded)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # and per-token times do act per token: the first frame differs from the global-t output
    assert not torch.allclose(expected[:, 0], _diffusers_velocity(reference, x_cond, t, padded)[:, 0], atol=1e-3)


def test_loads_both_public_folder_layouts(tmp_path):
    reference = _tiny_diffusers()
    diffusers_dir = tmp_path / "Wan2.2-Diffusers"
    reference.save_pretrained(diffusers_dir / "transformer")
    net_a, report_a = wan_video_network_from_pretrained(diffusers_dir)
    assert report_a.ok and net_a.dim == 24 and net_a.text_len == 512

    original_dir = tmp_path / "Wan2.2-original"
    original_dir.mkdir()
    save_file(_original_state_dict(reference.state_dict()), str(original_dir / "diffusion_pytorch_model.safetensors"))
    (original_dir / "config.json").write_text(json.dumps(dict(
        _class_name="WanModel", model_type="ti2v", dim=24, ffn_dim=40, freq_dim=32, in_dim=4, out_dim=4,
        num_heads=2, num_layers=2, text_len=TEXT_LEN, text_dim=16, eps=1e-6)))
    net_b, report_b = wan_video_network_from_pretrained(original_dir)
    assert report_b.ok
    x, text, mask, padded = _inputs()
    t = torch.tensor([0.5, 0.1])
    with torch.no_grad():
        v_b = net_b.predict_velocity(x, t, net_b.preprocess_conditions(text, mask))
    torch.testing.assert_close(v_b, _diffusers_velocity(reference, x, t, padded), atol=1e-5, rtol=1e-5)
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_key_report_lists_unmatched_keys_and_strict_raises():
    state = _tiny_diffusers().state_dict()
    state["blocks.0.attn2.add_k_proj.weight"] = torch.zeros(24, 16)
    del state["proj_out.bias"]
    network = WanVideoNetwork(**_avgen_kwargs())
    with pytest.raises(ValueError, match="add_k_proj"):
        load_wan_state_dict(network, state)
    with pytest.warns(UserWarning, match="partial load"):
        report = load_wan_state_dict(network, state, strict=False)
    assert report.unexpected == ["blocks.0.attn2.add_k_proj.weight"]
    assert report.missing == ["head.bias"]
    torch.testing.assert_close(network.blocks[1].modulation, state["blocks.1.scale_shift_table"])


def test_preset_parameter_count_on_meta():
    from avgen.models import create_network

    network = create_network("wan2.2-ti2v-5b", device="meta")
    with torch.device("meta"):
        reference = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
            text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30)
    assert sum(p.numel() for p in network.parameters()) == 4_999_787_712
    assert sum(p.numel() for p in reference.parameters()) == 4_999_787_712
    assert network.head_dim == 128


def test_wan_timestep_is_the_one_convention_mapping():
    torch.testing.assert_close(wan_timestep(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([1000.0, 750.0, 0.0]))
    network = WanVideoNetwork(**_avgen_kwargs())
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, text, mask, _ = _inputs()
    conditions = network.preprocess_conditions(text, mask)
    t = torch.tensor([0.2, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(network.predict_velocity(x, t, conditions),
                                   -network.wan_forward(x, 1000 * (1 - t), conditions))


def test_text_padding_is_zero_filled_before_embedding():
    network = WanVideoNetwork(**_avgen_kwargs())
    text = torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    context = network.preprocess_conditions(text, mask).context
    assert context.shape == (1, TEXT_LEN, 24)
    zero_embedding = network.text_embedding(torch.zeros(16))
    torch.testing.assert_close(context[0, 3:], zero_embedding.expand(TEXT_LEN - 3, 24))
    # garbage in the padded slots changes nothing
    text2 = text.clone()
    text2[:, 3:] = 100.0
    torch.testing.assert_close(network.preprocess_conditions(text2, mask).context, context)


def test_rms_norm_across_heads_differs_from_per_head():
    torch.manual_seed(1)
    across = MultiHeadAttention(8, 2, qk_norm="across_heads")
    x = torch.randn(1, 5, 8)
    q = across.q(x)
    expected = q / q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(across._heads(q, across.norm_q).transpose(1, 2).flatten(2), expected)
    per_head = RMSNorm(4)(q.unflatten(-1, (2, 4))).flatten(2)
    assert not torch.allclose(per_head, expected, atol=1e-3)


def test_frame_lengths_mask_padded_frames_as_keys():
    network = WanVideoNetwork(**_avgen_kwargs()).eval()
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, text, mask, _ = _inputs(batch=1)
    conditions = network.preprocess_conditions(text[:1], mask[:1])
    t = torch.tensor([0.4])
    with torch.no_grad():
        short = network.predict_velocity(x[:, :2], t, conditions)
        padded = network.predict_velocity(torch.cat((x[:, :2], torch.randn_like(x[:, 2:])), 1), t, conditions,
                                          frame_lengths=torch.tensor([2]))
    torch.testing.assert_close(padded[:, :2], short, atol=1e-5, rtol=1e-5)


def test_bf16_load_keeps_time_embedding_and_tables_fp32_and_stays_close(tmp_path):
    reference = _tiny_diffusers()
    reference.save_pretrained(tmp_path / "transformer")
    network, _ = wan_video_network_from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert network.time_embedding.mlp[0].weight.dtype == torch.float32
    assert network.blocks[0].modulation.dtype == torch.float32 and network.head_modulation.dtype == torch.float32
    assert network.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    x, text, mask, padded = _inputs()
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        v = network.predict_velocity(x.bfloat16(), t, network.preprocess_conditions(text.bfloat16(), mask))
    # a diffusers config means the Wan pipeline's 512 text tokens
    expected = _diffusers_velocity(reference, x, t, torch.nn.functional.pad(padded, (0, 0, 0, 512 - TEXT_LEN)))
    full, _ = wan_video_network_from_pretrained(tmp_path)
    with torch.no_grad():
        v32 = full.predict_velocity(x, t, full.preprocess_conditions(text, mask))
    torch.testing.assert_close(v32, expected, atol=1e-5, rtol=1e-5)
    assert v.dtype == torch.bfloat16
    assert (v.float() - expected).abs().mean() < 0.03 * expected.abs().mean()
