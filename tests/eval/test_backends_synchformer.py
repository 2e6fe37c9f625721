"""Synchformer (DeSync's offset classifier) against transcriptions of the reference code.

* front-end: numpy transcription of av-benchmark's ``encode_audio_with_sync`` (torchaudio
  ``MelSpectrogram(16000, n_fft=1024, win_length=400, hop_length=160, n_mels=128)`` -> log(x + 1e-6) ->
  zero pad to 66 frames -> (x + 4.2677393) / (2 * 4.5689974));
* audio branch and offset head: functional transcriptions of Synchformer's ``AST.forward`` (Hugging Face
  ``ASTModel`` + ``FrequencyTransformerEncoderLayer``, which is ``nn.TransformerEncoderLayer`` with a CLS
  token) and ``Synchformer.compare_v_a`` / ``GlobalTransformer.forward`` (minGPT blocks), reading a tiny
  random state dict written here in the checkpoint's own key names;
* the checkpoint loader (bare state dict, ``module.`` prefix, the training ``.pt`` with a pickled
  OmegaConf config, corrupt / foreign / missing files) and the DeSync metric end to end.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from avgen.conditioning._common import resize_short_side_center_crop
from avgen.eval.backends import BackendUnavailable
from avgen.eval.desync import SYNCHFORMER
from avgen.eval.synchformer import (Synchformer, SynchformerBackend, frames_at_fps, load_synchformer_av_state_dict,
                                    score_desync, synchformer_log_mel)

# Tiny widths with the real head counts (12 / 12 / 8: not visible in the state dict, so the loader assumes them);
# the audio geometry (128 mels x 66 frames -> 12 x 6 patches) is the real one.
D, HIDDEN, PATCH, IMAGE = 24, 48, 8, 16
AST_HEADS, HEAD_HEADS = 12, 8


# ----------------------------------------------------------------------------- the checkpoint's key names
def _encoder_layer(prefix: str, d: int, hidden: int) -> dict[str, tuple]:
    """nn.TransformerEncoderLayer + cls_token (Synchformer's BaseEncoderLayer)."""
    return {f"{prefix}cls_token": (1, 1, d), f"{prefix}self_attn.in_proj_weight": (3 * d, d),
            f"{prefix}self_attn.in_proj_bias": (3 * d,), f"{prefix}self_attn.out_proj.weight": (d, d),
            f"{prefix}self_attn.out_proj.bias": (d,), f"{prefix}linear1.weight": (hidden, d), f"{prefix}linear1.bias": (hidden,),
            f"{prefix}linear2.weight": (d, hidden), f"{prefix}linear2.bias": (d,), f"{prefix}norm1.weight": (d,),
            f"{prefix}norm1.bias": (d,), f"{prefix}norm2.weight": (d,), f"{prefix}norm2.bias": (d,)}


def official_shapes(vis_depth=1, aud_depth=2, n_layer=2, segments=14) -> dict[str, tuple]:
    """Key -> shape of the Synchformer state dict (``model.sync_model.Synchformer``), tiny widths."""
    v, a, t = "vfeat_extractor.", "afeat_extractor.", "transformer."
    patches, times = (IMAGE // PATCH) ** 2, 8
    shapes = {v + "cls_token": (1, 1, D), v + "pos_embed": (1, patches + 1, D), v + "temp_embed": (1, times, D),
              v + "patch_embed.proj.weight": (D, 3, PATCH, PATCH), v + "patch_embed.proj.bias": (D,),
              v + "patch_embed_3d.proj.weight": (D, 3, 2, PATCH, PATCH), v + "patch_embed_3d.proj.bias": (D,),
              v + "norm.weight": (D,), v + "norm.bias": (D,)}
    for i in range(vis_depth):
        b = f"{v}blocks.{i}."
        for n in ("norm1", "norm2", "norm3"):
            shapes |= {f"{b}{n}.weight": (D,), f"{b}{n}.bias": (D,)}
        for n in ("attn", "timeattn"):
            shapes |= {f"{b}{n}.qkv.weight": (3 * D, D), f"{b}{n}.qkv.bias": (3 * D,), f"{b}{n}.proj.weight": (D, D),
                       f"{b}{n}.proj.bias": (D,)}
        shapes |= {f"{b}mlp.fc1.weight": (4 * D, D), f"{b}mlp.fc1.bias": (4 * D,), f"{b}mlp.fc2.weight": (D, 4 * D),
                   f"{b}mlp.fc2.bias": (D,)}
    shapes |= _encoder_layer(v + "spatial_attn_agg.", D, 4 * D)
    e = a + "ast.embeddings."
    shapes |= {e + "cls_token": (1, 1, D), e + "distillation_token": (1, 1, D), e + "position_embeddings": (1, 12 * 6 + 2, D),
               e + "patch_embeddings.projection.weight": (D, 1, 16, 16), e + "patch_embeddings.projection.bias": (D,),
               a + "ast.layernorm.weight": (D,), a + "ast.layernorm.bias": (D,)}
    for i in range(aud_depth):
        b = f"{a}ast.encoder.layer.{i}."
        for n in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense"):
            shapes |= {f"{b}{n}.weight": (D, D), f"{b}{n}.bias": (D,)}
        shapes |= {f"{b}intermediate.dense.weight": (HIDDEN, D), f"{b}intermediate.dense.bias": (HIDDEN,),
                   f"{b}output.dense.weight": (D, HIDDEN), f"{b}output.dense.bias": (D,)}
        for n in ("layernorm_before", "layernorm_after"):
            shapes |= {f"{b}{n}.weight": (D,), f"{b}{n}.bias": (D,)}
    shapes |= _encoder_layer(a + "freq_attn_agg.", D, HIDDEN)
    shapes |= {"vproj.weight": (D, D), "vproj.bias": (D,), "aproj.weight": (D, D), "aproj.bias": (D,)}
    shapes |= {t + "vis_in_lnorm.weight": (D,), t + "vis_in_lnorm.bias": (D,), t + "aud_in_lnorm.weight": (D,),
               t + "aud_in_lnorm.bias": (D,), t + "OFF_tok": (1, 1, D), t + "MOD_tok": (1, 1, D),
               t + "pos_emb_cfg.pos_emb": (1, 2 + segments * (8 + 6), D), t + "ln_f.weight": (D,), t + "ln_f.bias": (D,),
               t + "off_head.weight": (21, D), t + "off_head.bias": (21,)}
    for i in range(n_layer):
        b = f"{t}blocks.{i}."
        for n in ("attn.key", "attn.query", "attn.value", "attn.proj"):
            shapes |= {f"{b}{n}.weight": (D, D), f"{b}{n}.bias": (D,)}
        shapes |= {f"{b}ln1.weight": (D,), f"{b}ln1.bias": (D,), f"{b}ln2.weight": (D,), f"{b}ln2.bias": (D,),
                   f"{b}mlp.0.weight": (4 * D, D), f"{b}mlp.0.bias": (4 * D,), f"{b}mlp.2.weight": (D, 4 * D),
                   f"{b}mlp.2.bias": (D,)}
    return shapes


def official_state(seed=0, **kw) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**kw).items():
        value = torch.randn(shape, generator=g) * (0.5 if key.endswith(("_tok", "pos_emb", "position_embeddings")) else 0.2)
        if key.endswith("weight") and len(shape) == 1:  # LayerNorm gains around 1
            value = 1.0 + 0.1 * torch.randn(shape, generator=g)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def state():
    return official_state()


@pytest.fixture(scope="module")
def model(state):
    return Synchformer.from_state_dict(state)


# ------------------------------------------------------------------------------------------ front-end
def numpy_torchaudio_mel(x: np.ndarray, sr=16000, n_fft=1024, win=400, hop=160, n_mels=128) -> np.ndarray:
    """torchaudio.transforms.MelSpectrogram defaults (center, reflect, power 2, HTK, norm None): (n_mels, frames)."""
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([padded[i * hop:i * hop + n_fft] for i in range(1 + len(x) // hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, freq)
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    mel_to_hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    all_freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    f_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))  # (freq, n_mels)
    return (power @ fb).T


def numpy_encode_audio(segments: np.ndarray) -> np.ndarray:
    """av-benchmark encode_audio_with_sync up to the network: (N, 10240) -> (N, 66, 128) (T, F) for AST."""
    out = []
    for seg in segments:
        x = np.log(numpy_torchaudio_mel(seg) + 1e-6)
        x = np.pad(x, ((0, 0), (0, 66 - x.shape[1])), constant_values=0.0)
        out.append(((x - -4.2677393) / (2 * 4.5689974)).T)
    return np.stack(out)


def test_front_end_matches_numpy_transcription():
    rng = np.random.default_rng(0)
    segments = rng.normal(scale=0.1, size=(2, 10240))
    segments[1, :4000] = 0.0  # near-silence exercises the log floor
    ours = synchformer_log_mel(torch.from_numpy(segments)).numpy()
    ref = numpy_encode_audio(segments)
    assert ours.shape == (2, 66, 128) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(ours[:, 65], 4.2677393 / (2 * 4.5689974), rtol=1e-6)  # the padded 66th frame


# ------------------------------------------------------------------------------ functional references
def ln(x, s, p, eps):
    return F.layer_norm(x, x.shape[-1:], s[p + ".weight"], s[p + ".bias"], eps)


def lin(x, s, p):
    return x @ s[p + ".weight"].T + s[p + ".bias"]


def mha(q, k, v, heads):
    split = lambda t: t.reshape(*t.shape[:2], heads, -1).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]), dim=-1)
    out = att @ v
    return out.transpose(1, 2).reshape(*out.shape[:1], out.shape[2], -1)


def ref_encoder_layer(x, s, p, heads):
    """Synchformer BaseEncoderLayer: nn.TransformerEncoderLayer(norm_first, GELU, eps 1e-6) on [CLS, x] -> CLS."""
    d = x.shape[-1]
    layer = nn.TransformerEncoderLayer(d, heads, s[p + "linear1.weight"].shape[0], dropout=0.0, activation=nn.GELU(),
                                       layer_norm_eps=1e-6, batch_first=True, norm_first=True).eval()
    layer.load_state_dict({k.removeprefix(p): v for k, v in s.items() if k.startswith(p) and "cls_token" not in k})
    with torch.no_grad():
        return layer(torch.cat([s[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1))[:, 0]


def ref_ast_features(spec, s, heads=AST_HEADS):
    """Synchformer AST.forward_segments (factorize_freq_time, freq TransformerEncoderLayer, time Identity)."""
    p = "afeat_extractor.ast."
    x = spec.unsqueeze(1).transpose(2, 3)  # ASTPatchEmbeddings: (N, 1, F, T)
    x = F.conv2d(x, s[p + "embeddings.patch_embeddings.projection.weight"],
                 s[p + "embeddings.patch_embeddings.projection.bias"], stride=(10, 10))
    n, d, f, t = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[p + "embeddings.cls_token"].expand(n, -1, -1), s[p + "embeddings.distillation_token"].expand(n, -1, -1), x], 1)
    x = x + s[p + "embeddings.position_embeddings"]
    i = 0
    while f"{p}encoder.layer.{i}.layernorm_before.weight" in s:
        L = f"{p}encoder.layer.{i}."
        h = ln(x, s, L + "layernorm_before", 1e-12)
        a = mha(lin(h, s, L + "attention.attention.query"), lin(h, s, L + "attention.attention.key"),
                lin(h, s, L + "attention.attention.value"), heads)
        x = x + lin(a, s, L + "attention.output.dense")
        x = x + lin(F.gelu(lin(ln(x, s, L + "layernorm_after", 1e-12), s, L + "intermediate.dense")), s, L + "output.dense")
        i += 1
    x = ln(x, s, p + "layernorm", 1e-12)
    feats = x[:, 2:].permute(0, 2, 1).reshape(n, d, f, t)  # restore_freq_temp_dims
    feats = feats.permute(0, 3, 2, 1).reshape(n * t, f, d)  # FrequencyTransformerEncoderLayer
    return ref_encoder_layer(feats, s, "afeat_extractor.freq_attn_agg.", heads).reshape(n, t, d)


def ref_compare_v_a(vis, aud, s, heads=HEAD_HEADS):
    """Synchformer.compare_v_a: projections, flattening of segments, GlobalTransformer.forward (eval)."""
    t = "transformer."
    vis, aud = lin(vis, s, "vproj").flatten(1, 2), lin(aud, s, "aproj").flatten(1, 2)
    b = vis.shape[0]
    x = torch.cat([s[t + "OFF_tok"].expand(b, -1, -1), ln(vis, s, t + "vis_in_lnorm", 1e-5),
                   s[t + "MOD_tok"].expand(b, -1, -1), ln(aud, s, t + "aud_in_lnorm", 1e-5)], 1) + s[t + "pos_emb_cfg.pos_emb"]
    i = 0
    while f"{t}blocks.{i}.ln1.weight" in s:
        B = f"{t}blocks.{i}."
        h = ln(x, s, B + "ln1", 1e-5)
        x = x + lin(mha(lin(h, s, B + "attn.query"), lin(h, s, B + "attn.key"), lin(h, s, B + "attn.value"), heads), s, B + "attn.proj")
        x = x + lin(F.gelu(lin(ln(x, s, B + "ln2", 1e-5), s, B + "mlp.0")), s, B + "mlp.2")
        i += 1
    return lin(ln(x, s, t + "ln_f", 1e-5)[:, 0], s, t + "off_head")


def test_audio_branch_matches_reference_forward(model, state):
    spec = torch.randn(3, 66, 128)
    with torch.no_grad():
        ours = model.afeat_extractor(spec)
    assert ours.shape == (3, 6, D)
    torch.testing.assert_close(ours, ref_ast_features(spec, state), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 66, 128\)"):
        model.afeat_extractor(torch.zeros(1, 65, 128))


def test_offset_head_matches_reference_forward(model, state):
    vis, aud = torch.randn(2, 14, 8, D), torch.randn(2, 14, 6, D)
    with torch.no_grad():
        ours = model.compare_v_a(vis, aud)
    assert ours.shape == (2, 21)
    torch.testing.assert_close(ours, ref_compare_v_a(vis, aud, state), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="position embedding has 198"):
        model.compare_v_a(vis[:, :13], aud[:, :13])


# --------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_errors(tmp_path, state, model):
    from omegaconf import OmegaConf  # the training checkpoint pickles its OmegaConf config

    official = tmp_path / "24-01-04T16-39-21.pt"
    torch.save({"model": state, "args": OmegaConf.create({"model": {"params": {"n": [1, 2.0, None]}}}), "epoch": 7}, official)
    backend = SynchformerBackend(str(official))
    assert backend.name == "synchformer:24-01-04T16-39-21"
    for key, value in backend.model.state_dict().items():  # every tensor came from the file
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0)
    torch.testing.assert_close(backend.model.vfeat_extractor.spatial_attn_agg.block.attn.qkv.weight,
                               state["vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight"], rtol=0, atol=0)
    torch.testing.assert_close(backend.model.afeat_extractor.freq_attn_agg.block.mlp.fc2.bias,
                               state["afeat_extractor.freq_attn_agg.linear2.bias"], rtol=0, atol=0)

    bare = tmp_path / "synchformer_state_dict.pth"  # MMAudio / av-benchmark's file; here with a DDP prefix
    torch.save({f"module.{k}": v for k, v in state.items()}, bare)
    assert SynchformerBackend(str(bare)).model.transformer.off_head.weight.equal(state["transformer.off_head.weight"])

    missing = dict(state)
    del missing["afeat_extractor.ast.encoder.layer.1.output.dense.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(BackendUnavailable, match=r"missing.pth does not match.*Missing key.*--synchformer"):
        SynchformerBackend(str(tmp_path / "missing.pth"))
    extra = state | {"transformer.sync_head.weight": torch.zeros(2, D)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(BackendUnavailable, match=r"Unexpected key.*sync_head"):
        SynchformerBackend(str(tmp_path / "extra.pth"))
    with pytest.raises(RuntimeError, match="vproj.weight"):  # the loader itself is strict
        load_synchformer_av_state_dict(model, {k: v for k, v in state.items() if not k.startswith("vproj.")})
    torch.save({k: v for k, v in state.items() if k.startswith("vfeat_extractor.")}, tmp_path / "visual.pth")
    with pytest.raises(BackendUnavailable, match="no audio-visual Synchformer state dict"):
        SynchformerBackend(str(tmp_path / "visual.pth"))
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match=r"corrupt.pt cannot be read.*fix: --synchformer"):
        SynchformerBackend(str(tmp_path / "corrupt.pt"))
    with pytest.raises(BackendUnavailable, match=r"no Synchformer checkpoint at .*nowhere.pt"):
        SynchformerBackend(str(tmp_path / "nowhere.pt"))


# ------------------------------------------------------------------------------------ metric, end to end
def ref_offset_logits(frames, fps, audio16k, model, state):
    """The protocol by hand: 25-fps frames, first / last crop of 14 segments, windows and audio segments."""
    idx = [min(int(math.floor((k / 25 + 1e-4) * fps)), len(frames) - 1) for k in range(int(len(frames) / fps * 25 + 1e-6))]
    video = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float() / 255.0
    usable = min(len(idx), len(audio16k) // 640)
    num_segments = (usable - 16) // 8 + 1
    logits = []
    for seg0 in (0, num_segments - 14):
        f0 = seg0 * 8
        crop = resize_short_side_center_crop(video[f0:f0 + 120], IMAGE) * 2 - 1
        windows = torch.stack([crop[k * 8:k * 8 + 16].permute(1, 0, 2, 3) for k in range(14)])
        with torch.no_grad():
            vis = model.vfeat_extractor.encode_windows(windows)[None]  # the visual branch is tested in test_sync_encoder
        segs = np.stack([audio16k[f0 * 640 + k * 5120: f0 * 640 + k * 5120 + 10240] for k in range(14)])
        aud = ref_ast_features(torch.from_numpy(numpy_encode_audio(segs)).float(), state)[None]
        logits.append(ref_compare_v_a(vis, aud, state)[0])
    return torch.stack(logits)


def test_desync_end_to_end_on_a_tiny_model(tmp_path, state, model, capsys):
    from avgen.data.media import write_mp4, write_wav
    from avgen.eval.registry import ScoreContext

    torch.save(state, tmp_path / "tiny.pth")
    backend = SynchformerBackend(str(tmp_path / "tiny.pth"))
    rng = np.random.default_rng(1)
    generated, videos = {}, {}
    for name, seconds, fps in (("a", 5.4, 30.0), ("short", 2.0, 25.0), ("no_video", 5.0, 25.0)):
        audio = rng.normal(scale=0.1, size=int(seconds * 16000)) + 0.05  # a DC offset, kept as av-benchmark keeps it
        generated[name] = write_wav(tmp_path / f"{name}.wav", audio, 16000)
        if name != "no_video":
            frames = torch.from_numpy(rng.random((int(seconds * fps), 3, 20, 28), dtype=np.float32))
            videos[name] = write_mp4(tmp_path / f"{name}.mp4", frames, fps)
    ctx = ScoreContext(ids=list(generated), samples={}, generated=generated, reference={}, cache_dir=tmp_path / "model",
                       reference_cache_dir=tmp_path / "reference", videos=videos, backend=backend)

    score = score_desync(ctx)
    cache = tmp_path / "model" / "embeddings" / f"{backend.name}-offset_logits.npz"
    cached = dict(np.load(cache))
    assert sorted(cached) == ["a", "no_video", "short"] and cached["short"].shape == cached["no_video"].shape == (0, 21)
    assert "skipped 2 clip(s) without a video or shorter than 4.8 s" in capsys.readouterr().err

    frames, fps = ctx.video("a")
    audio, rate = ctx.audio("generated", "a")
    assert rate == 16000 and fps == pytest.approx(30.0)
    expected_a = ref_offset_logits(frames, fps, audio.double().numpy(), model, state)
    torch.testing.assert_close(torch.from_numpy(cached["a"]), expected_a.float(), rtol=1e-3, atol=1e-4)
    assert cached["a"].shape == (2, 21) and not np.allclose(cached["a"][0], cached["a"][1])  # 5.4 s: two crops

    grid = np.linspace(-2, 2, 21)  # logits -> offsets -> DeSync, by hand
    offsets = [abs(grid[int(np.argmax(row))]) for row in cached["a"]]
    assert len(offsets) == 2 and score == pytest.approx(float(np.mean(offsets)))

    backend.offset_logits = None  # a rerun reads the cache and computes nothing
    assert score_desync(ctx) == score
    ctx.ids = ["no_video"]
    assert math.isnan(score_desync(ctx))


def test_frames_at_fps_follows_the_shown_frame_rule():
    assert frames_at_fps(30, 30.0, 25.0).tolist() == [int(math.floor((k / 25 + 1e-4) * 30)) for k in range(25)]
    assert frames_at_fps(50, 25.0, 25.0).tolist() == list(range(50))
    assert SYNCHFORMER.crop_frames == 120


def test_registry_finds_desync_and_reports_the_missing_flag(tmp_path, state):
    from avgen.cli.compare import _select_metrics, weight_flags
    from avgen.eval.registry import METRICS, load_builtin

    load_builtin()
    spec = METRICS["desync"]
    assert spec.backend == "synchformer" and spec.needs_video and not spec.higher_is_better
    assert "synchformer" in weight_flags()
    metrics, skipped, _ = _select_metrics(["desync"])
    assert metrics == [] and "no Synchformer weights given; fix: --synchformer" in skipped["desync"]
    torch.save(state, tmp_path / "tiny.pth")
    metrics, skipped, backends = _select_metrics(["desync"], weights={"synchformer": str(tmp_path / "tiny.pth")})
    assert metrics == ["desync"] and not skipped and isinstance(backends["synchformer"], SynchformerBackend)
