"""GE2E speaker encoder (Resemblyzer) back-end: the front-end against a numpy transcription of librosa's
melspectrogram, volume normalisation, silence trimming and partial windows against transcriptions of
Resemblyzer's ``audio.py`` / ``VoiceEncoder``, the forward against a numpy LSTM, the checkpoint round
trip, and SECS against numpy cosines."""

import struct
import sys
import types

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from avgen.eval import BackendUnavailable, get_backend
from avgen.eval.speaker import (
    ResemblyzerBackend, SpeakerEncoder, SpeakerSimilarity, installed_resemblyzer_weights, mel_spectrogram,
    normalize_volume, partial_slices, speech_pairs, trim_long_silences,
)

TINY = dict(n_mels=40, hidden_size=8, embedding_size=6, num_layers=2)


# ---------------------------------------------------------------------------------- transcriptions
def _slaney_mel(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) defaults (Slaney scale, Slaney norm, 0 Hz..Nyquist): (n_mels, n_fft//2+1)."""
    f_sp, break_hz = 200.0 / 3, 1000.0
    log_step = np.log(6.4) / 27.0
    to_mel = lambda f: np.where(f < break_hz, f / f_sp, break_hz / f_sp + np.log(np.maximum(f, 1e-9) / break_hz) / log_step)
    to_hz = lambda m: np.where(m < break_hz / f_sp, f_sp * m, break_hz * np.exp(log_step * (m - break_hz / f_sp)))
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sr / 2)), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def _librosa_melspectrogram(wav: np.ndarray, sr=16000, n_fft=400, hop=160, n_mels=40) -> np.ndarray:
    """librosa.feature.melspectrogram (center, zero padding, periodic Hann, power 2) transposed: (frames, n_mels)."""
    padded = np.pad(wav, n_fft // 2)
    frames = np.stack([padded[s : s + n_fft] for s in range(0, len(padded) - n_fft + 1, hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return power @ _slaney_mel(sr, n_fft, n_mels).T


def _resemblyzer_slices(n_samples, rate, min_coverage, sr=16000, step_ms=10, partials=160):
    """VoiceEncoder.compute_partial_slices, returning mel (start, stop) pairs."""
    per_frame = int(sr * step_ms / 1000)
    n_frames = int(np.ceil((n_samples + 1) / per_frame))
    frame_step = int(np.round((sr / rate) / per_frame))
    mel = [(i, i + partials) for i in range(0, max(1, n_frames - partials + frame_step + 1), frame_step)]
    start, stop = mel[-1][0] * per_frame, mel[-1][1] * per_frame
    if (n_samples - start) / (stop - start) < min_coverage and len(mel) > 1:
        mel = mel[:-1]
    return mel


def _resemblyzer_trim(wav: np.ndarray, is_speech) -> np.ndarray:
    """audio.trim_long_silences with a given VAD: int16 PCM bytes per 30-ms window, cumsum moving average, dilation."""
    window = 480
    wav = wav[: len(wav) - len(wav) % window]
    pcm = struct.pack("%dh" % len(wav), *(np.round(wav * 32767)).astype(np.int16))
    flags = np.array([is_speech(pcm[s * 2 : (s + window) * 2], 16000) for s in range(0, len(wav), window)])
    padded = np.concatenate((np.zeros(3), flags, np.zeros(4)))
    cum = np.cumsum(padded, dtype=float)
    cum[8:] = cum[8:] - cum[:-8]
    mask = np.round(cum[7:] / 8).astype(bool)
    mask = binary_dilation(mask, np.ones(7))
    return wav[np.repeat(mask, window)]


def _numpy_encoder(state: dict, mels: np.ndarray) -> np.ndarray:
    """nn.LSTM (gates i, f, g, o) over (B, T, n_mels), last layer's final hidden state -> linear -> ReLU -> L2 norm."""
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    layer_input = mels.astype(np.float64)
    s = {k: v.double().numpy() for k, v in state.items()}
    layers = sum(1 for k in s if k.startswith("lstm.weight_ih_l"))
    for layer in range(layers):
        w_ih, w_hh = s[f"lstm.weight_ih_l{layer}"], s[f"lstm.weight_hh_l{layer}"]
        bias = s[f"lstm.bias_ih_l{layer}"] + s[f"lstm.bias_hh_l{layer}"]
        hidden = w_hh.shape[1]
        h = np.zeros((mels.shape[0], hidden))
        c = np.zeros_like(h)
        outputs = []
        for t in range(layer_input.shape[1]):
            gates = layer_input[:, t] @ w_ih.T + h @ w_hh.T + bias
            i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        layer_input = np.stack(outputs, axis=1)
    embedding = np.maximum(h @ s["linear.weight"].T + s["linear.bias"], 0)
    return embedding / np.linalg.norm(embedding, axis=1, keepdims=True)


def _speechlike(seconds: float, seed: int, silence=(0.8, 1.9)) -> np.ndarray:
    """A 16 kHz harmonic 'voice' with a long pause (to be trimmed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 110 + 40 * rng.random()
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.random() * 6) / k for k in range(1, 12)) * 0.05
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    x[(t > silence[0]) & (t < silence[1])] *= 1e-4
    return x + 1e-5 * rng.normal(size=t.size)


def _tiny_checkpoint(path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = SpeakerEncoder(**TINY)
    state = model.state_dict()
    torch.save({"step": 1, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []}}, path)
    return state


# ---------------------------------------------------------------------------------- tests
def test_mel_front_end_matches_librosa_transcription_and_volume_normalisation():
    wav = np.random.default_rng(0).normal(size=5000) * 0.1
    ours = mel_spectrogram(wav)
    expected = _librosa_melspectrogram(wav)
    assert ours.shape == expected.shape == (1 + 5000 // 160, 40) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6 * expected.max())
    # volume: a quiet clip is raised to -30 dBFS RMS, a loud one is left as it is (increase only)
    quiet = wav * 0.05
    raised = normalize_volume(quiet)
    assert 20 * np.log10(np.sqrt(np.mean(raised**2))) == pytest.approx(-30.0, abs=1e-9)
    np.testing.assert_allclose(raised / quiet, raised[0] / quiet[0])  # a pure gain
    loud = wav * 5
    assert normalize_volume(loud) is loud
    assert normalize_volume(loud, increase_only=False).std() < loud.std()
    silent = np.zeros(800)
    assert np.array_equal(normalize_volume(silent), silent)


@pytest.mark.parametrize("rate,min_coverage", [(1.3, 0.75), (0.7, 0.5), (3.0, 1.0)])
def test_partial_slices_match_compute_partial_slices(rate, min_coverage):
    for n in (0, 100, 16000, 25440, 25600, 27000, 40000, 123457):
        assert partial_slices(n, rate, min_coverage) == _resemblyzer_slices(n, rate, min_coverage), n
    with pytest.raises(ValueError, match="rate"):
        partial_slices(16000, rate=0.5)


def test_trimming_matches_resemblyzer_with_a_vad(monkeypatch):
    wav = normalize_volume(_speechlike(3.0, seed=1))
    # the webrtcvad path, with a stand-in detector deciding from the PCM bytes it is handed
    def is_speech(pcm: bytes, sample_rate: int) -> bool:
        assert sample_rate == 16000 and len(pcm) == 960
        return np.abs(np.frombuffer(pcm, np.int16)).mean() > 50

    fake = types.ModuleType("webrtcvad")
    fake.Vad = lambda mode: types.SimpleNamespace(is_speech=is_speech, mode=mode)
    monkeypatch.setitem(sys.modules, "webrtcvad", fake)
    trimmed = trim_long_silences(wav, "webrtcvad")
    expected = _resemblyzer_trim(wav, is_speech)
    assert np.array_equal(trimmed, expected)
    assert 3.0 * 16000 - len(trimmed) > 0.5 * 16000  # most of the 1.1-s pause is gone, dilation keeps its edges
    # energy mode: the same smoothing on "within 30 dB of the loudest window"
    level = lambda pcm: 10 * np.log10(max(np.mean((np.frombuffer(pcm, np.int16) / 32767.0) ** 2), 1e-20))
    windows = wav[: len(wav) // 480 * 480].reshape(-1, 480)
    loudest = 10 * np.log10(np.maximum(np.mean(windows**2, axis=1), 1e-20)).max()
    energy = _resemblyzer_trim(wav, lambda pcm, sr: level(pcm) >= loudest - 30)
    ours = trim_long_silences(wav, "energy")
    assert len(ours) == len(energy) and len(ours) < len(wav) - 8000
    assert trim_long_silences(wav, "none") is wav


def test_forward_matches_a_numpy_lstm_with_the_real_key_names():
    state = SpeakerEncoder(**TINY).state_dict()
    assert set(state) == {"similarity_weight", "similarity_bias", "linear.weight", "linear.bias"} | {
        f"lstm.{kind}_l{layer}" for layer in range(2) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    model = SpeakerEncoder.from_state_dict(state)
    mels = torch.rand(3, 20, 40)
    np.testing.assert_allclose(model(mels).detach().double().numpy(), _numpy_encoder(state, mels.numpy()), atol=1e-5)
    real = {k: tuple(v.shape) for k, v in SpeakerEncoder().state_dict().items()}  # Resemblyzer's pretrained.pt shapes
    assert real["lstm.weight_ih_l0"] == (1024, 40) and real["lstm.weight_hh_l2"] == (1024, 256)
    assert real["linear.weight"] == (256, 256) and real["similarity_weight"] == (1,)


def test_backend_loads_a_checkpoint_and_embeds_like_embed_utterance(tmp_path):
    path = tmp_path / "pretrained.pt"
    state = _tiny_checkpoint(path)
    backend = get_backend("resemblyzer", str(path))
    assert isinstance(backend, ResemblyzerBackend) and backend.dim == 6 and backend.name == "resemblyzer:pretrained:vad-energy"
    clips = [_speechlike(2.2, seed=2), _speechlike(1.0, seed=3, silence=(2, 2))]
    embeddings = backend.embed([torch.from_numpy(c).float() for c in clips], 16000).double().numpy()
    for clip, embedding in zip(clips, embeddings):
        wav = clip.astype(np.float32).astype(np.float64)
        wav = trim_long_silences(normalize_volume(wav - wav.mean()), "energy")
        slices = _resemblyzer_slices(len(wav), 1.3, 0.75)
        wav = np.pad(wav, (0, max(0, slices[-1][1] * 160 - len(wav))))
        mel = _librosa_melspectrogram(wav).astype(np.float32)
        partials = _numpy_encoder(state, np.stack([mel[a:b] for a, b in slices]))
        expected = partials.mean(0) / np.linalg.norm(partials.mean(0))
        np.testing.assert_allclose(embedding, expected, atol=2e-5)
    # a 32 kHz copy embeds (nearly) the same after resampling to 16 kHz
    from avgen.data.media import resample

    up = resample(clips[1], 16000, 32000)
    assert float(backend.embed([torch.from_numpy(up)], 32000)[0].double().numpy() @ embeddings[1]) > 0.999


def test_backend_refuses_missing_foreign_and_mismatched_files(tmp_path, monkeypatch):
    monkeypatch.setattr("avgen.eval.speaker.installed_resemblyzer_weights", lambda: None)
    with pytest.raises(BackendUnavailable, match="--resemblyzer"):
        ResemblyzerBackend()
    with pytest.raises(BackendUnavailable, match="no GE2E speaker-encoder checkpoint at .*missing.pt"):
        ResemblyzerBackend(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.pt cannot be read"):
        ResemblyzerBackend(tmp_path / "garbage.pt")
    torch.save({"model_state": {"weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(BackendUnavailable, match="other.pt holds no GE2E"):
        ResemblyzerBackend(tmp_path / "other.pt")
    state = SpeakerEncoder(**TINY).state_dict()
    del state["similarity_bias"]
    torch.save({"model_state": state}, tmp_path / "cut.pt")
    with pytest.raises(BackendUnavailable, match="cut.pt does not match"):
        ResemblyzerBackend(tmp_path / "cut.pt")
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # not importable
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(BackendUnavailable, match="webrtcvad"):
        ResemblyzerBackend(tmp_path / "cut.pt", vad="webrtcvad")


def test_installed_weights_are_found_without_importing_the_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "resemblyzer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('needs librosa and webrtcvad')\n")
    _tiny_checkpoint(package / "pretrained.pt")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "resemblyzer", raising=False)
    assert installed_resemblyzer_weights() == package / "pretrained.pt"
    assert "resemblyzer" not in sys.modules
    backend = ResemblyzerBackend(vad="none")
    assert backend.dim == 6 and backend.name == "resemblyzer:pretrained:vad-none"


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_secs_is_the_mean_cosine_of_pairs():
    rng = np.random.default_rng(4)
    generated, target = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    metric = SpeakerSimilarity()
    metric.update(torch.from_numpy(generated[:3]), torch.from_numpy(target[:3]))
    metric.update(torch.from_numpy(generated[3:]), torch.from_numpy(target[3:]))
    cosines = (generated * target).sum(1) / np.linalg.norm(generated, axis=1) / np.linalg.norm(target, axis=1)
    assert float(metric.compute()) == pytest.approx(cosines.mean(), abs=1e-12)
    with pytest.raises(ValueError, match="paired"):
        metric.update(torch.zeros(2, 6), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="no pairs"):
        SpeakerSimilarity().compute()
    samples = {"a": {"transcript": "hi"}, "b": {"transcript": None, "task": "speech"}, "c": {"transcript": None, "task": "v2a"}}
    assert speech_pairs(["a", "b", "c"], samples) == ["a", "b"]


def test_score_secs_uses_the_paired_speech_samples():
    from avgen.eval.speaker import score_secs

    rng = np.random.default_rng(5)
    gen = {i: rng.normal(size=4) for i in "abc"}
    ref = {i: rng.normal(size=4) for i in "abc"}
    samples = {"a": {"transcript": "hi"}, "b": {"task": "speech"}, "c": {"transcript": None}}
    asked = []

    def embeddings(which, ids, kind="embed"):
        asked.append((which, tuple(ids)))
        return {i: (gen if which == "generated" else ref)[i] for i in ids}

    context = types.SimpleNamespace(paired=["a", "b", "c"], samples=samples, embeddings=embeddings)
    cos = lambda i: gen[i] @ ref[i] / np.linalg.norm(gen[i]) / np.linalg.norm(ref[i])
    assert score_secs(context) == pytest.approx((cos("a") + cos("b")) / 2, abs=1e-12)
    assert asked == [("generated", ("a", "b")), ("reference", ("a", "b"))]  # "c" is not speech: never embedded
    assert np.isnan(score_secs(types.SimpleNamespace(paired=["c"], samples=samples, embeddings=embeddings)))


SPEECH_DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args: {batch_size: 2, num_workers: 0, seed: 4, predict_size: 2, duration: 1.0, sample_rate: 16000,
              semantic_fps: 8.0, sync_fps: 25.0, semantic_size: 32, sync_size: 32, scenarios: [speech]}
"""


def test_evaluate_scores_secs_and_reports_missing_flags(tmp_path):
    import soundfile as sf

    from avgen.cli.compare import _select_metrics, build_datamodule, evaluate
    from avgen.cli.generate import safe_name
    from avgen.eval.registry import METRICS, load_builtin

    assert {"secs", "per"} <= set(load_builtin()) and METRICS["secs"].backend == "resemblyzer"
    assert METRICS["per"].backend == "whisper" and not METRICS["per"].higher_is_better and METRICS["secs"].higher_is_better
    _tiny_checkpoint(tmp_path / "pretrained.pt")
    config = tmp_path / "data.yaml"
    config.write_text(SPEECH_DATA)
    dm = build_datamodule(str(config))
    dm.setup("predict")
    truth = {}
    for batch in dm.predict_dataloader():
        for i, sample_id in enumerate(batch.ids):
            assert batch.transcript[i]
            truth[safe_name(sample_id)] = batch.audio[i, : int(batch.audio_lengths[i])].numpy()
    generated = tmp_path / "gen"
    generated.mkdir()
    rng = np.random.default_rng(6)
    fake = {i: (0.5 * w + 0.01 * rng.normal(size=w.size)).astype(np.float32) for i, w in truth.items()}
    for i, w in fake.items():
        sf.write(str(generated / f"{i}.wav"), w, 16000, subtype="FLOAT")
    skipped = _select_metrics(["secs", "per"], weights={"resemblyzer": None, "whisper": None})[1]
    assert "fix: --resemblyzer" in skipped["secs"] and "fix: --whisper" in skipped["per"]
    args = ["--generated", str(generated), "--reference", str(config), "--metrics", "secs",
            "--resemblyzer", str(tmp_path / "pretrained.pt")]
    result = evaluate(args)
    backend = ResemblyzerBackend(tmp_path / "pretrained.pt")
    ids = sorted(truth)
    gen = backend.embed([torch.from_numpy(fake[i]) for i in ids], 16000).double().numpy()
    ref = backend.embed([torch.from_numpy(truth[i]) for i in ids], 16000).double().numpy()
    assert result["row"]["secs"] == pytest.approx(float(np.mean((gen * ref).sum(1))), abs=1e-6)
    assert not result["skipped"]
