"""The Greatest Hits (Owens et al., CVPR 2016 "Visually Indicated Sounds"): drumstick hits and scratches.

Layout of the release's ``vis-data`` folder: per recording ``<name>_denoised.mp4`` (video with its
denoised audio track) and ``<name>_times.txt``, one hit a line: ``<time s> <material> <action>
<reaction>`` (e.g. ``2.1 wood hit static``; labels may be ``None``). Optional split files
``train.txt`` / ``val.txt`` / ``test.txt`` (one ``<name>`` a line, as CondFoleyGen's filelists list
recordings) in the root or in ``vis-data``'s parent give the splits; without them rows have no split.

FoleyGenEx evaluates AC-VTA on CondFoleyGen's 2-s Greatest Hits clips (§4, Table 4): ``--clip_seconds
2`` cuts every recording into consecutive windows ``[k s, (k + 1) s)`` and keeps those holding at
least one annotated hit (one row each, ``start`` = the window's start, ids ``<name>_<k:04d>``);
without it there is one row per recording. The hits (times relative to the row's start) are
``meta["hits"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from avgen.data.builders.core import Builder, Checked, Entry, read_text

SUFFIX = "_denoised.mp4"


def read_hits(path: Path) -> list[dict[str, Any]]:
    """The hits of a ``_times.txt`` file (lines that do not start with a time are ignored)."""
    hits = []
    for line in read_text(path).splitlines():
        parts = line.split()
        try:
            time = float(parts[0])
        except (IndexError, ValueError):
            continue
        labels = (parts[1:] + ["None"] * 3)[:3]
        hits.append({"time": time, **dict(zip(("material", "action", "reaction"), labels))})
    return hits


class GreatestHitsBuilder(Builder):
    name = "greatest-hits"
    description = "The Greatest Hits: videos of a drumstick hitting/scratching objects, with hit annotations"
    layout = "vis-data/<name>_denoised.mp4 + <name>_times.txt (time material action reaction); optional {train,val,test}.txt"
    splits = ("train", "val", "test")

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--clip_seconds", type=float, default=None,
                            help="cut recordings into windows of this length holding at least one hit (2 for "
                                 "CondFoleyGen/FoleyGenEx's AC-VTA clips); default: one row per recording")

    def entries(self) -> Iterator[Entry]:
        data = self.root / "vis-data" if (self.root / "vis-data").is_dir() else self.root
        split_of: dict[str, str] = {}
        for split in self.splits:
            for folder in (self.root, data.parent):
                if (folder / f"{split}.txt").is_file():
                    for line in read_text(folder / f"{split}.txt").splitlines():
                        if line.strip():
                            split_of.setdefault(line.split()[0].removesuffix(SUFFIX), split)
                    break
        videos = sorted(data.glob(f"*{SUFFIX}"))
        if not videos:
            raise FileNotFoundError(f"greatest-hits: no *{SUFFIX} below {data}. Fix: pass --root at the release's "
                                    f"vis-data folder (or its parent)")
        for video in videos:
            name = video.name.removesuffix(SUFFIX)
            split = split_of.get(name)
            if split_of and (split is None or split not in self.selected_splits):
                continue
            times = data / f"{name}_times.txt"
            entry = Entry(name, None, video, audio_in_video=True, split=split, corpus_split=split, source=video.name)
            if not times.is_file():
                entry.problem = ("missing", str(times), "hit annotation file does not exist")
            else:
                entry.meta["hits"] = read_hits(times)
            yield entry

    def rows(self, checked: Checked) -> list[dict[str, Any]]:
        clip = self.options.get("clip_seconds")
        (row,) = super().rows(checked)
        if not clip:
            return [row]
        hits = row["meta"].pop("hits")
        rows = []
        for k in range(int(checked.duration // clip)):
            start, end = k * clip, (k + 1) * clip
            inside = [{**h, "time": round(h["time"] - start, 6)} for h in hits if start <= h["time"] < end]
            if inside:
                rows.append({**row, "id": f"{row['id']}_{k:04d}", **({"start": start} if start else {}),
                             "meta": {**row["meta"], "hits": inside, "window": k}})
        return rows
