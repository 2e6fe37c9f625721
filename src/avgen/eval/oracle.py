"""Weight-free oracle metrics scored against ToyWorld's ground truth (design.md §4).

* :func:`detect_onsets` - a log-spectral-flux onset detector (Bello et al. 2005, "A tutorial on
  onset detection in music signals", the spectral-difference function with half-wave rectification)
  with adaptive-threshold peak picking.
* :func:`onset_offset` - mean distance from each true onset to the nearest detected one: a DeSync
  proxy (0 = perfectly in sync), capped so a silent output scores the cap, not infinity.
* :func:`classify_event` / :func:`event_class_accuracy` - nearest-exemplar classification of the
  ToyWorld sound class from a loudness-normalised log band-energy profile, with exemplars rendered
  by ToyWorld's own synthesizer (the classes are designed to differ in exactly this profile).

These need no weights, so a CPU run can show that a model learned class and synchronisation.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d, median_filter

from avgen.data.toyworld import CLASSES, EnvSource, render_env

ONSET_CAP = 1.0  # seconds: the offset charged for a true onset with no detection near it


def _as_numpy(waveform: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().float().numpy()
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (S,), got {x.shape}")
    return x


def _stft_power(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """(frames, bins) power spectrogram; frame n covers samples [n*hop, n*hop + win)."""
    if x.size < win:
        x = np.pad(x, (0, win - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2


def detect_onsets(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.1,
    min_gap: float = 0.05,
    floor_db: float = -50.0,
) -> list[float]:
    """Onset times (seconds) of ``waveform`` (S,).

    Spectral flux of the log-compressed magnitude, summed over bins, counts only rising energy. A
    peak is an onset if it is the local maximum within ``min_gap``, exceeds both ``threshold`` x the
    largest flux and the local median + ``threshold`` x its own scale, and the frame is within
    ``floor_db`` of the clip's loudest frame (so noise in silence is never an onset).
    """
    x = _as_numpy(waveform)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < 1e-6:
        return []
    win = max(int(round(0.016 * sample_rate)), 16)
    hop = max(int(round(0.004 * sample_rate)), 1)
    power = _stft_power(x / peak, win, hop)
    logmag = np.log1p(1000.0 * np.sqrt(power))
    flux = np.maximum(np.diff(logmag, axis=0), 0.0).sum(axis=1)
    flux = np.concatenate([[0.0], flux])  # flux[n]: rise from frame n-1 to frame n
    energy = power.sum(axis=1)
    loud_enough = 10 * np.log10(energy / energy.max() + 1e-20) > floor_db
    if not flux.max() > 0:
        return []
    gap = max(int(round(min_gap * sample_rate / hop)), 1)
    local_max = flux == maximum_filter1d(flux, size=2 * gap + 1, mode="constant")
    adaptive = median_filter(flux, size=2 * gap + 1, mode="nearest") + threshold * flux.max()
    picked = np.flatnonzero(local_max & (flux > adaptive) & (flux > threshold * flux.max()) & loud_enough)
    # flux[n] compares frame n with n-1; on sharp attacks it peaks when the new sound has reached
    # about one hop past the window centre of frame n-1 (measured on ToyWorld events: median bias
    # of -1 hop without the +1 below).
    times = ((picked + 1) * hop + win / 2) / sample_rate
    out: list[float] = []
    for t in times:
        if not out or t - out[-1] >= min_gap:
            out.append(float(t))
    return out


def onset_offset(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    true_onsets: Sequence[float],
    cap: float = ONSET_CAP,
) -> float:
    """Mean over true onsets of |true - nearest detected| in seconds, each capped at ``cap``.

    ``cap`` when nothing is detected; ``nan`` when there is no true onset to compare with.
    """
    truth = np.asarray(list(true_onsets), dtype=np.float64)
    if truth.size == 0:
        return float("nan")
    detected = np.asarray(detect_onsets(waveform, sample_rate))
    if detected.size == 0:
        return float(cap)
    nearest = np.abs(truth[:, None] - detected[None, :]).min(axis=1)
    return float(np.minimum(nearest, cap).mean())


# --------------------------------------------------------------------------------------------
# Class from audio
# --------------------------------------------------------------------------------------------


def band_profile(waveform: torch.Tensor | np.ndarray, sample_rate: int, num_bands: int = 32) -> np.ndarray:
    """Loudness-normalised log band energies (num_bands,), averaged over the clip's active frames."""
    x = _as_numpy(waveform)
    win = int(2 ** np.ceil(np.log2(0.064 * sample_rate)))
    power = _stft_power(x, win, win // 4)
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate)
    edges = np.geomspace(60.0, min(7500.0, 0.47 * sample_rate), num_bands + 1)
    band = np.searchsorted(edges, freqs, side="right") - 1
    valid = (band >= 0) & (band < num_bands)
    bands = np.zeros((power.shape[0], num_bands))
    np.add.at(bands.T, band[valid], power[:, valid].T)
    energy = bands.sum(axis=1)
    if energy.max() <= 0:
        return np.zeros(num_bands)
    active = energy > energy.max() * 10 ** (-30 / 10)
    profile = np.log10(bands[active].mean(axis=0) + energy.max() * 1e-9)
    return profile - profile.mean()


@functools.lru_cache(maxsize=4)
def _exemplars(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Band profiles of isolated ToyWorld events of every class, near/normal/far: (N, bands), (N,)."""
    feats, labels = [], []
    n = int(1.2 * sample_rate)
    for cls in range(len(CLASSES)):
        for k, distance in enumerate(("near", "normal", "far") * 2):
            adverbs = {"speed": "normal", "loudness": "normal", "distance": distance}
            src = EnvSource(cls, [0.1, 0.6], adverbs, True, seed=1000 * cls + k)
            feats.append(band_profile(render_env(src, n, sample_rate), sample_rate))
            labels.append(cls)
    return np.stack(feats), np.asarray(labels)


def classify_event(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> int:
    """The ToyWorld class (index into ``CLASSES``) whose exemplars' band profile is nearest."""
    feats, labels = _exemplars(int(sample_rate))
    profile = band_profile(waveform, sample_rate)
    return int(labels[np.argmin(((feats - profile) ** 2).sum(axis=1))])


def event_segments(waveform: np.ndarray, sample_rate: int, onsets: Sequence[float], length: float = 0.3) -> np.ndarray:
    """Concatenate ``[onset - 10 ms, onset + length)`` windows (the parts where the events sound)."""
    pieces = []
    for t in onsets:
        a = max(int(round((t - 0.01) * sample_rate)), 0)
        b = min(int(round((t + length) * sample_rate)), waveform.size)
        if b > a:
            pieces.append(waveform[a:b])
    return np.concatenate(pieces) if pieces else waveform[:0]


def event_class_accuracy(
    waveforms: torch.Tensor | Sequence[torch.Tensor | np.ndarray],
    sample_rate: int,
    metas: Sequence[dict[str, Any]],
) -> float:
    """Fraction of samples whose audio is classified as their ground-truth class ``meta["class"]``.

    The audio is classified on the windows after that class's true onsets (other sources in the
    mix sound elsewhere). Samples without an environmental class (``meta["class"] < 0``) are not
    scored; ``nan`` if none is.
    """
    if len(waveforms) != len(metas):
        raise ValueError(f"got {len(waveforms)} waveforms but {len(metas)} metas")
    hits, scored = 0, 0
    for wav, meta in zip(waveforms, metas):
        target = int(meta.get("class", -1))
        if target < 0:
            continue
        x = _as_numpy(wav)
        onsets = [e["onset"] for e in meta.get("events", []) if e["class"] == target]
        segment = event_segments(x, sample_rate, onsets) if onsets else x
        scored += 1
        hits += int(segment.size > 0 and classify_event(segment, sample_rate) == target)
    return hits / scored if scored else float("nan")
