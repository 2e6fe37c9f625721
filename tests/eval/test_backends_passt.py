"""PaSST-S back-end: the front-end against a numpy transcription of hear21passt's ``AugmentMelSTFT``
(eval), the network against a functional transcription of ``PaSST.forward`` (passt_hear21
``models/passt.py``) on tiny random weights with the released checkpoint's key names, the loader on
the bare / wrapped / ``{"model": ...}`` layouts, and the registered FD / KL / IS metrics."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from avgen.eval import BackendUnavailable
from avgen.eval.passt import PaSST, PasstBackend, PasstMel

TINY = dict(embed_dim=32, depth=2, num_heads=2, freq_patches=2, time_patches=6)
TINY_MELS = 26  # (26 - 16) // 10 + 1 = 2 frequency patches = 26 // 10, as the reference sizes its grid
TINY_CLIP = 16000  # 0.5 s at 32 kHz: 50 frames -> 4 of the 6 time positions (the cut is exercised)


def _kaldi_mel_banks(num_bins, n_fft, sr, low, high) -> np.ndarray:
    """torchaudio.compliance.kaldi.get_mel_banks (no VTLN) + the zero Nyquist column: (num_bins, n_fft//2+1)."""
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    delta = (mel(high) - mel(low)) / (num_bins + 1)
    b = np.arange(num_bins)[:, None]
    left, center, right = mel(low) + b * delta, mel(low) + (b + 1) * delta, mel(low) + (b + 2) * delta
    m = mel(sr / n_fft * np.arange(n_fft // 2))[None]
    banks = np.maximum(0.0, np.minimum((m - left) / (center - left), (right - m) / (right - center)))
    return np.pad(banks, ((0, 0), (0, 1)))


def _augment_mel_stft_eval(x: np.ndarray, n_mels=128, sr=32000, win=800, hop=320, n_fft=1024) -> np.ndarray:
    """AugmentMelSTFT.forward in eval mode (fmin 0, fmax sr/2 - 2000/2): (n_mels, frames)."""
    y = x[1:] - 0.97 * x[:-1]  # conv1d with kernel [-0.97, 1]
    padded = np.pad(y, n_fft // 2, mode="reflect")  # torch.stft center=True, pad_mode="reflect"
    n = np.arange(win)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / (win - 1))  # symmetric
    frames = np.stack([padded[s : s + n_fft] for s in range(0, len(padded) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (frames, bins)
    mel = _kaldi_mel_banks(n_mels, n_fft, sr, 0.0, sr // 2 - 1000) @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5.0


def _reference_passt(state: dict, spec: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PaSST.forward_features + forward (eval, distilled) with functional ops on the state dict."""
    x = F.conv2d(spec, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=10)  # [b, e, f, t]
    b = x.shape[0]
    x = x + state["time_new_pos_embed"][:, :, :, : x.shape[-1]]
    x = x + state["freq_new_pos_embed"]
    x = x.flatten(2).transpose(1, 2)
    cls = state["cls_token"].expand(b, -1, -1) + state["new_pos_embed"][:, :1, :]
    dist = state["dist_token"].expand(b, -1, -1) + state["new_pos_embed"][:, 1:, :]
    x = torch.cat((cls, dist, x), dim=1)
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    ln = lambda t, p, eps=1e-6: F.layer_norm(t, t.shape[-1:], state[f"{p}.weight"], state[f"{p}.bias"], eps)  # noqa: E731
    lin = lambda t, p: t @ state[f"{p}.weight"].T + state[f"{p}.bias"]  # noqa: E731
    for i in range(depth):
        p = f"blocks.{i}"
        B, N, C = x.shape
        qkv = lin(ln(x, f"{p}.norm1"), f"{p}.attn.qkv").reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(dim=-1)
        x = x + lin((attn @ v).transpose(1, 2).reshape(B, N, C), f"{p}.attn.proj")
        h = lin(ln(x, f"{p}.norm2"), f"{p}.mlp.fc1")
        x = x + lin(0.5 * h * (1 + torch.erf(h / 2**0.5)), f"{p}.mlp.fc2")
    x = ln(x, "norm")
    features = (x[:, 0] + x[:, 1]) / 2
    return lin(ln(features, "head.0", eps=1e-5), "head.1"), features


def _tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = PaSST(**TINY)
    with torch.no_grad():  # non-trivial norms and head (the reference init zeroes the heads)
        for name, p in model.named_parameters():
            if "norm" in name or name.startswith("head.0"):
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif name.startswith("head"):
                p.normal_(0, 0.3)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_front_end_matches_augment_mel_stft_transcription():
    x = np.random.default_rng(0).normal(size=12_345) * 0.3
    mel = PasstMel()  # get_basic_model's front-end
    assert (mel.fmin, mel.fmax, mel.n_mels) == (0.0, 15000.0, 128)
    ours = mel(torch.from_numpy(x)[None])[0].double().numpy()
    expected = _augment_mel_stft_eval(x)
    assert ours.shape == expected.shape == (128, mel.num_frames(x.size)) == (128, 39)
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=1e-4)
    assert mel.num_frames(320_000) == 1000 and not mel.state_dict()  # 10 s -> 1000 frames; nothing persistent


def test_real_architecture_has_the_release_key_names_and_shapes():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in PaSST().state_dict().items()}
    expected = {"cls_token": (1, 1, 768), "dist_token": (1, 1, 768), "new_pos_embed": (1, 2, 768),
                "freq_new_pos_embed": (1, 768, 12, 1), "time_new_pos_embed": (1, 768, 1, 99),
                "patch_embed.proj.weight": (768, 1, 16, 16), "patch_embed.proj.bias": (768,),
                "norm.weight": (768,), "norm.bias": (768,), "head.0.weight": (768,), "head.0.bias": (768,),
                "head.1.weight": (527, 768), "head.1.bias": (527,), "head_dist.weight": (527, 768), "head_dist.bias": (527,)}
    for i in range(12):
        for name, shape in {"norm1": (768,), "attn.qkv": (2304, 768), "attn.proj": (768, 768), "norm2": (768,),
                            "mlp.fc1": (3072, 768), "mlp.fc2": (768, 3072)}.items():
            expected[f"blocks.{i}.{name}.weight"] = shape
            expected[f"blocks.{i}.{name}.bias"] = (shape[0],)
    assert shapes == expected


def test_backend_loads_every_layout_and_matches_the_reference_forward(tmp_path):
    state = _tiny_state()
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"device_proxy": torch.zeros(1), **{f"net.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    torch.save({"model": state}, tmp_path / "model.pt")
    rng = np.random.default_rng(1)
    clips = [torch.from_numpy(rng.normal(size=n) * 0.2) for n in (8000, 24000, 16000)]  # pad, truncate, exact
    backend = PasstBackend(str(tmp_path / "bare.pt"), clip_samples=TINY_CLIP, num_heads=2, n_mels=TINY_MELS, batch_size=2)
    assert (backend.dim, backend.sample_rate, backend.has_logits) == (32, 32000, True)
    embeddings, logits = backend.embed(clips, 32000), backend.logits(clips, 32000)
    assert embeddings.shape == (3, 32) and logits.shape == (3, 527)
    for i, clip in enumerate(clips):
        x = clip.numpy() - clip.numpy().mean()  # DC removed, as av-benchmark does
        x = np.pad(x[:TINY_CLIP], (0, max(0, TINY_CLIP - x.size))).astype(np.float32).astype(np.float64)
        spec = torch.from_numpy(_augment_mel_stft_eval(x, n_mels=TINY_MELS)).float()[None, None]
        ref_logits, ref_embedding = _reference_passt(state, spec, heads=2)
        torch.testing.assert_close(embeddings[i], ref_embedding[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits[i], ref_logits[0], atol=1e-4, rtol=1e-4)
    for layout in ("wrapped.pt", "model.pt"):
        other = PasstBackend(str(tmp_path / layout), clip_samples=TINY_CLIP, num_heads=2, n_mels=TINY_MELS, memo_size=2)
        torch.testing.assert_close(other.embed(clips, 32000), embeddings)
        assert other.model.net.state_dict().keys() == state.keys() and len(other._memo) == 2  # the last two kept
    # logits after embed reuse the forward (one network call per distinct clip); a repeated clip runs once
    calls = []
    backend.model.net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    backend._memo.clear()
    backend.embed(clips + clips[:1], 32000)
    torch.testing.assert_close(backend.logits(clips, 32000), logits)
    assert calls == [2, 1]


def test_backend_refuses_missing_foreign_and_mismatched_files(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"no PaSST checkpoint at .*missing.pt.*passt-s-f128-p16-s10-ap.476-swa.pt"):
        PasstBackend(str(tmp_path / "missing.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.pt cannot be read"):
        PasstBackend(str(tmp_path / "garbage.pt"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BackendUnavailable, match="other.pt holds no PaSST state dict"):
        PasstBackend(str(tmp_path / "other.pt"))
    state = _tiny_state()
    del state["head_dist.bias"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(BackendUnavailable, match="cut.pt does not match the PaSST-S layout"):
        PasstBackend(str(tmp_path / "cut.pt"), num_heads=2, n_mels=TINY_MELS, clip_samples=TINY_CLIP)
    torch.save(_tiny_state(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="time patches"):  # longer than the time positions allow
        PasstBackend(str(tmp_path / "tiny.pt"), num_heads=2, n_mels=TINY_MELS, clip_samples=32000)


def test_registry_skips_without_weights_and_builds_with_them(tmp_path):
    from avgen.cli.compare import _select_metrics, evaluate_parser
    from avgen.eval.registry import METRICS, load_builtin

    load_builtin()
    assert {"fd_passt", "kl_passt", "is_passt"} <= set(METRICS) and METRICS["is_passt"].higher_is_better
    assert "--passt" in evaluate_parser().format_help()
    metrics, skipped, _ = _select_metrics(["fd_passt", "kl_passt", "is_passt"])
    assert metrics == [] and set(skipped) == {"fd_passt", "kl_passt", "is_passt"}
    assert "PaSST-S weights not given; fix: --passt" in skipped["fd_passt"] and "ap.476-swa.pt" in skipped["fd_passt"]
    metrics, skipped, _ = _select_metrics(["kl_passt"], weights={"passt": str(tmp_path / "absent.pt")})
    assert metrics == [] and "no PaSST checkpoint at" in skipped["kl_passt"]


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 3 clips in 32 dims: singular covariances
def test_evaluate_scores_fd_kl_and_is_with_a_local_passt(tmp_path):
    """Default sizes except the width (32, 2 blocks, 1 head): 10-s clips, 128 mels, the full 12 x 99 grid."""
    import soundfile as sf

    from avgen.cli.compare import build_datamodule, evaluate
    from avgen.cli.generate import safe_name
    from avgen.eval import frechet_distance
    from tests.eval.test_evaluate import DATA

    torch.manual_seed(0)
    model = PaSST(embed_dim=32, depth=2, num_heads=1)
    with torch.no_grad():
        model.head[1].weight.normal_(0, 2.0)
    torch.save(model.state_dict(), tmp_path / "passt.pt")
    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    dm = build_datamodule(str(config))
    dm.setup("predict")
    ids = sorted(safe_name(sample_id) for batch in dm.predict_dataloader() for sample_id in batch.ids)
    (tmp_path / "gen").mkdir()
    rng = np.random.default_rng(3)
    time = np.arange(16000) / 16000
    for n, i in enumerate(ids):  # different tones in noise: the class softmaxes differ from the ground truth's
        clip = 0.3 * np.sin(2 * np.pi * (300 + 700 * n) * time) + 0.05 * rng.normal(size=time.size)
        sf.write(str(tmp_path / "gen" / f"{i}.wav"), clip.astype(np.float32), 16000, subtype="FLOAT")
    row = evaluate(["--generated", str(tmp_path / "gen"), "--reference", str(config), "--passt", str(tmp_path / "passt.pt"),
                    "--metrics", "fd_passt", "kl_passt", "is_passt"])["row"]
    backend = PasstBackend(str(tmp_path / "passt.pt"))
    assert backend.dim == 32 and backend.clip_samples == 320_000

    def read(folder):  # the generated clips and the ground truth evaluate wrote to its reference cache
        loaded = [sf.read(str(folder / f"{i}.wav"), dtype="float32") for i in ids]
        assert {rate for _, rate in loaded} == {16000}
        return [torch.from_numpy(audio) for audio, _ in loaded]

    gen, ref = read(tmp_path / "gen"), read(tmp_path / "gen" / "evaluation" / "reference" / "audio")
    g, r = backend.embed(gen, 16000).double().numpy(), backend.embed(ref, 16000).double().numpy()
    lp = torch.log_softmax(backend.logits(ref, 16000).double(), -1).numpy()
    lq = torch.log_softmax(backend.logits(gen, 16000).double(), -1).numpy()
    assert row["kl_passt"] == pytest.approx(float((np.exp(lp) * (lp - lq)).sum(-1).mean()), rel=1e-4) and row["kl_passt"] > 0
    assert row["is_passt"] == pytest.approx(1.0, abs=1e-6)  # 3 splits of one clip: exp(KL(p || p)) = 1
    expected = frechet_distance(g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    assert row["fd_passt"] == pytest.approx(expected, rel=1e-3) and row["fd_passt"] > 0
