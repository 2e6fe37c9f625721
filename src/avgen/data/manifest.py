"""Manifest datasets of real media (jsonl) and their LightningDataModule.

One JSON object per line. Required: ``id``, ``audio`` (a path, relative to the manifest's folder or
absolute). Optional: ``video``, ``reference_audio`` (paths), ``caption``, ``offscreen_caption``,
``transcript``, ``lyrics``, ``video_caption`` (strings), ``split``, ``task``, ``start`` (seconds),
``sample_rate`` (the file's declared rate, checked against its header) and ``meta`` (an object kept
in ``Sample.meta``, e.g. ToyWorld ground truth). Other columns are ignored with a warning.

The manifest itself is validated when it is read: a malformed line, a missing column, a wrong type or
a duplicate id raises ``ValueError`` naming the file, the line and the fix. Media problems follow the
``on_error`` policy: ``"raise"`` stops with the file, the manifest line and the fix; ``"skip"`` logs a
counted warning and drops the sample (missing/unreadable files are dropped at setup, decoding
failures at load time by returning ``None``, which :func:`collate_skipping` removes from the batch).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import lightning as L
from torch.utils.data import DataLoader, Dataset

from avgen.data.batch import TEXT_FIELDS, AVBatch, Sample, collate
from avgen.data.report import EVENT_KEY, add_event
from avgen.data.sampling import train_loader
from avgen.data.spec import MediaSpec
from avgen.data.media import MediaError, audio_info, load_audio, load_video, video_info
from avgen.data.toyworld import SCENARIOS

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "audio")
PATH_COLUMNS = ("audio", "video", "reference_audio")
KNOWN_COLUMNS = set(REQUIRED_COLUMNS) | set(PATH_COLUMNS) | set(TEXT_FIELDS) | {
    "split", "task", "start", "sample_rate", "meta",
}
ON_ERROR = ("raise", "skip")
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip is treated as silent (skip_silent)
EXAMPLE_ROW = '{"id": "clip0", "audio": "clip0.wav", "video": "clip0.mp4", "caption": "a dog barks"}'


@dataclass
class ManifestRow:
    line: int
    id: str
    audio: Path
    video: Path | None = None
    reference_audio: Path | None = None
    texts: dict[str, str | None] = field(default_factory=dict)
    split: str | None = None
    task: str | None = None
    start: float = 0.0
    sample_rate: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _manifest_error(path: Path, line: int, reason: str, fix: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {reason}. Fix: {fix}")


def read_manifest(
    path: str | Path, on_error: str = "raise", skipped: list[tuple[int, str, str]] | None = None
) -> list[ManifestRow]:
    """Parse and validate a jsonl manifest (see the module docstring for the columns).

    A line that is not UTF-8 text raises naming the file, line and byte offset; with
    ``on_error="skip"`` it is dropped with a warning instead and recorded in ``skipped`` as
    ``(line, "line <n>", reason)`` (its id cannot be read). Every other validation error raises.
    """
    path = Path(path)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} must be one of {ON_ERROR}")
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; pass the path of a .jsonl manifest")
    root = path.parent
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    unknown: set[str] = set()
    json_fix = f"write one JSON object per line, e.g. {EXAMPLE_ROW}"
    if path.suffix.lower() in (".csv", ".tsv"):
        json_fix += (f" (avgen manifests are JSON lines, not {path.suffix[1:].upper()}; convert the table, e.g. "
                     "pandas.read_csv(p).to_json(out, orient='records', lines=True))")
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                reason = f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                if on_error == "raise":
                    raise _manifest_error(path, n, reason, "save the manifest as UTF-8, e.g. "
                                          "`iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`, or remove the line") from None
                log.warning("skipping %s line %d: %s", path, n, reason)
                if skipped is not None:
                    skipped.append((n, f"line {n}", reason))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise _manifest_error(path, n, f"malformed JSON ({e.msg} at column {e.colno})", json_fix) from None
            if not isinstance(obj, dict):
                raise _manifest_error(path, n, f"expected a JSON object, got {type(obj).__name__}", json_fix)
            for col in REQUIRED_COLUMNS:
                if obj.get(col) in (None, ""):
                    raise _manifest_error(path, n, f"missing required column {col!r}",
                                          f"every row needs 'id' and 'audio', e.g. {EXAMPLE_ROW}")
            unknown |= set(obj) - KNOWN_COLUMNS
            sid = obj["id"]
            if not isinstance(sid, (str, int)) or isinstance(sid, bool):
                raise _manifest_error(path, n, f"'id' must be a string, got {sid!r}", "quote the id")
            sid = str(sid)
            if sid in seen:
                raise _manifest_error(path, n, f"duplicate id {sid!r} (first on line {seen[sid]})",
                                      "give every row a unique id")
            seen[sid] = n
            paths: dict[str, Path | None] = {}
            for col in PATH_COLUMNS:
                value = obj.get(col)
                if value is None or value == "":
                    paths[col] = None
                    continue
                if not isinstance(value, str):
                    raise _manifest_error(path, n, f"{col!r} must be a path string, got {value!r}",
                                          "write the path as a JSON string")
                p = Path(value).expanduser()
                paths[col] = p if p.is_absolute() else root / p
            texts: dict[str, str | None] = {}
            for col in TEXT_FIELDS:
                value = obj.get(col)
                if value is not None and not isinstance(value, str):
                    raise _manifest_error(path, n, f"{col!r} must be a string or null, got {value!r}",
                                          "write the text as a JSON string")
                texts[col] = value or None
            start = obj.get("start", 0.0)
            if not isinstance(start, (int, float)) or isinstance(start, bool) or start < 0:
                raise _manifest_error(path, n, f"'start' must be a non-negative number of seconds, got {start!r}",
                                      "write e.g. \"start\": 1.5")
            rate = obj.get("sample_rate")
            if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0):
                raise _manifest_error(path, n, f"'sample_rate' must be a positive integer, got {rate!r}",
                                      "write the file's rate in Hz, e.g. 16000, or drop the column")
            task = obj.get("task")
            if task is not None and task not in SCENARIOS:
                raise _manifest_error(path, n, f"unknown task {task!r}", f"use one of {SCENARIOS} or drop the column")
            split = obj.get("split")
            if split is not None and not isinstance(split, str):
                raise _manifest_error(path, n, f"'split' must be a string, got {split!r}", "write e.g. \"train\"")
            meta = obj.get("meta", {})
            if not isinstance(meta, dict):
                raise _manifest_error(path, n, f"'meta' must be a JSON object, got {type(meta).__name__}",
                                      "wrap it in an object or drop the column")
            rows.append(ManifestRow(n, sid, paths["audio"], paths["video"], paths["reference_audio"], texts,
                                    split, task, float(start), rate, meta))
    if not rows:
        raise ValueError(f"{path}: the manifest has no rows. Fix: add one JSON object per line, e.g. {EXAMPLE_ROW}")
    if unknown:
        log.warning("%s: ignoring unknown columns %s (known: %s)", path, sorted(unknown), sorted(KNOWN_COLUMNS))
    return rows


def infer_task(row: ManifestRow) -> str:
    """The scenario of a row without a ``task`` column, from what it carries."""
    if row.texts.get("lyrics"):
        return "song"
    if row.texts.get("transcript") and not row.texts.get("caption"):
        return "speech"
    return "vta" if row.video is not None else "tta"


class TooManySkips(ValueError):
    """A split lost more rows than ``max_skip_fraction`` allows, or has no usable row at all."""


class ManifestDataset(Dataset):
    """Samples of one manifest (rows of one split).

    A row that fails to load (``on_error="skip"``) is counted once per process (it is not tried
    again in later epochs) and, with ``substitute=True`` (training), replaced by the next usable row
    so every batch keeps its size and no batch is ever empty; without it ``__getitem__`` returns
    ``None`` (dropped by :func:`collate_skipping`) and a batch whose rows all failed is filled with
    the next usable row (marked ``meta["filler"]``). Once more than ``max_skip_fraction`` of the
    split's rows failed (at setup and while loading in this process), or none loads, it raises
    :class:`TooManySkips` naming the first bad rows. Problems travel with the samples as
    ``meta["data_events"]`` (see :mod:`avgen.data.report`).
    """

    def __init__(
        self,
        manifest: str | Path,
        *,
        split: str | None = None,
        duration: float = 2.0,
        sample_rate: int = 16000,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        semantic_size: int = 64,
        sync_size: int = 64,
        on_error: str = "skip",
        skip_silent: bool = False,
        short_video: str = "pad",
        probe_media: bool = True,
        transform: Callable[[Sample], Sample] | None = None,
        max_skip_fraction: float = 0.1,
        max_video_pad_fraction: float = 0.25,
        substitute: bool = False,
        video_fps: float | None = None,
        video_size: int | tuple[int, int] = 32,
        reference_image: bool = True,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} must be one of {ON_ERROR}")
        if short_video not in ("pad", "skip"):
            raise ValueError(f"short_video={short_video!r} must be 'pad' or 'skip'")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction={max_skip_fraction} must be in [0, 1]")
        if not 0.0 <= max_video_pad_fraction <= 1.0:
            raise ValueError(f"max_video_pad_fraction={max_video_pad_fraction} must be in [0, 1]")
        self.manifest = Path(manifest)
        self.split = split
        self.duration, self.sample_rate = float(duration), int(sample_rate)
        self.fps = (float(semantic_fps), float(sync_fps))
        self.sizes = (int(semantic_size), int(sync_size))
        self.on_error, self.skip_silent, self.short_video = on_error, skip_silent, short_video
        self.max_skip_fraction, self.max_video_pad_fraction = float(max_skip_fraction), float(max_video_pad_fraction)
        self.substitute = bool(substitute)
        self.transform = transform  # Sample -> Sample after decoding (e.g. AdverbAugmentation)
        self.text_spec: Any = None  # avgen.data.report.TextSpec, installed by DataReportCallback
        self.setup_skips: list[tuple[int, str, str]] = []  # (line, id, reason)
                # Target video (Harmony): the row's video decoded once more at video_fps / video_size
        if video_fps is not None and video_fps <= 0:
            raise ValueError(f"video_fps must be positive (or None for no target video), got {video_fps}")
        self.video_fps = None if video_fps is None else float(video_fps)
        self.video_size = video_size if isinstance(video_size, int) else tuple(int(v) for v in video_size)
        self.reference_image = bool(reference_image)
        all_rows = read_manifest(self.manifest, on_error, self.setup_skips)
        # A row with a ``split`` column belongs only to that split; rows without one belong to all.
        rows = [r for r in all_rows if split is None or r.split is None or r.split == split]
        self.total_rows = len(rows) + len(self.setup_skips)
        self.bad: dict[int, str] = {}  # row index -> why it failed to load (this process)
        self.padded_videos = 0
        self.rows = [r for r in rows if self._usable(r, probe_media)]
        if self.setup_skips:
            log.warning("%s: skipped %d of %d rows at setup (on_error='skip')", self.manifest,
                        len(self.setup_skips), self.total_rows)
        if not self.rows:
            raise TooManySkips(
                f"{self.manifest}: no usable rows for split {split!r} ({len(all_rows)} rows, "
                f"{len(all_rows) - len(rows)} of other splits, {len(self.setup_skips)} skipped{self._first_bad()}). "
                "Fix: check the rows' 'split' column and media paths (the warnings above name each skipped file)"
            )
        self._check_skip_budget()

    # -- skip accounting ----------------------------------------------------------------------
    @property
    def runtime_skips(self) -> int:
        """Distinct rows that failed while loading in this process."""
        return len(self.bad)

    def _bad_rows(self) -> list[tuple[int, str, str]]:
        return sorted(self.setup_skips + [(self.rows[i].line, self.rows[i].id, why) for i, why in self.bad.items()])

    def _first_bad(self, k: int = 3) -> str:
        bad = self._bad_rows()
        if not bad:
            return ""
        listing = "; ".join(f"line {line} (id {sid!r}): {why}" for line, sid, why in bad[:k])
        return f"; first bad: {listing}" + (f"; and {len(bad) - k} more" if len(bad) > k else "")

    def _check_skip_budget(self) -> None:
        skipped = len(self.setup_skips) + len(self.bad)
        if skipped > self.max_skip_fraction * self.total_rows:
            raise TooManySkips(
                f"{self.manifest} (split {self.split!r}): {skipped} of {self.total_rows} rows could not be used, more "
                f"than max_skip_fraction={self.max_skip_fraction:g} allows{self._first_bad()}. Fix: repair or remove "
                "these rows, or raise max_skip_fraction (--data.init_args.max_skip_fraction) to accept the loss"
            )

    def setup_events(self) -> list[tuple[str, str, str]]:
        """Rows dropped at setup, as data-report events (see :mod:`avgen.data.report`)."""
        return [("skipped", sid, f"{self.manifest.name} line {line}: {why}") for line, sid, why in self.setup_skips]

    def _fail(self, row: ManifestRow, error: MediaError) -> ValueError:
        return ValueError(f"{self.manifest}, line {row.line} (id {row.id!r}): {error}")

    def _usable(self, row: ManifestRow, probe: bool) -> bool:
        """Check that the row's files exist (and, with ``probe``, that their headers parse)."""
        try:
            audio_info(row.audio) if probe else _exists(row.audio, "audio")
            if row.video is not None:
                video_info(row.video) if probe else _exists(row.video, "video")
            if row.reference_audio is not None:
                audio_info(row.reference_audio) if probe else _exists(row.reference_audio, "reference audio")
        except MediaError as e:
            if self.on_error == "raise":
                raise self._fail(row, e) from e
            self.setup_skips.append((row.line, row.id, f"{e.path}: {e.reason}"))
            log.warning("skipping %s line %d (id %r) [%d skipped so far]: %s", self.manifest, row.line, row.id,
                        len(self.setup_skips), e)
            return False
        return True

    def __len__(self) -> int:
        return len(self.rows)

    def video_indices(self) -> list[int]:
        """Indices of the rows that have a video (read from the manifest, nothing decoded)."""
        return [i for i, r in enumerate(self.rows) if r.video is not None]

    def _try(self, index: int) -> Sample | None:
        """The row's sample, or None when it fails (first failure logged and counted, later ones silent)."""
        if index in self.bad:
            return None
        row = self.rows[index]
        try:
            sample = self.load(row)
        except MediaError as e:
            if self.on_error == "raise":
                raise self._fail(row, e) from e
            self.bad[index] = f"{e.path}: {e.reason}"
            log.warning("skipping %s line %d (id %r) [%d rows failed while loading in this process]: %s",
                        self.manifest, row.line, row.id, len(self.bad), e)
            self._check_skip_budget()
            return None
        return sample if self.transform is None else self.transform(sample)

    def _next_usable(self, index: int, failed: list[int]) -> Sample:
        """The first row after ``index`` (wrapping) that loads; raises when no row of the split does."""
        n = len(self.rows)
        for step in range(1, n + 1):
            j = (index + step) % n
            sample = self._try(j)
            if sample is not None:
                for i in failed:
                    add_event(sample.meta, "skipped", self.rows[i].id, f"{self.manifest.name} line "
                              f"{self.rows[i].line}: {self.bad.get(i, '')}")
                return sample
            if j not in failed:
                failed.append(j)
        raise TooManySkips(f"{self.manifest} (split {self.split!r}): none of the {n} rows could be loaded"
                           f"{self._first_bad()}. Fix: repair the files or the manifest (the warnings name each file)")

    def __getitem__(self, index: int) -> Sample | None:
        sample = self._try(index)
        if sample is not None or not self.substitute:
            return sample
        return self._next_usable(index, [index])

    def __getitems__(self, indices: list[int]) -> list[Sample | None]:
        """A batch's samples (the DataLoader calls this): never all skipped."""
        samples = [self[i] for i in indices]
        kept = [s for s in samples if s is not None]
        failed = [i for i, s in zip(indices, samples) if s is None]
        if not kept:  # every row of an evaluation batch failed: one filler keeps the batch non-empty
            filler = self._next_usable(max(indices), failed)
            filler.meta["filler"] = True
            add_event(filler.meta, "filler", filler.id, f"batch of rows {[self.rows[i].id for i in indices]}")
            return [filler]
        for i in failed:
            add_event(kept[0].meta, "skipped", self.rows[i].id,
                      f"{self.manifest.name} line {self.rows[i].line}: {self.bad.get(i, '')}")
        return kept

    def load(self, row: ManifestRow) -> Sample:
        """Decode one row into a :class:`Sample` (raises :class:`MediaError`)."""
        meta = dict(row.meta)
        meta.update({"manifest": str(self.manifest), "line": row.line})
        meta.pop(EVENT_KEY, None)
        where = f"{self.manifest.name} line {row.line}"
        if self.text_spec is not None:  # before decoding: a row whose text the model cannot take is bad
            why = self.text_spec.check(row.texts, row.id, meta)
            if why is not None:
                raise MediaError(where, why, "shorten the text, or change the encoder's overflow policy")
        clip = load_audio(row.audio, self.sample_rate, self.duration, row.start, row.sample_rate,
                          SILENCE_PEAK if self.skip_silent else None)
        if clip.source_channels > 1:
            add_event(meta, "downmixed", row.id, f"{clip.source_channels} channels averaged")
        video_semantic = video_sync = target_video = None
        if row.video is not None:
            fps, sizes = list(self.fps), list(self.sizes)
            if self.video_fps is not None:
                fps.append(self.video_fps)
                sizes.append(self.video_size)
            video = load_video(row.video, fps, sizes, self.duration, row.start)
            video_semantic, video_sync = video.streams[:2]
            if self.video_fps is not None:
                target_video = video.streams[2]
            audio_end = row.start + clip.valid_length / self.sample_rate
            if video.source_seconds < audio_end - 1.0 / self.fps[1]:
                frames = max(video_sync.shape[0], 1)
                fraction = video.padded_frames[1] / frames
                if self.short_video == "skip" or fraction > self.max_video_pad_fraction:
                    raise MediaError(row.video, f"video ends at {video.source_seconds:.2f} s but its audio runs "
                                     f"to {audio_end:.2f} s ({fraction:.0%} of the clip's frames would repeat the "
                                     f"last one; max_video_pad_fraction={self.max_video_pad_fraction:g})",
                                     "trim the audio to the video, or raise max_video_pad_fraction")
                self.padded_videos += 1
                add_event(meta, "video_padded", row.id, f"{video.padded_frames[1]} of {frames} frames")
                log.warning("%s (id %r): video ends at %.2f s, before its audio (%.2f s); repeating its last frame "
                            "for %d of %d frames", where, row.id, video.source_seconds, audio_end,
                            video.padded_frames[1], frames)
            if any(video.padded_frames):
                meta["video_padded_frames"] = dict(zip(("semantic", "sync", "target"), video.padded_frames))
        reference = None
        if row.reference_audio is not None:
            ref = load_audio(row.reference_audio, self.sample_rate, None, 0.0)
            reference = ref.waveform[: int(round(self.duration * self.sample_rate))]
        return Sample(
            id=row.id,
            sample_rate=self.sample_rate,
            audio=clip.waveform,
            audio_length=clip.valid_length,
            video_semantic=video_semantic,
            video_sync=video_sync,
            reference_audio=reference,
            target_video=target_video,
            reference_image=target_video[0].clone() if target_video is not None and self.reference_image else None,
            video_fps=self.video_fps if target_video is not None else None,
            task=row.task or infer_task(row),
            seconds_start=row.start,
            seconds_total=clip.source_seconds,
            meta=meta,
            **row.texts,
        )


def _exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise MediaError(path, f"{what} file does not exist", "check the path (relative paths are resolved "
                         "against the manifest's folder) or remove the row")


def collate_skipping(samples: list[Sample | None]) -> AVBatch:
    """:func:`collate` after dropping skipped (``None``) samples; never returns an empty batch.

    :class:`ManifestDataset` itself keeps batches non-empty (substitutes or fillers); if every
    sample still arrives as ``None`` (e.g. through a ``ConcatDataset``, which loads item by item),
    this raises rather than hand the model an empty batch, which would make training loop forever.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise TooManySkips(
            f"every sample of a batch of {len(samples)} failed to load (the warnings above name each file). "
            "Fix: repair or remove those rows; training cannot use an empty batch"
        )
    if len(kept) < len(samples):
        log.warning("dropped %d skipped sample(s) from a batch of %d", len(samples) - len(kept), len(samples))
    return collate(kept)


class ManifestDataModule(L.LightningDataModule):
    """Real media from jsonl manifests, yielding :class:`~avgen.data.batch.AVBatch`.

    ``on_error``: ``"skip"`` (counted, logged, summarised at teardown) or ``"raise"``.
    ``short_video``: ``"pad"`` repeats a short video's last frame (recorded in ``meta``) or ``"skip"``.
    ``max_skip_fraction``: the share of a split's rows that may fail (at setup or while loading)
    before the run stops with :class:`TooManySkips` naming the first bad rows; a split with no
    usable row always stops. Training rows that fail are replaced by the next usable row (batches
    keep their size); evaluation rows are dropped (see :class:`ManifestDataset`).
    ``max_video_pad_fraction``: with ``short_video="pad"``, the largest share of a clip's frames
    that may repeat a short video's last frame; beyond it the row is a bad row.
    ``probe_media``: parse every file's header at setup (catches truncated/unreadable files before
    the first epoch); ``False`` only checks that files exist (faster for huge manifests).
    ``transform``: a ``Sample -> Sample`` callable (e.g. ``avgen.data.AdverbAugmentation``) applied to
    the splits in ``transform_splits`` (default: train only). ``predict_duration``: clip length of the
    predict split when it differs from ``duration`` (``avgen generate --total_duration``).
    ``video_fps`` / ``video_size`` (side or [height, width]): decode each row's video once more as the
    *target* video (Harmony) at this rate and size; ``reference_image``: its first frame. Off when
    ``video_fps`` is None. ``seed``: the training order, a pure function of (seed, epoch) that a resumed
    run continues mid-epoch (:mod:`avgen.data.sampling`).
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        duration: float = 2.0,
        sample_rate: int = 16000,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        semantic_size: int = 64,
        sync_size: int = 64,
        on_error: str = "skip",
        skip_silent: bool = False,
        shuffle: bool = True,
        short_video: str = "pad",
        probe_media: bool = True,
        transform: Optional[Callable[[Sample], Sample]] = None,
        transform_splits: list[str] = ["train"],  # noqa: B006 (jsonargparse needs the literal default)
        predict_duration: Optional[float] = None,
        max_skip_fraction: float = 0.1,
        max_video_pad_fraction: float = 0.25,
        video_fps: Optional[float] = None,
        video_size: Union[int, tuple[int, int]] = 32,
        reference_image: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} must be one of {ON_ERROR}")
        self.save_hyperparameters(ignore=["transform"])
        self.transform, self.transform_splits = transform, tuple(transform_splits)
        self._predict_duration = predict_duration
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest,
                          "predict": predict_manifest}
        self.batch_size, self.num_workers, self.shuffle, self.seed = batch_size, num_workers, shuffle, int(seed)
        self.sample_rate, self.duration = int(sample_rate), float(duration)
        self.video_fps = None if video_fps is None else float(video_fps)
        self.video_size = video_size
        self.datasets: dict[str, ManifestDataset] = {}
        self.text_spec: Any = None  # avgen.data.report.TextSpec, installed by DataReportCallback

    def dataset(self, split: str) -> ManifestDataset:
        if split not in self.datasets:
            manifest = self.manifests[split]
            if manifest is None:
                raise ValueError(f"ManifestDataModule has no {split}_manifest; pass --data.{split}_manifest=PATH")
            h = self.hparams
            duration = self._predict_duration if split == "predict" and self._predict_duration else h.duration
            self.datasets[split] = ManifestDataset(
                manifest, split=split, duration=duration, sample_rate=h.sample_rate, semantic_fps=h.semantic_fps,
                sync_fps=h.sync_fps, semantic_size=h.semantic_size, sync_size=h.sync_size, on_error=h.on_error,
                skip_silent=h.skip_silent, short_video=h.short_video, probe_media=h.probe_media,
                video_fps=h.video_fps, video_size=h.video_size, reference_image=h.reference_image,
                transform=self.transform if split in self.transform_splits else None,
                max_skip_fraction=h.max_skip_fraction, max_video_pad_fraction=h.max_video_pad_fraction,
                substitute=split == "train",
            )
            self.datasets[split].text_spec = self.text_spec
        return self.datasets[split]

    @property
    def media(self) -> MediaSpec:
        """The media spec every split decodes to (:class:`~avgen.data.spec.MediaSpec`)."""
        h = self.hparams
        return MediaSpec(h.duration, h.sample_rate, h.semantic_fps, h.sync_fps, h.semantic_size, h.sync_size,
                         h.video_fps, h.video_size)

    @property
    def predict_duration(self) -> float | None:
        return self._predict_duration

    @predict_duration.setter
    def predict_duration(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"predict_duration must be positive seconds, got {seconds}")
        self._predict_duration = None if seconds is None else float(seconds)
        self.datasets.pop("predict", None)  # rebuilt at the new duration

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in splits.get(stage, tuple(self.manifests)) if stage else tuple(self.manifests):
            if self.manifests[split] is not None:
                self.dataset(split)

    def _loader(self, split: str) -> DataLoader:
        options = dict(num_workers=self.num_workers, collate_fn=collate_skipping, persistent_workers=self.num_workers > 0)
        if split == "train":  # ordered by (seed, epoch), resumable mid-epoch (avgen.data.sampling)
            return train_loader(self, self.dataset(split), batch_size=self.batch_size, seed=self.seed,
                                shuffle=self.shuffle, **options)
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=False, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.manifests["val"] is not None else []  # [] disables validation

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def skip_summary(self) -> dict[str, dict[str, int]]:
        """Skipped rows per split: at setup, and while loading (distinct rows, this process only; the
        whole run's counts, worker processes included, are in :class:`avgen.data.report.DataReportCallback`)."""
        return {split: {"rows": len(ds), "setup_skips": len(ds.setup_skips), "runtime_skips": ds.runtime_skips,
                        "padded_videos": ds.padded_videos} for split, ds in self.datasets.items()}

    def teardown(self, stage: str | None = None) -> None:
        for split, counts in self.skip_summary().items():
            if counts["setup_skips"] or counts["runtime_skips"]:
                log.warning("%s manifest %s: %d rows skipped at setup, %d while loading (this process)",
                            split, self.manifests[split], counts["setup_skips"], counts["runtime_skips"])
