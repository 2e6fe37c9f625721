"""avgen.eval.kaldi against a frame-by-frame numpy transcription of Kaldi's fbank (compute-fbank-feats)."""

import math

import numpy as np
import pytest
import torch

from avgen.eval.kaldi import kaldi_fbank, kaldi_mel_banks


def _numpy_mel_banks(num_bins, padded, rate, low, high):
    high = high + rate / 2 if high <= 0 else high
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (num_bins + 1)
    banks = np.zeros((num_bins, padded // 2 + 1))
    for b in range(num_bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        for k in range(padded // 2):  # the Nyquist bin stays 0
            m = mel(k * rate / padded)
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    return banks


def _numpy_fbank(x, rate, bins, window, preemph=0.97, low=20.0, high=0.0, use_energy=False, htk_compat=False):
    size, shift = int(rate * 0.025), int(rate * 0.010)
    padded = 1 << math.ceil(math.log2(size))
    n = np.arange(size)
    if window == "hanning":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))
    else:  # povey
        w = (0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))) ** 0.85
    banks = _numpy_mel_banks(bins, padded, rate, low, high)
    rows = []
    for start in range(0, len(x) - size + 1, shift):
        frame = x[start : start + size].astype(np.float64)
        frame = frame - frame.mean()
        energy = max(np.log(max((frame**2).sum(), np.finfo(np.float32).eps)), 0.0)  # energy_floor 1 -> log 0
        emphasised = frame.copy()
        for j in range(size - 1, 0, -1):
            emphasised[j] -= preemph * frame[j - 1]
        emphasised[0] -= preemph * frame[0]
        spectrum = np.abs(np.fft.rfft(np.pad(emphasised * w, (0, padded - size)))) ** 2
        row = np.log(np.maximum(banks @ spectrum, np.finfo(np.float32).eps))
        if use_energy:
            row = np.concatenate([row, [energy]] if htk_compat else [[energy], row])
        rows.append(row)
    return np.stack(rows)


@pytest.mark.parametrize("bins,rate,low,high", [(128, 16000, 20.0, 0.0), (23, 32000, 0.0, 15000.0)])
def test_mel_banks_match_the_formula(bins, rate, low, high):
    banks = kaldi_mel_banks(bins, 1024, rate, low, high)
    np.testing.assert_allclose(banks.numpy(), _numpy_mel_banks(bins, 1024, rate, low, high), atol=1e-12)
    assert banks.shape == (bins, 513) and (banks[:, -1] == 0).all()


@pytest.mark.parametrize("window,use_energy,htk", [("hanning", False, False), ("povey", True, True), ("povey", True, False)])
def test_fbank_matches_a_frame_loop(window, use_energy, htk):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000) * 0.1 + 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 16000)
    ours = kaldi_fbank(torch.from_numpy(x), sample_frequency=16000, num_mel_bins=32, window_type=window,
                       use_energy=use_energy, htk_compat=htk)
    np.testing.assert_allclose(ours.numpy(), _numpy_fbank(x, 16000, 32, window, use_energy=use_energy, htk_compat=htk),
                               rtol=1e-9, atol=1e-9)
    assert ours.dtype == torch.float64 and kaldi_fbank(torch.from_numpy(x).float()[None], sample_frequency=16000).dtype == torch.float32


def test_fbank_edges_and_errors():
    x = torch.randn(1000, dtype=torch.float64)
    # snip_edges=False: one frame per shift, centred at i * shift (Kaldi's reflected edges)
    assert kaldi_fbank(x, sample_frequency=16000, snip_edges=False).shape[0] == (1000 + 80) // 160
    assert kaldi_fbank(x[:100], sample_frequency=16000).shape[0] == 0
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(16000, dtype=torch.float64) / 16000)
    feats = kaldi_fbank(tone, sample_frequency=16000, num_mel_bins=40)
    centre = kaldi_mel_banks(40, 512, 16000).argmax(dim=1)  # rFFT bin at each filter's peak
    assert abs(int(centre[feats.mean(0).argmax()]) * 16000 / 512 - 1000) < 150  # the 1 kHz filter is the loudest
    with pytest.raises(ValueError, match="one channel"):
        kaldi_fbank(torch.randn(2, 1000), sample_frequency=16000)
    with pytest.raises(ValueError, match="window_type"):
        kaldi_fbank(x, sample_frequency=16000, window_type="kaiser")
