"""Native BigVGAN: the anti-aliasing filter against scipy's Kaiser design, Snake(Beta) formulas,
resampler behaviour, NVIDIA checkpoints (weight-normalised, NVIDIA key names and directory layout)
loaded through the key map and checked against torch's own weight-norm parametrisation."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import scipy.signal
import torch

from avgen.codecs.bigvgan import (
    BIGVGAN_PRESETS,
    Activation1d,
    BigVGAN,
    SnakeBeta,
    kaiser_sinc_filter1d,
    load_bigvgan_weights,
    resolve_bigvgan,
)

TINY = dict(
    BIGVGAN_PRESETS["mmaudio_16k"], num_mels=12, upsample_initial_channel=16, upsample_rates=[4, 4],
    upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]],
)


def test_kaiser_sinc_filter_matches_scipy_design():
    k, cutoff, half_width = 12, 0.25, 0.3
    a = 2.285 * (k // 2 - 1) * math.pi * 4 * half_width + 7.95  # Kaiser's attenuation estimate
    window = scipy.signal.windows.kaiser(k, scipy.signal.kaiser_beta(a), sym=True)
    t = np.arange(-k // 2, k // 2) + 0.5
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * t)
    expected = torch.from_numpy(taps / taps.sum()).float().view(1, 1, k)
    torch.testing.assert_close(kaiser_sinc_filter1d(cutoff, half_width, k), expected, rtol=1e-5, atol=1e-7)


def test_snakebeta_formula():
    act = SnakeBeta(3, logscale=True)
    with torch.no_grad():
        act.alpha.copy_(torch.tensor([0.0, 0.5, -1.0]))
        act.beta.copy_(torch.tensor([0.2, -0.3, 0.0]))
    x = torch.randn(2, 3, 7)
    a, b = act.alpha.exp()[None, :, None], act.beta.exp()[None, :, None]
    torch.testing.assert_close(act(x), x + torch.sin(a * x) ** 2 / (b + 1e-9))


def test_antialiased_resampling_keeps_low_frequencies_and_suppresses_aliases():
    n = torch.arange(400, dtype=torch.float32)
    low = torch.sin(2 * math.pi * 0.02 * n)[None, None]  # well inside the pass band
    out = Activation1d(torch.nn.Identity())(low)
    assert out.shape == low.shape
    torch.testing.assert_close(out[..., 20:-20], low[..., 20:-20], atol=2e-2, rtol=0)

    class Square(torch.nn.Module):
        def forward(self, x):
            return x * x

    # sin^2 at 0.35 cycles/sample has a 0.7 component that a plain square folds back to 0.3;
    # computed at twice the rate and low-passed, most of it is removed.
    x = torch.sin(2 * math.pi * 0.35 * n)[None, None]
    anti_aliased = Activation1d(Square())(x)[..., 20:-20]
    naive = (x * x)[..., 20:-20]
    assert anti_aliased.std() < 0.3 * naive.std()


def official_state(model: BigVGAN, seed: int = 0) -> dict:
    """The model's tensors in NVIDIA's checkpoint form: every conv weight as weight_g / weight_v."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".weight") and value.ndim == 3 and not key.endswith("filter"):
            base = key[: -len(".weight")]
            v = torch.randn(value.shape, generator=g)
            state[f"{base}.weight_v"] = v
            state[f"{base}.weight_g"] = torch.rand(value.shape[0], 1, 1, generator=g) + 0.5
        elif key.endswith((".alpha", ".beta", ".bias")):
            state[key] = torch.randn(value.shape, generator=g) * 0.3
        else:
            state[key] = value.clone()
    return state


def test_official_key_names():
    model = BigVGAN(TINY)
    keys = set(official_state(model))
    for expected in (
        "conv_pre.weight_g", "conv_pre.weight_v", "conv_pre.bias", "ups.0.0.weight_v", "ups.1.0.bias",
        "resblocks.0.convs1.1.weight_g", "resblocks.3.convs2.0.weight_v", "resblocks.0.activations.3.act.alpha",
        "resblocks.0.activations.0.act.beta", "resblocks.0.activations.0.upsample.filter",
        "resblocks.0.activations.0.downsample.lowpass.filter", "activation_post.act.beta",
        "activation_post.upsample.filter", "conv_post.weight_g", "conv_post.bias",
    ):
        assert expected in keys, expected
    assert len(model.resblocks) == 2 * 2  # stages x kernels
    no_bias = BigVGAN(dict(TINY, use_bias_at_final=False))
    assert "conv_post.bias" not in no_bias.state_dict()


@pytest.mark.parametrize("tanh", [True, False])
def test_nvidia_directory_loads_and_matches_torch_weight_norm(tmp_path, tanh):
    config = dict(TINY, use_tanh_at_final=tanh, use_bias_at_final=tanh)
    source = BigVGAN(config)
    state = official_state(source, seed=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save({"generator": state}, tmp_path / "bigvgan_generator.pt")

    loaded_config, checkpoint = resolve_bigvgan(str(tmp_path), "nvidia/bigvgan_v2_44khz_128band_512x")
    assert loaded_config["num_mels"] == 12  # the directory's config, not the preset's
    native = BigVGAN(loaded_config)
    report = load_bigvgan_weights(native, checkpoint)
    assert report.ok

    # reference: torch's weight-norm parametrisation loading the same (old-style) tensors
    reference = copy.deepcopy(source)
    for module in reference.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.utils.parametrizations.weight_norm(module)
    reference.load_state_dict(state)
    mel = torch.randn(2, 12, 9)
    with torch.no_grad():
        expected, got = reference(mel), native(mel)
    assert got.shape == (2, 1, 9 * 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got.abs().max() <= 1.0


def test_parametrization_layout_and_unmatched_keys(tmp_path):
    source = BigVGAN(TINY)
    state = {}
    for key, value in official_state(source).items():  # newer torch naming of the same tensors
        key = key.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1")
        state[key] = value
    torch.save(state, tmp_path / "best_netG.pt")
    native = BigVGAN(TINY)
    assert load_bigvgan_weights(native, str(tmp_path / "best_netG.pt")).ok

    state.pop("conv_post.bias")
    state["mpd.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing: conv_post\.bias.*unexpected: mpd\.0\.weight"):
        load_bigvgan_weights(BigVGAN(TINY), str(tmp_path / "bad.pt"))
    del state["conv_pre.parametrizations.weight.original0"]
    torch.save(state, tmp_path / "half.pt")
    with pytest.raises(ValueError, match="incomplete"):
        load_bigvgan_weights(BigVGAN(TINY), str(tmp_path / "half.pt"))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        BigVGAN({"num_mels": 80})
    with pytest.raises(ValueError, match="halves to 0 channels"):
        BigVGAN(dict(TINY, upsample_initial_channel=2))
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        resolve_bigvgan(str(tmp_path), "mmaudio_16k")


def test_presets_build_on_meta():
    with torch.device("meta"):
        v16 = BigVGAN(BIGVGAN_PRESETS["mmaudio_16k"])
        v44 = BigVGAN(BIGVGAN_PRESETS["nvidia/bigvgan_v2_44khz_128band_512x"])
    assert (v16.hop_length, v44.hop_length) == (256, 512)
    assert all(p.is_meta for p in v44.parameters())
    # NVIDIA lists bigvgan_v2_44khz_128band_512x at 122M parameters
    assert abs(sum(p.numel() for p in v44.parameters()) / 1e6 - 122) < 1
