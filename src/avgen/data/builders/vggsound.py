"""VGGSound (Chen et al., ICASSP 2020) and OmniSonic's UniHAGen environment pool built from it.

Published layout, checked against the dataset's own README (github hche11/VGGSound: "For each YouTube
video, we provide YouTube URLs, time stamps, audio labels and train/test split. Each line in the csv
file has columns ``# YouTube ID, start seconds, label, train/test split``": a headerless CSV, read
with the csv module so labels holding a comma, such as ``"male speech, man speaking"``, stay one
field) and against how projects that read the distributed 10-s clips name them
(``<ytid>_<start:06d>``, e.g. ``---g-f_I2yQ_000001.wav`` in public VGGSound loaders). The clips may sit anywhere under the root (``video/``, split
folders, tar shards unpacked in place): they are found by that stem. A ``<stem>.wav``/``.flac``
anywhere under the root is used as the clip's audio; otherwise the mp4's audio track is extracted.

Text: the class label is the caption ("Text for VGGSound is the class label", MMAudio, see
reference/mmaudio_av_benchmark.md); it is also kept as ``meta["label"]`` (UniHAGen's category filter
reads it). Splits: ``train`` and ``test`` (the csv's; MMAudio's 2,048-clip validation subset is not
in it: pass ``--val_ids FILE`` with one id per line to move those train clips to ``val``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterator

from avgen.data.builders.core import AUDIO_SUFFIXES, Builder, Entry, index_files, read_text


def vggsound_stem(youtube_id: str, start: int) -> str:
    """The distributed clip name: ``<ytid>_<start seconds, 6 digits>``."""
    return f"{youtube_id}_{int(start):06d}"


class VGGSoundBuilder(Builder):
    name = "vggsound"
    description = "VGGSound: 10-s YouTube clips with one of 309 class labels (the label is the caption)"
    layout = "vggsound.csv (headerless: ytid,start,label,split) + <ytid>_<start:06d>.mp4 anywhere below the root"
    splits = ("train", "test")
    requires = ("caption",)

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--csv", default=None, help="the metadata csv (default: <root>/vggsound.csv)")
        parser.add_argument("--val_ids", default=None, help="a file of clip ids (<ytid>_<start:06d>, one a line) "
                            "moved from train to avgen's val split (e.g. MMAudio's validation subset)")

    def entries(self) -> Iterator[Entry]:
        csv_path = Path(self.options["csv"]) if self.options.get("csv") else self.metadata_file("vggsound.csv")
        val_ids: set[str] = set()
        if self.options.get("val_ids"):
            val_ids = {line.strip() for line in read_text(Path(self.options["val_ids"])).splitlines() if line.strip()}
        videos = index_files(self.root, (".mp4",))
        audios = index_files(self.root, AUDIO_SUFFIXES)
        for n, fields in enumerate(csv.reader(io.StringIO(read_text(csv_path))), start=1):
            source = f"{csv_path.name} line {n}"
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 4 or not fields[1].strip().isdigit():
                yield Entry(f"{csv_path.name}:{n}", None, problem=("bad_metadata", str(csv_path), f"expected "
                            f"'ytid,start,label,split', got {fields!r}"), source=source)
                continue
            ytid, start, label, split = (x.strip() for x in fields)
            if split not in self.selected_splits:
                continue
            stem = vggsound_stem(ytid, int(start))
            video = videos.get(stem, self.root / "video" / f"{stem}.mp4")
            audio = audios.get(stem)
            avgen_split = "val" if stem in val_ids else split
            yield Entry(stem, audio, video, audio_in_video=audio is None, split=avgen_split, corpus_split=split,
                        captions=[label] if label else [], meta={"label": label, "youtube_id": ytid}, source=source)


class UniHAGenEnvironmentBuilder(VGGSoundBuilder):
    """OmniSonic §4.1's environment pool: VGGSound without speech.

    "For VGGSound, we exclude all speech-related categories and remove samples whose captions contain
    speech-related keywords": the same two filters as :class:`avgen.data.unihagen.UniHAGenMixer`
    (:data:`~avgen.data.unihagen.DEFAULT_SPEECH_CATEGORIES`, :data:`~avgen.data.unihagen.DEFAULT_SPEECH_KEYWORDS`),
    applied here once so the manifest holds only the pool; every excluded clip is in the report
    (kind ``excluded``) with the category or keyword that removed it. The mixer applies them again
    at construction (a no-op on this manifest).
    """

    name = "unihagen-environment"
    description = "OmniSonic's environment pool: VGGSound minus speech categories and speech-keyword captions (§4.1)"

    def entries(self) -> Iterator[Entry]:
        from avgen.data.unihagen import (
            DEFAULT_SPEECH_CATEGORIES, DEFAULT_SPEECH_KEYWORDS, speech_category_pattern, speech_keyword_pattern,
        )

        categories = speech_category_pattern(DEFAULT_SPEECH_CATEGORIES)
        keywords = speech_keyword_pattern(DEFAULT_SPEECH_KEYWORDS)
        for entry in super().entries():
            label = entry.meta.get("label", "")
            if entry.problem is None and label:
                hit = categories.search(label)
                why = f"speech-related category {hit.group(0)!r}" if hit else None
                if why is None and (hit := keywords.search(label)):
                    why = f"speech keyword {hit.group(0)!r} in the caption"
                if why is not None:
                    entry.problem = ("excluded", str(entry.video), why)
            yield entry
