"""The registry of evaluation back-ends and metrics that ``avgen compare`` / ``avgen evaluate`` run.

A metric is a column of the results table: a :class:`MetricSpec` with its direction, the back-end it
needs and a ``score`` function that turns one model's generated set (a :class:`ScoreContext`) into a
number. A back-end is a :class:`BackendSpec`: how to build it from the value of its ``--<name>``
flag (weights path or hub name) - or ``BackendUnavailable`` with the reason and the fix, which
compare reports as "skipped" (never a number).

Modules register at import (``register_backend`` / ``register_metric`` at module level); the
built-in ones are listed in :data:`BUILTIN_METRIC_MODULES` and imported by :func:`load_builtin`. A
user's own metric module registers the same way and is imported before calling compare::

    from avgen.eval.registry import MetricSpec, register_metric

    def loudness(ctx):
        return float(np.mean([ctx.audio("generated", i)[0].square().mean().sqrt() for i in ctx.ids]))

    register_metric(MetricSpec("rms", True, "mean RMS of the generated audio", None, loudness))

Everything a score function reads goes through the context, which caches per model under
``<output_dir>/models/<name>/embeddings`` (and the reference set under ``reference/embeddings``), so a
rerun computes only what is missing.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["BackendSpec", "MetricSpec", "ScoreContext", "register_backend", "register_metric", "BACKENDS", "METRICS",
           "BUILTIN_METRIC_MODULES", "load_builtin", "build_backend", "read_video_frames"]

Which = Literal["generated", "reference"]


@dataclass(frozen=True)
class BackendSpec:
    """An embedding / classifier / ASR back-end: ``build(flag value or None)`` -> the back-end object.

    ``flag_help``: help of the ``--<name>`` flag of compare/evaluate that gives the weights; ``None``
    for a weight-free back-end (no flag)."""

    name: str
    build: Callable[[str | None], Any]
    flag_help: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A results column. ``score(ctx)`` -> float (NaN when there is nothing to score)."""

    name: str
    higher_is_better: bool
    description: str
    backend: str | None
    score: Callable[["ScoreContext"], float]
    needs_video: bool = False  # scored only on samples with a video that goes with the generated audio
    needs_generated_video: bool = False  # scored only on videos the model generated (joint audio-video models)
    extra_backends: tuple[str, ...] = ()  # further back-ends it reads from ``ctx.backends`` (e.g. "whisper" transcripts)


BACKENDS: dict[str, BackendSpec] = {}
METRICS: dict[str, MetricSpec] = {}

# Modules whose import registers the built-in back-ends and metrics (in the order of the table's columns).
BUILTIN_METRIC_MODULES: tuple[str, ...] = (
    "avgen.eval.scores",
    "avgen.eval.passt",
    "avgen.eval.vggish",
    "avgen.eval.crepe",
    "avgen.eval.phonemes",
    "avgen.eval.speaker",
    "avgen.eval.syncnet",
    "avgen.eval.synchformer",
    "avgen.eval.imagebind",
    "avgen.eval.video",
)


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add (or replace, by name) a back-end."""
    BACKENDS[spec.name] = spec
    return spec


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add (or replace, by name) a metric."""
    METRICS[spec.name] = spec
    return spec


def load_builtin() -> dict[str, MetricSpec]:
    """Import the built-in metric modules (idempotent); returns :data:`METRICS`."""
    for module in BUILTIN_METRIC_MODULES:
        importlib.import_module(module)
    # Columns in the order of BUILTIN_METRIC_MODULES (a module may be imported earlier by another), others after.
    rank = {module: n for n, module in enumerate(BUILTIN_METRIC_MODULES)}
    ordered = sorted(METRICS.values(), key=lambda m: rank.get(getattr(m.score, "__module__", ""), len(rank)))
    METRICS.clear()
    METRICS.update((m.name, m) for m in ordered)
    return METRICS


def build_backend(name: str, value: str | None = None) -> Any:
    """The back-end ``name`` built from its flag's value; raises ``BackendUnavailable`` when it cannot run."""
    load_builtin()
    if name not in BACKENDS:
        raise ValueError(f"unknown evaluation back-end {name!r}; registered: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name].build(value)


def read_audio(path: Path) -> tuple[Tensor, int]:
    """Mono float32 audio of a wav written by compare/evaluate."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(audio.mean(axis=1)), int(rate)


def read_video_frames(path: Path) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 frames of a video file and its frame rate (PyAV)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames or fps <= 0:
        raise ValueError(f"{path}: no decodable frames or no frame rate")
    return np.stack(frames), fps


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (a temporary file replaced into place)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)  # atomic: an interruption leaves the previous file


@dataclass
class ScoreContext:
    """One model's generated set as the metrics see it (built by compare / evaluate).

    ``generated`` / ``reference``: wav paths by sample id (``reference``: the ids with ground-truth
    audio); ``videos``: per id the video the generated audio goes with - the model's own generated
    video (joint audio-video models) or else the input video of the sample; ``reference_videos``:
    the sample's video; ``generated_videos``: only videos the model generated. ``memo`` is shared by the metrics of one model (a pair computed once)."""

    ids: list[str]
    samples: dict[str, dict]
    generated: dict[str, Path]
    reference: dict[str, Path]
    cache_dir: Path  # this model's cache (embeddings/, ...)
    reference_cache_dir: Path  # the reference set's cache
    videos: dict[str, Path] = field(default_factory=dict)
    generated_videos: dict[str, Path] = field(default_factory=dict)
    reference_videos: dict[str, Path] = field(default_factory=dict)
    backends: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)
    backend: Any = None  # the back-end of the metric being scored (set by score_all)

    @property
    def paired(self) -> list[str]:
        """Generated ids that also have ground-truth audio."""
        return [i for i in self.ids if i in self.reference]

    def _paths(self, which: Which) -> dict[str, Path]:
        if which not in ("generated", "reference"):
            raise ValueError(f"which must be 'generated' or 'reference', got {which!r}")
        return self.generated if which == "generated" else self.reference

    def _cache(self, which: Which, name: str) -> Path:
        return (self.cache_dir if which == "generated" else self.reference_cache_dir) / "embeddings" / name

    def audio(self, which: Which, sample_id: str) -> tuple[Tensor, int]:
        """(S,) float32 mono audio and its rate."""
        return read_audio(self._paths(which)[sample_id])

    def video(self, sample_id: str) -> tuple[np.ndarray, float] | None:
        """(T, H, W, 3) uint8 frames + fps of the video that goes with the generated audio, or None."""
        path = self.videos.get(sample_id)
        return read_video_frames(path) if path is not None else None

    def generated_video(self, sample_id: str) -> tuple[np.ndarray, float] | None:
        """The model's own generated video (joint audio-video models), or None."""
        path = self.generated_videos.get(sample_id)
        return read_video_frames(path) if path is not None else None

    def reference_video(self, sample_id: str) -> tuple[np.ndarray, float] | None:
        path = self.reference_videos.get(sample_id)
        return read_video_frames(path) if path is not None else None

    def embeddings(self, which: Which, ids: list[str], kind: str = "embed", batch_size: int = 8) -> dict[str, np.ndarray]:
        """{id: ``getattr(backend, kind)(waveforms, rate)`` row} for the given ids, cached per back-end and kind."""
        backend = self.backend
        paths = self._paths(which)
        cache = self._cache(which, f"{backend.name}{'' if kind == 'embed' else '-' + kind}.npz")
        stored: dict[str, np.ndarray] = dict(np.load(cache)) if cache.is_file() else {}
        missing = [i for i in ids if i not in stored]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            loaded = [read_audio(paths[i]) for i in chunk]
            for rate in {r for _, r in loaded}:
                group = [(i, w) for i, (w, r) in zip(chunk, loaded) if r == rate]
                rows = getattr(backend, kind)([w for _, w in group], rate)
                rows = rows.cpu().numpy() if isinstance(rows, Tensor) else rows
                stored.update({i: np.asarray(e) for (i, _), e in zip(group, rows)})
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **stored)
        return {i: stored[i] for i in ids}

    def cached(self, which: Which, key: str, ids: list[str], compute: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
        """{id: ``compute(id)``} for any per-sample array (frames of embeddings, offset logits, f0 tracks),
        cached under ``key`` (use the back-end's name in it)."""
        cache = self._cache(which, f"{key}.npz")
        stored: dict[str, np.ndarray] = dict(np.load(cache)) if cache.is_file() else {}
        missing = [i for i in ids if i not in stored]
        for n, sample_id in enumerate(missing):
            stored[sample_id] = np.asarray(compute(sample_id))
            if n % 8 == 7 or n == len(missing) - 1:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, **stored)
        return {i: stored[i] for i in ids}

    def transcripts(self, ids: list[str], batch_size: int = 8) -> dict[str, str]:
        """{id: ASR transcript of the generated audio} with the ``whisper`` back-end, cached."""
        backend = self.backends["whisper"]
        cache = self._cache("generated", f"{backend.name}-text.json")
        stored: dict[str, str] = json.loads(cache.read_text()) if cache.is_file() else {}
        missing = [i for i in ids if i not in stored]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            loaded = [read_audio(self.generated[i]) for i in chunk]
            for rate in {r for _, r in loaded}:
                group = [(i, w) for i, (w, r) in zip(chunk, loaded) if r == rate]
                stored.update(zip([i for i, _ in group], backend.transcribe([w for _, w in group], rate)))
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, stored)
        return {i: stored[i] for i in ids}


def forget(cache_dir: Path, ids: list[str]) -> None:
    """Drop cached per-sample values of ``ids`` (their audio/video is being regenerated)."""
    for cache in (cache_dir / "embeddings").glob("*.npz"):
        stored = dict(np.load(cache))
        if set(ids) & set(stored):
            np.savez(cache, **{k: v for k, v in stored.items() if k not in ids})
    for cache in (cache_dir / "embeddings").glob("*.json"):
        stored = json.loads(cache.read_text())
        if set(ids) & set(stored):
            write_json(cache, {k: v for k, v in stored.items() if k not in ids})


def score_all(ctx: ScoreContext, metrics: list[str]) -> dict[str, float]:
    """{metric: score} of one model; a metric that needs video is NaN where no sample has one."""
    scores: dict[str, float] = {}
    for name in metrics:
        spec = METRICS[name]
        ctx.backend = ctx.backends.get(spec.backend) if spec.backend else None
        if (spec.needs_video and not any(i in ctx.videos for i in ctx.ids)) or (
                spec.needs_generated_video and not ctx.generated_videos):
            scores[name] = float("nan")
            continue
        scores[name] = float(spec.score(ctx))
    ctx.backend = None
    return scores
