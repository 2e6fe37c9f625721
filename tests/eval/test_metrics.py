"""The papers' metrics against independent transcriptions (numpy / scipy / hand-computed)."""

import numpy as np
import pytest
import torch
from scipy import linalg

from avgen.eval import (BackendUnavailable, CharErrorRate, FrechetDistance, GaussianStats, InceptionScore,
                        MelStatsBackend, OnsetSync, PairedKL, WordErrorRate, edit_distance, frechet_distance,
                        get_backend, normalize_text, onset_average_precision, onset_sync_scores)


def _fd_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance written out with np.cov and scipy sqrtm (independent of avgen's accumulation)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_matches_scipy_transcription_and_saved_stats(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 6))
    fake = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 0.3
    metric = FrechetDistance(6)
    for chunk in np.array_split(real, 3):  # accumulation across updates
        metric.update(torch.tensor(chunk, dtype=torch.float32), real=True)
    for chunk in np.array_split(fake, 4):
        metric.update(torch.tensor(chunk, dtype=torch.float32))
    expected = _fd_numpy(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-8)
    assert expected > 0.1
    # identical sets: zero
    same = FrechetDistance(6)
    same.update(torch.tensor(real), real=True)
    same.update(torch.tensor(real))
    assert abs(float(same.compute())) < 1e-6
    # saved reference statistics give the same number and refuse real updates
    path = tmp_path / "ref.npz"
    metric.real_stats().save(path)
    with_ref = FrechetDistance(6, reference=path)
    with_ref.update(torch.tensor(fake, dtype=torch.float32))
    assert float(with_ref.compute()) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="reference statistics"):
        with_ref.update(torch.tensor(real), real=True)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.npz"):
        GaussianStats.load(tmp_path / "bad.npz")


def test_frechet_singular_covariance_is_finite():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))  # rank-2 covariances in 8 dims
    value = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(value) and value > 0


def test_paired_kl_matches_numpy():
    rng = np.random.default_rng(2)
    gt, gen = rng.normal(size=(7, 527)) * 3, rng.normal(size=(7, 527)) * 3
    metric = PairedKL()
    metric.update(torch.tensor(gt[:3]), torch.tensor(gen[:3]))
    metric.update(torch.tensor(gt[3:]), torch.tensor(gen[3:]))

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(gt), softmax(gen)
    expected = float((p * np.log(p / q)).sum() / len(p))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    same = PairedKL()
    same.update(torch.tensor(gt), torch.tensor(gt))
    assert float(same.compute()) == pytest.approx(0.0, abs=1e-12)


def test_inception_score_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 10)) * 2
    metric = InceptionScore(splits=4, shuffle_seed=None)
    metric.update(torch.tensor(logits))
    mean, std = metric.compute()
    scores = []
    for part in np.array_split(logits, 4):
        p = np.exp(part) / np.exp(part).sum(1, keepdims=True)
        py = p.mean(0, keepdims=True)
        scores.append(np.exp((p * (np.log(p) - np.log(py))).sum(1).mean()))
    assert float(mean) == pytest.approx(np.mean(scores), rel=1e-9)
    assert float(std) == pytest.approx(np.std(scores, ddof=1), rel=1e-9)
    # one-hot confident predictions over k equally used classes score k
    onehot = torch.eye(5).repeat(4, 1) * 50
    confident = InceptionScore(splits=2, shuffle_seed=None)
    confident.update(onehot)
    assert float(confident.compute()[0]) == pytest.approx(5.0, rel=1e-6)
    # shuffling with the fixed seed is deterministic
    a, b = InceptionScore(splits=4), InceptionScore(splits=4)
    a.update(torch.tensor(logits)), b.update(torch.tensor(logits))
    assert float(a.compute()[0]) == float(b.compute()[0])


def test_wer_cer_against_hand_counted_edit_distances():
    assert normalize_text("  Hello, WORLD!  It's  fine. ") == "hello world it's fine"
    assert normalize_text("'quoted' text") == "quoted text"
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2
    wer = WordErrorRate()
    # ref 1: "the cat sat on the mat" (6) vs "the cat sit on mat": 1 substitution + 1 deletion = 2
    # ref 2: "hello world" (2) vs "Hello, big world!": 1 insertion = 1
    wer.update(["the cat sit on mat", "Hello, big world!"], ["The cat sat on the mat.", "hello world"])
    assert float(wer.compute()) == pytest.approx(3 / 8)
    cer = CharErrorRate()
    cer.update(["abd"], ["abc"])  # 1 substitution of 3 characters
    assert float(cer.compute()) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="hypotheses"):
        wer.update(["a"], ["a", "b"])


def _clicks(times, sr=16000, seconds=2.0, amplitude=None):
    x = np.random.default_rng(0).normal(size=int(seconds * sr)) * 1e-4
    for k, t in enumerate(times):
        n = int(t * sr)
        decay = np.exp(-np.arange(800) / 120.0)
        x[n : n + 800] += (1.0 if amplitude is None else amplitude[k]) * decay * np.sin(np.arange(800) * 0.7)
    return x


def test_onset_ap_hand_computed_and_onset_sync_on_clicks():
    # ranked by confidence: 0.52 (hit), 1.40 (miss), 1.01 (hit); 3 targets -> AP = (1/1 + 2/3) / 3
    ap = onset_average_precision([0.52, 1.01, 1.40], [0.9, 0.5, 0.7], [0.5, 1.0, 1.6], delta=0.1)
    assert ap == pytest.approx((1.0 + 2 / 3) / 3)
    # a target onset is matched once
    assert onset_average_precision([0.50, 0.52], [1.0, 0.9], [0.5], delta=0.1) == pytest.approx(1.0)
    assert np.isnan(onset_average_precision([0.5], [1.0], []))
    target = _clicks([0.3, 0.9, 1.5])
    acc, ap = onset_sync_scores(_clicks([0.3, 0.9, 1.5]), target, 16000)
    assert (acc, ap) == (1.0, pytest.approx(1.0))
    acc, ap = onset_sync_scores(_clicks([0.6, 1.2]), target, 16000)
    assert acc == 0.0 and ap == pytest.approx(0.0)
    metric = OnsetSync(16000)
    metric.update([torch.tensor(_clicks([0.3, 0.9, 1.5])), torch.tensor(_clicks([0.6, 1.2]))], [torch.tensor(target)] * 2)
    mean_acc, mean_ap = metric.compute()
    assert float(mean_acc) == pytest.approx(0.5) and float(mean_ap) == pytest.approx(0.5)


def test_melstats_backend_matches_numpy_and_unavailable_backends_say_why():
    backend = MelStatsBackend()
    rng = np.random.default_rng(4)
    x = rng.normal(size=16000) * 0.1
    emb = backend.embed([torch.tensor(x)], 16000)
    assert emb.shape == (1, 128)
    # independent: numpy framing + rfft + the same filterbank
    x = x - x.mean()
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::160]
    power = np.abs(np.fft.rfft(frames * np.hanning(1025)[:-1], axis=1)) ** 2  # periodic Hann
    mel = np.log10(np.maximum(power @ backend.filters.numpy().T, 1e-10))
    expected = np.concatenate([mel.mean(0), mel.std(0)])
    np.testing.assert_allclose(emb[0].numpy(), expected, rtol=1e-4, atol=1e-4)
    # resampling: a 32 kHz input is brought to 16 kHz first
    assert backend.embed([torch.zeros(32000)], 32000).shape == (1, 128)
    with pytest.raises(BackendUnavailable, match=r"skipped: .*fix: "):
        get_backend("passt")
    with pytest.raises(BackendUnavailable, match="--clap"):
        get_backend("clap")
    with pytest.raises(ValueError, match="unknown evaluation back-end"):
        get_backend("nope")


def _tiny_clap(directory):
    """A tiny random LAION-CLAP (HTSAT + RoBERTa) with a byte-level BPE tokenizer, saved locally."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks loudly", "footsteps on gravel", "a bell rings"], vocab_size=300,
                            min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"))
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64),
        audio_config=dict(spec_size=64, patch_size=4, patch_stride=(4, 4), num_mel_bins=16, window_size=4, hidden_size=32,
                          patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], num_classes=10,
                          enable_fusion=False),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400)
    processor = ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    model.save_pretrained(directory / "clap")
    processor.save_pretrained(directory / "clap")
    return model, processor


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_clap_backend_loads_a_local_model_and_matches_clap_forward(tmp_path):
    from avgen.eval import ClapBackend

    model, processor = _tiny_clap(tmp_path)
    backend = get_backend("clap", str(tmp_path / "clap"))
    assert isinstance(backend, ClapBackend) and backend.sample_rate == 16000 and backend.dim == 16
    audio = [torch.randn(16000) * 0.1, torch.randn(12000) * 0.1]
    texts = ["a dog barks", "a bell rings"]
    audio_emb, text_emb = backend.embed(audio, 16000), backend.embed_text(texts)
    # independent path: ClapModel.forward's normalised audio_embeds / text_embeds on the in-memory model
    features = processor.feature_extractor([(a - a.mean()).numpy() for a in audio], sampling_rate=16000,
                                           truncation="rand_trunc", return_tensors="pt")
    tokens = processor.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    input_features=features["input_features"], is_longer=features["is_longer"])
    torch.testing.assert_close(audio_emb, out.audio_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text_emb, out.text_embeds, atol=1e-5, rtol=1e-4)
    # a 32 kHz input is resampled to the extractor's rate first
    assert backend.embed([torch.randn(32000)], 32000).shape == (1, 16)
    with pytest.raises(BackendUnavailable, match="--clap"):
        get_backend("clap", str(tmp_path / "missing"))
