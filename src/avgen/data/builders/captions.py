"""Audio-caption corpora: AudioCaps, Clotho and WavCaps (AudioGen-Omni §4 and Harmony Supp. §2 train on all three).

Layouts (the corpora's published metadata files):

* **AudioCaps** (Kim et al. 2019; github cdjkim/audiocaps ``dataset/``): ``train.csv``, ``val.csv``,
  ``test.csv`` with the header ``audiocap_id,youtube_id,start_time,caption``; val/test list five
  captions per clip (five audiocap ids), train one. Audio is not distributed: each clip is looked up
  below the root by stem, trying ``<audiocap_id>``, ``<youtube_id>_<start_time>``,
  ``<youtube_id>_<start_time:06d>``, ``Y<youtube_id>`` and ``<youtube_id>`` (or ``--audio_stem``).
* **Clotho** v2 (Drossos et al. 2020): ``clotho_captions_{development,validation,evaluation}.csv`` with
  ``file_name,caption_1,...,caption_5`` and the audio in ``development/``, ``validation/``,
  ``evaluation/`` (the 7z archives' folders; ``clotho_audio_<split>/`` also accepted).
* **WavCaps** (Mei et al. 2024; the cvssp/WavCaps release): ``json_files/<Source>/<x>_final.json`` =
  ``{"num_captions_per_audio": 1, "data": [{"id", "caption", "duration", ...}]}`` for ``AudioSet_SL``
  (``as_final.json``, ids like ``Y<ytid>.wav``), ``BBC_Sound_Effects`` (``bbc_final.json``, + ``description``,
  ``category``), ``FreeSound`` (``fsd_final.json``, + ``file_name``, ``tags``, ``author``, ``href``) and
  ``SoundBible`` (``sb_final.json``, + ``title``, ``author``); the unzipped flacs are ``<id stem>.flac``
  below ``Zip_files/<Source>/`` (or ``<Source>_flac/``, ``<Source>/``). ``--split`` picks sources; every
  WavCaps row is training data (``split: train``), the source is ``meta["source"]``.

Multiple captions (``--captions``): ``each`` writes one row per caption (ids ``<clip>#<k>``), as
MMAudio's training tsvs do (its Clotho tsv has 24,332 rows: dev + val clips x 5); ``first`` one row
per clip with the first caption; ``auto`` (default) ``each`` on train and ``first`` elsewhere. All
captions are in ``meta["captions"]`` either way.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from avgen.data.builders.core import AUDIO_SUFFIXES, Builder, Entry, index_files, read_text


class AudioCapsBuilder(Builder):
    name = "audiocaps"
    description = "AudioCaps: AudioSet clips with human captions (5 per clip in val/test)"
    layout = "{train,val,test}.csv (audiocap_id,youtube_id,start_time,caption; also under dataset/) + audio files below the root"
    splits = ("train", "val", "test")
    requires = ("caption",)

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--audio_stem", default=None, help="the audio file stem as a format of the csv's columns, "
                            "e.g. '{youtube_id}_{start_time}' (default: try the common download namings)")

    def _stems(self, row: dict[str, str]) -> list[str]:
        if self.options.get("audio_stem"):
            return [self.options["audio_stem"].format(**row)]
        ytid, start = row["youtube_id"], row["start_time"]
        stems = [row["audiocap_id"], f"{ytid}_{start}"]
        if start.isdigit():
            stems.append(f"{ytid}_{int(start):06d}")
        return stems + [f"Y{ytid}", ytid]

    def entries(self) -> Iterator[Entry]:
        audios = index_files(self.root, AUDIO_SUFFIXES)
        for split in self.selected_splits:
            path = self.split_metadata(split, f"{split}.csv", f"dataset/{split}.csv")
            if path is None:
                continue
            clips: dict[tuple[str, str], Entry] = {}
            for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path))), start=2):
                source = f"{path.name} line {n}"
                if not {"audiocap_id", "youtube_id", "start_time", "caption"} <= set(row):
                    raise ValueError(f"{path}: expected the columns audiocap_id,youtube_id,start_time,caption, got "
                                     f"{list(row)}. Fix: pass the AudioCaps csvs as published")
                key = (row["youtube_id"], row["start_time"])
                if key not in clips:
                    stems = self._stems(row)
                    audio = next((audios[s] for s in stems if s in audios), None)
                    clips[key] = Entry(f"{key[0]}_{key[1]}", audio, split=self.avgen_split(split), corpus_split=split,
                                       meta={"youtube_id": key[0], "audiocap_ids": []}, source=source)
                    if audio is None:
                        clips[key].problem = ("missing", str(self.root / f"{stems[0]}.wav"),
                                              f"no audio file named {' / '.join(stems)} (.wav/.flac/...) below the root")
                entry = clips[key]
                entry.meta["audiocap_ids"].append(row["audiocap_id"])
                if row["caption"].strip():
                    entry.captions.append(row["caption"].strip())
            yield from clips.values()


CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}


class ClothoBuilder(Builder):
    name = "clotho"
    description = "Clotho v2: Freesound clips of 15-30 s with five captions each"
    layout = "clotho_captions_<split>.csv (file_name,caption_1..caption_5) + <split>/<file_name>"
    splits = tuple(CLOTHO_SPLITS)
    split_map = CLOTHO_SPLITS
    requires = ("caption",)

    def entries(self) -> Iterator[Entry]:
        for split in self.selected_splits:
            path = self.split_metadata(split, f"clotho_captions_{split}.csv")
            if path is None:
                continue
            folders = [self.root / split, self.root / f"clotho_audio_{split}"]
            folder = next((f for f in folders if f.is_dir()), folders[0])
            for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path))), start=2):
                name = row.get("file_name")
                if not name:
                    raise ValueError(f"{path}: no 'file_name' column (got {list(row)}). Fix: pass the Clotho csvs as "
                                     "published")
                captions = [row[k].strip() for k in sorted(row) if k and k.startswith("caption_") and (row[k] or "").strip()]
                yield Entry(f"{split}/{Path(name).stem}", folder / name, split=self.avgen_split(split), corpus_split=split,
                            captions=captions, meta={"file_name": name}, source=f"{path.name} line {n}")


WAVCAPS_SOURCES = {
    "AudioSet_SL": ("as_final.json", ()),
    "BBC_Sound_Effects": ("bbc_final.json", ("description", "category")),
    "FreeSound": ("fsd_final.json", ("file_name", "tags", "author", "href")),
    "SoundBible": ("sb_final.json", ("title", "author")),
}


class WavCapsBuilder(Builder):
    name = "wavcaps"
    description = "WavCaps: ChatGPT-rewritten captions of AudioSet-SL, BBC Sound Effects, FreeSound, SoundBible"
    layout = "json_files/<Source>/<x>_final.json ({'data': [{id, caption, duration, ...}]}) + Zip_files/<Source>/<id>.flac"
    splits = tuple(WAVCAPS_SOURCES)
    split_map = {s: "train" for s in WAVCAPS_SOURCES}
    requires = ("caption",)

    def entries(self) -> Iterator[Entry]:
        for source in self.selected_splits:
            json_name, extra_fields = WAVCAPS_SOURCES[source]
            path = self.split_metadata(source, f"json_files/{source}/{json_name}", f"{source}/{json_name}", json_name)
            if path is None:
                continue
            try:
                items = json.loads(read_text(path))["data"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not a WavCaps metadata file ({e}); expected {{'data': [{{'id': ..., "
                                 "'caption': ...}}, ...]}}. Fix: pass the release's json_files unchanged") from None
            folders = [self.root / "Zip_files" / source, self.root / f"{source}_flac", self.root / source]
            folder = next((f for f in folders if f.is_dir()), None)
            audios = index_files(folder, AUDIO_SUFFIXES) if folder is not None else {}
            for n, item in enumerate(items):
                where = f"{path.name} item {n}"
                if not isinstance(item, dict) or not item.get("id"):
                    yield Entry(f"{source}/item{n}", None, problem=("bad_metadata", str(path), f"item {n} has no 'id'"),
                                source=where)
                    continue
                stem = Path(str(item["id"])).stem
                audio = audios.get(stem)
                entry = Entry(f"{source}/{stem}", audio, split="train", corpus_split=source,
                              captions=[item["caption"].strip()] if str(item.get("caption") or "").strip() else [],
                              meta={"source": source, "metadata_duration": item.get("duration"),
                                    **{k: item[k] for k in extra_fields if k in item}}, source=where)
                if audio is None:
                    expected = (folder or folders[0]) / f"{stem}.flac"
                    entry.problem = ("missing", str(expected), "no audio file with this id below "
                                     f"{folder or ' / '.join(str(f) for f in folders)}")
                yield entry
