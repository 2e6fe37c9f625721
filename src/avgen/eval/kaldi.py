"""Kaldi-compatible mel filterbanks and log-mel "fbank" features, without torchaudio.

Several evaluation networks were trained on features from ``torchaudio.compliance.kaldi``: PaSST
builds its mel matrix with ``get_mel_banks``; ImageBind's audio encoder and Synchformer's AST audio
branch read ``fbank`` features (128 bins, 25 ms / 10 ms). avgen does not install torchaudio, so this
module computes the same thing:

* frames of ``frame_length`` ms every ``frame_shift`` ms (``snip_edges``: only whole frames; else
  Kaldi's reflected edges), each with its DC removed, Kaldi's pre-emphasis
  ``x[n] - c * x[n - 1]`` (the first sample uses itself as the previous one), a window
  (``hanning`` = symmetric Hann, ``hamming``, ``povey`` = Hann^0.85, ``rectangular``,
  ``blackman``), zero-padded to the next power of two;
* the magnitude (``use_power``: squared) of the real FFT times triangular filters that are equally
  spaced on Kaldi's mel scale ``1127 ln(1 + f / 700)``, between ``low_freq`` and ``high_freq``
  (``high_freq <= 0`` counts down from Nyquist), the Nyquist bin getting no weight;
* ``log(max(energy, eps))`` with eps the float32 machine epsilon, optionally with the frame's log
  energy as an extra column (first, or last with ``htk_compat``).

Defaults are torchaudio's. The filter matrix is computed in float64 (torchaudio: float32), which
changes features by float32 rounding only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kaldi_mel_banks", "kaldi_fbank", "kaldi_window", "mel_scale"]

FLOAT32_EPS = torch.finfo(torch.float32).eps


def mel_scale(freq: Tensor | float) -> Tensor | float:
    """Kaldi's mel scale, 1127 ln(1 + f / 700)."""
    if isinstance(freq, Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> Tensor:
    """(num_bins, padded_window_size // 2 + 1) triangular mel filters over the rFFT bins (float64).

    Filter ``b`` rises from mel ``low + b * delta`` to ``low + (b + 1) * delta`` and falls to
    ``low + (b + 2) * delta`` (delta = mel range / (num_bins + 1)), evaluated at the mel value of each
    FFT bin's frequency; the last (Nyquist) column is zero, as Kaldi and torchaudio's ``fbank`` pad it.
    """
    if padded_window_size % 2:
        raise ValueError(f"kaldi_mel_banks: padded_window_size must be even, got {padded_window_size}")
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"kaldi_mel_banks: need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), "
                         f"got low_freq={low_freq}, high_freq={high_freq}")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    band = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + band * delta, mel_low + (band + 1) * delta, mel_low + (band + 2) * delta
    fft_bin_width = sample_frequency / padded_window_size
    mel = mel_scale(fft_bin_width * torch.arange(padded_window_size // 2, dtype=torch.float64)).unsqueeze(0)
    rising, falling = (mel - left) / (center - left), (right - mel) / (right - center)
    banks = torch.minimum(rising, falling).clamp(min=0.0)
    return F.pad(banks, (0, 1))


def kaldi_window(window_type: str, size: int, blackman_coeff: float = 0.42, dtype: torch.dtype = torch.float64) -> Tensor:
    """Kaldi's analysis windows (all symmetric, i.e. ``periodic=False``)."""
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, dtype=dtype)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(size, dtype=dtype)
    if window_type == "blackman":
        n = torch.arange(size, dtype=dtype)
        a = 2 * math.pi / (size - 1)
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise ValueError(f"unknown Kaldi window_type {window_type!r}; choose hanning, hamming, povey, rectangular or blackman")


def _frames(waveform: Tensor, size: int, shift: int, snip_edges: bool) -> Tensor:
    """(num_frames, size) frames; Kaldi's edge handling."""
    n = waveform.numel()
    if snip_edges:
        if n < size:
            return waveform.new_zeros(0, size)
        return waveform.unfold(0, size, shift)
    count = (n + shift // 2) // shift
    pad = size // 2 - shift // 2
    reversed_ = waveform.flip(0)
    # Kaldi reflects the signal at both ends (the sample at the edge included) so frame i is centred at i * shift.
    padded = torch.cat((reversed_[-pad:], waveform, reversed_)) if pad > 0 else torch.cat((waveform[-pad:], reversed_))
    return padded.unfold(0, size, shift)[:count]


def kaldi_fbank(waveform: Tensor, *, sample_frequency: float, num_mel_bins: int = 23, frame_length: float = 25.0,
                frame_shift: float = 10.0, window_type: str = "povey", dither: float = 0.0,
                preemphasis_coefficient: float = 0.97, remove_dc_offset: bool = True, round_to_power_of_two: bool = True,
                snip_edges: bool = True, use_log_fbank: bool = True, use_power: bool = True, low_freq: float = 20.0,
                high_freq: float = 0.0, htk_compat: bool = False, use_energy: bool = False, energy_floor: float = 1.0,
                raw_energy: bool = True, blackman_coeff: float = 0.42, subtract_mean: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
    """(frames, num_mel_bins [+ 1]) Kaldi fbank features of a mono waveform (S,) or (1, S).

    The arguments and defaults are those of ``torchaudio.compliance.kaldi.fbank`` (scale: the
    waveform as given; Kaldi tools feed int16-range samples, the networks here were trained on
    [-1, 1] floats). ``dither`` adds Gaussian noise from ``generator``. Output dtype = input dtype.
    """
    if waveform.dim() == 2:
        if waveform.shape[0] != 1:
            raise ValueError(f"kaldi_fbank takes one channel, got a waveform of shape {tuple(waveform.shape)}")
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise ValueError(f"kaldi_fbank takes a (samples,) or (1, samples) waveform, got {tuple(waveform.shape)}")
    out_dtype = waveform.dtype
    signal = waveform.to(torch.float64)
    size = int(sample_frequency * frame_length * 0.001)
    shift = int(sample_frequency * frame_shift * 0.001)
    if size < 2 or shift < 1:
        raise ValueError(f"kaldi_fbank: frame_length {frame_length} ms / frame_shift {frame_shift} ms are too short "
                         f"at {sample_frequency} Hz")
    padded = 1 << (size - 1).bit_length() if round_to_power_of_two else size

    frames = _frames(signal, size, shift, snip_edges).clone()
    if frames.shape[0] == 0:  # shorter than one frame: no features (as Kaldi), not an FFT error
        return waveform.new_zeros(0, num_mel_bins + int(use_energy))
    if dither != 0.0:
        frames = frames + dither * torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)

    def log_energy(x: Tensor) -> Tensor:
        energy = x.pow(2).sum(dim=1).clamp(min=FLOAT32_EPS).log()
        return energy.clamp(min=math.log(energy_floor)) if energy_floor > 0.0 else energy

    energy = log_energy(frames) if raw_energy else None
    if preemphasis_coefficient != 0.0:
        previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
        frames = frames - preemphasis_coefficient * previous
    frames = frames * kaldi_window(window_type, size, blackman_coeff)
    if padded != size:
        frames = F.pad(frames, (0, padded - size))
    if not raw_energy:
        energy = log_energy(frames)

    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2)
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq)
    features = spectrum @ banks.T
    if use_log_fbank:
        features = features.clamp(min=FLOAT32_EPS).log()
    if use_energy:
        column = energy.unsqueeze(1)
        features = torch.cat((features, column) if htk_compat else (column, features), dim=1)
    if subtract_mean:
        features = features - features.mean(dim=0, keepdim=True)
    return features.to(out_dtype)
