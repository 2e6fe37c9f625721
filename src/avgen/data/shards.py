"""Precomputed feature shards: the record one clip becomes, and back to a :class:`Sample`.

``avgen precompute`` runs a paper's frozen encoders and its codec encoder once per clip and writes
the outputs with litdata (``litdata.optimize``); :class:`~avgen.data.streaming.StreamingDataModule`
reads them back with ``litdata.StreamingDataset``. Every record has the same keys (litdata needs a
fixed sample layout), so an absent tensor is stored as an empty one (first dimension 0) and comes
back as ``None``.

A shard set is a folder with litdata's ``index.json`` (the union of its parts), one
``part-NNNNN.json`` per finished part (its chunk files, clips, skips, hours of audio, bytes: the unit a
rerun skips) and ``precompute.json`` (the media spec, the model and the features it holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avgen.data.batch import TEXT_FIELDS, Sample
from avgen.data.spec import MediaSpec

__all__ = [
    "SHARD_TENSOR_FIELDS", "sample_to_record", "record_to_sample", "read_set_info", "set_media", "bucket_dirs",
]

# Tensor fields a record may carry (Sample attributes); absent ones are stored empty.
SHARD_TENSOR_FIELDS: tuple[str, ...] = (
    "posterior_mean", "posterior_std",  # raw codec posterior (T, C)
    "semantic_features", "sync_features",  # frozen video encoders (F, D), (T_sync, D)
    "caption_features", "caption_mask", "offscreen_caption_features", "offscreen_caption_mask",  # frozen text encoders
    "reference_audio",  # kept as a waveform: FoleyGenEx encodes it online for its tasks
)
INFO_FILE = "precompute.json"
BUCKETS_FILE = "buckets.json"


def _empty_like_field(name: str) -> Tensor:
    """An absent field: empty, with the field's rank (litdata fixes each leaf's serializer from the first
    record it writes, and a 1-D tensor gets a header-less one that would flatten later 2-D tensors)."""
    if name.endswith("_mask"):
        return torch.zeros(0, dtype=torch.bool)
    return torch.zeros(0) if name == "reference_audio" else torch.zeros(0, 0)


def sample_to_record(sample: Sample, features: dict[str, Tensor], latent_length: int | None = None) -> dict[str, Any]:
    """One clip's shard record: metadata, texts and every tensor of :data:`SHARD_TENSOR_FIELDS`.

    ``features`` holds this clip's encoder outputs (no batch dimension), keyed by Sample field;
    ``latent_length`` the valid frames of its posterior (the clip may be padded to the duration).
    """
    unknown = set(features) - set(SHARD_TENSOR_FIELDS)
    if unknown:
        raise ValueError(f"precomputed features {sorted(unknown)} have no shard field; known: {SHARD_TENSOR_FIELDS}")
    audio_length = -1
    if sample.audio is not None:
        audio_length = int(sample.audio_length if sample.audio_length is not None else sample.audio.shape[0])
    record: dict[str, Any] = {
        "id": str(sample.id),
        "sample_rate": int(sample.sample_rate),
        "task": str(sample.task or ""),
        "seconds_start": float(sample.seconds_start),
        "seconds_total": float(sample.seconds_total),
        "audio_length": audio_length,
        "latent_length": -1 if latent_length is None else int(latent_length),
        "meta": json.dumps(sample.meta, default=str),
    }
    for name in TEXT_FIELDS:
        record[name] = getattr(sample, name) or ""
    for name in SHARD_TENSOR_FIELDS:
        value = features.get(name, getattr(sample, name, None))
        empty = _empty_like_field(name)
        if value is not None and value.dim() != empty.dim():
            raise ValueError(f"clip {sample.id!r}: {name} has shape {tuple(value.shape)}, expected {empty.dim()} dims")
        record[name] = empty if value is None else value.detach().cpu().contiguous()
    return record


def record_to_sample(record: dict[str, Any]) -> Sample:
    """A shard record -> :class:`Sample` (empty tensors become ``None``; texts ``""`` become ``None``)."""
    tensors = {}
    for name in SHARD_TENSOR_FIELDS:
        value = record.get(name)
        tensors[name] = None if value is None or value.shape[0] == 0 else value
    audio_length = int(record["audio_length"])
    latent_length = int(record["latent_length"])
    return Sample(
        id=record["id"],
        sample_rate=int(record["sample_rate"]),
        audio_length=audio_length if audio_length >= 0 else None,
        latent_length=latent_length if latent_length >= 0 else None,
        task=record["task"],
        seconds_start=float(record["seconds_start"]),
        seconds_total=float(record["seconds_total"]),
        meta=json.loads(record["meta"]),
        **{name: record[name] or None for name in TEXT_FIELDS},
        **tensors,
    )


def read_set_info(path: str | Path) -> dict[str, Any]:
    """The ``precompute.json`` of a shard set (or of its first bucket), with a clear error if it is none."""
    path = Path(path)
    for candidate in (path / INFO_FILE, *(Path(b) / INFO_FILE for b in bucket_dirs(path)[:1])):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(
        f"{path} is not a shard set written by `avgen precompute` (no {INFO_FILE}); run "
        f"`avgen precompute --config <config> --output_dir <dir>` and point the datamodule at <dir>/<split>"
    )


def set_media(path: str | Path) -> MediaSpec:
    """The :class:`MediaSpec` the clips of a shard set were decoded with."""
    return MediaSpec(**read_set_info(path)["media"])


def bucket_dirs(path: str | Path) -> list[str]:
    """The length-bucket sub-sets of a shard set (``--bucket_seconds``), or [] when it has none."""
    path = Path(path)
    listing = path / BUCKETS_FILE
    if not listing.is_file():
        return []
    return [str(path / b["dir"]) for b in json.loads(listing.read_text())["buckets"] if b["clips"] > 0]
