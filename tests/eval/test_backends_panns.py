"""PANNs Cnn14 back-end: front-end and forward against transcriptions of the reference (torchlibrosa +
audioset_tagging_cnn / av-benchmark), the checkpoint loading path with a tiny local Cnn14, and the
FD_PANNs / KL_PANNs / IS columns of ``avgen evaluate``."""

import numpy as np
import pytest
import torch
from scipy.signal import get_window
from torch.nn import functional as F

from avgen.eval import BackendUnavailable, get_backend
from avgen.eval.panns import Cnn14
from tests.eval.reference_data import reference_audio

TINY_WIDTHS = (2, 4, 4, 4, 4, 8)


def _librosa_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel (Slaney scale, Slaney norm) written out: (n_mels, n_fft//2+1)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_freqs[None]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    return weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]


def _logmel_reference(x: np.ndarray, sr=16000, n_fft=512, hop=160, n_mels=64, fmin=50.0, fmax=8000.0) -> np.ndarray:
    """torchlibrosa Spectrogram(center, reflect, hann) + LogmelFilterBank(ref 1, amin 1e-10, top_db None): (T, M)."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([padded[s : s + n_fft] for s in range(0, len(padded) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames * get_window("hann", n_fft, fftbins=True), axis=-1)) ** 2
    return 10 * np.log10(np.maximum(power @ _librosa_mel(sr, n_fft, n_mels, fmin, fmax).T, 1e-10))


def _tiny_cnn14(path, seed: int = 0):
    """A tiny-width Cnn14 with random weights and batch-norm statistics, saved like the public file."""
    torch.manual_seed(seed)
    model = Cnn14(widths=TINY_WIDTHS, embedding_dim=16)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5 if module.num_features != 64 else 10.0)
                module.running_var.uniform_(0.5, 2.0 if module.num_features != 64 else 400.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
    torch.save({"model": model.state_dict(), "iteration": 1}, path)
    return model


def _reference_forward(state: dict, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """av-benchmark's Cnn14.forward in eval mode, written with functional ops on the state dict."""
    logmel = torch.from_numpy(_logmel_reference(waveform.double().numpy())).float()[None, None]  # (1, 1, T, 64)

    def bn(x, prefix, axis):
        shape = [1] * x.ndim
        shape[axis] = -1
        mean, var = state[f"{prefix}.running_mean"].view(shape), state[f"{prefix}.running_var"].view(shape)
        return (x - mean) / torch.sqrt(var + 1e-5) * state[f"{prefix}.weight"].view(shape) + state[f"{prefix}.bias"].view(shape)

    x = bn(logmel, "bn0", axis=3)
    for i in range(1, 7):
        p = f"conv_block{i}"
        x = torch.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"], padding=1), f"{p}.bn1", axis=1))
        x = torch.relu(bn(F.conv2d(x, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2", axis=1))
        if i < 6:
            t, f = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
            x = x[:, :, :t, :f].reshape(x.shape[0], x.shape[1], t // 2, 2, f // 2, 2).mean(dim=(3, 5))
    x = x.mean(dim=3)
    x = x.max(dim=2).values + x.mean(dim=2)
    embedding = torch.relu(x @ state["fc1.weight"].T + state["fc1.bias"])
    return embedding, embedding @ state["fc_audioset.weight"].T + state["fc_audioset.bias"]


def test_cnn14_front_end_matches_torchlibrosa_transcription():
    x = np.random.default_rng(0).normal(size=8000).astype(np.float32) * 0.3
    model = Cnn14()  # the real 16 kHz front-end (widths do not matter for it)
    ours = model.log_mel(torch.from_numpy(x)[None])[0, 0].double().numpy()
    expected = _logmel_reference(x.astype(np.float64))
    assert ours.shape == expected.shape == (51, 64)
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    # the checkpoint's front-end parameter names and shapes
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["spectrogram_extractor.stft.conv_real.weight"] == (257, 1, 512)
    assert shapes["spectrogram_extractor.stft.conv_imag.weight"] == (257, 1, 512)
    assert shapes["logmel_extractor.melW"] == (257, 64)
    assert shapes["fc1.weight"] == (2048, 2048) and shapes["fc_audioset.weight"] == (527, 2048)
    assert shapes["conv_block6.conv2.weight"] == (2048, 2048, 3, 3) and shapes["bn0.running_var"] == (64,)


def test_panns_backend_loads_a_local_checkpoint_and_matches_the_reference_forward(tmp_path):
    path = tmp_path / "Cnn14_tiny.pth"
    model = _tiny_cnn14(path)
    backend = get_backend("panns", str(path))
    assert backend.dim == 16 and backend.sample_rate == 16000 and backend.has_logits
    rng = np.random.default_rng(1)
    clips = [torch.from_numpy(rng.normal(size=n).astype(np.float32) * 0.2) for n in (16000, 12000)]
    embeddings = backend.embed(clips, 16000)
    logits = backend.logits(clips, 16000)
    assert logits.shape == (2, 527)
    state = model.state_dict()
    for i, clip in enumerate(clips):
        x = clip.double() - clip.double().mean()  # DC removed, as av-benchmark does
        ref_embedding, ref_logits = _reference_forward(state, x.float())
        torch.testing.assert_close(embeddings[i], ref_embedding[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits[i], ref_logits[0], atol=1e-4, rtol=1e-4)
    # a 32 kHz input is resampled to 16 kHz first
    from avgen.data.media import resample

    up = torch.from_numpy(resample(clips[0].double().numpy(), 16000, 32000).astype(np.float32))
    torch.testing.assert_close(backend.embed([up], 32000)[0], embeddings[0], atol=5e-3, rtol=5e-3)


def test_panns_backend_refuses_missing_foreign_and_wrong_files(tmp_path):
    with pytest.raises(BackendUnavailable, match="--panns"):
        get_backend("panns")
    with pytest.raises(BackendUnavailable, match="no PANNs checkpoint at .*missing.pth"):
        get_backend("panns", str(tmp_path / "missing.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.pth cannot be read"):
        get_backend("panns", str(tmp_path / "garbage.pth"))
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(BackendUnavailable, match="other.pth holds no Cnn14"):
        get_backend("panns", str(tmp_path / "other.pth"))
    state = Cnn14(widths=TINY_WIDTHS, embedding_dim=16).state_dict()
    del state["fc_audioset.bias"]
    torch.save({"model": state}, tmp_path / "cut.pth")
    with pytest.raises(BackendUnavailable, match="cut.pth does not match"):
        get_backend("panns", str(tmp_path / "cut.pth"))


DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args: {batch_size: 3, num_workers: 0, seed: 4, predict_size: 3, duration: 1.0, sample_rate: 16000,
              semantic_fps: 8.0, sync_fps: 25.0, semantic_size: 32, sync_size: 32, scenarios: [vta]}
"""


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 3 clips in 16 dims: singular covariances
def test_evaluate_scores_fd_kl_and_is_with_a_local_cnn14(tmp_path, monkeypatch):
    import soundfile as sf

    from avgen.cli.compare import evaluate
    from avgen.eval.panns import PannsBackend

    _tiny_cnn14(tmp_path / "cnn14.pth")
    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    truth = reference_audio(config)
    ids = sorted(truth)
    generated = tmp_path / "gen"
    generated.mkdir()
    rng = np.random.default_rng(3)
    fake = {i: (0.5 * truth[i] + 0.05 * rng.normal(size=truth[i].size)).astype(np.float32) for i in ids}
    for i in ids:
        sf.write(str(generated / f"{i}.wav"), fake[i], 16000, subtype="FLOAT")
    args = ["--generated", str(generated), "--reference", str(config), "--panns", str(tmp_path / "cnn14.pth"),
            "--metrics", "fd_panns", "kl_panns", "is_panns"]
    row = evaluate(args)["row"]
    backend = get_backend("panns", str(tmp_path / "cnn14.pth"))
    gen_logits = backend.logits([torch.from_numpy(fake[i]) for i in ids], 16000).double().numpy()
    ref_logits = backend.logits([torch.from_numpy(truth[i]) for i in ids], 16000).double().numpy()

    def log_softmax(x):
        return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))

    lp, lq = log_softmax(ref_logits), log_softmax(gen_logits)
    assert row["kl_panns"] == pytest.approx(float((np.exp(lp) * (lp - lq)).sum(-1).mean()), rel=1e-4)
    # IS with 3 splits of one clip each: exp(KL(p || p)) = 1 per split
    assert row["is_panns"] == pytest.approx(1.0, abs=1e-6)
    gen_emb = backend.embed([torch.from_numpy(fake[i]) for i in ids], 16000).double().numpy()
    ref_emb = backend.embed([torch.from_numpy(truth[i]) for i in ids], 16000).double().numpy()
    from avgen.eval import frechet_distance

    expected_fd = frechet_distance(gen_emb.mean(0), np.cov(gen_emb, rowvar=False), ref_emb.mean(0), np.cov(ref_emb, rowvar=False))
    assert row["fd_panns"] == pytest.approx(expected_fd, rel=1e-3) and row["fd_panns"] > 0
    # embeddings and logits are cached: a rerun does not run the network
    monkeypatch.setattr(PannsBackend, "_forward", lambda *a, **k: pytest.fail("embedded again"))
    assert evaluate(args)["row"]["kl_panns"] == row["kl_panns"]
