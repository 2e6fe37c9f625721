"""Manifest builders for the papers' corpora (issue 14): a local copy in its published layout -> an avgen manifest.

``avgen build-manifest <corpus> --root <local copy> --output <manifest.jsonl>`` (``avgen build-manifest
--help`` lists the corpora) or, in Python::

    from avgen.data.builders import build, get_builder
    report = build(get_builder("clotho")("~/data/clotho"), "clotho.jsonl", workers=8)

One module per corpus family (:mod:`.vggsound`, :mod:`.captions`, :mod:`.speech`, :mod:`.greatest_hits`);
the validation, rows, manifest and report they share are in :mod:`.core`.
"""

from __future__ import annotations

from avgen.data.builders.captions import AudioCapsBuilder, ClothoBuilder, WavCapsBuilder
from avgen.data.builders.core import SKIP_KINDS, Builder, Entry, Limits, build, format_summary, validate_entry
from avgen.data.builders.greatest_hits import GreatestHitsBuilder
from avgen.data.builders.speech import (
    CommonVoiceBuilder, LibriTTSBuilder, LRS2Builder, LRS3Builder, UniHAGenSpeechBuilder,
)
from avgen.data.builders.vggsound import UniHAGenEnvironmentBuilder, VGGSoundBuilder

BUILDERS: dict[str, type[Builder]] = {
    b.name: b
    for b in (
        VGGSoundBuilder, AudioCapsBuilder, ClothoBuilder, WavCapsBuilder, LRS3Builder, LRS2Builder,
        CommonVoiceBuilder, LibriTTSBuilder, GreatestHitsBuilder, UniHAGenEnvironmentBuilder, UniHAGenSpeechBuilder,
    )
}


def get_builder(name: str) -> type[Builder]:
    """The builder class of a corpus name (see :data:`BUILDERS`)."""
    try:
        return BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(BUILDERS)}") from None


__all__ = ["BUILDERS", "SKIP_KINDS", "Builder", "Entry", "Limits", "build", "format_summary", "get_builder",
           "validate_entry"]
