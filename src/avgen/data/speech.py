"""Speech and singing for ToyWorld: the real offline eSpeak NG synthesizer, or a formant fallback.

eSpeak NG comes from the optional pip package ``espeakng-loader`` (GPL-3, extra ``avgen[speech]``),
driven through its C API with ctypes. eSpeak carries internal state from one utterance to the next
(its renderings of the same word differ by a few samples), so the whole vocabulary is rendered once
per process in a fixed order: the cache is then identical in every process and worker, which keeps
ToyWorld deterministic per (seed, index).

The formant fallback is a tiny source-filter synthesizer (glottal pulse train through two-pole
formant resonators, noise for fricatives, silence + burst for stops). It needs nothing beyond numpy
and scipy and is also what ToyWorld uses to *sing*: a sung note is a vowel held at a chosen pitch.
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, resample_poly

# Small vocabulary: short, acoustically distinct words.
VOCABULARY: tuple[str, ...] = (
    "red", "blue", "green", "ball", "bell", "drum", "one", "two",
    "three", "go", "stop", "yes", "no", "hello", "look", "up",
)


@dataclass(frozen=True)
class Voice:
    """A ToyWorld speaker. ``rate`` resamples eSpeak output (pitch and tempo); ``f0`` drives the formant synth."""

    name: str
    f0: float
    rate: float


VOICES: tuple[Voice, ...] = (Voice("low", 105.0, 0.86), Voice("mid", 150.0, 1.0), Voice("high", 225.0, 1.2))

SPEECH_BACKENDS = ("auto", "espeak", "formant")


def espeak_available() -> bool:
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(speech: str) -> str:
    """Map ``"auto"`` to ``"espeak"`` when the package is importable, else ``"formant"``."""
    if speech not in SPEECH_BACKENDS:
        raise ValueError(f"speech={speech!r} is not one of {SPEECH_BACKENDS}")
    if speech == "auto":
        return "espeak" if espeak_available() else "formant"
    if speech == "espeak" and not espeak_available():
        raise ImportError(
            "speech='espeak' needs the optional package espeakng-loader: pip install 'avgen[speech]' "
            "(or use speech='formant')"
        )
    return speech


# --------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------------

_ESPEAK_LOCK = threading.Lock()
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _trim_silence(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * max(float(np.abs(x).max()), 1e-9))
    if loud.size == 0:
        return x[:0]
    return x[loud[0] : loud[-1] + 1]


@functools.lru_cache(maxsize=1)
def _espeak_vocabulary() -> tuple[int, dict[str, np.ndarray]]:
    """Render the whole vocabulary once, in a fixed order (see module docstring). Returns (rate, words)."""
    import espeakng_loader

    with _ESPEAK_LOCK:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2 = synchronous
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed; reinstall espeakng-loader or use speech='formant'")
        chunks: list[np.ndarray] = []

        def on_audio(wav, n, _events):  # eSpeak hands int16 chunks to this callback
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        callback = _SYNTH_CALLBACK(on_audio)  # keep a reference while eSpeak may call it
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(b"en") != 0:
            raise RuntimeError("eSpeak NG has no 'en' voice; reinstall espeakng-loader or use speech='formant'")
        words: dict[str, np.ndarray] = {}
        for word in VOCABULARY:
            chunks.clear()
            text = word.encode()
            lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, 0, None, None)
            lib.espeak_Synchronize()
            audio = np.concatenate(chunks).astype(np.float32) / 32768.0
            words[word] = _trim_silence(audio)
    return rate, words


@functools.lru_cache(maxsize=64)
def _espeak_word(word: str, sample_rate: int, rate_factor: float) -> np.ndarray:
    native_rate, words = _espeak_vocabulary()
    audio = words[word]
    # Resampling by rate_factor shifts pitch and tempo together: a cheap, deterministic "other speaker".
    target = sample_rate / rate_factor
    g = math.gcd(int(round(target)), native_rate)
    out = resample_poly(audio, int(round(target)) // g, native_rate // g).astype(np.float32)
    return out / max(float(np.abs(out).max()), 1e-9)


# --------------------------------------------------------------------------------------------
# Formant synthesizer
# --------------------------------------------------------------------------------------------

# (F1, F2, F3) in Hz for the vowels of the vocabulary's spelling; a rough General-American table.
_VOWEL_FORMANTS = {
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (300, 2200, 2900), "o": (570, 840, 2410),
    "u": (320, 900, 2240), "y": (300, 2100, 2800),
}
_NASAL_LIQUID = set("mnlrw")
_FRICATIVE = set("sfhzvcxj")
_STOP = set("ptkbdgq")


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """Two-pole resonator (Klatt 1980) with unit gain at DC."""
    r = math.exp(-math.pi * bandwidth / sample_rate)
    c = -r * r
    b = 2 * r * math.cos(2 * math.pi * freq / sample_rate)
    a = 1 - b - c
    return lfilter([a], [1, -b, -c], x)


def _pulse_train(n: int, f0: float, sample_rate: int, phase: float = 0.0) -> tuple[np.ndarray, float]:
    """Glottal-like source: a sawtooth (rich in harmonics) whose phase continues across segments."""
    ph = phase + np.arange(1, n + 1) * f0 / sample_rate
    return (2 * (ph % 1.0) - 1).astype(np.float64), float(ph[-1] % 1.0) if n else phase


def formant_word(word: str, sample_rate: int, f0: float, vowel_seconds: float = 0.11, seed: int = 0) -> np.ndarray:
    """Synthesize one word letter by letter. Deterministic for a given ``seed``; peak-normalised."""
    rng = np.random.default_rng(seed)
    segments: list[np.ndarray] = []
    phase = 0.0
    letters = [c for c in word.lower() if c.isalpha()]
    for i, ch in enumerate(letters):
        pitch = f0 * (1.0 - 0.12 * i / max(len(letters), 1))  # declination across the word
        if ch in _VOWEL_FORMANTS:
            n = int(vowel_seconds * sample_rate)
            src, phase = _pulse_train(n, pitch, sample_rate, phase)
            f1, f2, f3 = _VOWEL_FORMANTS[ch]
            y = _resonator(src, f1, 90, sample_rate) + 0.6 * _resonator(src, f2, 110, sample_rate)
            y = y + 0.2 * _resonator(src, min(f3, 0.45 * sample_rate), 150, sample_rate)
            segments.append(y)
        elif ch in _NASAL_LIQUID:
            n = int(0.06 * sample_rate)
            src, phase = _pulse_train(n, pitch, sample_rate, phase)
            segments.append(0.5 * _resonator(src, 280, 80, sample_rate) + 0.15 * _resonator(src, 1200, 150, sample_rate))
        elif ch in _FRICATIVE:
            n = int(0.07 * sample_rate)
            noise = rng.standard_normal(n)
            hiss = np.diff(noise, prepend=0.0)  # first difference tilts the noise towards high frequencies
            segments.append(0.25 * hiss)
        else:  # stops and anything else: a short closure then a burst
            closure = np.zeros(int(0.03 * sample_rate))
            burst = 0.4 * rng.standard_normal(int(0.012 * sample_rate)) * np.linspace(1, 0, int(0.012 * sample_rate))
            segments.append(np.concatenate([closure, burst]))
    if not segments:
        return np.zeros(0, np.float32)
    y = np.concatenate(segments)
    fade = min(int(0.005 * sample_rate), y.size // 2)
    if fade:
        ramp = np.linspace(0, 1, fade)
        y[:fade] *= ramp
        y[-fade:] *= ramp[::-1]
    return (y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32)


def sung_word(word: str, sample_rate: int, f0: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A word sung on one note: its consonants as spoken, its vowels stretched to fill ``seconds``."""
    vowels = sum(c in _VOWEL_FORMANTS for c in word.lower()) or 1
    consonant_seconds = 0.07 * sum(c not in _VOWEL_FORMANTS for c in word.lower())
    vowel_seconds = max(seconds - consonant_seconds, 0.05 * vowels) / vowels
    return formant_word(word, sample_rate, f0, vowel_seconds=vowel_seconds, seed=seed)


# --------------------------------------------------------------------------------------------
# Front end used by ToyWorld
# --------------------------------------------------------------------------------------------


def speak_word(word: str, sample_rate: int, voice: Voice, backend: str, seed: int = 0) -> np.ndarray:
    """One spoken word at ``sample_rate``, peak 1, leading/trailing silence trimmed."""
    if word not in VOCABULARY:
        raise ValueError(f"word {word!r} is not in the ToyWorld vocabulary {VOCABULARY}")
    if backend == "espeak":
        return _espeak_word(word, int(sample_rate), float(voice.rate))
    if backend == "formant":
        return formant_word(word, int(sample_rate), voice.f0, seed=seed)
    raise ValueError(f"unknown speech backend {backend!r}; use one of {SPEECH_BACKENDS}")
