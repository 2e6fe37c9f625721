"""SyncNet back-end (Sync-C / Sync-D): the MFCC front-end against a transcription of
python_speech_features, the two streams against a functional transcription of
``syncnet_python``'s ``SyncNetModel.S`` on tiny random weights with the real key names, the
checkpoint path, ``evaluate``'s windows / ``calc_pdist`` / reduction against a transcription, and a
constructed clip whose audio is a shifted copy."""

import decimal
import math

import numpy as np
import pytest
import torch
from scipy.fftpack import dct
from torch.nn import functional as F

from avgen.eval import BackendUnavailable, get_backend
from avgen.eval.syncnet import (SyncConfidence, SyncDistance, SyncNet, SyncNetBackend, mfcc, offset_distances,
                                sync_result)

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny convolutions: a second thread only waits

TINY = dict(audio_widths=(4, 6, 8, 6, 6, 8), lip_widths=(4, 6, 6, 6, 6, 8), hidden_dim=8, embedding_dim=6, frame_size=64)


# ------------------------------------------------------------------------------ transcriptions
def _psf_mfcc(signal: np.ndarray, sr: int = 16000) -> np.ndarray:
    """python_speech_features.mfcc(signal, sr) with its defaults, written out from its formulas."""
    sig = np.asarray(signal, np.float64)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    half_up = lambda v: int(decimal.Decimal(v).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))  # noqa: E731
    frame_len, frame_step = half_up(0.025 * sr), half_up(0.01 * sr)
    num = 1 if len(sig) <= frame_len else 1 + int(math.ceil((len(sig) - frame_len) / frame_step))
    padded = np.concatenate([sig, np.zeros((num - 1) * frame_step + frame_len - len(sig))])
    frames = np.stack([padded[i * frame_step : i * frame_step + frame_len] for i in range(num)])
    pspec = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    mels = np.linspace(2595 * np.log10(1 + 0 / 700.0), 2595 * np.log10(1 + (sr / 2) / 700.0), 28)
    bins = np.floor(513 * (700 * (10 ** (mels / 2595.0) - 1)) / sr)
    fbank = np.zeros((26, 257))
    for j in range(26):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fbank.T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    feat = feat * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22))
    feat[:, 0] = np.log(energy)
    return feat


def _reference_streams(state: dict, mfcc_windows: torch.Tensor, frame_windows: torch.Tensor):
    """SyncNetModel.S.forward_aud / forward_lip in eval mode, layer by layer on the state dict."""

    def bn(x, p):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - state[f"{p}.running_mean"].view(shape)) / torch.sqrt(state[f"{p}.running_var"].view(shape) + 1e-5)
                * state[f"{p}.weight"].view(shape) + state[f"{p}.bias"].view(shape))

    def head(x, p):
        x = torch.relu(bn(x @ state[f"{p}.0.weight"].T + state[f"{p}.0.bias"], f"{p}.1"))
        return x @ state[f"{p}.3.weight"].T + state[f"{p}.3.bias"]

    def conv(x, p, i, conv_fn, **kw):
        return torch.relu(bn(conv_fn(x, state[f"{p}.{i}.weight"], state[f"{p}.{i}.bias"], **kw), f"{p}.{i + 1}"))

    a = conv(mfcc_windows, "netcnnaud", 0, F.conv2d, padding=1)  # MaxPool2d(1, 1) is the identity
    a = F.max_pool2d(conv(a, "netcnnaud", 4, F.conv2d, padding=1), 3, (1, 2))
    a = conv(conv(a, "netcnnaud", 8, F.conv2d, padding=1), "netcnnaud", 11, F.conv2d, padding=1)
    a = F.max_pool2d(conv(a, "netcnnaud", 14, F.conv2d, padding=1), 3, 2)
    a = conv(a, "netcnnaud", 18, F.conv2d)
    v = F.max_pool3d(conv(frame_windows, "netcnnlip", 0, F.conv3d, stride=(1, 2, 2)), (1, 3, 3), (1, 2, 2))
    v = F.max_pool3d(conv(v, "netcnnlip", 4, F.conv3d, stride=(1, 2, 2), padding=(0, 1, 1)), (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for i in (8, 11, 14):
        v = conv(v, "netcnnlip", i, F.conv3d, padding=(0, 1, 1))
    v = conv(F.max_pool3d(v, (1, 3, 3), (1, 2, 2)), "netcnnlip", 18, F.conv3d)
    return head(a.reshape(a.shape[0], -1), "netfcaud"), head(v.reshape(v.shape[0], -1), "netfclip")


def _reference_evaluate(state: dict, frames_bgr: np.ndarray, audio_int16: np.ndarray, vshift: int = 15):
    """SyncNetInstance.evaluate after decoding: windows, both streams, calc_pdist, offset / min / conf."""
    im = torch.from_numpy(np.transpose(frames_bgr[None].astype(float), (0, 4, 1, 2, 3))).float()  # (1, 3, T, H, W)
    cc = torch.from_numpy(_psf_mfcc(audio_int16).T[None, None].astype(float)).float()  # (1, 1, 13, M)
    lastframe = min(len(frames_bgr), math.floor(len(audio_int16) / 640)) - 5
    cc_feat, im_feat = _reference_streams(state, torch.cat([cc[:, :, :, v * 4 : v * 4 + 20] for v in range(lastframe)]),
                                          torch.cat([im[:, :, v : v + 5] for v in range(lastframe)]))
    return _reference_offset(im_feat.numpy(), cc_feat.numpy(), vshift)


def _reference_offset(feat1: np.ndarray, feat2: np.ndarray, vshift: int):
    """calc_pdist (pairwise_distance: ||x1 - x2 + 1e-6||) and evaluate's mean / min / median."""
    win = 2 * vshift + 1
    feat2p = np.concatenate([np.zeros((vshift, feat2.shape[1])), feat2, np.zeros((vshift, feat2.shape[1]))])
    dists = [[np.linalg.norm(feat1[i] - feat2p[i + k] + 1e-6) for k in range(win)] for i in range(len(feat1))]
    mdist = np.mean(np.stack(dists, 1), 1)
    minidx = int(np.argmin(mdist))
    return vshift - minidx, mdist[minidx], np.median(mdist) - mdist[minidx], np.array(dists)


def _bilinear(frames: np.ndarray, size: int) -> np.ndarray:
    """cv2.resize(frame, (size, size)) with INTER_LINEAR, written out: (T, size, size, C) float."""
    def taps(n_in):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, n_in - 1), src - low

    y0, y1, wy = taps(frames.shape[1])
    x0, x1, wx = taps(frames.shape[2])
    f = frames.astype(np.float64)
    rows = f[:, y0] * (1 - wy)[None, :, None, None] + f[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


def _tiny_syncnet(seed: int = 0, **overrides) -> SyncNet:
    torch.manual_seed(seed)
    model = SyncNet(**{**TINY, **overrides})
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.1, 0.2)
    return model.eval()


# ------------------------------------------------------------------------------ tests
def test_mfcc_matches_python_speech_features_transcription():
    rng = np.random.default_rng(0)
    speechy = np.concatenate([rng.normal(0, 3000, 4000) * np.hanning(4000), np.zeros(1200), rng.normal(0, 50, 1517)])
    for signal in (np.round(speechy), rng.normal(0, 1000, 300), np.zeros(700)):  # zero frames take the eps branch
        ours = mfcc(signal).numpy()
        expected = _psf_mfcc(signal)
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)
    assert mfcc(np.round(speechy)).shape == (1 + math.ceil((speechy.size - 400) / 160), 13)


def test_streams_match_syncnet_model_transcription_and_real_key_names():
    with torch.device("meta"):
        full = SyncNet()
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    expected_keys = set()
    for stream, heads in (("netcnnaud", "netfcaud"), ("netcnnlip", "netfclip")):
        for conv_index in (0, 4, 8, 11, 14, 18):
            expected_keys |= {f"{stream}.{conv_index}.weight", f"{stream}.{conv_index}.bias"}
            expected_keys |= {f"{stream}.{conv_index + 1}.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                                                          "num_batches_tracked")}
        expected_keys |= {f"{heads}.0.weight", f"{heads}.0.bias", f"{heads}.3.weight", f"{heads}.3.bias"}
        expected_keys |= {f"{heads}.1.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert set(shapes) == expected_keys
    assert shapes["netcnnaud.0.weight"] == (64, 1, 3, 3) and shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
    assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7) and shapes["netcnnlip.4.weight"] == (256, 96, 1, 5, 5)
    assert shapes["netcnnlip.18.weight"] == (512, 256, 1, 6, 6) and shapes["netfclip.3.weight"] == (1024, 512)

    model = _tiny_syncnet()
    rng = torch.Generator().manual_seed(1)
    mfcc_windows = torch.randn(3, 1, 13, 20, generator=rng) * 8
    frame_windows = torch.rand(3, 3, 5, 64, 64, generator=rng) * 255
    ref_audio, ref_lip = _reference_streams(model.state_dict(), mfcc_windows, frame_windows)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_aud(mfcc_windows), ref_audio, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.forward_lip(frame_windows), ref_lip, rtol=1e-4, atol=1e-4)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = _tiny_syncnet()
    # like the 2017 file: the legacy (non-zip) format, no batch-norm counters
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_tiny.model", _use_new_zipfile_serialization=False)
    torch.save({f"__S__.{k}": v for k, v in model.state_dict().items()}, tmp_path / "instance.model")
    x = torch.randn(2, 1, 13, 20) * 8
    for name in ("syncnet_tiny.model", "instance.model"):
        backend = get_backend("syncnet", str(tmp_path / name))
        assert isinstance(backend, SyncNetBackend) and backend.model.frame_size == 51  # smallest side the tiny map fits
        with torch.no_grad():
            torch.testing.assert_close(backend.model.forward_aud(x), model.forward_aud(x))
    with pytest.raises(BackendUnavailable, match="--syncnet .*syncnet_v2.model"):
        get_backend("syncnet")
    with pytest.raises(BackendUnavailable, match="no SyncNet checkpoint at .*missing.model"):
        get_backend("syncnet", str(tmp_path / "missing.model"))
    (tmp_path / "garbage.model").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.model cannot be read"):
        get_backend("syncnet", str(tmp_path / "garbage.model"))
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "other.model")
    with pytest.raises(BackendUnavailable, match="other.model holds no SyncNet"):
        get_backend("syncnet", str(tmp_path / "other.model"))
    del state["netfclip.3.bias"]
    torch.save(state, tmp_path / "cut.model")
    with pytest.raises(BackendUnavailable, match="cut.model does not match"):
        get_backend("syncnet", str(tmp_path / "cut.model"))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SyncDistance was called before")
def test_offset_search_and_clip_reduction_match_calc_pdist_transcription():
    rng = np.random.default_rng(2)
    clips = [(rng.normal(size=(n, 5)), rng.normal(size=(n, 5))) for n in (12, 40, 7)]
    conf, dist = SyncConfidence(), SyncDistance()
    expected = []
    for video, audio in clips:
        table = offset_distances(torch.from_numpy(video), torch.from_numpy(audio), vshift=15)
        offset, min_dist, confidence, ref_table = _reference_offset(video, audio, 15)
        np.testing.assert_allclose(table.numpy(), ref_table, rtol=1e-12)
        result = sync_result(table)
        assert result.offset == offset
        assert result.min_distance == pytest.approx(min_dist, rel=1e-12)
        assert result.confidence == pytest.approx(confidence, rel=1e-12)
        expected.append((min_dist, confidence))
        conf.update(table)
        dist.update(table)
    assert float(dist.compute()) == pytest.approx(np.mean([d for d, _ in expected]), rel=1e-12)
    assert float(conf.compute()) == pytest.approx(np.mean([c for _, c in expected]), rel=1e-12)
    # the states are sums: two ranks' states merged give the mean over all their clips
    first, second = SyncConfidence(), SyncConfidence()
    for index, (video, audio) in enumerate(clips):
        (first if index < 2 else second).update(offset_distances(torch.from_numpy(video), torch.from_numpy(audio)))
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(np.mean([c for _, c in expected]), rel=1e-12)
    with pytest.raises(ValueError, match="no clip"):
        SyncDistance().compute()


def test_backend_scores_a_clip_like_syncnet_instance_evaluate(tmp_path):
    model = _tiny_syncnet(seed=3)
    torch.save(model.state_dict(), tmp_path / "tiny.model")
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, size=(14, 64, 80, 3), dtype=np.uint8)  # RGB, 0.56 s at 25 fps
    audio = rng.normal(0, 0.1, 9000)  # 0.5625 s at 16 kHz: 14 frames of 640 samples
    backend = SyncNetBackend(str(tmp_path / "tiny.model"), crop="centre", frame_size=64)
    table = backend.distances(frames, 25.0, torch.from_numpy(audio).float(), 16000)
    audio_int16 = np.clip(np.rint(torch.from_numpy(audio).float().double().numpy() * 32768), -32768, 32767)
    offset, min_dist, confidence, ref_table = _reference_evaluate(
        {k: v for k, v in model.state_dict().items()}, frames[:, :, 8:72, ::-1], audio_int16)  # centre square, BGR
    assert table.shape == ref_table.shape == (14 - 5, 31)
    np.testing.assert_allclose(table.numpy(), ref_table, rtol=1e-4, atol=1e-5)
    result = backend.score(frames, 25.0, torch.from_numpy(audio).float(), 16000)
    assert result.offset == offset and result.min_distance == pytest.approx(min_dist, rel=1e-4)
    assert result.confidence == pytest.approx(confidence, rel=1e-3, abs=1e-5)
    with pytest.raises(ValueError, match="more than 5 frames"):
        backend.distances(frames[:5], 25.0, audio, 16000)
    # crop="none": the whole frame resized as cv2.resize(INTER_LINEAR) does (half-pixel centres), BGR
    whole = SyncNetBackend(str(tmp_path / "tiny.model"), frame_size=64).prepare_frames(frames[:2, :40], 25.0)
    assert whole.shape == (3, 2, 64, 64)
    np.testing.assert_allclose(whole.numpy(), np.transpose(_bilinear(frames[:2, :40], 64), (3, 0, 1, 2))[::-1], atol=0.5 + 1e-4)


def test_audio_shifted_copy_gives_the_known_offset(tmp_path):
    """A SyncNet whose audio head is fitted so that aligned windows of one (video, audio) pair embed
    identically; delaying the audio by s frames (s x 640 samples of silence first) must give offset
    -s, advancing it +s, and the aligned pair offset 0 - through the back-end's own windows."""
    hidden = 32
    model = _tiny_syncnet(seed=5, hidden_dim=hidden, embedding_dim=hidden, audio_widths=(4, 6, 8, 6, 6, 24),
                          lip_widths=(4, 6, 6, 6, 6, 24))
    state = model.state_dict()
    for head in ("netfcaud", "netfclip"):  # identity output layers: the embeddings are the hidden features
        state[f"{head}.3.weight"], state[f"{head}.3.bias"] = torch.eye(hidden), torch.zeros(hidden)
    for bn in ("netcnnaud.19", "netcnnlip.19", "netfcaud.1", "netfclip.1"):  # units active: the fit below is exact
        state[f"{bn}.bias"] = state[f"{bn}.bias"] + 1.0
    torch.save(state, tmp_path / "probe.model")
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, size=(18, 51, 51, 3), dtype=np.uint8)  # 13 windows
    audio = rng.normal(0, 0.3, 18 * 640) * np.exp(rng.uniform(-4, 0, 18)).repeat(640)  # a random loudness per frame
    probe = SyncNetBackend(str(tmp_path / "probe.model"))
    features, num_samples = probe.prepare_audio(audio, 16000)
    video_hidden, audio_hidden = probe.embeddings(probe.prepare_frames(frames, 25.0), features, num_samples)
    # the lip head maps to random embeddings, centred over the clip's windows (calc_pdist compares
    # with zero vectors past the ends); the audio head is the least-squares map onto them
    lip_weight = torch.randn(8, hidden, dtype=torch.float64)
    lip_bias = -(video_hidden.double() @ lip_weight.T).mean(0)
    target = video_hidden.double() @ lip_weight.T + lip_bias
    design = torch.cat([audio_hidden.double(), torch.ones(len(audio_hidden), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    assert torch.allclose(design @ solution, target, atol=1e-6)  # 13 windows, 33 unknowns: an exact fit
    state["netfclip.3.weight"], state["netfclip.3.bias"] = lip_weight.float(), lip_bias.float()
    state["netfcaud.3.weight"], state["netfcaud.3.bias"] = solution[:-1].T.float().contiguous(), solution[-1].float()
    torch.save(state, tmp_path / "synced.model")
    backend = SyncNetBackend(str(tmp_path / "synced.model"))
    aligned_table = backend.distances(frames, 25.0, audio, 16000)
    aligned = sync_result(aligned_table)
    assert aligned.offset == 0 and aligned.min_distance < 0.05 * (aligned.min_distance + aligned.confidence)
    for shift in (1, 4, 9):
        delayed = np.concatenate([np.zeros(shift * 640), audio])[: audio.size]  # the audio `shift` frames late
        advanced = np.concatenate([audio[shift * 640 :], rng.normal(0, 0.01, shift * 640)])  # `shift` frames early
        assert backend.score(frames, 25.0, delayed, 16000).offset == -shift
        assert backend.score(frames, 25.0, advanced, 16000).offset == shift
    # a 50 fps video (every frame twice) is taken at 25 fps: the same windows, the same distances
    torch.testing.assert_close(backend.distances(np.repeat(frames, 2, axis=0), 50.0, audio, 16000), aligned_table)


def test_registry_scores_sync_c_and_sync_d_on_the_videos_with_the_audio(tmp_path, monkeypatch):
    import soundfile as sf

    from avgen.cli.compare import _select_metrics, evaluate_parser
    from avgen.data.media import write_mp4
    from avgen.eval.registry import METRICS, ScoreContext, load_builtin, read_video_frames, score_all

    load_builtin()
    assert METRICS["sync_c"].higher_is_better and not METRICS["sync_d"].higher_is_better
    assert METRICS["sync_c"].needs_video and METRICS["sync_d"].backend == "syncnet"
    assert "--syncnet" in evaluate_parser().format_help()
    metrics, skipped, _ = _select_metrics(["sync_c", "sync_d"], weights={"syncnet": None})
    assert metrics == [] and "--syncnet" in skipped["sync_c"] and "syncnet_v2.model" in skipped["sync_d"]

    torch.save(_tiny_syncnet(seed=7).state_dict(), tmp_path / "tiny.model")
    metrics, skipped, backends = _select_metrics(["sync_c", "sync_d"], weights={"syncnet": str(tmp_path / "tiny.model")})
    assert metrics == ["sync_c", "sync_d"] and not skipped
    rng = np.random.default_rng(8)
    ids = ["a", "b", "short", "silent_film"]
    videos, generated = {}, {}
    for sample_id, frames in zip(ids, (12, 9, 4, 10)):
        generated[sample_id] = tmp_path / f"{sample_id}.wav"
        sf.write(str(generated[sample_id]), rng.normal(0, 0.1, frames * 640).astype(np.float32), 16000, subtype="FLOAT")
        if sample_id != "silent_film":  # "short" has 4 frames, fewer than one window needs: left out
            videos[sample_id] = write_mp4(tmp_path / f"{sample_id}.mp4", torch.rand(frames, 3, 32, 32), 25.0)
    ctx = ScoreContext(ids=ids, samples={i: {} for i in ids}, generated=generated, reference={},
                       cache_dir=tmp_path / "model", reference_cache_dir=tmp_path / "reference", videos=videos,
                       backends=backends)
    scores = score_all(ctx, ["sync_c", "sync_d"])
    backend = backends["syncnet"]
    results = [backend.score(*read_video_frames(videos[i]), *ctx.audio("generated", i)) for i in ("a", "b")]
    assert scores["sync_c"] == pytest.approx(np.mean([r.confidence for r in results]), rel=1e-6)
    assert scores["sync_d"] == pytest.approx(np.mean([r.min_distance for r in results]), rel=1e-6)
    # cached per sample: a second model context over the same cache computes nothing
    monkeypatch.setattr(SyncNetBackend, "distances", lambda *a, **k: pytest.fail("scored again"))
    again = ScoreContext(ids=ids, samples=ctx.samples, generated=generated, reference={}, cache_dir=tmp_path / "model",
                         reference_cache_dir=tmp_path / "reference", videos=videos, backends=backends)
    assert score_all(again, ["sync_c", "sync_d"]) == scores
