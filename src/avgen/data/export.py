"""Export ToyWorld to real files (mp4 + wav + manifest.jsonl) so the real-media path is exercised."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from avgen.data.batch import TEXT_FIELDS
from avgen.data.media import write_mp4, write_video_with_audio, write_wav
from avgen.data.toyworld import ToyWorld

log = logging.getLogger(__name__)

EXPORT_FPS = 25.0


def export_toyworld(
    n: int, output_dir: str | Path, split: str = "train", seed: int = 0, *, mux_audio: bool = False, **media_options: Any
) -> Path:
    """Write ``n`` ToyWorld samples of ``split`` to ``output_dir``; returns the manifest path.

    Per sample: ``<id>.wav`` (the mix), ``<id>.mp4`` (video at 25 fps, H.264 or MPEG-4, when the
    scenario has video) and ``<id>_ref.wav`` (reference audio, when present). ``manifest.jsonl``
    lists them with their texts, ``task``, ``split`` and the ground truth under ``meta``.
    ``media_options`` are :class:`~avgen.data.toyworld.ToyWorld` arguments (``duration``,
    ``sample_rate``, ``scenarios``, ``speech``) plus ``size`` (video side, default 64). The files
    carry one 25 fps video stream; readers decode it at whatever frame rates their model needs.
    ``mux_audio``: the mp4 also carries the mix as an AAC track (a playable clip with sound, written
    by :func:`~avgen.data.media.write_video_with_audio`; the wav stays the lossless reference).
    """
    if n < 1:
        raise ValueError(f"export_toyworld: n must be >= 1, got {n}")
    options = dict(media_options)
    size = int(options.pop("size", 64))
    unknown = set(options) - {"duration", "sample_rate", "scenarios", "speech"}
    if unknown:
        raise TypeError(f"export_toyworld: unknown media options {sorted(unknown)}; "
                        "use duration, sample_rate, scenarios, speech, size")
    world = ToyWorld(sync_fps=EXPORT_FPS, sync_size=size, semantic_size=size, seed=seed, **options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for index in range(n):
            sample = world.sample(index, split)
            row: dict[str, Any] = {"id": sample.id, "audio": f"{sample.id}.wav"}
            if sample.video_sync is not None and mux_audio:
                write_video_with_audio(out, sample.id, sample.video_sync, EXPORT_FPS, sample.audio, world.sample_rate)
                row["video"] = f"{sample.id}.mp4"
            else:
                write_wav(out / row["audio"], sample.audio, world.sample_rate)
            if sample.video_sync is not None and not mux_audio:  # rendered at 25 fps and ``size`` by construction
                row["video"] = f"{sample.id}.mp4"
                write_mp4(out / row["video"], sample.video_sync, EXPORT_FPS)
            if sample.reference_audio is not None:
                row["reference_audio"] = f"{sample.id}_ref.wav"
                write_wav(out / row["reference_audio"], sample.reference_audio, world.sample_rate)
            for name in TEXT_FIELDS:
                if getattr(sample, name):
                    row[name] = getattr(sample, name)
            row.update({"task": sample.task, "split": split, "start": 0.0, "sample_rate": world.sample_rate,
                        "meta": sample.meta})
            f.write(json.dumps(row) + "\n")
    log.info("exported %d ToyWorld %s samples to %s", n, split, out)
    return manifest
