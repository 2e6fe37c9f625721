"""MMAudio mel VAE: EDM2 magnitude-preserving primitives against their formulas, the official
checkpoint naming (derived independently here from MMAudio's architecture rules) loaded through the
key map and checked against a functional transcription of MMAudio's forward pass, unmatched keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avgen.codecs.mmaudio_vae import (
    DATA_MEAN_80D,
    DATA_STD_128D,
    VAE_PRESETS,
    MMAudioVAE,
    MPConv1D,
    load_mmaudio_vae,
    mp_silu,
    mp_sum,
)


# ---- EDM2 primitives ---------------------------------------------------------------------------
def test_mpconv_weight_matches_formula_and_preserves_magnitude():
    torch.manual_seed(0)
    conv = MPConv1D(64, 48, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(48, 1, 1) * 5 + 0.1)  # arbitrary per-filter scales of the raw weight
    v = conv.weight.detach().double()
    n = 64 * 3
    # EDM2 Eq. 47 + 66: w_o = v_o / (eps + ||v_o|| / sqrt(n)) / sqrt(n)
    expected = torch.stack([v[o] / (1e-4 + v[o].norm() / math.sqrt(n)) / math.sqrt(n) for o in range(48)])
    torch.testing.assert_close(conv.effective_weight().double(), expected, rtol=1e-5, atol=1e-7)
    # unit-norm filters -> unit-variance iid input gives unit-variance output (interior frames)
    norms = conv.effective_weight().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(48), rtol=1e-3, atol=1e-3)
    x = torch.randn(8, 64, 4000)
    y = conv(x)[..., 1:-1]
    assert abs(y.std().item() - 1.0) < 0.02
    # the raw weight's scale is irrelevant (up to eps / (||v_o|| / sqrt(n)) <= 1e-3 here); gain scales the output
    scaled = MPConv1D(64, 48, 3)
    with torch.no_grad():
        scaled.weight.copy_(conv.weight * 7.0)
    torch.testing.assert_close(scaled(x[:1, :, :50]), conv(x[:1, :, :50]), rtol=2e-3, atol=3e-3)
    torch.testing.assert_close(conv(x[:1, :, :50], gain=2.5), 2.5 * conv(x[:1, :, :50]), rtol=1e-5, atol=1e-5)


def test_mp_silu_and_mp_sum_preserve_magnitude():
    # 0.596 = sqrt(E[silu(x)^2]) for x ~ N(0, 1): check by quadrature
    x = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    density = torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    second_moment = torch.trapezoid(mp_silu(x) ** 2 * density, x)
    assert abs(second_moment.item() - 1.0) < 5e-3
    a, b = torch.randn(2, 200000, dtype=torch.float64)
    for t in (0.3, 0.5, 0.8):
        out = mp_sum(a, b, t)
        torch.testing.assert_close(out, ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t**2))
        assert abs(out.std().item() - 1.0) < 0.01


# ---- the official checkpoint layout, derived from MMAudio's architecture rules -----------------
def official_vae_shapes(data_dim: int, embed_dim: int, dim: int, ch_mult=(1, 2, 4), num_res_blocks=2) -> dict:
    """Key -> shape of MMAudio's VAE state dict (vae.py: Encoder1D / Decoder1D / VAE)."""
    shapes = {"data_mean": (1, data_dim, 1), "data_std": (1, data_dim, 1)}

    def res(prefix, cin, cout):
        shapes[f"{prefix}.conv1.weight"] = (cout, cin, 3)
        shapes[f"{prefix}.conv2.weight"] = (cout, cout, 3)
        if cin != cout:
            shapes[f"{prefix}.nin_shortcut.weight"] = (cout, cin, 1)

    def mid(prefix, c):
        res(f"{prefix}.mid.block_1", c, c)
        shapes[f"{prefix}.mid.attn_1.qkv.weight"] = (3 * c, c, 1)
        shapes[f"{prefix}.mid.attn_1.proj_out.weight"] = (c, c, 1)
        res(f"{prefix}.mid.block_2", c, c)

    # encoder
    shapes["encoder.conv_in.weight"] = (dim, data_dim, 3)
    cin = dim
    for level, m in enumerate(ch_mult):
        for i in range(num_res_blocks):
            res(f"encoder.down.{level}.block.{i}", cin, dim * m)
            cin = dim * m
        if level == 0:
            shapes[f"encoder.down.{level}.downsample.conv1.weight"] = (cin, cin, 1)
            shapes[f"encoder.down.{level}.downsample.conv2.weight"] = (cin, cin, 1)
    mid("encoder", cin)
    shapes["encoder.conv_out.weight"] = (2 * embed_dim, cin, 3)
    shapes["encoder.learnable_gain"] = ()
    # decoder
    cin = dim * ch_mult[-1]
    shapes["decoder.conv_in.weight"] = (cin, embed_dim, 3)
    mid("decoder", cin)
    for level in reversed(range(len(ch_mult))):
        for i in range(num_res_blocks + 1):
            res(f"decoder.up.{level}.block.{i}", cin, dim * ch_mult[level])
            cin = dim * ch_mult[level]
        if level == 1:
            shapes[f"decoder.up.{level}.upsample.conv.weight"] = (cin, cin, 3)
    shapes["decoder.conv_out.weight"] = (data_dim, cin, 3)
    shapes["decoder.learnable_gain"] = ()
    return shapes


def random_official_state(data_dim=80, embed_dim=20, dim=8, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) for k, s in official_vae_shapes(data_dim, embed_dim, dim).items()}
    state["encoder.learnable_gain"] = torch.tensor(0.3)
    state["decoder.learnable_gain"] = torch.tensor(-0.2)
    state["data_mean"] = torch.randn(1, data_dim, 1, generator=g) - 2
    state["data_std"] = torch.rand(1, data_dim, 1, generator=g) + 0.5
    return state


# ---- functional transcription of MMAudio's forward (weights as after remove_weight_norm) -------
def _w(sd, key):
    v = sd[key].double()
    norm = v.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    n = v[0].numel()
    return v / (1e-4 + norm / math.sqrt(n)) / math.sqrt(n)


def _conv(sd, key, x, gain=1.0):
    w = _w(sd, key) * gain
    return F.conv1d(x, w, padding=w.shape[-1] // 2)


def _pixnorm(x, dim):
    n = x.shape[dim]
    return x / (1e-4 + x.norm(dim=dim, keepdim=True) / math.sqrt(n))


def _silu(x):
    return F.silu(x) / 0.596


def _sum(a, b, t=0.3):
    return ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t**2)


def _res(sd, p, x):
    x = _pixnorm(x, 1)
    h = _conv(sd, f"{p}.conv2.weight", _silu(_conv(sd, f"{p}.conv1.weight", _silu(x))))
    if f"{p}.nin_shortcut.weight" in sd:
        x = _conv(sd, f"{p}.nin_shortcut.weight", x)
    return _sum(x, h)


def _attn(sd, p, x):
    b, c, t = x.shape
    y = _conv(sd, f"{p}.qkv.weight", x).reshape(b, c, 3, t)  # one head: channel index = c * 3 + j
    y = _pixnorm(y, 1)
    q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]  # (B, C, T)
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(c), dim=-1)
    h = torch.einsum("bts,bcs->bct", weights, v)
    return _sum(x, _conv(sd, f"{p}.proj_out.weight", h))


def _mid(sd, p, h):
    return _res(sd, f"{p}.mid.block_2", _attn(sd, f"{p}.mid.attn_1", _res(sd, f"{p}.mid.block_1", h)))


def reference_encode(sd, log_mel):
    x = (log_mel.double() - sd["data_mean"].double()) / sd["data_std"].double()
    h = _conv(sd, "encoder.conv_in.weight", x)
    for level in range(3):
        for i in range(2):
            h = _res(sd, f"encoder.down.{level}.block.{i}", h).clamp(-256, 256)
        if level == 0:
            h = _conv(sd, "encoder.down.0.downsample.conv1.weight", h)
            h = 0.5 * (h[..., 0::2] + h[..., 1::2])
            h = _conv(sd, "encoder.down.0.downsample.conv2.weight", h)
    h = _mid(sd, "encoder", h).clamp(-256, 256)
    moments = _conv(sd, "encoder.conv_out.weight", _silu(h), gain=1 + sd["encoder.learnable_gain"].double())
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30, 20)


def reference_decode(sd, z):
    h = _mid(sd, "decoder", _conv(sd, "decoder.conv_in.weight", z.double())).clamp(-256, 256)
    for level in (2, 1, 0):
        for i in range(3):
            h = _res(sd, f"decoder.up.{level}.block.{i}", h).clamp(-256, 256)
        if level == 1:
            h = _conv(sd, "decoder.up.1.upsample.conv.weight", h.repeat_interleave(2, dim=-1))
    out = _conv(sd, "decoder.conv_out.weight", _silu(h), gain=1 + sd["decoder.learnable_gain"].double())
    return out * sd["data_std"].double() + sd["data_mean"].double()


def test_official_state_dict_loads_and_matches_transcribed_forward(tmp_path):
    state = random_official_state()
    path = tmp_path / "v1-16-tiny.pth"
    torch.save(state, path)
    vae = MMAudioVAE(data_dim=80, embed_dim=20, hidden_dim=8)
    report = load_mmaudio_vae(vae, str(path))
    assert report.ok and len(report.loaded) == len(state)
    vae = vae.double()
    log_mel = torch.randn(2, 80, 24, dtype=torch.float64) * 2 - 3
    mean, logvar = vae.encode(log_mel)
    ref_mean, ref_logvar = reference_encode(state, log_mel)
    assert mean.shape == (2, 20, 12)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logvar, ref_logvar, rtol=1e-9, atol=1e-9)
    z = torch.randn(2, 20, 12, dtype=torch.float64)
    decoded = vae.decode(z)
    assert decoded.shape == (2, 80, 24)
    torch.testing.assert_close(decoded, reference_decode(state, z), rtol=1e-9, atol=1e-9)


def test_wrapped_prefix_is_stripped(tmp_path):
    state = {f"module.{k}": v for k, v in random_official_state(seed=1).items()}
    torch.save(state, tmp_path / "wrapped.pth")
    report = load_mmaudio_vae(MMAudioVAE(data_dim=80, embed_dim=20, hidden_dim=8), str(tmp_path / "wrapped.pth"))
    assert report.ok


def test_unmatched_keys_are_reported(tmp_path):
    state = random_official_state()
    state.pop("decoder.up.1.upsample.conv.weight")
    state["decoder.post_quant_conv.weight"] = torch.randn(20, 20, 1)
    state["encoder.conv_in.weight"] = torch.randn(8, 80, 5)  # wrong kernel size
    torch.save(state, tmp_path / "bad.pth")
    vae = MMAudioVAE(data_dim=80, embed_dim=20, hidden_dim=8)
    with pytest.raises(ValueError, match=r"1 missing: decoder\.up\.1\.upsample\.conv\.weight.*1 unexpected: decoder\.post_quant_conv"):
        load_mmaudio_vae(vae, str(tmp_path / "bad.pth"))
    before = vae.encoder.conv_in.weight.detach().clone()
    with pytest.warns(UserWarning, match="partial load"):
        report = load_mmaudio_vae(vae, str(tmp_path / "bad.pth"), strict=False)
    assert report.missing == ["decoder.up.1.upsample.conv.weight"]
    assert report.unexpected == ["decoder.post_quant_conv.weight"]
    assert report.mismatched and report.mismatched[0].startswith("encoder.conv_in.weight")
    torch.testing.assert_close(vae.encoder.conv_in.weight, before)  # mismatched: left as it was
    torch.testing.assert_close(vae.decoder.conv_in.weight, state["decoder.conv_in.weight"])  # matched: loaded
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmaudio_vae(vae, str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_presets_have_official_shapes_on_meta(mode):
    preset = VAE_PRESETS[mode]
    with torch.device("meta"):
        vae = MMAudioVAE(**preset)
    own = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    official = official_vae_shapes(preset["data_dim"], preset["embed_dim"], preset["hidden_dim"])
    official = {k: (v[1],) if k in ("data_mean", "data_std") else v for k, v in official.items()}
    assert own == official
    assert all(t.is_meta for t in vae.state_dict().values())


def test_default_standardisation_tables():
    vae = MMAudioVAE(data_dim=80, embed_dim=20, hidden_dim=8)
    assert vae.data_mean[0].item() == pytest.approx(DATA_MEAN_80D[0])
    vae = MMAudioVAE(data_dim=128, embed_dim=40, hidden_dim=8)
    assert vae.data_std[-1].item() == pytest.approx(DATA_STD_128D[-1])
    with pytest.raises(ValueError, match="multiple of 2"):
        vae.encode(torch.zeros(1, 128, 7))
