"""Speech corpora: LRS3, LRS2, CommonVoice, LibriTTS, and OmniSonic's UniHAGen speech pool.

Layouts (as distributed):

* **LRS3-TED** (Afouras et al. 2018): ``{pretrain,trainval,test}/<folder>/<utt>.mp4`` with
  ``<utt>.txt`` = ``Text:  WORDS`` / ``Conf:  n`` / a ``WORD START END ASDSCORE`` table. The folder
  is the TED talk's YouTube id, one speaker per talk: it is the speaker id (``meta["speaker"]``).
  Word timings go to ``meta["words"]`` (UniHAGen keeps them through its mixing).
* **LRS2-BBC**: ``main/<folder>/<utt>.mp4|.txt`` and ``pretrain/<folder>/<utt>.mp4|.txt`` with the
  filelists ``pretrain.txt``, ``train.txt``, ``val.txt``, ``test.txt`` (lines ``<folder>/<utt>``, test
  lines may end with a flag such as ``NF``); also accepted under ``mvlrs_v1/``. The folder is a BBC
  programme, not a speaker: ``meta["programme"]``, no speaker id.
* **Common Voice** (Ardila et al. 2020): ``cv-corpus-<version>/<lang>/{train,dev,test,validated,other}.tsv``
  (tab-separated, header with ``client_id``, ``path``, ``sentence``, ...) and ``clips/<path>`` (mp3).
  ``client_id`` is the speaker id. ``--root`` may be the language folder, the ``cv-corpus-*`` folder
  (with ``--language``) or the folder above it.
* **LibriTTS** (Zen et al. 2019; LibriTTS-R has the same layout):
  ``<split>/<speaker>/<chapter>/<speaker>_<chapter>_<...>.wav`` with ``.normalized.txt`` (default) or
  ``.original.txt`` next to it.

The audio of LRS2/3 is the mp4's track, extracted once (see :mod:`avgen.data.builders.core`). Every
row needs a transcript; a missing or empty transcript file is a ``no_transcript`` skip naming it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterator

from avgen.data.builders.core import Builder, Entry, read_text


def read_lrs_text(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The ``Text:`` line of an LRS2/LRS3 transcript file and its word timings (when the file has them)."""
    text, words = None, []
    for line in read_text(path).splitlines():
        if line.startswith("Text:"):
            text = " ".join(line[len("Text:"):].split()) or None
            continue
        parts = line.split()
        if len(parts) >= 3 and parts[0] != "WORD":
            try:
                words.append({"word": parts[0], "start": float(parts[1]), "end": float(parts[2])})
            except ValueError:
                continue
    return text, words


def lrs_entry(eid: str, video: Path, split: str, corpus_split: str, source: str, **extra: Any) -> Entry:
    """An LRS2/LRS3 utterance: video with its audio track, transcript from the ``.txt`` next to it."""
    txt = video.with_suffix(".txt")
    entry = Entry(eid, None, video, audio_in_video=True, split=split, corpus_split=corpus_split, source=source, **extra)
    if not txt.is_file():
        entry.problem = ("no_transcript", str(txt), "transcript file does not exist")
        return entry
    entry.transcript, words = read_lrs_text(txt)
    if entry.transcript is None:
        entry.problem = ("no_transcript", str(txt), "no 'Text:' line (or an empty one) in the transcript file")
    if words:
        entry.meta["words"] = words
    return entry


class LRS3Builder(Builder):
    name = "lrs3"
    description = "LRS3-TED: talking-face TED clips with transcripts (speaker = talk)"
    layout = "{pretrain,trainval,test}/<talk id>/<utt>.mp4 + <utt>.txt ('Text:' line)"
    splits = ("pretrain", "trainval", "test")
    split_map = {"pretrain": "train", "trainval": "train", "test": "test"}
    requires = ("transcript",)
    has_speakers = True

    def entries(self) -> Iterator[Entry]:
        for split in self.selected_splits:
            folder = self.root / split
            if not folder.is_dir():
                if not self.explicit_splits:
                    self.missing_splits.append(split)
                    continue
                raise FileNotFoundError(f"lrs3: {folder} does not exist. Fix: pass --root at the folder holding "
                                        f"{'/'.join(self.splits)}, or choose the splits you have with --split")
            for speaker in sorted(p.name for p in folder.iterdir() if p.is_dir()):
                for video in sorted((folder / speaker).glob("*.mp4")):
                    yield lrs_entry(f"{split}/{speaker}/{video.stem}", video, self.avgen_split(split), split,
                                    f"{split}/{speaker}", speaker=speaker)


class LRS2Builder(Builder):
    name = "lrs2"
    description = "LRS2-BBC: talking-face BBC clips with transcripts, split by the published filelists"
    layout = "{pretrain,train,val,test}.txt filelists + main/<folder>/<utt>.mp4|.txt, pretrain/<folder>/<utt>.mp4|.txt"
    splits = ("pretrain", "train", "val", "test")
    split_map = {"pretrain": "train", "train": "train", "val": "val", "test": "test"}
    requires = ("transcript",)

    def entries(self) -> Iterator[Entry]:
        base = self.root / "mvlrs_v1" if (self.root / "mvlrs_v1").is_dir() and not (self.root / "main").is_dir() else self.root
        for split in self.selected_splits:
            filelist = base / f"{split}.txt"
            if not filelist.is_file() and not self.explicit_splits:
                self.missing_splits.append(split)
                continue
            if not filelist.is_file():
                raise FileNotFoundError(f"lrs2: filelist {filelist} does not exist. Fix: pass --root at the folder "
                                        f"holding main/, pretrain/ and the filelists (layout: {self.layout})")
            media = base / ("pretrain" if split == "pretrain" else "main")
            for n, line in enumerate(read_text(filelist).splitlines(), start=1):
                parts = line.split()
                if not parts:
                    continue
                utt = parts[0]
                programme = utt.split("/")[0]
                yield lrs_entry(f"{split}/{utt}", media / f"{utt}.mp4", self.avgen_split(split), split,
                                f"{filelist.name} line {n}", meta={"programme": programme})


class CommonVoiceBuilder(Builder):
    name = "commonvoice"
    description = "Mozilla Common Voice: read sentences (mp3) with client (speaker) ids"
    layout = "cv-corpus-*/<lang>/{train,dev,test,validated}.tsv (client_id, path, sentence) + clips/<path>"
    splits = ("train", "dev", "test", "validated", "other")
    default_splits = ("train", "dev", "test")
    split_map = {"train": "train", "dev": "val", "test": "test", "validated": "train", "other": "train"}
    requires = ("transcript",)
    has_speakers = True

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--language", default=None, help="the language folder (e.g. en) when --root holds several")

    def language_folder(self) -> Path:
        if any((self.root / f"{s}.tsv").is_file() for s in self.splits):
            return self.root
        language = self.options.get("language")
        candidates = [p for p in sorted(self.root.glob("*")) + sorted(self.root.glob("cv-corpus-*/*")) if p.is_dir()
                      and any((p / f"{s}.tsv").is_file() for s in self.splits)]
        if language:
            candidates = [p for p in candidates if p.name == language]
        if len(candidates) != 1:
            found = sorted({p.name for p in candidates})
            raise FileNotFoundError(f"commonvoice: {'no' if not candidates else 'several'} language folders with "
                                    f"train/dev/test tsvs below {self.root} (found {found}). Fix: pass --root at "
                                    "cv-corpus-<version>/<lang>, or --language")
        return candidates[0]

    def entries(self) -> Iterator[Entry]:
        folder = self.language_folder()
        for split in self.selected_splits:
            path = folder / f"{split}.tsv"
            if not path.is_file() and not self.explicit_splits:
                self.missing_splits.append(split)
                continue
            if not path.is_file():
                raise FileNotFoundError(f"commonvoice: {path} does not exist; choose the splits you have with --split")
            reader = csv.DictReader(io.StringIO(read_text(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
            for n, row in enumerate(reader, start=2):
                source = f"{path.name} line {n}"
                if not row.get("path"):
                    yield Entry(f"{split}:{n}", None, problem=("bad_metadata", str(path), "no 'path' column value"),
                                source=source)
                    continue
                clip = folder / "clips" / row["path"]
                meta = {k: row[k] for k in ("gender", "age", "accents", "locale") if row.get(k)}
                yield Entry(Path(row["path"]).stem, clip, split=self.avgen_split(split), corpus_split=split,
                            transcript=(row.get("sentence") or "").strip() or None, speaker=row.get("client_id") or None,
                            meta=meta, source=source)


LIBRITTS_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
                   "test-clean", "test-other")


class LibriTTSBuilder(Builder):
    name = "libritts"
    description = "LibriTTS (or LibriTTS-R): read audiobook speech at 24 kHz with speaker ids"
    layout = "<split>/<speaker>/<chapter>/<utt>.wav + <utt>.normalized.txt"
    splits = LIBRITTS_SPLITS
    split_map = {s: s.split("-")[0].replace("dev", "val") for s in LIBRITTS_SPLITS}
    requires = ("transcript",)
    has_speakers = True

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--transcript", choices=["normalized", "original"], default="normalized",
                            help="which transcript file to read (default normalized)")

    def entries(self) -> Iterator[Entry]:
        kind = self.options.get("transcript") or "normalized"
        base = self.root / "LibriTTS" if not any((self.root / s).is_dir() for s in self.splits) else self.root
        present = [s for s in self.selected_splits if (base / s).is_dir()]
        if self.explicit_splits and len(present) < len(self.selected_splits):
            raise FileNotFoundError(f"libritts: {[str(base / s) for s in self.selected_splits if s not in present]} "
                                    "not found. Fix: choose the splits you have with --split")
        self.missing_splits.extend(s for s in self.selected_splits if s not in present)
        if not present:
            raise FileNotFoundError(f"libritts: none of the splits {list(self.selected_splits)} is a folder of "
                                    f"{base}. Fix: pass --root at the folder holding them (layout: {self.layout})")
        for split in present:
            for dirpath, dirnames, filenames in os.walk(base / split):
                dirnames.sort()
                for name in sorted(f for f in filenames if f.endswith(".wav")):
                    wav = Path(dirpath) / name
                    speaker = wav.relative_to(base / split).parts[0]
                    entry = Entry(wav.stem, wav, split=self.avgen_split(split), corpus_split=split, speaker=speaker,
                                  meta={"chapter": wav.parent.name}, source=f"{split}/{speaker}")
                    txt = wav.with_name(f"{wav.stem}.{kind}.txt")
                    if not txt.is_file():
                        entry.problem = ("no_transcript", str(txt), "transcript file does not exist")
                    else:
                        entry.transcript = " ".join(read_text(txt).split()) or None
                        if entry.transcript is None:
                            entry.problem = ("no_transcript", str(txt), "the transcript file is empty")
                    yield entry


class UniHAGenSpeechBuilder(Builder):
    """OmniSonic §4.1's speech pool: LRS3 (talking faces, on-screen speech) + Common Voice (audio only).

    The paper's counts fix the defaults: "approximately ... 33K, and 1.67M samples for ... LRS3, and
    Common Voice": LRS3 ``trainval`` (31,982 utterances) + ``test`` (1,321; UniHAGen-Bench's speech
    comes from it, kept as the ``test`` split) is 33K, and the English ``validated.tsv`` of recent
    Common Voice releases holds about 1.67M clips (``--commonvoice_split`` to change). Ids and speakers
    are prefixed ``lrs3/`` and ``commonvoice/``; ``meta["pool_source"]`` names the corpus.
    """

    name = "unihagen-speech"
    description = "OmniSonic's speech pool: LRS3 (video) + Common Voice (audio), transcripts required (§4.1)"
    layout = "--root: LRS3 (see lrs3); --commonvoice_root: Common Voice (see commonvoice)"
    splits = LRS3Builder.splits
    default_splits = ("trainval", "test")
    requires = ("transcript",)
    has_speakers = True

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--commonvoice_root", default=None, help="Common Voice language folder (or above, with "
                            "--language); without it the pool is LRS3 only")
        parser.add_argument("--commonvoice_split", nargs="+", default=["validated"],
                            help="Common Voice tsvs to read (default validated)")
        parser.add_argument("--language", default=None, help="Common Voice language folder when several")

    def entries(self) -> Iterator[Entry]:
        parts: list[tuple[str, Builder]] = [("lrs3", LRS3Builder(self.root, self.selected_splits))]
        if self.options.get("commonvoice_root"):
            parts.append(("commonvoice", CommonVoiceBuilder(self.options["commonvoice_root"],
                                                            self.options.get("commonvoice_split") or ["validated"],
                                                            language=self.options.get("language"))))
        for prefix, builder in parts:
            for entry in builder.entries():
                entry.id = f"{prefix}/{entry.id}"
                entry.speaker = None if entry.speaker is None else f"{prefix}/{entry.speaker}"
                entry.meta["pool_source"] = prefix
                entry.source = f"{prefix}: {entry.source}"
                yield entry
