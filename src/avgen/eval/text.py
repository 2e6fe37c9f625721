"""Word and character error rates with a documented text normaliser (speech metrics: WER / CER).

:func:`normalize_text`: Unicode NFKC, lower case, every character that is not a letter, a digit,
an apostrophe inside a word or white space becomes a space, white space collapses. This is a
subset of Whisper's ``BasicTextNormalizer`` (no number spelling or British/American mapping, which
Whisper's English normaliser adds); both the reference and the hypothesis go through it.
``normalizer="english"`` uses :func:`avgen.eval.english.english_normalize` instead (Whisper's
English normaliser rules: contractions, fillers, spelled-out numbers; what ``avgen compare`` uses).
WER = sum of word-level Levenshtein distances / sum of reference words (corpus level, as jiwer and
F5-TTS's evaluation report it); CER the same on characters of the normalised text (spaces kept).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["normalize_text", "edit_distance", "ErrorRate", "WordErrorRate", "CharErrorRate"]


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c if (c.isalnum() or c == "'" or c.isspace()) else " " for c in text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two token sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_token in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token))
        previous = current
    return previous[-1]


class ErrorRate(Metric):
    """Corpus-level error rate: sum of edit distances / sum of reference lengths. ``update(hyps, refs)``."""

    higher_is_better = False
    full_state_update = False
    unit = "word"

    def __init__(self, normalizer: str = "basic", **kwargs) -> None:
        super().__init__(**kwargs)
        if normalizer not in ("basic", "english"):
            raise ValueError(f"normalizer must be 'basic' or 'english', got {normalizer!r}")
        self.normalizer = normalizer
        self.add_state("errors", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def tokens(self, text: str) -> list[str]:
        if self.normalizer == "english":
            from avgen.eval.english import english_normalize

            normalised = english_normalize(text)
        else:
            normalised = normalize_text(text)
        return normalised.split() if self.unit == "word" else list(normalised)

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
        for hyp, ref in zip(hypotheses, references):
            ref_tokens = self.tokens(ref)
            self.errors += edit_distance(ref_tokens, self.tokens(hyp))
            self.total += len(ref_tokens)

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            raise ValueError(f"{type(self).__name__}: the references hold no {self.unit}s")
        return self.errors.double() / self.total.double()


class WordErrorRate(ErrorRate):
    unit = "word"


class CharErrorRate(ErrorRate):
    unit = "char"
