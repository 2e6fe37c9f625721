"""Whisper's English text normaliser, written from its documented rules (Radford et al. 2022, "Robust
Speech Recognition via Large-Scale Weak Supervision", Appendix C; ``EnglishTextNormalizer``), so that
WER/CER of Whisper transcripts count words, not spelling conventions. Applied in this order:

1. lower case; text in brackets ``[...]`` or parentheses ``(...)`` is removed; the filler words
   hmm, mm, mhm, mmm, uh, um are removed; white space before an apostrophe is removed;
2. contractions and abbreviations are expanded (won't -> will not, can't -> can not, 're -> are,
   'll -> will, n't -> not, gonna -> going to, mr -> mister, dr -> doctor, ...);
3. commas between digits and periods not followed by a digit are removed;
4. diacritics are removed (NFKD, combining marks dropped) and every other symbol or punctuation mark
   becomes a space, except ``. % $ £ € ¢`` (used by numbers);
5. spelled-out numbers become digits (``twenty one`` -> ``21``, ``two point five`` -> ``2.5``,
   ``three hundred and four`` -> ``304``, ``twenty first`` -> ``21st``, ``ten percent`` -> ``10%``,
   ``five dollars`` -> ``$5``, ``twenty cents`` -> ``20¢``);
6. British spellings become American ones through ``spellings`` (Whisper ships a ~1,700-entry table;
   avgen ships none - pass a mapping to add it);
7. the remaining currency signs / periods that are not part of a number and ``%`` after a non-digit
   become spaces; white space collapses.

Differences to Whisper's implementation (documented, not hidden): the number rule handles cardinals
up to the trillions, decimals, ordinals, percent and dollars/pounds/euros/cents, but not Whisper's
special cases for years read in pairs ("nineteen ninety" -> "1990") or "double"/"triple" digits.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["english_normalize"]

FILLERS = r"\b(hmm|mm|mhm|mmm|uh|um)\b"

CONTRACTIONS: list[tuple[str, str]] = [
    # common contractions
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"), (r"\bain't\b", "aint"),
    (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"), (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"),
    (r"\bi'ma\b", "i am going to"), (r"\bimma\b", "i am going to"), (r"\bwoulda\b", "would have"),
    (r"\bcoulda\b", "could have"), (r"\bshoulda\b", "should have"), (r"\bma'am\b", "madam"),
    # titles before a name
    (r"\bmr\b", "mister "), (r"\bmrs\b", "missus "), (r"\bst\b", "saint "), (r"\bdr\b", "doctor "),
    (r"\bprof\b", "professor "), (r"\bcapt\b", "captain "), (r"\bgov\b", "governor "), (r"\bald\b", "alderman "),
    (r"\bgen\b", "general "), (r"\bsen\b", "senator "), (r"\brep\b", "representative "), (r"\bpres\b", "president "),
    (r"\brev\b", "reverend "), (r"\bhon\b", "honorable "), (r"\basst\b", "assistant "), (r"\bassoc\b", "associate "),
    (r"\blt\b", "lieutenant "), (r"\bcol\b", "colonel "), (r"\bjr\b", "junior "), (r"\bsr\b", "senior "),
    (r"\besq\b", "esquire "),
    # perfect tenses
    (r"'d been\b", " had been"), (r"'s been\b", " has been"), (r"'d gone\b", " had gone"), (r"'s gone\b", " has gone"),
    (r"'d done\b", " had done"), (r"'s got\b", " has got"),
    # general endings
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'d\b", " would"), (r"'ll\b", " will"), (r"'t\b", " not"),
    (r"'ve\b", " have"), (r"'m\b", " am"),
]

_ONES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_MULTIPLIERS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fifth": 5, "eighth": 8, "ninth": 9, "twelfth": 12}
_ORDINALS.update({w + "th": v for w, v in {**_ONES, **_MULTIPLIERS}.items() if w not in
                  ("zero", "one", "two", "three", "five", "eight", "nine", "twelve")})
_ORDINALS.update({w[:-1] + "ieth": v for w, v in _TENS.items()})
_CURRENCY = {"dollar": "$", "dollars": "$", "pound": "£", "pounds": "£", "euro": "€", "euros": "€", "cent": "¢", "cents": "¢"}
_NUMBER_WORDS = set(_ONES) | set(_TENS) | set(_MULTIPLIERS) | set(_ORDINALS)


def _ordinal_suffix(value: int) -> str:
    if value % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")


def _read_number(words: list[str], start: int) -> tuple[str, int] | None:
    """The number spelled from ``words[start]`` on: (its digits with suffix, words consumed), or None.

    A word that cannot continue the number (``one two``, ``twenty thirty``) ends it, so a list of
    digits stays a list of numbers."""
    total, current, last, i, ordinal = 0, 0, "none", start, False
    while i < len(words):
        word = words[i]
        base = word
        if word in _ORDINALS:
            value, ordinal = _ORDINALS[word], True
            base = next((w for w, v in {**_ONES, **_TENS, **_MULTIPLIERS}.items() if v == value), word)
        if base in _ONES or base in _TENS:
            value = _ONES.get(base, _TENS.get(base))
            is_ten = base in _TENS
            allowed = last in ("none", "hundred", "big") or (last == "ten" and not is_ten and value < 10)
            if not allowed:
                break
            current += value
            last = "ten" if is_ten else "one"
        elif base == "hundred":
            if last not in ("none", "one") or current >= 100:
                break
            current, last = (current or 1) * 100, "hundred"
        elif base in _MULTIPLIERS:
            if last == "big" and current == 0:
                break
            total, current, last = total + (current or 1) * _MULTIPLIERS[base], 0, "big"
        elif word == "and" and last in ("hundred", "big") and i + 1 < len(words) and (
                words[i + 1] in _ONES or words[i + 1] in _TENS):
            i += 1
            continue
        else:
            break
        i += 1
        if ordinal:
            break
    if last == "none":
        return None
    value = total + current
    text = str(value)
    if ordinal:
        return text + _ordinal_suffix(value), i - start
    if i + 1 < len(words) and words[i] == "point" and words[i + 1] in _ONES and _ONES[words[i + 1]] < 10:
        digits = []
        i += 1
        while i < len(words) and words[i] in _ONES and _ONES[words[i]] < 10:
            digits.append(str(_ONES[words[i]]))
            i += 1
        text += "." + "".join(digits)
    if i < len(words) and words[i] == "percent":
        return text + "%", i + 1 - start
    if i + 1 < len(words) and words[i] == "per" and words[i + 1] == "cent":
        return text + "%", i + 2 - start
    if i < len(words) and words[i] in _CURRENCY:  # "$5", but "20¢"
        sign = _CURRENCY[words[i]]
        return (text + sign if sign == "¢" else sign + text), i + 1 - start
    return text, i - start


def _numbers(text: str) -> str:
    words, out, i = text.split(), [], 0
    while i < len(words):
        read = _read_number(words, i) if words[i] in _NUMBER_WORDS else None
        if read is None:
            out.append(words[i])
            i += 1
        else:
            out.append(read[0])
            i += read[1]
    return " ".join(out)


def _remove_symbols_and_diacritics(text: str, keep: str = ".%$¢€£") -> str:
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if char in keep:
            out.append(char)
        elif unicodedata.category(char) == "Mn":  # combining mark: the diacritic of the previous letter
            continue
        elif unicodedata.category(char)[0] in "MSP":  # marks, symbols, punctuation
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def english_normalize(text: str, spellings: dict[str, str] | None = None) -> str:
    """Whisper-style English normalisation of a transcript (the module docstring lists the rules)."""
    text = text.lower()
    text = re.sub(r"[<\[][^>\]]*[>\]]", "", text)  # bracketed annotations
    text = re.sub(r"\(([^)]+?)\)", "", text)
    text = re.sub(FILLERS, "", text)
    text = re.sub(r"\s+'", "'", text)
    for pattern, replacement in CONTRACTIONS:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"\.([^0-9]|$)", r" \1", text)
    text = _remove_symbols_and_diacritics(text)
    text = _numbers(text)
    if spellings:
        text = " ".join(spellings.get(word, word) for word in text.split())
    text = re.sub(r"[.$¢€£]([^0-9])", r" \1", text)
    text = re.sub(r"[.$¢€£]$", " ", text)
    text = re.sub(r"([^0-9])%", r"\1 ", text)
    return " ".join(text.split())
