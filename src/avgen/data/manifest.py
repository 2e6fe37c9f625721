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


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Parse and validate a jsonl manifest (see the module docstring for the columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; pass the path of a .jsonl manifest")
    root = path.parent
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    unknown: set[str] = set()
    with path.open("r", encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise _manifest_error(path, n, f"malformed JSON ({e.msg} at column {e.colno})",
                                      f"write one JSON object per line, e.g. {EXAMPLE_ROW}") from None
            if not isinstance(obj, dict):
                raise _manifest_error(path, n, f"expected a JSON object, got {type(obj).__name__}",
                                      f"write one JSON object per line, e.g. {EXAMPLE_ROW}")
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


class ManifestDataset(Dataset):
    """Samples of one manifest (rows of one split). ``__getitem__`` returns ``None`` for a skipped sample."""

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
        video_fps: float | None = None,
        video_size: int | tuple[int, int] = 32,
        reference_image: bool = True,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} must be one of {ON_ERROR}")
        if short_video not in ("pad", "skip"):
            raise ValueError(f"short_video={short_video!r} must be 'pad' or 'skip'")
        self.manifest = Path(manifest)
        self.duration, self.sample_rate = float(duration), int(sample_rate)
        self.fps = (float(semantic_fps), float(sync_fps))
        self.sizes = (int(semantic_size), int(sync_size))
        self.on_error, self.skip_silent, self.short_video = on_error, skip_silent, short_video
        self.transform = transform  # Sample -> Sample after decoding (e.g. AdverbAugmentation)
        # Target video (Harmony): the row's video decoded once more at video_fps / video_size
        if video_fps is not None and video_fps <= 0:
            raise ValueError(f"video_fps must be positive (or None for no target video), got {video_fps}")
        self.video_fps = None if video_fps is None else float(video_fps)
        self.video_size = video_size if isinstance(video_size, int) else tuple(int(v) for v in video_size)
        self.reference_image = bool(reference_image)
        all_rows = read_manifest(self.manifest)
        # A row with a ``split`` column belongs only to that split; rows without one belong to all.
        rows = [r for r in all_rows if split is None or r.split is None or r.split == split]
        self.setup_skips: list[tuple[int, str, str]] = []  # (line, id, reason)
        self.runtime_skips = 0
        self.padded_videos = 0
        self.rows = [r for r in rows if self._usable(r, probe_media)]
        if self.setup_skips:
            log.warning("%s: skipped %d of %d rows at setup (on_error='skip')", self.manifest,
                        len(self.setup_skips), len(rows))
        if not self.rows:
            raise ValueError(
                f"{self.manifest}: no usable rows for split {split!r} ({len(all_rows)} rows, "
                f"{len(all_rows) - len(rows)} of other splits, {len(self.setup_skips)} skipped). Fix: check the "
                "rows' 'split' column and media paths (the warnings above name each skipped file)"
            )

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
            self.setup_skips.append((row.line, row.id, str(e)))
            log.warning("skipping %s line %d (id %r) [%d skipped so far]: %s", self.manifest, row.line, row.id,
                        len(self.setup_skips), e)
            return False
        return True

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample | None:
        row = self.rows[index]
        try:
            sample = self.load(row)
        except MediaError as e:
            if self.on_error == "raise":
                raise self._fail(row, e) from e
            self.runtime_skips += 1
            log.warning("skipping %s line %d (id %r) [%d skipped while loading in this process]: %s",
                        self.manifest, row.line, row.id, self.runtime_skips, e)
            return None
        return sample if self.transform is None else self.transform(sample)

    def load(self, row: ManifestRow) -> Sample:
        """Decode one row into a :class:`Sample` (raises :class:`MediaError`)."""
        clip = load_audio(row.audio, self.sample_rate, self.duration, row.start, row.sample_rate,
                          SILENCE_PEAK if self.skip_silent else None)
        meta = dict(row.meta)
        meta.update({"manifest": str(self.manifest), "line": row.line})
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
                if self.short_video == "skip":
                    raise MediaError(row.video, f"video ends at {video.source_seconds:.2f} s but its audio runs "
                                     f"to {audio_end:.2f} s", "trim the audio, or use short_video='pad'")
                self.padded_videos += 1
                log.info("%s: video shorter than audio, repeating its last frame (%s frames padded)",
                         row.video, video.padded_frames)
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


def collate_skipping(samples: list[Sample | None]) -> AVBatch | None:
    """:func:`collate` after dropping skipped (``None``) samples.

    Returns ``None`` only if every sample of the batch was skipped (logged); a LightningModule's step
    should then return ``None`` to skip the batch.
    """
    kept = [s for s in samples if s is not None]
    if len(kept) < len(samples):
        log.warning("dropped %d skipped sample(s) from a batch of %d", len(samples) - len(kept), len(samples))
    if not kept:
        log.warning("every sample of this batch was skipped; yielding None")
        return None
    return collate(kept)


class ManifestDataModule(L.LightningDataModule):
    """Real media from jsonl manifests, yielding :class:`~avgen.data.batch.AVBatch`.

    ``on_error``: ``"skip"`` (counted, logged, summarised at teardown) or ``"raise"``.
    ``short_video``: ``"pad"`` repeats a short video's last frame (recorded in ``meta``) or ``"skip"``.
    ``probe_media``: parse every file's header at setup (catches truncated/unreadable files before
    the first epoch); ``False`` only checks that files exist (faster for huge manifests).
    ``transform``: a ``Sample -> Sample`` callable (e.g. ``avgen.data.AdverbAugmentation``) applied to
    the splits in ``transform_splits`` (default: train only). ``predict_duration``: clip length of the
    predict split when it differs from ``duration`` (``avgen generate --total_duration``).
    ``video_fps`` / ``video_size`` (side or [height, width]): decode each row's video once more as the
    *target* video (Harmony) at this rate and size; ``reference_image``: its first frame. Off when
    ``video_fps`` is None.
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
        video_fps: Optional[float] = None,
        video_size: Union[int, tuple[int, int]] = 32,
        reference_image: bool = True,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} must be one of {ON_ERROR}")
        self.save_hyperparameters(ignore=["transform"])
        self.transform, self.transform_splits = transform, tuple(transform_splits)
        self._predict_duration = predict_duration
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest,
                          "predict": predict_manifest}
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle
        self.sample_rate, self.duration = int(sample_rate), float(duration)
        self.video_fps = None if video_fps is None else float(video_fps)
        self.video_size = video_size
        self.datasets: dict[str, ManifestDataset] = {}

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
            )
        return self.datasets[split]

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
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=self.shuffle and split == "train",
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.manifests["val"] is not None else []  # [] disables validation

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def skip_summary(self) -> dict[str, dict[str, int]]:
        """Skipped rows per split: at setup, and while loading (this process only)."""
        return {split: {"rows": len(ds), "setup_skips": len(ds.setup_skips), "runtime_skips": ds.runtime_skips,
                        "padded_videos": ds.padded_videos} for split, ds in self.datasets.items()}

    def teardown(self, stage: str | None = None) -> None:
        for split, counts in self.skip_summary().items():
            if counts["setup_skips"] or counts["runtime_skips"]:
                log.warning("%s manifest %s: %d rows skipped at setup, %d while loading (this process)",
                            split, self.manifests[split], counts["setup_skips"], counts["runtime_skips"])
