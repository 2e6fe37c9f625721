"""Shared machinery of the corpus manifest builders: entries, validation, rows, manifest and report.

A builder (one per corpus family, see :mod:`avgen.data.builders`) reads a corpus's *published*
metadata files from a local copy and yields one :class:`Entry` per clip. :func:`build` then

1. validates every entry, in parallel over ``workers`` processes with a progress bar
   (:func:`validate_entry`): the files exist and their headers parse (audio with soundfile, video
   with PyAV), the audio lasts at least ``min_duration`` (and at most ``max_duration``) seconds at a
   sample rate of at least ``min_sample_rate``, the video has a known frame rate of at least
   ``min_fps``, and a transcript / caption is present where the corpus needs one;
2. turns each valid entry into manifest rows (:meth:`Builder.rows`: one row per caption or one per
   clip, speaker ids in ``meta["speaker"]``, every caption in ``meta["captions"]``, the corpus split
   mapped onto avgen's ``train`` / ``val`` / ``test``);
3. optionally gives each speech row a different utterance of the same speaker as ``reference_audio``
   (Harmony stage 2 "cross-utterance data from the same speaker", harmony spec §stages);
4. writes the manifest (:mod:`avgen.data.manifest`'s JSON lines, paths relative to the manifest) and a
   report (JSON next to it, plus a short printed summary) naming every skipped file and why.

Audio that lives only inside an mp4 (VGGSound, LRS2/3, Greatest Hits) is extracted once to
``<audio_dir>/<id>.wav`` (16-bit PCM, mono, at the source rate unless ``audio_rate`` is set), because
avgen's manifests read audio with soundfile; a rerun reuses wavs that are already there.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

from avgen.data.media import MediaError, audio_info, load_audio, read_audio_track, resample, video_info, write_wav

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
# Why an entry was skipped (the report counts these).
SKIP_KINDS = {
    "missing": "a file named by the metadata is not in the local copy",
    "unreadable": "a file exists but its header or stream cannot be parsed",
    "too_short": "the audio (or video) is shorter than min_duration",
    "too_long": "the audio is longer than max_duration",
    "low_sample_rate": "the audio's sample rate is below min_sample_rate",
    "low_fps": "the video's frame rate is unknown or below min_fps",
    "no_transcript": "a speech corpus row without a transcript",
    "no_caption": "a caption corpus row without a caption",
    "excluded": "removed by a corpus filter (e.g. OmniSonic §4.1's speech filter)",
    "bad_metadata": "a metadata line that cannot be parsed",
}
CAPTION_MODES = ("auto", "each", "first")


@dataclass
class Limits:
    """What a valid entry must satisfy (the ``avgen build-manifest`` options of the same names)."""

    min_duration: float = 1.0
    max_duration: float | None = None
    min_sample_rate: int = 16000
    min_fps: float = 10.0


@dataclass
class Entry:
    """One clip found in a corpus's metadata, before validation.

    ``audio`` is a soundfile-readable file; with ``audio_in_video`` the audio is the track of
    ``video`` and is extracted at validation. ``problem`` is a (kind, file, detail) found while
    reading the metadata (e.g. a missing transcript file). ``source`` names the metadata file and
    line the entry came from.
    """

    id: str
    audio: Path | None
    video: Path | None = None
    audio_in_video: bool = False
    split: str | None = None
    corpus_split: str | None = None
    captions: list[str] = field(default_factory=list)
    transcript: str | None = None
    speaker: str | None = None
    start: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    problem: tuple[str, str, str] | None = None
    source: str = ""


@dataclass
class Checked:
    """A validated entry: the audio file to use and what was measured."""

    entry: Entry
    audio: Path
    sample_rate: int
    duration: float  # seconds of audio in the file
    fps: float | None = None
    video_duration: float | None = None


@dataclass
class Skip:
    id: str
    file: str
    kind: str
    reason: str
    source: str = ""


class Builder:
    """Base class of a corpus builder: subclasses read the metadata (:meth:`entries`).

    Class attributes document the corpus for ``--help`` and the README table: ``layout`` (the
    expected tree), ``splits`` (the corpus's split names, mapped to avgen's by ``split_map``),
    ``requires`` (``"transcript"`` / ``"caption"``: rows without one are skipped).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    default_splits: ClassVar[tuple[str, ...] | None] = None  # None: all of ``splits``
    split_map: ClassVar[dict[str, str]] = {}
    requires: ClassVar[tuple[str, ...]] = ()
    has_speakers: ClassVar[bool] = False

    def __init__(self, root: str | Path, splits: Iterable[str] | None = None, captions: str = "auto",
                 **options: Any) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: --root {self.root} is not a folder; pass the corpus's local copy "
                                    f"(expected layout: {self.layout})")
        chosen = tuple(splits) if splits else (self.default_splits or self.splits)
        unknown = [s for s in chosen if self.splits and s not in self.splits]
        if unknown:
            raise ValueError(f"{self.name}: unknown split(s) {unknown}; choose from {list(self.splits)}")
        self.selected_splits = chosen
        self.explicit_splits = bool(splits)
        self.missing_splits: list[str] = []  # default splits without metadata in the copy (reported)
        if captions not in CAPTION_MODES:
            raise ValueError(f"captions={captions!r} must be one of {CAPTION_MODES}")
        self.caption_mode = captions
        self.options = options

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        """Corpus-specific command-line options (none by default)."""

    def entries(self) -> Iterator[Entry]:
        raise NotImplementedError

    def avgen_split(self, corpus_split: str | None) -> str | None:
        return None if corpus_split is None else self.split_map.get(corpus_split, corpus_split)

    def metadata_file(self, *candidates: str) -> Path:
        """The first of ``candidates`` (relative to the root) that exists; raises naming all of them."""
        for name in candidates:
            path = self.root / name
            if path.is_file():
                return path
        raise FileNotFoundError(f"{self.name}: none of {[str(self.root / c) for c in candidates]} exists. Fix: pass "
                                f"--root at the corpus's top folder (expected layout: {self.layout})")

    def split_metadata(self, split: str, *candidates: str) -> Path | None:
        """The metadata file of ``split``; a split read by default (not named with ``--split``) may be
        absent from the copy (logged and reported), one named explicitly must exist."""
        try:
            return self.metadata_file(*candidates)
        except FileNotFoundError:
            if self.explicit_splits:
                raise
            log.warning("%s: no metadata for split %r (%s); skipping that split", self.name, split, " / ".join(candidates))
            self.missing_splits.append(split)
            return None

    def rows(self, checked: Checked) -> list[dict[str, Any]]:
        """Manifest rows of a valid entry: one per caption (``each``) or one per clip (``first``)."""
        e = checked.entry
        row: dict[str, Any] = {"id": e.id, "audio": checked.audio}
        if e.video is not None:
            row["video"] = e.video
        if e.transcript:
            row["transcript"] = e.transcript
        if e.split is not None:
            row["split"] = e.split
        if e.start:
            row["start"] = e.start
        row["sample_rate"] = checked.sample_rate
        meta: dict[str, Any] = {"corpus": self.name, "duration": round(checked.duration, 4)}
        if e.corpus_split is not None:
            meta["corpus_split"] = e.corpus_split
        if e.speaker is not None:
            meta["speaker"] = e.speaker
        if checked.fps is not None:
            meta["fps"] = round(checked.fps, 4)
            seconds = checked.video_duration
            meta["video_duration"] = round(seconds, 4) if seconds is not None and seconds == seconds else None
        meta.update(e.meta)
        if not e.captions:
            return [{**row, "meta": meta}]
        meta["captions"] = list(e.captions)
        mode = self.caption_mode
        if mode == "auto":  # MMAudio's training tsvs hold one row per caption; evaluation one row per clip
            mode = "each" if e.split == "train" else "first"
        if mode == "first" or len(e.captions) == 1:
            return [{**row, "caption": e.captions[0], "meta": meta}]
        return [{**row, "id": f"{e.id}#{k}", "caption": c, "meta": {**meta, "caption_index": k}}
                for k, c in enumerate(e.captions, start=1)]


# ---------------------------------------------------------------------------------------- helpers
def index_files(root: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """Every file under ``root`` with one of ``suffixes``, by stem (the first found, in sorted order)."""
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes and stem not in found:
                found[stem] = Path(dirpath) / name
    return found


def read_text(path: Path) -> str:
    """A metadata file as text: UTF-8 (with or without BOM), falling back to Latin-1 (old Clotho csvs)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def extract_audio(video: Path, target: Path, rate: int | None = None) -> Path:
    """Decode the first audio stream of ``video`` to a mono 16-bit wav at ``target`` (reused when it parses)."""
    if target.is_file():
        try:
            audio_info(target)
            return target
        except MediaError:
            pass  # a half-written wav of an interrupted run: extract again
    audio, source_rate = read_audio_track(video)
    if rate is not None and rate != source_rate:
        audio, source_rate = resample(audio, source_rate, rate), rate
    tmp = target.with_name(target.name + ".part.wav")
    write_wav(tmp, audio, source_rate)
    os.replace(tmp, target)  # a wav is either whole or absent, so reruns can trust it
    return target


@dataclass
class Settings:
    limits: Limits
    requires: tuple[str, ...]
    audio_dir: Path
    audio_rate: int | None
    full_decode: bool = False


def _kind_of(error: MediaError) -> str:
    return "missing" if "does not exist" in error.reason else "unreadable"


def validate_entry(entry: Entry, settings: Settings) -> Checked | Skip:
    """Check one entry (see the module docstring); a :class:`Skip` says which file failed and why."""
    lim = settings.limits
    if entry.problem is not None:
        kind, file, reason = entry.problem
        return Skip(entry.id, file, kind, reason, entry.source)
    if "transcript" in settings.requires and not (entry.transcript or "").strip():
        return Skip(entry.id, str(entry.audio or entry.video), "no_transcript", "no transcript in the metadata",
                    entry.source)
    if "caption" in settings.requires and not any(c.strip() for c in entry.captions):
        return Skip(entry.id, str(entry.audio or entry.video), "no_caption", "no caption in the metadata", entry.source)
    fps = video_seconds = None
    if entry.video is not None:
        try:
            info = video_info(entry.video)
        except MediaError as e:
            return Skip(entry.id, str(entry.video), _kind_of(e), e.reason, entry.source)
        fps, video_seconds = float(info["fps"]), float(info["duration"])
        if not fps > 0 or fps < lim.min_fps:
            return Skip(entry.id, str(entry.video), "low_fps", f"frame rate {fps:g} fps is below min_fps={lim.min_fps:g}",
                        entry.source)
        if video_seconds == video_seconds and video_seconds - entry.start < lim.min_duration:
            return Skip(entry.id, str(entry.video), "too_short", f"video lasts {video_seconds:.3f} s, less than "
                        f"min_duration={lim.min_duration:g} s after start={entry.start:g}", entry.source)
    audio = entry.audio
    try:
        if entry.audio_in_video and audio is None:
            audio = extract_audio(entry.video, settings.audio_dir / f"{entry.id}.wav", settings.audio_rate)
        info = audio_info(audio)
    except MediaError as e:
        return Skip(entry.id, e.path, _kind_of(e), e.reason, entry.source)
    rate, seconds = int(info.samplerate), info.frames / info.samplerate
    if settings.full_decode:  # the header parsed; decode every sample too (truncation, NaN/Inf)
        try:
            load_audio(audio, rate)
        except MediaError as e:
            return Skip(entry.id, e.path, "unreadable", e.reason, entry.source)
    if rate < lim.min_sample_rate:
        return Skip(entry.id, str(audio), "low_sample_rate", f"{rate} Hz is below min_sample_rate="
                    f"{lim.min_sample_rate} Hz", entry.source)
    if seconds - entry.start < lim.min_duration:
        return Skip(entry.id, str(audio), "too_short", f"audio lasts {seconds:.3f} s, less than min_duration="
                    f"{lim.min_duration:g} s after start={entry.start:g}", entry.source)
    if lim.max_duration is not None and seconds > lim.max_duration:
        return Skip(entry.id, str(audio), "too_long", f"audio lasts {seconds:.3f} s, more than max_duration="
                    f"{lim.max_duration:g} s", entry.source)
    return Checked(entry, Path(audio), rate, seconds, fps, video_seconds)


def _validate_star(job: tuple[Entry, Settings]) -> Checked | Skip:
    return validate_entry(*job)


def _validate_all(entries: list[Entry], settings: Settings, workers: int, progress: bool) -> list[Checked | Skip]:
    from tqdm import tqdm

    bar = dict(total=len(entries), desc="validating", unit="clip", file=sys.stderr, disable=not progress)
    jobs = ((e, settings) for e in entries)
    if workers <= 1 or len(entries) < 2:
        return [validate_entry(e, s) for e, s in tqdm(jobs, **bar)]
    chunk = max(1, min(64, len(entries) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:  # map keeps the metadata's order
        return list(tqdm(pool.map(_validate_star, jobs, chunksize=chunk), **bar))


def assign_same_speaker_references(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Give each row with ``meta["speaker"]`` another clip of the same speaker (and split) as ``reference_audio``.

    Deterministic: a speaker's clips are ordered by audio path and each takes the next one
    (cyclically), so every clip is a reference exactly once per caption row. Rows of a speaker with a
    single clip get none. Returns (rows with a reference, speaker rows without one).
    """
    clips: dict[tuple[Any, Any], list[Path]] = defaultdict(list)
    for row in rows:
        speaker = row.get("meta", {}).get("speaker")
        if speaker is not None and row["audio"] not in clips[(speaker, row.get("split"))]:
            clips[(speaker, row.get("split"))].append(row["audio"])
    for paths in clips.values():
        paths.sort()
    assigned = missing = 0
    for row in rows:
        speaker = row.get("meta", {}).get("speaker")
        if speaker is None:
            continue
        paths = clips[(speaker, row.get("split"))]
        if len(paths) < 2:
            missing += 1
            continue
        row["reference_audio"] = paths[(paths.index(row["audio"]) + 1) % len(paths)]
        assigned += 1
    return assigned, missing


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows): keep it absolute
        return str(path.resolve())


def build(
    builder: Builder,
    output: str | Path,
    *,
    limits: Limits | None = None,
    workers: int = 1,
    audio_dir: str | Path | None = None,
    audio_rate: int | None = None,
    same_speaker_reference: bool = False,
    full_decode: bool = False,
    report: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate ``builder``'s entries, write the manifest at ``output`` and the report; returns the report.

    ``audio_dir``: where audio extracted from videos goes (default ``<output folder>/<corpus>_audio``).
    ``report``: the report's path (default ``<output>`` with ``.report.json``).
    ``full_decode``: decode every audio file in full (slower; catches damage past the header).
    """
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    limits = limits or Limits()
    settings = Settings(limits, builder.requires, Path(audio_dir) if audio_dir else output.parent / f"{builder.name}_audio",
                        audio_rate, full_decode)
    entries = list(builder.entries())
    if builder.selected_splits and len(set(builder.missing_splits)) == len(builder.selected_splits):
        raise FileNotFoundError(f"{builder.name}: no metadata for any of the splits {list(builder.selected_splits)} "
                                f"below {builder.root}. Fix: pass --root at the corpus's top folder (expected layout: "
                                f"{builder.layout})")
    seen: dict[str, str] = {}
    unique: list[Entry] = []
    skips: list[Skip] = []
    for e in entries:  # a clip listed twice (e.g. in two split files) is kept once
        if e.id in seen:
            skips.append(Skip(e.id, str(e.audio or e.video), "bad_metadata", f"duplicate id (first from {seen[e.id]})",
                              e.source))
            continue
        seen[e.id] = e.source
        unique.append(e)
    results = _validate_all(unique, settings, workers, progress)
    rows: list[dict[str, Any]] = []
    hours = 0.0
    for result in results:
        if isinstance(result, Skip):
            skips.append(result)
            continue
        hours += result.duration / 3600.0
        rows.extend(builder.rows(result))
    references = None
    if same_speaker_reference:
        assigned, without = assign_same_speaker_references(rows)
        references = {"assigned": assigned, "without_other_clip_of_speaker": without}
    base = output.parent.resolve()
    with output.open("w", encoding="utf-8") as f:
        for row in rows:
            for col in ("audio", "video", "reference_audio"):
                if col in row:
                    row[col] = _relative(Path(row[col]).resolve(), base)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "corpus": builder.name,
        "root": str(builder.root),
        "manifest": str(output),
        "splits_read": [s for s in builder.selected_splits if s not in builder.missing_splits],
        "splits_missing": builder.missing_splits,
        "entries": len(entries),
        "clips": len(unique) - sum(1 for r in results if isinstance(r, Skip)),
        "rows": len(rows),
        "rows_per_split": dict(sorted(Counter(str(r.get("split")) for r in rows).items())),
        "hours": round(hours, 4),
        "speakers": len({r["meta"]["speaker"] for r in rows if "speaker" in r["meta"]}),
        "skipped": len(skips),
        "skipped_by_kind": dict(sorted(Counter(s.kind for s in skips).items())),
        "limits": asdict(limits),
        "full_decode": full_decode,
        "references": references,
        "skips": [asdict(s) for s in skips],
    }
    report_path = Path(report) if report else output.with_suffix(".report.json")
    report_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    summary["report"] = str(report_path)
    return summary


def format_summary(report: dict[str, Any], show: int = 10) -> str:
    """A few lines for the terminal: counts, skips by kind and the first skipped files."""
    lines = [
        f"{report['corpus']}: {report['rows']} rows from {report['clips']} clips ({report['hours']:.2f} h) -> "
        f"{report['manifest']}",
        "  rows per split: " + ", ".join(f"{k} {v}" for k, v in report["rows_per_split"].items()),
    ]
    if report["speakers"]:
        lines.append(f"  speakers: {report['speakers']}")
    if report["references"]:
        lines.append(f"  same-speaker references: {report['references']['assigned']} rows "
                     f"({report['references']['without_other_clip_of_speaker']} without another clip of the speaker)")
    if report["skipped"]:
        lines.append(f"  skipped {report['skipped']} of {report['entries']} entries: "
                     + ", ".join(f"{k} {v}" for k, v in report["skipped_by_kind"].items()))
        for s in report["skips"][:show]:
            lines.append(f"    {s['id']}: {s['kind']}: {s['file']}: {s['reason']}")
        if report["skipped"] > show:
            lines.append(f"    ... {report['skipped'] - show} more in {report['report']}")
    else:
        lines.append("  nothing skipped")
    lines.append(f"  report: {report['report']}")
    return "\n".join(lines)
