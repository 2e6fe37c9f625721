"""Adverb-based data augmentation (FoleyGenEx §3.3, Fig. 4; data pipeline of §4.1).

The paper's four stages, as a transform over :class:`~avgen.data.batch.Sample` objects:

1. **Data mining** (:func:`mine_adverbs`): a sample is eligible only when its caption carries one of
   the opposing adverbs Speed (fast/slow), Distance (near/far), Volume (loud/quiet), or an
   adjective form of one ("quick", "rapidly", "nearby", "close", "noisy", "soft", ...).
2. **Audio augmentation**, chosen among the operations the mined adverbs allow:

   * *speed* (fast or slow samples; §3.3 bullet 1): a playback-rate change by 1.3x or 0.7x (SoX
     ``speed``: tempo and pitch together, :func:`change_speed`), building the five-level scale
     Very Fast = Fast x1.3, Fast = original, Medium = Fast x0.7 or Slow x1.3, Slow = original,
     Very Slow = Slow x0.7 (:data:`SPEED_LEVELS`);
   * *distance* (near or loud samples; bullet 2): room reverberation with a synthetic room impulse
     response (exponentially decaying noise reaching -60 dB at ``rt60``, :func:`synthetic_rir`;
     the paper uses Pyroomacoustics, not a dependency here) plus spectral attenuation of high
     frequencies (a Butterworth low-pass) and a distance gain (:func:`simulate_distance`);
   * *volume* (loud samples; bullet 3): a crescendo or decrescendo amplitude envelope that preserves
     the original peak amplitude (:func:`volume_envelope`; the paper uses FFmpeg volume ramps).
3. **Caption generation**: the caption is rewritten from templates naming the applied modification
   (:func:`template_caption`); an external rewriter (e.g. an LLM with the paper's prompts) can replace
   it through ``caption_rewriter(caption, augmentation) -> str``, called only when an augmentation
   was applied, with the template result in ``augmentation.template_caption``.
4. **Text augmentation** (LLM paraphrasing) has no offline equivalent; it is what a
   ``caption_rewriter`` is for.

Video. Distance and volume change only the audio; the picture stays as it is. A speed change alters
the timing of the events, so it would desynchronise the video: by default (``speed_with_video=False``)
speed is applied only to samples without video (FoleyGenEx's AA data is TTA-only, §4.1). With
``speed_with_video=True`` the frame streams are retimed by the same factor (frame k shows source time
k * factor / fps, nearest frame, the last frame repeated past the source end) so sync is kept.

Clip length. The augmented waveform keeps the sample's length: a sped-up clip is zero-padded (its
``audio_length`` records the real part), a slowed-down one is cropped. ToyWorld ground truth in
``meta`` (event onsets, word times) is retimed with the audio, and ``meta["augmentation"]`` records
what was applied. The transform is a pure function of (``seed``, sample id), like an offline
augmented set; change ``seed`` for another draw.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from avgen.data.batch import Sample

__all__ = [
    "ADVERB_LEXICON", "SPEED_LEVELS", "AppliedAugmentation", "AdverbAugmentation", "mine_adverbs",
    "change_speed", "synthetic_rir", "simulate_distance", "volume_envelope", "template_caption",
]

# Data mining: the adverbs of the three dimensions and their adjective / comparative forms.
ADVERB_LEXICON: dict[str, tuple[str, ...]] = {
    "fast": ("fast", "faster", "quick", "quicker", "quickly", "rapid", "rapidly", "swift", "swiftly",
             "hurried", "hurriedly", "speedy", "speedily"),
    "slow": ("slow", "slower", "slowly", "sluggish", "sluggishly", "leisurely", "unhurried"),
    "near": ("near", "nearby", "close", "closely", "close-up", "up close"),
    "far": ("far", "far away", "faraway", "far-off", "distant", "distantly", "in the distance"),
    "loud": ("loud", "louder", "loudly", "noisy", "noisily", "booming", "deafening", "thunderous"),
    "quiet": ("quiet", "quieter", "quietly", "soft", "softly", "faint", "faintly", "gentle", "gently"),
}
DIMENSION = {"fast": "speed", "slow": "speed", "near": "distance", "far": "distance",
             "loud": "volume", "quiet": "volume"}

# Five-level speed scale (§3.3): (mined adverb, playback factor) -> level name.
SPEED_LEVELS: dict[tuple[str, float], str] = {
    ("fast", 1.3): "very fast",
    ("fast", 1.0): "fast",
    ("fast", 0.7): "medium",
    ("slow", 1.3): "medium",
    ("slow", 1.0): "slow",
    ("slow", 0.7): "very slow",
}
# Caption templates per level: (adverb form, adjective form).
LEVEL_WORDS: dict[str, tuple[str, str]] = {
    "very fast": ("very quickly", "very fast"),
    "fast": ("quickly", "fast"),
    "medium": ("at a moderate pace", "moderately paced"),
    "slow": ("slowly", "slow"),
    "very slow": ("very slowly", "very slow"),
    "far": ("in the distance", "distant"),
    "crescendo": ("growing louder and louder", "crescendoing"),
    "decrescendo": ("fading away gradually", "fading"),
}
OPERATIONS = ("speed", "distance", "volume")


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(words, key=len, reverse=True)  # longest first: "far away" before "far"
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in alternatives) + r")(?![\w-])", re.I)


_PATTERNS = {key: _pattern(words) for key, words in ADVERB_LEXICON.items()}


def mine_adverbs(caption: str | None) -> set[str]:
    """Data mining (§3.3): the adverb classes (``fast``, ``slow``, ``near``, ``far``, ``loud``,
    ``quiet``) a caption mentions, by whole words or phrases of :data:`ADVERB_LEXICON`."""
    if not caption:
        return set()
    return {key for key, pattern in _PATTERNS.items() if pattern.search(caption)}


# --------------------------------------------------------------------------------------------
# Signal processing
# --------------------------------------------------------------------------------------------


def _as_numpy(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (S,), got shape {tuple(x.shape)}")
    return x.astype(np.float64)


def change_speed(audio: torch.Tensor | np.ndarray, factor: float) -> np.ndarray:
    """Playback at ``factor`` times the rate (SoX ``speed``): y(t) = x(factor * t).

    Duration scales by 1/factor and every frequency by ``factor``. Band-limited polyphase
    resampling by the rational approximation of ``factor`` (1.3 = 13/10, 0.7 = 7/10).
    """
    if not factor > 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    x = _as_numpy(audio)
    ratio = Fraction(float(factor)).limit_denominator(1000)
    # Reading the source `factor` times faster = resampling it by up/down = 1/factor.
    return resample_poly(x, ratio.denominator, ratio.numerator).astype(np.float32)


def synthetic_rir(rt60: float, sample_rate: int, seed: int = 0, length: float | None = None) -> np.ndarray:
    """A room impulse response: exponentially decaying white noise, -60 dB at ``rt60`` seconds.

    h[0] = 1 (direct path), h(t) = n(t) * 10^(-3 t / rt60) for t > 0 with unit-variance Gaussian n,
    the tail scaled to unit energy; ``length`` defaults to ``rt60``.
    """
    if not rt60 > 0:
        raise ValueError(f"rt60 must be positive seconds, got {rt60}")
    n = max(int(round((rt60 if length is None else length) * sample_rate)), 2)
    t = np.arange(n) / sample_rate
    tail = np.random.default_rng(seed).standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    tail[0] = 0.0
    h = tail / np.sqrt((tail**2).sum())
    h[0] = 1.0
    return h


def simulate_distance(
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    rt60: float = 0.6,
    wet_gain: float = 0.7,
    cutoff_hz: float = 2000.0,
    distance_gain: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Move a near source away (§3.3 bullet 2): y = g * (lowpass(x) * [delta + wet_gain * tail]).

    Spectral attenuation: a 4th-order Butterworth low-pass at ``cutoff_hz`` (air and distance absorb
    high frequencies); reverberation: :func:`synthetic_rir`; ``distance_gain`` attenuates the result
    (the inverse-distance law; 0.5 = twice as far). The output keeps the input's length (the tail
    past the clip end is cut).
    """
    x = _as_numpy(audio)
    cutoff = min(float(cutoff_hz), 0.45 * sample_rate)
    dry = sosfilt(butter(4, cutoff, fs=sample_rate, output="sos"), x)
    h = synthetic_rir(rt60, sample_rate, seed=seed)
    h[1:] *= wet_gain
    wet = fftconvolve(dry, h)[: x.size]
    return (distance_gain * wet).astype(np.float32)


def volume_envelope(
    audio: torch.Tensor | np.ndarray, direction: str, *, floor_db: float = -24.0, valid_length: int | None = None
) -> np.ndarray:
    """Crescendo / decrescendo preserving the peak (§3.3 bullet 3).

    A gain ramp linear in dB over the clip's valid part, from ``floor_db`` to 0 dB (crescendo) or
    back (decrescendo), then one scale so that max|y| = max|x|.
    """
    if direction not in ("crescendo", "decrescendo"):
        raise ValueError(f"direction must be 'crescendo' or 'decrescendo', got {direction!r}")
    x = _as_numpy(audio)
    n = x.size if valid_length is None else int(valid_length)
    ramp_db = np.linspace(floor_db, 0.0, max(n, 1))
    if direction == "decrescendo":
        ramp_db = ramp_db[::-1]
    gain = np.concatenate([10.0 ** (ramp_db / 20.0), np.full(x.size - n, 10.0 ** (ramp_db[-1] / 20.0))])
    y = x * gain[: x.size]
    peak_in, peak_out = np.abs(x).max(initial=0.0), np.abs(y).max(initial=0.0)
    return (y * (peak_in / peak_out) if peak_out > 0 else y).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


@dataclass
class AppliedAugmentation:
    """What was done to a sample; passed to a ``caption_rewriter`` and stored in ``meta``."""

    operation: str  # "speed" | "distance" | "volume"
    level: str  # "very fast", "medium", "very slow", "far", "crescendo", "decrescendo"
    mined: str  # the adverb class that made the sample eligible ("fast", "near", "loud", ...)
    params: dict[str, float] = field(default_factory=dict)
    template_caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FUNCTION_WORDS = {"and", "or", "but", "then", "in", "on", "at", "with", "while", "as", "from", "to", "into"}


def _is_adverb(match: re.Match[str]) -> bool:
    """Adverb use of a mined word: an -ly form or phrase, or a word not followed by the noun it
    would qualify ("thumps fast" vs "a fast car")."""
    word = match.group(0).lower()
    if word.endswith("ly") or " " in word:
        return True
    following = re.match(r"\s*([A-Za-z][\w-]*)", match.string[match.end():])
    return following is None or following.group(1).lower() in _FUNCTION_WORDS


def template_caption(caption: str, operation: str, level: str, mined: str) -> str:
    """Rewrite ``caption`` for an applied augmentation from templates.

    The words of the dimension that was modified (e.g. every speed word for a speed change, the
    near/loud words for a distance change, the loud words for a volume envelope) are replaced by the
    level's adverb or adjective form (:data:`LEVEL_WORDS`); when the caption names none of them, the
    adverb form is appended.
    """
    adverb, adjective = LEVEL_WORDS[level]
    classes = {"speed": ("fast", "slow"), "distance": ("near", "loud", "far"), "volume": ("loud",)}[operation]
    words = tuple(w for c in classes for w in ADVERB_LEXICON[c])
    pattern = _pattern(words)
    replaced = [False]

    def substitute(match: re.Match[str]) -> str:
        if replaced[0]:  # one mention carries the new level; further ones are dropped
            return ""
        replaced[0] = True
        return adverb if _is_adverb(match) else adjective

    text = pattern.sub(substitute, caption)
    if not replaced[0]:
        text = f"{caption.rstrip('. ')} {adverb}"
    # tidy the joins left by dropped words: "a, b and" lists, doubled spaces, dangling commas
    text = re.sub(r"\s*,\s*(,|and\b)", r" \1", text)
    text = re.sub(r"\band\s+(,|and\b|$)", r"\1", text)
    text = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", text)).strip(" ,")
    return text


# --------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------

CaptionRewriter = Callable[[str, AppliedAugmentation], str]


class AdverbAugmentation:
    """FoleyGenEx adverb augmentation as a ``Sample -> Sample`` transform (see the module docstring).

    Args:
        probability: chance of augmenting an eligible sample (one whose caption mines an adverb
            that allows at least one of ``operations``); others pass through unchanged.
        operations: subset of ``("speed", "distance", "volume")``; one eligible operation is drawn
            uniformly per augmented sample.
        speed_factors: playback factors of the speed scale (paper: 0.7 and 1.3).
        speed_with_video: also apply speed to samples with video (retiming the frames); default
            False, speed only on audio-only (TTA) samples as in the paper's AA data.
        rt60: (min, max) reverberation time in seconds, drawn uniformly per sample.
        wet_gain, cutoff_hz, distance_gain: see :func:`simulate_distance`.
        floor_db: the quiet end of the volume ramp (:func:`volume_envelope`).
        caption_rewriter: optional ``(caption, AppliedAugmentation) -> str`` (e.g. an LLM call);
            called only for augmented samples, with the template caption in the record.
        seed: the draw is a pure function of (seed, sample id).
    """

    def __init__(
        self,
        probability: float = 0.5,
        operations: Sequence[str] = OPERATIONS,
        speed_factors: Sequence[float] = (0.7, 1.3),
        speed_with_video: bool = False,
        rt60: Sequence[float] = (0.3, 0.9),
        wet_gain: float = 0.7,
        cutoff_hz: float = 2000.0,
        distance_gain: float = 0.5,
        floor_db: float = -24.0,
        caption_rewriter: CaptionRewriter | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        unknown = set(operations) - set(OPERATIONS)
        if unknown or not operations:
            raise ValueError(f"operations must be a non-empty subset of {OPERATIONS}, got {list(operations)}")
        for f in speed_factors:
            if not (f > 0 and f != 1.0):
                raise ValueError(f"speed factors must be positive and not 1, got {list(speed_factors)}")
        lo, hi = (float(rt60[0]), float(rt60[-1]))
        if not 0 < lo <= hi:
            raise ValueError(f"rt60 must be (min, max) positive seconds, got {list(rt60)}")
        self.probability = float(probability)
        self.operations = tuple(operations)
        self.speed_factors = tuple(float(f) for f in speed_factors)
        self.speed_with_video = bool(speed_with_video)
        self.rt60 = (lo, hi)
        self.wet_gain, self.cutoff_hz, self.distance_gain = float(wet_gain), float(cutoff_hz), float(distance_gain)
        self.floor_db = float(floor_db)
        self.caption_rewriter = caption_rewriter
        self.seed = int(seed)

    # -- eligibility ---------------------------------------------------------------------------
    def eligible(self, sample: Sample) -> list[tuple[str, str]]:
        """(operation, mined adverb) pairs this sample allows (data mining, §3.3)."""
        if sample.audio is None:
            return []
        mined = mine_adverbs(sample.caption)
        options: list[tuple[str, str]] = []
        if "speed" in self.operations and (self.speed_with_video or not sample.has_video):
            for adverb in ("fast", "slow"):
                if adverb in mined and "slow" not in mined - {adverb} and "fast" not in mined - {adverb}:
                    options.append(("speed", adverb))
        if "distance" in self.operations and "far" not in mined:
            for adverb in ("near", "loud"):
                if adverb in mined:
                    options.append(("distance", adverb))
                    break
        if "volume" in self.operations and "loud" in mined:
            options.append(("volume", "loud"))
        return options

    def _rng(self, sample: Sample) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(sample.id.encode("utf-8"))])

    # -- the transform -------------------------------------------------------------------------
    def __call__(self, sample: Sample) -> Sample:
        options = self.eligible(sample)
        rng = self._rng(sample)
        if not options or rng.random() >= self.probability:
            return sample
        operation, mined = options[int(rng.integers(len(options)))]
        audio = sample.audio
        valid = audio.shape[0] if sample.audio_length is None else min(int(sample.audio_length), audio.shape[0])
        source = audio[:valid]
        changes: dict[str, Any] = {}
        meta = dict(sample.meta)
        if operation == "speed":
            factor = self.speed_factors[int(rng.integers(len(self.speed_factors)))]
            level = SPEED_LEVELS.get((mined, factor), f"{mined} x{factor:g}")
            params = {"factor": factor}
            y = change_speed(source, factor)
            length = min(y.size, audio.shape[0])
            out = np.zeros(audio.shape[0], np.float32)
            out[:length] = y[:length]
            changes["audio_length"] = length if length < audio.shape[0] else sample.audio_length
            changes["audio"] = torch.from_numpy(out)
            if sample.has_video:
                changes.update(_retime_video(sample, factor))
            meta.update(_retime_meta(meta, factor, audio.shape[0] / sample.sample_rate))
        elif operation == "distance":
            rt60 = float(rng.uniform(*self.rt60))
            level, params = "far", {"rt60": rt60, "cutoff_hz": self.cutoff_hz, "distance_gain": self.distance_gain}
            y = simulate_distance(source, sample.sample_rate, rt60=rt60, wet_gain=self.wet_gain,
                                  cutoff_hz=self.cutoff_hz, distance_gain=self.distance_gain,
                                  seed=int(rng.integers(2**31)))
            changes["audio"] = torch.cat([torch.from_numpy(y), audio[valid:].float()])
        else:
            level = ("crescendo", "decrescendo")[int(rng.integers(2))]
            params = {"floor_db": self.floor_db}
            y = volume_envelope(source, level, floor_db=self.floor_db)
            changes["audio"] = torch.cat([torch.from_numpy(y), audio[valid:].float()])
        record = AppliedAugmentation(operation, level, mined, params)
        record.template_caption = template_caption(sample.caption or "", operation, level, mined)
        caption = record.template_caption
        if self.caption_rewriter is not None:
            caption = self.caption_rewriter(sample.caption or "", record)
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"sample {sample.id!r}: caption_rewriter returned {caption!r}; it must return "
                                 "a non-empty caption string")
        meta["augmentation"] = {**record.to_dict(), "original_caption": sample.caption}
        return dataclasses.replace(sample, caption=caption, meta=meta, **changes)


def _retime_video(sample: Sample, factor: float) -> dict[str, torch.Tensor]:
    """Frame k of the output shows source time k * factor / fps (nearest frame, last one repeated)."""
    if sample.semantic_features is not None or sample.sync_features is not None:
        raise ValueError(f"sample {sample.id!r} carries precomputed video features; speed augmentation with "
                         "video retimes frames only. Use speed_with_video=False or decode frames instead")
    out = {}
    for name in ("video_semantic", "video_sync"):
        frames = getattr(sample, name)
        if frames is None:
            continue
        num = frames.shape[0]
        index = torch.clamp(torch.round(torch.arange(num) * factor).long(), max=num - 1)
        out[name] = frames[index]
    return out


def _retime_meta(meta: dict[str, Any], factor: float, seconds: float) -> dict[str, Any]:
    """ToyWorld ground truth after a speed change: times divided by ``factor``, past the clip dropped."""
    out: dict[str, Any] = {}
    if meta.get("events"):
        out["events"] = [{**e, "onset": e["onset"] / factor} for e in meta["events"] if e["onset"] / factor < seconds]
    if meta.get("words"):
        out["words"] = [{**w, "start": w["start"] / factor, "end": min(w["end"] / factor, seconds)}
                        for w in meta["words"] if w["start"] / factor < seconds]
    if meta.get("edit_window"):
        start, end = meta["edit_window"]
        out["edit_window"] = [min(start / factor, seconds), min(end / factor, seconds)]
    return out
