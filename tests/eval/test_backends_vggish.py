"""VGGish back-end: the front-end against a numpy transcription of Google's ``mel_features`` /
``vggish_input``, the forward against a functional transcription of torchvggish's ``VGG.forward``, the
checkpoint loading path with a tiny local VGGish (the real key names), the PCA post-processing, and
FD_VGGish / FAD against a transcription of ``frechet_audio_distance``'s statistics."""

import numpy as np
import pytest
import torch
from scipy import linalg
from torch.nn import functional as F

from avgen.eval import BackendUnavailable
from avgen.eval.vggish import VGGish, VGGishBackend, pca_postprocess, vggish_examples, vggish_frechet

TINY_WIDTHS = (3, 4, 4, 6, 6, 8)


def _mel_features_examples(x: np.ndarray) -> np.ndarray:
    """``vggish_input.waveform_to_examples`` at 16 kHz, written out after ``mel_features`` (loops as the original)."""
    window_length, hop, fft_length = 400, 160, 512
    num_frames = 1 + (len(x) - window_length) // hop
    frames = np.stack([x[i * hop : i * hop + window_length] for i in range(num_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length))  # periodic Hann
    spectrogram = np.abs(np.fft.rfft(frames * window, fft_length))

    def hertz_to_mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    bins_mel = hertz_to_mel(np.linspace(0.0, 8000.0, fft_length // 2 + 1))
    edges = np.linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), 64 + 2)
    matrix = np.empty((fft_length // 2 + 1, 64))
    for i in range(64):
        lower, centre, upper = edges[i : i + 3]
        matrix[:, i] = np.maximum(0.0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre)))
    matrix[0, :] = 0.0
    log_mel = np.log(spectrogram @ matrix + 0.01)
    num_examples = 1 + (len(log_mel) - 96) // 96
    return np.stack([log_mel[i * 96 : i * 96 + 96] for i in range(num_examples)])


def _torchvggish_forward(state: dict, examples: torch.Tensor, final_relu: bool) -> torch.Tensor:
    """torchvggish ``VGG.forward`` on (N, 96, 64) examples, with functional ops on the state dict."""
    x = examples[:, None].float()
    for index in (0, 3, 6, 8, 11, 13):
        x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
        if index in (0, 3, 8, 13):
            x = F.max_pool2d(x, 2, 2)
    x = torch.transpose(torch.transpose(x, 1, 3), 1, 2).contiguous().view(x.shape[0], -1)  # as the port's
    x = F.relu(F.linear(x, state["embeddings.0.weight"], state["embeddings.0.bias"]))
    x = F.relu(F.linear(x, state["embeddings.2.weight"], state["embeddings.2.bias"]))
    x = F.linear(x, state["embeddings.4.weight"], state["embeddings.4.bias"])
    return F.relu(x) if final_relu else x


def _tiny_vggish(path, seed: int = 0) -> VGGish:
    torch.manual_seed(seed)
    model = VGGish(TINY_WIDTHS, hidden=16, embedding_dim=8)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    torch.save(model.state_dict(), path)
    return model


def test_front_end_matches_mel_features_transcription():
    rng = np.random.default_rng(0)
    x = rng.normal(size=16000 * 2 + 1234) * 0.2
    ours = vggish_examples(x).numpy()
    expected = _mel_features_examples(x)
    assert ours.shape == expected.shape == (2, 96, 64)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)
    # a clip shorter than one example is zero-padded to one (0.975 s)
    short = rng.normal(size=9000) * 0.2
    np.testing.assert_allclose(vggish_examples(short).numpy(), _mel_features_examples(np.pad(short, (0, 15600 - 9000))), atol=1e-9)
    # the real network's parameter names and shapes (torchvggish vggish-10086976.pth)
    with torch.device("meta"):  # shapes only: no 72M-parameter initialisation
        shapes = {k: tuple(v.shape) for k, v in VGGish().state_dict().items()}
    assert [k for k in shapes if k.endswith("weight")] == [
        "features.0.weight", "features.3.weight", "features.6.weight", "features.8.weight", "features.11.weight",
        "features.13.weight", "embeddings.0.weight", "embeddings.2.weight", "embeddings.4.weight"]
    assert shapes["features.13.weight"] == (512, 512, 3, 3) and shapes["embeddings.0.weight"] == (4096, 12288)
    assert shapes["embeddings.4.weight"] == (128, 4096)


def test_backend_loads_a_tiny_checkpoint_and_matches_the_reference_forward(tmp_path):
    model = _tiny_vggish(tmp_path / "vggish-tiny.pth")
    state = model.state_dict()
    backend = VGGishBackend(str(tmp_path / "vggish-tiny.pth"))
    assert backend.dim == 8 and backend.sample_rate == 16000 and backend.name == "vggish:vggish-tiny"
    rng = np.random.default_rng(1)
    clips = [torch.from_numpy(rng.normal(size=n).astype(np.float32) * 0.3 + 0.05) for n in (16000 * 3, 20000)]
    frames = backend.frames(clips, 16000)
    assert [f.shape for f in frames] == [(3, 8), (1, 8)]  # 0.96 s examples of 3 s and of 1.25 s
    for clip, got in zip(clips, frames):
        x = clip.double().numpy()
        expected = _torchvggish_forward(state, torch.from_numpy(_mel_features_examples(x - x.mean())), final_relu=False)
        np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-4, atol=1e-5)
    # FAD's frames keep the DC offset
    raw = backend.frames(clips[:1], 16000, remove_dc=False)[0]
    expected = _torchvggish_forward(state, torch.from_numpy(_mel_features_examples(clips[0].double().numpy())), final_relu=False)
    np.testing.assert_allclose(raw, expected.double().numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(raw, frames[0], atol=1e-3)
    # embed: the per-clip mean of the frames
    np.testing.assert_allclose(backend.embed(clips, 16000).numpy(), np.stack([f.mean(0) for f in frames]), rtol=1e-5, atol=1e-6)
    # torchvggish's own last ReLU on request
    with_relu = VGGishBackend(str(tmp_path / "vggish-tiny.pth"), final_relu=True).frames(clips[:1], 16000)[0]
    np.testing.assert_allclose(with_relu, np.maximum(frames[0], 0), atol=1e-6)


def test_pca_postprocess_matches_the_audioset_transcription(tmp_path):
    rng = np.random.default_rng(2)
    model = _tiny_vggish(tmp_path / "v.pth")
    matrix, means = rng.normal(size=(8, 8)), rng.normal(size=8)
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=matrix, pca_means=means)
    torch.save({"pca_eigen_vectors": matrix, "pca_means": means.reshape(-1, 1)}, tmp_path / "pca.pth")  # numpy inside
    embeddings = rng.normal(size=(5, 8)) * 2
    # vggish_postprocess.Postprocessor.postprocess
    expected = np.round((np.clip(np.dot(matrix, (embeddings.T - means[:, None])).T, -2, 2) + 2) * (255.0 / 4))
    got = pca_postprocess(torch.from_numpy(embeddings), torch.from_numpy(matrix), torch.from_numpy(means))
    np.testing.assert_array_equal(got.numpy(), expected)
    clip = [torch.from_numpy(rng.normal(size=16000).astype(np.float32))]
    raw = VGGishBackend(str(tmp_path / "v.pth")).frames(clip, 16000)[0]
    for params in ("pca.npz", "pca.pth"):
        backend = VGGishBackend(str(tmp_path / "v.pth"), pca_params=str(tmp_path / params))
        assert backend.name.endswith("-pca")
        post = backend.frames(clip, 16000)[0]
        np.testing.assert_array_equal(post, np.round((np.clip((raw - means) @ matrix.T, -2, 2) + 2) * (255.0 / 4)))
    del model


def _fad_transcription(background: list[np.ndarray], evaluation: list[np.ndarray]) -> float:
    """frechet_audio_distance: concatenate all frames, np.mean / np.cov, the pytorch-fid distance."""
    a, b = np.concatenate(background), np.concatenate(evaluation)
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2)).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frame_pooled_frechet_matches_the_fad_package_statistics():
    rng = np.random.default_rng(3)
    reference = {f"r{i}": rng.normal(size=(n, 4)) for i, n in enumerate((5, 7, 1))}
    generated = {f"g{i}": rng.normal(size=(n, 4)) * 1.3 + 0.4 for i, n in enumerate((6, 2, 9))}
    expected = _fad_transcription(list(reference.values()), list(generated.values()))
    assert vggish_frechet(generated, reference) == pytest.approx(expected, rel=1e-8)
    assert np.isnan(vggish_frechet({"g": rng.normal(size=(1, 4))}, reference))


def test_backend_refuses_missing_foreign_and_wrong_files(tmp_path):
    with pytest.raises(BackendUnavailable, match="no VGGish checkpoint at .*missing.pth.*--vggish"):
        VGGishBackend(str(tmp_path / "missing.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.pth cannot be read"):
        VGGishBackend(str(tmp_path / "garbage.pth"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(BackendUnavailable, match="other.pth holds no VGGish"):
        VGGishBackend(str(tmp_path / "other.pth"))
    state = VGGish(TINY_WIDTHS, hidden=16, embedding_dim=8).state_dict()
    del state["embeddings.2.bias"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(BackendUnavailable, match="cut.pth does not match"):
        VGGishBackend(str(tmp_path / "cut.pth"))
    _tiny_vggish(tmp_path / "ok.pth")
    with pytest.raises(BackendUnavailable, match="no VGGish PCA parameters at"):
        VGGishBackend(str(tmp_path / "ok.pth"), pca_params=str(tmp_path / "nope.npz"))


def _write(path, audio, rate=16000):
    import soundfile as sf

    sf.write(str(path), audio, rate, subtype="FLOAT")
    return path


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 9 examples in 8 dims
def test_registry_scores_fd_vggish_and_fad_from_cached_frames(tmp_path, monkeypatch):
    from avgen.eval.registry import METRICS, ScoreContext, build_backend, load_builtin

    load_builtin()
    assert METRICS["fd_vggish"].backend == METRICS["fad"].backend == "vggish" and not METRICS["fad"].higher_is_better
    with pytest.raises(BackendUnavailable, match="fix: --vggish"):
        build_backend("vggish", None)
    from avgen.cli.compare import _select_metrics

    metrics, skipped, _ = _select_metrics(["fd_vggish", "fad"], weights={})
    assert metrics == [] and "no VGGish weights given; fix: --vggish" in skipped["fad"]
    _tiny_vggish(tmp_path / "vggish-tiny.pth")
    backend = build_backend("vggish", str(tmp_path / "vggish-tiny.pth"))
    rng = np.random.default_rng(4)
    ids = ["a", "b", "c"]
    (tmp_path / "gen").mkdir(), (tmp_path / "ref").mkdir()
    gen = {i: _write(tmp_path / "gen" / f"{i}.wav", (rng.normal(size=48000) * 0.2 + 0.3).astype(np.float32)) for i in ids}
    ref = {i: _write(tmp_path / "ref" / f"{i}.wav", (rng.normal(size=96000) * 0.3).astype(np.float32), 32000) for i in ids}
    ctx = ScoreContext(ids=ids, samples={i: {} for i in ids}, generated=gen, reference=ref, cache_dir=tmp_path / "m",
                       reference_cache_dir=tmp_path / "r", backend=backend)
    fd, fad = METRICS["fd_vggish"].score(ctx), METRICS["fad"].score(ctx)
    loaded = {w: {i: ctx.audio(w, i) for i in ids} for w in ("generated", "reference")}
    for score, remove_dc in ((fd, True), (fad, False)):
        frames = {w: [backend.frames([x], r, remove_dc=remove_dc)[0] for x, r in loaded[w].values()] for w in loaded}
        assert sum(len(f) for f in frames["generated"]) == 9 and sum(len(f) for f in frames["reference"]) == 9
        assert score == pytest.approx(_fad_transcription(frames["reference"], frames["generated"]), rel=1e-6)
    assert fd != pytest.approx(fad, rel=1e-3)  # the generated clips carry a DC offset that only fad keeps
    monkeypatch.setattr(VGGishBackend, "frames", lambda *a, **k: pytest.fail("embedded again"))
    assert METRICS["fd_vggish"].score(ctx) == fd and METRICS["fad"].score(ctx) == fad  # cached per sample
