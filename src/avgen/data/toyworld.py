"""ToyWorld: a procedural audio-visual world, generated on the fly (design.md §4).

Every sample is a pure function of (seed, split, index). A *scene* (plain data: sources, onsets,
words, adverbs, layout) is drawn first; audio and video are then rendered from it, the video by a
function of time so any frame rate works:

* eight sound classes with distinct timbres (pitch-dropping sine, inharmonic bell, pure whistle,
  high-passed noise, low rumble, short resonant tick, harmonic horn, frequency sweep), each tied to a
  visible object of its own colour and shape. On-screen events (the object appears, bounces, flashes
  or pops) start their sound at exactly the event frame; off-screen sounds have no visual;
* speech from a small vocabulary (eSpeak NG or a formant fallback, see :mod:`avgen.data.speech`),
  shown as a face whose mouth opening follows the speech envelope; singing on a pentatonic melody;
* captions from templates whose adverbs change the audio: fast/slow (event rate), loud/quiet (gain),
  near/far (low-pass + reverb, and a smaller object on screen);
* a target video stream (``video_fps`` / ``video_size``, off by default) for joint audio-video
  generation, rendered by the same function of time, with its first frame as reference image;
* every paper's scenario (``SCENARIOS``): FoleyGenEx VTA/TTA, OmniSonic UniHAGen S1-S3 (appendix
  A.1: S1 on-screen env + off-screen speech, S2 on-screen speech + off-screen env, S3 on-screen env
  + off-screen env + off-screen speech), AudioGen-Omni speech and song, Harmony joint audio-video.

``meta`` carries the ground truth the oracle metrics (:mod:`avgen.eval.oracle`) score against.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import lightning as L
import numpy as np
import torch
from scipy.signal import butter, fftconvolve, lfilter, sosfilt
from torch.utils.data import DataLoader, Dataset

from avgen.data.batch import Sample, collate
from avgen.data.sampling import train_loader
from avgen.data.spec import MediaSpec
from avgen.data.speech import VOCABULARY, VOICES, resolve_backend, speak_word, sung_word

SCENARIOS: tuple[str, ...] = (
    "vta", "tta", "omnisonic_s1", "omnisonic_s2", "omnisonic_s3", "speech", "song", "joint_av",
)
# VTA-heavy default mix (probabilities sum to one).
DEFAULT_MIX: dict[str, float] = {
    "vta": 0.40, "tta": 0.15, "omnisonic_s1": 0.075, "omnisonic_s2": 0.075, "omnisonic_s3": 0.075,
    "speech": 0.075, "song": 0.05, "joint_av": 0.10,
}
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "predict": 3}
PEAK = 0.95


@dataclass(frozen=True)
class SoundClass:
    name: str
    noun: str
    verb: str
    shape: str
    color: tuple[float, float, float]


CLASSES: tuple[SoundClass, ...] = (
    SoundClass("drum", "drum", "thumps", "circle", (1.0, 0.15, 0.15)),
    SoundClass("bell", "bell", "rings", "triangle", (1.0, 0.9, 0.1)),
    SoundClass("whistle", "whistle", "whistles", "square", (0.1, 0.9, 0.9)),
    SoundClass("steam", "steam valve", "hisses", "ring", (0.85, 0.85, 0.85)),
    SoundClass("engine", "engine", "rumbles", "bar", (0.6, 0.35, 0.1)),
    SoundClass("clock", "clock", "ticks", "diamond", (0.2, 0.85, 0.2)),
    SoundClass("horn", "horn", "honks", "cross", (1.0, 0.55, 0.0)),
    SoundClass("bird", "bird", "chirps", "hourglass", (0.55, 0.3, 1.0)),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# Adverbs really change the rendering; these tables are what the captions promise.
INTERVALS = {"fast": (0.2, 0.3), "normal": (0.35, 0.55), "slow": (0.7, 1.0)}  # seconds between events
GAINS = {"loud": 0.8, "normal": 0.4, "quiet": 0.1}  # peak of one event
SIZES = {"near": 0.15, "normal": 0.11, "far": 0.065}  # object radius, fraction of the frame
ADVERB_WORDS = {
    "speed": {"fast": "quickly", "slow": "slowly"},
    "loudness": {"loud": "loudly", "quiet": "quietly"},
    "distance": {"near": "nearby", "far": "in the distance"},
}
ADVERB_VALUES = {"speed": ("fast", "slow"), "loudness": ("loud", "quiet"), "distance": ("near", "far")}
OFFSCREEN_GAIN = 0.7
VOICE_GAIN = {True: 0.5, False: 0.35}  # on-screen / off-screen speech peak
FLOOR_Y = 0.88
MOTIONS = ("bounce", "flash", "pop")
FACE_COLOR = (0.95, 0.75, 0.6)


# --------------------------------------------------------------------------------------------
# Scene description (plain, picklable data)
# --------------------------------------------------------------------------------------------


@dataclass
class EnvSource:
    """An environmental sound source: one class, events at ``onsets`` (seconds)."""

    cls: int
    onsets: list[float]
    adverbs: dict[str, str]  # speed / loudness / distance -> value ("normal" when unmentioned)
    onscreen: bool
    seed: int


@dataclass
class VoiceSource:
    """Speech (or song when ``notes`` is set): ``words`` starting at ``starts`` (seconds)."""

    voice: int
    words: list[str]
    starts: list[float]
    ends: list[float]
    onscreen: bool
    seed: int
    notes: list[float] | None = None


@dataclass
class Scene:
    scenario: str
    duration: float
    env: EnvSource | None = None  # the on-screen (or, for TTA, the only) environmental source
    offscreen_env: EnvSource | None = None
    voice: VoiceSource | None = None
    has_video: bool = True
    show_face: bool = False
    motion: str = "bounce"
    object_x: float = 0.5
    face_x: float = 0.27
    reference: str | None = None  # "env" | "voice" | None
    captions: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Sound synthesis
# --------------------------------------------------------------------------------------------


def event_sound(cls: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One event of class ``cls`` (peak 1, sharp attack so the onset is where the event is)."""
    sr = sample_rate
    v = rng.uniform(0.95, 1.05)  # small per-event pitch variation

    def time(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sr)) / sr

    if cls == 0:  # drum: a sine whose pitch drops quickly (kick)
        t = time(0.3)
        f = (55 + 110 * np.exp(-t / 0.025)) * v
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.11)
    elif cls == 1:  # bell: inharmonic partials with partial-dependent decay
        t = time(0.5)
        y = sum(a * np.sin(2 * np.pi * 880 * v * r * t) * np.exp(-t / d)
                for a, r, d in ((1.0, 1.0, 0.35), (0.5, 2.76, 0.2), (0.3, 5.4, 0.1)))
    elif cls == 2:  # whistle: a pure tone with vibrato, sustained
        t = time(0.25)
        f = 2200 * v * (1 + 0.02 * np.sin(2 * np.pi * 7 * t))
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.minimum(1.0, (t[-1] - t) / 0.03)
    elif cls == 3:  # steam: high-passed white noise
        t = time(0.25)
        noise = rng.standard_normal(t.size)
        y = np.diff(noise, n=2, prepend=[0.0, 0.0]) * np.exp(-t / 0.12)
    elif cls == 4:  # engine: low sawtooth + brown noise
        t = time(0.4)
        saw = 2 * ((48 * v * t) % 1.0) - 1
        saw = lfilter([0.15], [1, -0.85], saw)
        brown = lfilter([1.0], [1, -0.99], rng.standard_normal(t.size))
        brown = brown / max(np.abs(brown).max(), 1e-9)
        y = (0.7 * saw / max(np.abs(saw).max(), 1e-9) + 0.3 * brown) * np.exp(-t / 0.25)
    elif cls == 5:  # clock: a short resonant tick
        t = time(0.06)
        y = np.sin(2 * np.pi * 3200 * v * t) * np.exp(-t / 0.01)
    elif cls == 6:  # horn: harmonic-rich tone
        t = time(0.3)
        y = sum(np.sin(2 * np.pi * k * 330 * v * t) / k for k in range(1, 9)) * np.minimum(1.0, (t[-1] - t) / 0.04)
    elif cls == 7:  # bird: a rising frequency sweep
        t = time(0.12)
        f = (2600 + 1800 * t / t[-1]) * v
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.minimum(1.0, (t[-1] - t) / 0.02)
    else:
        raise ValueError(f"ToyWorld has classes 0..{len(CLASSES) - 1}, got {cls}")
    attack = max(int(0.002 * sr), 1)
    y = np.asarray(y, dtype=np.float64)
    y[:attack] *= np.linspace(0, 1, attack, endpoint=False) + 1.0 / attack
    return (y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _far_filters(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-pass (distance absorbs highs) and a short noise-tail room response (reverb)."""
    sos = butter(4, min(1000.0, 0.45 * sample_rate), fs=sample_rate, output="sos")
    rng = np.random.default_rng(1234)
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    ir = rng.standard_normal(t.size) * np.exp(-t / 0.06)
    ir[0] = 0.0  # the direct path is added separately
    return sos, (ir / np.sqrt((ir**2).sum())).astype(np.float32)


def render_env(source: EnvSource, num_samples: int, sample_rate: int, offscreen: bool = False) -> np.ndarray:
    """The waveform of one environmental source (adverbs applied)."""
    rng = np.random.default_rng(source.seed)
    out = np.zeros(num_samples, np.float32)
    gain = GAINS[source.adverbs["loudness"]] * (OFFSCREEN_GAIN if offscreen else 1.0)
    for onset in source.onsets:
        start = int(round(onset * sample_rate))
        ev = event_sound(source.cls, sample_rate, rng)[: max(num_samples - start, 0)]
        out[start : start + ev.size] += gain * ev
    if source.adverbs["distance"] == "far":
        sos, ir = _far_filters(sample_rate)
        dry = sosfilt(sos, out).astype(np.float32)
        out = 0.6 * (dry + 0.5 * fftconvolve(dry, ir)[:num_samples].astype(np.float32))
    return out


def render_voice(source: VoiceSource, num_samples: int, sample_rate: int, backend: str) -> np.ndarray:
    """Speech (words at their start times) or song (words sung on ``notes``)."""
    out = np.zeros(num_samples, np.float32)
    voice = VOICES[source.voice]
    gain = VOICE_GAIN[source.onscreen]
    for i, (word, start, end) in enumerate(zip(source.words, source.starts, source.ends)):
        if source.notes is not None:
            y = sung_word(word, sample_rate, source.notes[i], end - start, seed=source.seed + i)
        else:
            y = speak_word(word, sample_rate, voice, backend, seed=source.seed + i)
        s = int(round(start * sample_rate))
        y = y[: max(num_samples - s, 0)]
        out[s : s + y.size] += gain * y
    return out


def envelope(x: np.ndarray, sample_rate: int, rate: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """RMS envelope (20 ms windows at ``rate`` Hz), normalised to peak 1. Returns (times, values)."""
    hop = max(int(sample_rate / rate), 1)
    win = max(int(0.02 * sample_rate), hop)
    padded = np.pad(x.astype(np.float64) ** 2, (win // 2, win // 2))
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    centres = np.arange(0, x.size, hop)
    rms = np.sqrt(np.maximum(csum[centres + win] - csum[centres], 0.0) / win)
    return centres / sample_rate, rms / max(rms.max(), 1e-9)


def limit(x: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale down (never up) so |x| <= peak: keeps loud/quiet differences intact."""
    m = float(np.abs(x).max()) if x.size else 0.0
    return x * (peak / m) if m > peak else x


# --------------------------------------------------------------------------------------------
# Video rasterisation (a function of time)
# --------------------------------------------------------------------------------------------


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float | np.ndarray) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(ax, ay) <= 0.85 * r
    if shape == "triangle":  # apex up (y grows downwards)
        return (dy <= r) & (dy >= -r) & (ax <= 0.6 * (dy + r))
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "bar":
        return (ax <= r) & (ay <= 0.4 * r)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        return ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r))
    if shape == "hourglass":
        return (ax <= ay) & (ay <= r)
    raise ValueError(f"unknown shape {shape!r}")


def object_state(scene: Scene, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-time (visible, centre y, flash brightness in [0, 1]) of the on-screen object."""
    onsets = np.asarray(scene.env.onsets)
    r = SIZES[scene.env.adverbs["distance"]]
    k = np.searchsorted(onsets, times + 1e-6, side="right") - 1  # index of the last event at or before t
    visible = k >= 0  # the first event is the object's appearance
    since = np.where(visible, times - onsets[np.clip(k, 0, None)], np.inf)
    rest_y = FLOOR_Y - r
    y = np.full(times.shape, 0.5)
    flash = np.zeros(times.shape)
    if scene.motion == "bounce":  # parabola between floor contacts; rests after the last contact
        nxt = np.clip(k + 1, 0, onsets.size - 1)
        interval = onsets[nxt] - onsets[np.clip(k, 0, None)]
        flying = visible & (k + 1 < onsets.size) & (interval > 0)
        u = np.where(flying, since / np.where(interval > 0, interval, 1.0), 0.0)
        height = np.minimum(0.4, 0.8 * interval) * 4 * u * (1 - u)
        y = rest_y - np.where(flying, height, 0.0)
    elif scene.motion == "flash":
        flash = np.where(visible, np.exp(-since / 0.08), 0.0)
    elif scene.motion == "pop":  # visible only briefly after each event
        visible = visible & (since < 0.16)
    return visible, y, flash


def render_video(scene: Scene, fps: float, size: int, mouth: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """Frames at ``t = k / fps`` for the scene's duration: (F, 3, size, size) float32 in [0, 1].

    ``mouth`` is the on-screen voice's (times, envelope); the mouth opening follows it.
    """
    num_frames = max(int(round(scene.duration * fps)), 1)
    times = np.arange(num_frames) / fps
    coords = (np.arange(size) + 0.5) / size
    yy, xx = coords[None, :, None], coords[None, None, :]  # (1, H, 1), (1, 1, W)
    img = np.empty((num_frames, size, size, 3), np.float32)
    img[:] = (0.10, 0.10, 0.16)
    img[:, coords > FLOOR_Y] = (0.22, 0.20, 0.18)

    def paint(mask: np.ndarray, color: Sequence[float] | np.ndarray) -> None:
        np.copyto(img, np.asarray(color, np.float32), where=mask[..., None])

    if scene.show_face:
        fx, fy = scene.face_x, 0.45
        paint(np.broadcast_to((xx - fx) ** 2 + (yy - fy) ** 2 <= 0.16**2, img.shape[:3]), FACE_COLOR)
        for ex in (fx - 0.055, fx + 0.055):
            paint(np.broadcast_to((xx - ex) ** 2 + (yy - 0.40) ** 2 <= 0.02**2, img.shape[:3]), (0.05, 0.05, 0.05))
        opening = np.zeros(num_frames) if mouth is None else np.interp(times, mouth[0], mouth[1], left=0.0, right=0.0)
        half_h = (0.008 + 0.06 * opening)[:, None, None]
        paint(((xx - fx) / 0.06) ** 2 + ((yy - 0.53) / half_h) ** 2 <= 1.0, (0.35, 0.05, 0.08))
    if scene.env is not None and scene.env.onscreen:
        cls = CLASSES[scene.env.cls]
        visible, cy, flash = object_state(scene, times)
        r = SIZES[scene.env.adverbs["distance"]]
        mask = _shape_mask(cls.shape, xx - scene.object_x, yy - cy[:, None, None], r) & visible[:, None, None]
        base = np.asarray(cls.color, np.float32)
        colors = base + (1 - base) * 0.8 * flash[:, None].astype(np.float32)  # (F, 3): flash towards white
        np.copyto(img, np.broadcast_to(colors[:, None, None, :], img.shape), where=mask[..., None])
    return torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


class ToyWorld:
    """Draws scenes and renders samples. Deterministic per (seed, split, index)."""

    def __init__(
        self,
        duration: float = 2.0,
        sample_rate: int = 16000,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        semantic_size: int = 64,
        sync_size: int = 64,
        scenarios: Sequence[str] | None = None,
        speech: str = "auto",
        seed: int = 0,
        always_reference: bool = False,
        reference_seconds: float = 1.0,
        video_fps: float | None = None,
        video_size: int = 32,
        reference_image: bool = True,
        min_duration: float | None = None,
    ) -> None:
        if duration < 0.5:
            raise ValueError(f"ToyWorld needs duration >= 0.5 s to place events, got {duration}")
        unknown = set(scenarios or ()) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown ToyWorld scenarios {sorted(unknown)}; choose from {SCENARIOS}")
        if scenarios is not None and len(scenarios) == 0:
            raise ValueError(f"scenarios must be None (default mix) or a non-empty list from {SCENARIOS}")
        self.duration = float(duration)
        self.sample_rate = int(sample_rate)
        self.semantic_fps, self.sync_fps = float(semantic_fps), float(sync_fps)
        self.semantic_size, self.sync_size = int(semantic_size), int(sync_size)
        self.scenarios = list(scenarios) if scenarios else None
        self.speech = resolve_backend(speech)
        self.seed = int(seed)
        # Every sample with an environmental source gets a reference clip (AC-VTA / FE inputs); by
        # default only half of the VTA samples draw one. The reference has its own random stream,
        # so this changes no other part of a sample.
        self.always_reference = bool(always_reference)
        if reference_seconds < 0.5:
            raise ValueError(f"reference_seconds must be >= 0.5 s (room for one event), got {reference_seconds}")
        self.reference_seconds = float(reference_seconds)
        # Variable-length clips (AudioGen-Omni §3.3): each sample lasts a seeded draw in
        # [min_duration, duration] (10 ms grid); None keeps every clip at ``duration``.
        if min_duration is not None and not 0.5 <= min_duration <= duration:
            raise ValueError(f"min_duration must be in [0.5, duration={duration}] s, got {min_duration}")
        self.min_duration = None if min_duration is None else float(min_duration)

        # Target video (the stream a joint audio-video model generates, Harmony): rendered at
        # ``video_fps`` / ``video_size`` for every sample with video when ``video_fps`` is set; its
        # first frame is the reference image when ``reference_image``. Off (None) by default.
        if video_fps is not None and video_fps <= 0:
            raise ValueError(f"video_fps must be positive (or None for no target video), got {video_fps}")
        if video_size < 2:
            raise ValueError(f"video_size must be >= 2 pixels, got {video_size}")
        self.video_fps = None if video_fps is None else float(video_fps)
        self.video_size = int(video_size)
        self.reference_image = bool(reference_image)

    def clip_duration(self, index: int, split: str = "train") -> float:
        """Length of sample ``index`` in seconds (its own random stream, so it changes nothing else)."""
        if self.min_duration is None or self.min_duration == self.duration:
            return self.duration
        u = float(self._rng(split, index, stream=3).uniform(self.min_duration, self.duration))
        return round(min(max(round(u, 2), self.min_duration), self.duration), 6)

    @property
    def media(self) -> MediaSpec:
        """How this world renders media (clip length, rates, frame sizes)."""
        return MediaSpec(self.duration, self.sample_rate, self.semantic_fps, self.sync_fps, self.semantic_size,
                         self.sync_size, self.video_fps, self.video_size)

    def _replace(self, **changes: Any) -> "ToyWorld":
        """A world with the same options except ``changes`` (e.g. another duration)."""
        options = dict(duration=self.duration, sample_rate=self.sample_rate, semantic_fps=self.semantic_fps,
                       sync_fps=self.sync_fps, semantic_size=self.semantic_size, sync_size=self.sync_size,
                       scenarios=self.scenarios, speech=self.speech, seed=self.seed,
                       always_reference=self.always_reference, reference_seconds=self.reference_seconds,
                       video_fps=self.video_fps, video_size=self.video_size, reference_image=self.reference_image,
                       # another clip length is one fixed length (generation at --duration)
                       min_duration=None if "duration" in changes else self.min_duration)
        return ToyWorld(**{**options, **changes})

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    def _rng(self, split: str, index: int, stream: int = 0) -> np.random.Generator:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        return np.random.default_rng([self.seed, SPLITS[split], int(index), stream])

    # -- scene drawing ---------------------------------------------------------------------

    def _adverbs(self, rng: np.random.Generator, overrides: dict[str, str] | None) -> dict[str, str]:
        out = {}
        for key, (lo, hi) in ADVERB_VALUES.items():
            u = rng.random()
            out[key] = "normal" if u < 0.4 else (lo if u < 0.7 else hi)
        out.update(overrides or {})
        return out

    def _env(self, rng, *, onscreen, cls=None, exclude=(), adverbs=None, duration=None) -> EnvSource:
        duration = self.duration if duration is None else duration
        if cls is None:
            cls = int(rng.choice([c for c in range(len(CLASSES)) if c not in exclude]))
        adverbs = self._adverbs(rng, adverbs)
        grid = 1.0 / self.sync_fps  # onsets on the sync frame grid: the event frame exists exactly
        lo, hi = INTERVALS[adverbs["speed"]]
        t = min(rng.uniform(0.1, 0.5), 0.3 * duration)
        onsets: list[float] = []
        while t < duration - 0.15:
            q = round(round(t / grid) * grid, 6)
            if not onsets or q > onsets[-1]:
                onsets.append(q)
            t += rng.uniform(lo, hi)
        return EnvSource(cls, onsets, adverbs, onscreen, int(rng.integers(2**31)))

    def _voice(self, rng, *, onscreen, voice=None, sing=False, duration=None, words=None) -> VoiceSource:
        duration = self.duration if duration is None else duration
        voice = int(rng.integers(len(VOICES))) if voice is None else voice
        seed = int(rng.integers(2**31))
        candidates = [VOCABULARY[i] for i in rng.permutation(len(VOCABULARY))[: int(rng.integers(2, 5))]]
        if words is not None:  # the given lyrics / transcript (same draws as before, so nothing else moves)
            candidates = list(words)
        t = rng.uniform(0.05, 0.25)
        words, starts, ends, notes = [], [], [], []
        scale = (0, 2, 4, 7, 9, 12)  # pentatonic semitones above the voice's f0
        for i, word in enumerate(candidates):
            if sing:
                length = rng.uniform(0.3, 0.45)
                note = VOICES[voice].f0 * 2 ** (scale[int(rng.integers(len(scale)))] / 12)
            else:
                length = speak_word(word, self.sample_rate, VOICES[voice], self.speech, seed=seed + i).size / self.sample_rate
            if t + length > duration - 0.02:
                break
            words.append(word)
            starts.append(round(t, 6))
            ends.append(round(t + length, 6))
            if sing:
                notes.append(float(note))
            t += length + rng.uniform(0.05, 0.12)
        if not words:  # a very short clip: one word, cut by the clip end
            words, starts = [candidates[0]], [round(min(t, 0.05), 6)]
            ends = [round(duration, 6)]
            notes = [VOICES[voice].f0] if sing else []
        return VoiceSource(voice, words, starts, ends, onscreen, seed, notes if sing else None)

    def scene(
        self,
        index: int,
        split: str = "train",
        *,
        scenario: str | None = None,
        cls: int | None = None,
        adverbs: dict[str, str] | None = None,
        motion: str | None = None,
        lyrics: str | None = None,
    ) -> Scene:
        """Draw the scene of sample ``index``. Keyword overrides pin choices (tests, demos).

        ``lyrics``: the words the voice sings (``song``: any alphabetic words, each a pitched
        syllable run on a pentatonic note) or says (speech scenarios: words of ``VOCABULARY``);
        words that do not fit the clip are dropped, as drawn words are.
        """
        rng = self._rng(split, index)
        if self.scenarios is not None:
            drawn = self.scenarios[int(rng.integers(len(self.scenarios)))]
        else:
            names = list(DEFAULT_MIX)
            drawn = names[int(rng.choice(len(names), p=np.asarray(list(DEFAULT_MIX.values()))))]
        scenario = scenario or drawn
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
        sc = Scene(scenario=scenario, duration=self.clip_duration(index, split))
        sc.motion = motion or MOTIONS[int(rng.integers(len(MOTIONS)))]
        env_on = scenario in ("vta", "tta", "omnisonic_s1", "omnisonic_s3", "joint_av")
        face = scenario in ("omnisonic_s2", "speech", "song", "joint_av")
        if env_on:
            sc.env = self._env(rng, onscreen=scenario != "tta", cls=cls, adverbs=adverbs, duration=sc.duration)
        if scenario in ("omnisonic_s2", "omnisonic_s3"):
            exclude = (sc.env.cls,) if sc.env is not None else ()
            sc.offscreen_env = self._env(rng, onscreen=False, exclude=exclude, adverbs=None if env_on else adverbs,
                                         duration=sc.duration)
        if scenario != "vta" and scenario != "tta":
            words = None
            if lyrics is not None:
                words = [w for w in re.sub(r"[^a-z ]", " ", lyrics.lower()).split()]
                unknown = [w for w in words if w not in VOCABULARY]
                if scenario != "song" and unknown:
                    raise ValueError(f"ToyWorld speaks only {VOCABULARY}; {unknown} cannot be spoken (songs sing any word)")
                if not words:
                    raise ValueError(f"lyrics {lyrics!r} have no alphabetic word to sing")
            sc.voice = self._voice(rng, onscreen=face, sing=scenario == "song", duration=sc.duration, words=words)
        elif lyrics is not None:
            raise ValueError(f"lyrics were given but scenario {scenario!r} has no voice; use 'song' or a speech scenario")
        sc.has_video = scenario != "tta"
        sc.show_face = face
        sc.face_x = 0.27 if (face and env_on) else float(rng.uniform(0.4, 0.6))
        sc.object_x = float(rng.uniform(0.62, 0.8)) if face else float(rng.uniform(0.3, 0.7))
        if scenario == "vta":
            sc.reference = "env" if rng.random() < 0.5 else None
        elif scenario in ("speech", "joint_av"):
            sc.reference = "voice"
        sc.captions = self._captions(sc)
        return sc

    @staticmethod
    def _env_caption(src: EnvSource, offscreen: bool) -> str:
        c = CLASSES[src.cls]
        words = [ADVERB_WORDS[k][v] for k, v in src.adverbs.items() if v != "normal"]
        article = "an" if c.noun[0] in "aeiou" else "a"
        text = f"{article} {c.noun} {c.verb}" + (" off screen" if offscreen else "")
        if words:
            text += " " + (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0])
        return text

    def _captions(self, sc: Scene) -> dict[str, str]:
        caps: dict[str, str] = {}
        if sc.env is not None:
            caps["caption"] = self._env_caption(sc.env, offscreen=False)
        if sc.offscreen_env is not None:
            caps["offscreen_caption"] = self._env_caption(sc.offscreen_env, offscreen=True)
        if sc.voice is not None:
            text = " ".join(sc.voice.words)
            if sc.voice.notes is not None:
                caps["lyrics"] = text
                caps["caption"] = f"a {VOICES[sc.voice.voice].name} voice sings a melody"
            else:
                caps["transcript"] = text
        if sc.scenario == "joint_av":
            obj = CLASSES[sc.env.cls]
            caps["video_caption"] = (
                f"a face says '{' '.join(sc.voice.words)}' next to {'an' if obj.noun[0] in 'aeiou' else 'a'} {obj.noun} that {sc.motion}s "
                f"{'quickly' if sc.env.adverbs['speed'] == 'fast' else 'slowly' if sc.env.adverbs['speed'] == 'slow' else ''}"
            ).strip()
        return caps

    # -- rendering -----------------------------------------------------------------------------

    def tracks(self, sc: Scene, num_samples: int | None = None) -> dict[str, np.ndarray]:
        """Per-source waveforms (before mixing): keys "env", "offscreen_env", "voice"."""
        n = int(round(sc.duration * self.sample_rate)) if num_samples is None else num_samples
        out = {}
        if sc.env is not None:
            out["env"] = render_env(sc.env, n, self.sample_rate)
        if sc.offscreen_env is not None:
            out["offscreen_env"] = render_env(sc.offscreen_env, n, self.sample_rate, offscreen=True)
        if sc.voice is not None:
            out["voice"] = render_voice(sc.voice, n, self.sample_rate, self.speech)
        return out

    def render(self, sc: Scene, fps: float, size: int, tracks: dict[str, np.ndarray] | None = None) -> torch.Tensor:
        """The scene's video at any frame rate and size, (F, 3, size, size) in [0, 1]."""
        mouth = None
        if sc.show_face and sc.voice is not None:
            voice = (tracks or self.tracks(sc))["voice"]
            mouth = envelope(voice, self.sample_rate)
        return render_video(sc, fps, size, mouth)

    def _reference(self, sc: Scene, split: str, index: int) -> np.ndarray | None:
        """``reference_seconds`` (1 s) of the same class / voice from another draw (other onsets / words)."""
        kind = sc.reference
        if kind is None and self.always_reference and sc.env is not None:
            kind = "env"
        if kind is None:
            return None
        rng = self._rng(split, index, stream=1)
        seconds = self.reference_seconds
        n = int(round(seconds * self.sample_rate))
        if kind == "env":
            src = self._env(rng, onscreen=False, cls=sc.env.cls,
                            adverbs={"speed": "normal", "loudness": "normal", "distance": "normal"}, duration=seconds)
            return limit(render_env(src, n, self.sample_rate))
        src = self._voice(rng, onscreen=True, voice=sc.voice.voice, duration=seconds)
        return limit(render_voice(src, n, self.sample_rate, self.speech))

    def meta(self, sc: Scene) -> dict[str, Any]:
        events = []
        for src in (sc.env, sc.offscreen_env):
            if src is not None:
                events += [{"class": src.cls, "class_name": CLASS_NAMES[src.cls], "onset": float(o),
                            "onscreen": bool(src.onscreen)} for o in src.onsets]
        events.sort(key=lambda e: (e["onset"], not e["onscreen"]))
        words = []
        if sc.voice is not None:
            words = [{"word": w, "start": float(s), "end": float(e), "onscreen": bool(sc.voice.onscreen)}
                     for w, s, e in zip(sc.voice.words, sc.voice.starts, sc.voice.ends)]
        return {
            "scenario": sc.scenario,
            "events": events,
            "words": words,
            "class": sc.env.cls if sc.env is not None else -1,
            "class_name": CLASS_NAMES[sc.env.cls] if sc.env is not None else "",
            "adverbs": dict(sc.env.adverbs) if sc.env is not None else {},
            "offscreen_adverbs": dict(sc.offscreen_env.adverbs) if sc.offscreen_env is not None else {},
            "voice": VOICES[sc.voice.voice].name if sc.voice is not None else "",
            "notes": list(sc.voice.notes) if sc.voice is not None and sc.voice.notes is not None else [],
            "motion": sc.motion if sc.has_video and sc.env is not None else "",
        }

    def task_inputs(self, sc: Scene, split: str, index: int) -> dict[str, Any]:
        """FoleyGenEx task inputs (§3.2) in ``meta``, from their own random stream (stream 2):

        * ``contradicting_caption``: the caption of another sound class (same adverbs), for TC-VTA
          (text that need not match the video); its class in ``contradicting_class``;
        * ``edit_window``: [start, end] seconds strictly inside the clip, 25-50% of its length, for
          editing (regenerate the window, keep the rest).
        """
        rng = self._rng(split, index, stream=2)
        own = sc.env.cls if sc.env is not None else -1
        other = int(rng.choice([c for c in range(len(CLASSES)) if c != own]))
        adverbs = dict(sc.env.adverbs) if sc.env is not None else {k: "normal" for k in ADVERB_VALUES}
        caption = self._env_caption(EnvSource(other, [], adverbs, False, 0), offscreen=False)
        d = sc.duration
        length = float(rng.uniform(0.25, 0.5)) * d
        start = float(rng.uniform(0.1 * d, 0.9 * d - length))
        return {"contradicting_caption": caption, "contradicting_class": other,
                "edit_window": [round(start, 3), round(start + length, 3)]}

    def sample_id(self, index: int, split: str) -> str:
        return f"toyworld_{split}_s{self.seed}_{int(index):06d}"

    def sample(self, index: int, split: str = "train", **overrides: Any) -> Sample:
        """The full :class:`Sample` of ``index`` (see :meth:`scene` for ``overrides``)."""
        sc = self.scene(index, split, **overrides)
        tracks = self.tracks(sc)
        mix = limit(sum(tracks.values()))
        video_semantic = video_sync = target_video = None
        if sc.has_video:
            video_semantic = self.render(sc, self.semantic_fps, self.semantic_size, tracks)
            video_sync = self.render(sc, self.sync_fps, self.sync_size, tracks)
            if self.video_fps is not None:
                target_video = self.render(sc, self.video_fps, self.video_size, tracks)
        ref = self._reference(sc, split, index)
        return Sample(
            id=self.sample_id(index, split),
            sample_rate=self.sample_rate,
            audio=torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32)),
            video_semantic=video_semantic,
            video_sync=video_sync,
            reference_audio=None if ref is None else torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32)),
            target_video=target_video,
            reference_image=target_video[0].clone() if target_video is not None and self.reference_image else None,
            video_fps=self.video_fps if target_video is not None else None,
            task=sc.scenario,
            seconds_start=0.0,
            seconds_total=sc.duration,
            meta={**self.meta(sc), **self.task_inputs(sc, split, index)},
            **sc.captions,
        )


# --------------------------------------------------------------------------------------------
# Dataset and LightningDataModule
# --------------------------------------------------------------------------------------------


class ToyWorldDataset(Dataset):
    """``size`` ToyWorld samples of one split, generated on access, then passed through ``transform``
    (e.g. :class:`avgen.data.augmentation.AdverbAugmentation`) when one is given."""

    def __init__(
        self, world: ToyWorld, size: int, split: str, transform: Callable[[Sample], Sample] | None = None
    ) -> None:
        self.world, self.size, self.split, self.transform = world, int(size), split, transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a ToyWorld {self.split} split of {self.size}")
        sample = self.world.sample(index, self.split)
        return sample if self.transform is None else self.transform(sample)


class ToyWorldDataModule(L.LightningDataModule):
    """ToyWorld as a LightningDataModule yielding :class:`~avgen.data.batch.AVBatch`.

    Train shuffles in an order that is a pure function of (seed, epoch) and resumes mid-epoch
    (:mod:`avgen.data.sampling`); val/test/predict are deterministic and in order.

    ``transform``: a ``Sample -> Sample`` callable (e.g. ``avgen.data.AdverbAugmentation``) applied
    to the splits in ``transform_splits`` (default: train only). ``predict_duration``: clip length of
    the predict split when it differs from ``duration`` (Foley extension beyond the training window;
    set by ``avgen generate --total_duration``). ``always_reference``, ``reference_seconds``: see
    :class:`ToyWorld` (the reference clip must be shorter than the model's window for FE / AC-VTA).
    ``video_fps``, ``video_size``, ``reference_image``: the target video stream (Harmony) and its
    first frame as reference image; no target video when ``video_fps`` is None. ``min_duration``:
    variable-length clips, each a seeded length in [min_duration, duration] (AudioGen-Omni §3.3).
    """

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        train_size: int = 256,
        val_size: int = 16,
        test_size: int = 16,
        predict_size: int = 4,
        duration: float = 2.0,
        sample_rate: int = 16000,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        semantic_size: int = 64,
        sync_size: int = 64,
        scenarios: list[str] | None = None,
        speech: str = "auto",
        always_reference: bool = False,
        reference_seconds: float = 1.0,
        transform: Optional[Callable[[Sample], Sample]] = None,
        transform_splits: list[str] = ["train"],  # noqa: B006 (jsonargparse needs the literal default)
        predict_duration: Optional[float] = None,
        video_fps: Optional[float] = None,
        video_size: int = 32,
        reference_image: bool = True,
        min_duration: Optional[float] = None,
    ) -> None:
        super().__init__()
        unknown = set(transform_splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"transform_splits {sorted(unknown)} are not splits; choose from {tuple(SPLITS)}")
        self.save_hyperparameters(ignore=["transform"])
        self.transform, self.transform_splits = transform, tuple(transform_splits)
        self._predict_duration = predict_duration
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "predict": predict_size}
        self.world = ToyWorld(duration, sample_rate, semantic_fps, sync_fps, semantic_size, sync_size,
                              scenarios, speech, seed, always_reference, reference_seconds,
                              video_fps=video_fps, video_size=video_size, reference_image=reference_image,
                              min_duration=min_duration)
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self.video_fps = self.world.video_fps
        self.video_size = self.world.video_size

    @property
    def media(self) -> MediaSpec:
        return self.world.media

    @property
    def predict_duration(self) -> float | None:
        return self._predict_duration

    @predict_duration.setter
    def predict_duration(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0.5:
            raise ValueError(f"predict_duration must be >= 0.5 s (ToyWorld places events), got {seconds}")
        self._predict_duration = None if seconds is None else float(seconds)

    def world_for(self, split: str) -> ToyWorld:
        """The world of a split: the predict split may render longer clips (``predict_duration``)."""
        if split != "predict" or self._predict_duration in (None, self.world.duration):
            return self.world
        return self.world._replace(duration=self._predict_duration)

    def dataset(self, split: str) -> ToyWorldDataset:
        transform = self.transform if split in self.transform_splits else None
        return ToyWorldDataset(self.world_for(split), self.sizes[split], split, transform)

    def _loader(self, split: str) -> DataLoader:
        options = dict(num_workers=self.num_workers, collate_fn=collate, persistent_workers=self.num_workers > 0)
        if split == "train":  # shuffled by (seed, epoch), resumable mid-epoch (avgen.data.sampling)
            return train_loader(self, self.dataset(split), batch_size=self.batch_size, seed=self.seed, **options)
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=False, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
