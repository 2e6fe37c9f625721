"""``avgen precompute``: a paper's frozen encoders and codec encoder, run once per clip, into litdata shards.

At paper scale (VGGSound, WavCaps, LRS3, CommonVoice) decoding media and running frozen CLIP-H,
Synchformer, T5 and the VAE encoder at every step wastes most of the accelerator; MMAudio and
stable-audio-tools precompute them. This command writes, per clip (:mod:`avgen.data.shards`):

* the codec's raw posterior (mean and std) so training still draws x1 = mean + std * eps every
  step as MMAudio does (``AudioCodec.encode_posterior``);
* what the model's frozen condition encoders give (``FlowMatchingModule.precompute_features``:
  FoleyGenEx CLIP frames + Synchformer + CLIP text; OmniSonic CLIP frames + FLAN-T5 of both captions;
  AudioGen-Omni CLIP frames + Synchformer + T5). Trainable encoders (OmniSonic's SpeechT5 + Durator)
  keep running during training from the stored transcript;
* metadata: id, duration, captions, transcript, lyrics, presence flags, ToyWorld ground truth.

Layout: ``<output_dir>/[<source>/]<split>/`` is one shard set (a litdata dataset); a composite
datamodule (FoleyGenEx's ``BalancedDataModule``) writes one set per source (``first``, ``second``).
Clips are written in parts of ``--clips_per_part``; a part is finished when its ``part-NNNNN.json``
exists and every chunk it lists is on disk, so a rerun skips finished parts and rebuilds a part
whose chunk was lost. Parts are encoded by ``litdata.optimize`` with ``--num_workers`` processes.

``--stats`` (after the shards exist, or alone on existing shards) computes per-channel latent
statistics (mean and std of the posterior means over every valid frame) into
``<output_dir>/latent_stats.pt``, which ``MMAudioCodec(latent_stats=...)`` reads as MMAudio's
``latent_mean`` / ``latent_std``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

__all__ = ["precompute", "latent_statistics", "main", "PrecomputeReport"]

PART_DIGITS = 5
# Process-wide state the litdata workers read (inherited by fork; rebuilt from the CLI args under spawn).
_WORKER: dict[str, Any] = {}


@dataclass
class PrecomputeReport:
    """What a precompute run did, per shard set and in total."""

    written: int = 0
    reused: int = 0  # clips of parts finished by an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id or index, reason)
    seconds: float = 0.0  # audio in the sets (written + reused)
    bytes: int = 0
    parts_written: int = 0
    parts_reused: int = 0
    sets: list[str] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        lines = [
            f"avgen precompute: {self.written} clips written ({self.parts_written} parts), {self.reused} reused from an "
            f"earlier run ({self.parts_reused} parts), {len(self.skipped)} skipped; "
            f"{self.seconds / 3600:.3f} h of audio, {self.bytes / 2**20:.1f} MiB in {len(self.sets)} shard set(s)",
            *(f"  {s}" for s in self.sets),
        ]
        for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {n}: {why}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- encoding
def litdata_optimize(**kwargs: Any) -> None:
    """litdata's ``optimize``, leaving the caller's Ctrl-C handler in place (litdata replaces it and keeps its own)."""
    from litdata import optimize

    previous = signal.getsignal(signal.SIGINT)
    try:
        optimize(**kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


def _load(dataset: Any, index: int) -> tuple[Any, str | None]:
    """(sample, None) or (None, why it was skipped)."""
    try:
        sample = dataset[index]
    except Exception as e:  # a dataset that raises on a bad clip (on_error="raise"): record and go on
        return None, f"{type(e).__name__}: {e}"
    if sample is None:
        bad = getattr(dataset, "bad", {})
        return None, bad.get(index, "the dataset could not load it (see its warnings)")
    return sample, None


def _group_key(sample: Any) -> tuple:
    """Samples that can be batched through the encoders without padding one another."""
    def shape(x: Any) -> tuple | None:
        return None if x is None else tuple(x.shape)
    return (shape(sample.audio), shape(sample.video_semantic), shape(sample.video_sync))


def encode_clips(model: Any, samples: list[Any]) -> Iterator[dict[str, Any]]:
    """Shard records of ``samples``: the codec posterior and the model's frozen features, batched by shape."""
    import torch

    from avgen.data.batch import collate
    from avgen.data.shards import sample_to_record

    groups: dict[tuple, list[Any]] = {}
    for s in samples:
        groups.setdefault(_group_key(s), []).append(s)
    records: dict[str, dict[str, Any]] = {}
    codec = model.codec
    for group in groups.values():
        batch = collate(group).to(model.device)
        with torch.no_grad(), torch.autocast(device_type=model.device.type, enabled=False):
            features = {k: v for k, v in model.precompute_features(batch).items()}
            if batch.audio is not None:
                mean, std = codec.encode_posterior(batch.audio.float())
                features["posterior_mean"], features["posterior_std"] = mean, std
                lengths = codec.latent_lengths(batch.audio_lengths).clamp(max=mean.shape[1])
        for i, sample in enumerate(group):
            own = {name: value[i] for name, value in features.items()}
            latent_length = int(lengths[i]) if batch.audio is not None else None
            if sample.audio is None:
                own.pop("posterior_mean", None), own.pop("posterior_std", None)
            records[sample.id] = sample_to_record(sample, own, latent_length)
    for s in samples:  # the order of the inputs
        yield records[s.id]


class _EncodePart:
    """litdata's ``fn``: a list of clip indices -> their records (skips go to a side file)."""

    def __init__(self, skip_file: str, build_args: list[str] | None, split: str, source: str | None) -> None:
        self.skip_file, self.build_args, self.split, self.source = skip_file, build_args, split, source

    def __call__(self, indices: list[int]) -> Iterator[dict[str, Any]]:
        if _WORKER.get("pid") != os.getpid():
            # A forked worker must not enter the parent's OpenMP thread pool (it would wait forever on
            # threads that were not forked); one thread per worker, as torch's DataLoader workers.
            import torch

            torch.set_num_threads(1)
            _WORKER["pid"] = os.getpid()
        if "model" not in _WORKER:  # a spawned worker: build model and data from the same arguments
            model, datamodule = build_from_args(self.build_args or [], device=os.environ.get("AVGEN_PRECOMPUTE_DEVICE"))
            _WORKER.update(model=model, datasets=_datasets(datamodule, [self.split]))
        dataset = _WORKER["datasets"][(self.source, self.split)]
        samples = []
        for index in indices:
            sample, why = _load(dataset, index)
            if sample is None:
                with open(self.skip_file, "a") as f:
                    f.write(json.dumps({"index": index, "reason": why}) + "\n")
            else:
                samples.append(sample)
        seconds = 0.0
        for record in encode_clips(_WORKER["model"], samples):
            seconds += max(int(record["audio_length"]), 0) / int(record["sample_rate"])
            yield record
        with open(self.skip_file.replace(".skipped.jsonl", ".seconds"), "a") as f:
            f.write(f"{seconds!r}\n")


# ---------------------------------------------------------------------------------------------- sets and parts
def _sources(datamodule: Any) -> dict[str | None, Any]:
    """{name: datamodule}: a BalancedDataModule's two sources by attribute name (their share of each batch
    becomes the streaming datamodule's mixing weights), else {None: the datamodule} (UniHAGen mixes its
    sources inside each sample, so its mixtures are precomputed as they are drawn)."""
    from avgen.data.mixing import BalancedDataModule

    if not isinstance(datamodule, BalancedDataModule):
        return {None: datamodule}
    named = {}
    for dm in datamodule.sources():
        name = next((k for k, v in vars(datamodule).items() if v is dm), f"source{len(named)}")
        named[name] = dm
    return named


def _datasets(datamodule: Any, splits: list[str]) -> dict[tuple[str | None, str], Any]:
    """{(source, split): map-style dataset of Samples} for every source and split the datamodule has."""
    from torch.utils.data import DataLoader

    out = {}
    for name, dm in _sources(datamodule).items():
        dm.setup("fit" if "train" in splits else None)
        for split in splits:
            loader = getattr(dm, f"{split}_dataloader")()
            if isinstance(loader, list) and not loader:
                continue  # this source has no such split
            if not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__getitem__"):
                raise ValueError(f"avgen precompute: {type(dm).__name__}.{split}_dataloader() is not a DataLoader over a "
                                 "map-style dataset of Samples; precompute its sources one by one with --data")
            dataset = loader.dataset
            if hasattr(dataset, "substitute"):
                dataset.substitute = False  # a clip that fails is reported, not replaced by another
            out[(name, split)] = dataset
    return out


def _part_complete(root: Path, part: int, indices: list[int]) -> dict[str, Any] | None:
    info_file = root / f"part-{part:0{PART_DIGITS}d}.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    if info["indices"] != [indices[0], indices[-1] + 1]:
        return None  # written with another --clips_per_part / --limit: rebuilt
    if all((root / c["filename"]).is_file() and (root / c["filename"]).stat().st_size == c["bytes"]
           for c in info["chunks"]):
        return info
    log.warning("%s: a chunk of part %d is missing or truncated; rebuilding the part", root, part)
    return None


def _write_part(root: Path, part: int, indices: list[int], *, batch_size: int, num_workers: int, chunk_bytes: str,
                build_args: list[str] | None, split: str, source: str | None, dataset: Any) -> dict[str, Any]:
    """Encode one part with ``litdata.optimize`` into a scratch folder, then move it into the set."""
    tag = f"part-{part:0{PART_DIGITS}d}"
    for stale in list(root.glob(f"{tag}-*")) + [root / f"{tag}.json"]:
        stale.unlink(missing_ok=True) if stale.is_file() else shutil.rmtree(stale, ignore_errors=True)
    scratch = root / f".{tag}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    skip_file = root / f".{tag}.skipped.jsonl"
    skip_file.unlink(missing_ok=True)
    (root / f".{tag}.seconds").unlink(missing_ok=True)
    inputs = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    litdata_optimize(fn=_EncodePart(str(skip_file), build_args, split, source), inputs=inputs,
                     output_dir=str(scratch), chunk_bytes=chunk_bytes, num_workers=min(num_workers, len(inputs)),
                     reorder_files=False, keep_data_ordered=True,
                     start_method="fork" if _WORKER.get("fork", True) else "spawn", verbose=False)
    skipped = []
    if skip_file.is_file():
        for line in skip_file.read_text().splitlines():
            entry = json.loads(line)
            rows = getattr(dataset, "rows", None)
            name = rows[entry["index"]].id if rows is not None else f"index {entry['index']}"
            skipped.append((name, entry["reason"]))
        skip_file.unlink()
    seconds_file = root / f".{tag}.seconds"
    seconds = sum(float(x) for x in seconds_file.read_text().split()) if seconds_file.is_file() else 0.0
    seconds_file.unlink(missing_ok=True)
    index_file = scratch / "index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {"chunks": [], "config": None}
    chunks = []
    for chunk in index["chunks"]:
        new_name = f"{tag}-{chunk['filename']}"
        os.replace(scratch / chunk["filename"], root / new_name)
        chunks.append(dict(chunk, filename=new_name, bytes=(root / new_name).stat().st_size))
    shutil.rmtree(scratch, ignore_errors=True)
    info = {"part": part, "clips": sum(c["chunk_size"] for c in chunks), "indices": [indices[0], indices[-1] + 1],
            "seconds": seconds, "skipped": skipped, "chunks": chunks, "config": index["config"]}
    (root / f"{tag}.json.tmp").write_text(json.dumps(info))
    os.replace(root / f"{tag}.json.tmp", root / f"{tag}.json")  # the part counts as finished only now
    return info


def _write_index(root: Path, parts: list[dict[str, Any]]) -> None:
    """litdata's ``index.json`` of the whole set: every part's chunks (parts share one sample layout)."""
    configs = [p["config"] for p in parts if p["config"] is not None]
    chunks = [{k: v for k, v in c.items() if k != "bytes"} for p in parts for c in p["chunks"]]
    if not configs:
        (root / "index.json").unlink(missing_ok=True)
        return
    index = {"chunks": chunks, "config": configs[0], "updated_at": str(time.time())}
    (root / "index.json.tmp").write_text(json.dumps(index))
    os.replace(root / "index.json.tmp", root / "index.json")


def _copy_record(item: tuple[str, int]) -> dict[str, Any]:
    from litdata import StreamingDataset

    root, index = item
    if _WORKER.get("bucket_source") != root:
        _WORKER.update(bucket_source=root, bucket_dataset=StreamingDataset(root))
    return _WORKER["bucket_dataset"][index]


def write_buckets(root: Path, bucket_seconds: list[float], chunk_bytes: str = "64MB") -> list[dict[str, Any]]:
    """Split a finished set into duration buckets (``bucket-K`` sub-sets, ``buckets.json``) for length bucketing.

    A clip goes to the first bucket whose upper bound (seconds) it does not exceed; longer clips to a last,
    open bucket. The whole set stays as it is (readable without bucketing), so its records are stored twice.
    """
    from litdata import StreamingDataset

    from avgen.data.shards import BUCKETS_FILE

    bounds = sorted(float(b) for b in bucket_seconds)
    listing = root / BUCKETS_FILE
    index = json.loads((root / "index.json").read_text()) if (root / "index.json").is_file() else None
    stamp = None if index is None else [c["filename"] for c in index["chunks"]]
    if listing.is_file():
        done = json.loads(listing.read_text())
        if done.get("bounds") == bounds and done.get("chunks") == stamp and all(
                (root / b["dir"] / "index.json").is_file() or b["clips"] == 0 for b in done["buckets"]):
            return done["buckets"]
    members: list[list[int]] = [[] for _ in range(len(bounds) + 1)]
    dataset = StreamingDataset(str(root)) if index is not None else []
    for i in range(len(dataset)):
        record = dataset[i]
        seconds = max(int(record["audio_length"]), 0) / int(record["sample_rate"])
        members[next((k for k, b in enumerate(bounds) if seconds <= b + 1e-9), len(bounds))].append(i)
    buckets = []
    info = (root / "precompute.json").read_text()
    for k, indices in enumerate(members):
        folder = root / f"bucket-{k}"
        shutil.rmtree(folder, ignore_errors=True)
        if indices:
            litdata_optimize(fn=_copy_record, inputs=[(str(root), i) for i in indices], output_dir=str(folder),
                             chunk_bytes=chunk_bytes, num_workers=1, reorder_files=False, keep_data_ordered=True,
                             start_method="fork", verbose=False)
            (folder / "precompute.json").write_text(info)
        upper = bounds[k] if k < len(bounds) else None
        buckets.append({"dir": folder.name, "max_seconds": upper, "clips": len(indices)})
    listing.write_text(json.dumps({"bounds": bounds, "chunks": stamp, "buckets": buckets}, indent=1))
    return buckets


def precompute(
    model: Any,
    datamodule: Any,
    output_dir: str | Path,
    *,
    splits: tuple[str, ...] = ("train",),
    batch_size: int = 8,
    clips_per_part: int = 1024,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
    limit: int | None = None,
    bucket_seconds: list[float] | None = None,
    build_args: list[str] | None = None,
    progress: bool = True,
) -> PrecomputeReport:
    """Write the shard sets of ``datamodule``'s ``splits`` under ``output_dir`` (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm

    from avgen.data.composite import media_option
    from avgen.data.spec import MediaSpec

    output_dir = Path(output_dir)
    model.eval()
    datasets = _datasets(datamodule, list(splits))
    if not datasets:
        raise ValueError(f"avgen precompute: the datamodule has none of the splits {list(splits)}")
    fork = model.device.type == "cpu"
    if not fork and build_args is None:
        raise ValueError("precompute on an accelerator runs its encoders in spawned litdata workers, which rebuild "
                         "the model from build_args (the CLI's --config/--data arguments); use `avgen precompute`")
    # Forked workers share the model built here; spawned ones (CUDA cannot be forked) build their own,
    # once per part: on an accelerator prefer large --clips_per_part.
    _WORKER.update(model=model, datasets=datasets, fork=fork, pid=os.getpid())
    report = PrecomputeReport()
    total = sum(min(len(d), limit or len(d)) for d in datasets.values())
    bar = tqdm(total=total, desc="precompute", unit="clip", disable=not progress)
    for (source, split), dataset in datasets.items():
        root = output_dir / source / split if source else output_dir / split
        root.mkdir(parents=True, exist_ok=True)
        sources = _sources(datamodule)
        media = MediaSpec(**{k: media_option(sources[source], k) for k in MediaSpec.fields()
                             if media_option(sources[source], k) is not None})
        (root / "precompute.json").write_text(json.dumps({
            "media": media.as_dict(), "model": type(model).__qualname__, "source": source, "split": split,
            "codec": type(model.codec).__qualname__, "latent_channels": model.codec.latent_channels,
            "hop_length": model.codec.hop_length, "posterior": getattr(model.codec, "posterior", "mean"),
        }, indent=1, default=list))
        count = min(len(dataset), limit or len(dataset))
        report.skipped += [(sid, f"at setup: {why}") for _, sid, why in getattr(dataset, "setup_skips", [])]
        parts = []
        for part, start in enumerate(range(0, count, clips_per_part)):
            indices = list(range(start, min(start + clips_per_part, count)))
            info = _part_complete(root, part, indices)
            if info is not None:
                report.reused += info["clips"]
                report.parts_reused += 1
            else:
                with torch.inference_mode(False):
                    info = _write_part(root, part, indices, batch_size=batch_size, num_workers=num_workers,
                                       chunk_bytes=chunk_bytes, build_args=build_args, split=split, source=source,
                                       dataset=dataset)
                report.written += info["clips"]
                report.parts_written += 1
            report.skipped += [tuple(s) for s in info["skipped"]]
            report.bytes += sum(c["bytes"] for c in info["chunks"])
            report.seconds += info["seconds"]
            parts.append(info)
            bar.update(len(indices))
        _write_index(root, parts)
        if bucket_seconds:
            write_buckets(root, bucket_seconds, chunk_bytes)
        report.sets.append(str(root))
    bar.close()
    return report


# ---------------------------------------------------------------------------------------------- statistics
def latent_statistics(sets: list[str | Path], output: str | Path | None = None) -> dict[str, Any]:
    """Per-channel mean / std of the stored posterior means over every valid frame of ``sets``.

    Written to ``output`` (``torch.save`` of ``{"latent_mean", "latent_std", "frames"}``), the file
    ``MMAudioCodec(latent_stats=...)`` reads. Accumulated in float64 (sums of x and x^2).
    """
    import torch
    from litdata import StreamingDataset

    total = sq = None
    frames = 0
    for path in sets:
        dataset = StreamingDataset(str(path))
        for i in range(len(dataset)):
            record = dataset[i]
            mean = record["posterior_mean"]
            if mean.shape[0] == 0:
                continue
            valid = int(record["latent_length"]) if int(record["latent_length"]) >= 0 else mean.shape[0]
            x = mean[:valid].double()
            total = x.sum(0) if total is None else total + x.sum(0)
            sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
            frames += x.shape[0]
    if frames == 0:
        raise ValueError(f"no clip with a stored posterior in {[str(s) for s in sets]}; run `avgen precompute` first")
    mu = total / frames
    std = (sq / frames - mu * mu).clamp(min=0).sqrt()
    stats = {"latent_mean": mu.float(), "latent_std": std.float().clamp(min=1e-6), "frames": frames}
    if output is not None:
        torch.save(stats, output)
    return stats


def _shard_sets(output_dir: Path) -> list[Path]:
    """Train sets under ``output_dir`` (folders holding an index.json whose split is train)."""
    found = []
    for info in sorted(output_dir.rglob("precompute.json")):
        if json.loads(info.read_text()).get("split") == "train" and (info.parent / "index.json").is_file():
            found.append(info.parent)
    return found


# ---------------------------------------------------------------------------------------------- CLI
def build_from_args(args: list[str], device: str | None = None) -> tuple[Any, Any]:
    """The configured model (on ``device``) and datamodule, as ``avgen fit`` would build them."""
    from avgen.cli.lightning import run_cli

    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads these args only (not precompute's own)
    try:
        cli = run_cli(list(args), run=False)
    finally:
        sys.argv = argv
    model = cli.model
    if device:
        model = model.to(device)
    return model, cli.datamodule


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="avgen precompute",
        description="Run a config's frozen encoders and codec encoder once per clip and write litdata shards "
        "that avgen.data.StreamingDataModule trains from (README: Training at scale). A rerun skips finished parts.",
    )
    parser.add_argument("--config", help="the model config (configs/<paper>/<name>.yaml); its datamodule unless --data")
    parser.add_argument("--data", help="a datamodule config file (class_path + init_args) to precompute instead")
    parser.add_argument("--output_dir", required=True, help="where the shard sets go (<output_dir>/[<source>/]<split>)")
    parser.add_argument("--splits", default="train", help="comma-separated splits (default: train), e.g. train,val")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per encoder batch (default 8)")
    parser.add_argument("--clips_per_part", type=int, default=1024,
                        help="clips per resumable part (a rerun skips finished parts; default 1024). On a GPU each "
                        "part's workers load the encoders once: use larger parts, e.g. 8192")
    parser.add_argument("--num_workers", type=int, default=1, help="litdata worker processes per part (default 1)")
    parser.add_argument("--chunk_bytes", default="64MB", help="litdata chunk size (default 64MB)")
    parser.add_argument("--device", default=None, help="device of the encoders, e.g. cuda (default: cpu)")
    parser.add_argument("--bucket_seconds", default=None,
                        help="comma-separated duration bounds, e.g. 2.5,5,7.5,10: also write one sub-set per duration "
                        "bucket for StreamingDataModule(bucket_by_length=true) (AudioGen-Omni's variable lengths)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips of each split (a trial run)")
    parser.add_argument("--stats", action="store_true",
                        help="also write <output_dir>/latent_stats.pt: per-channel latent mean/std of the train sets "
                        "(for MMAudioCodec latent_stats); alone (no --config) on existing shards")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    ns, extra = parser.parse_known_args(argv)
    output_dir = Path(ns.output_dir)
    if ns.config is None and not ns.stats:
        parser.error("give --config (and optionally --data), or --stats alone to compute statistics of existing shards")
    if ns.config is not None:
        build_args = ["--config", ns.config, *([f"--data={ns.data}"] if ns.data else []), *extra]
        if ns.device:
            os.environ["AVGEN_PRECOMPUTE_DEVICE"] = ns.device
        model, datamodule = build_from_args(build_args, device=ns.device)
        report = precompute(model, datamodule, output_dir, splits=tuple(s for s in ns.splits.split(",") if s),
                            batch_size=ns.batch_size, clips_per_part=ns.clips_per_part, num_workers=ns.num_workers,
                            chunk_bytes=ns.chunk_bytes, limit=ns.limit, build_args=build_args,
                            bucket_seconds=[float(b) for b in ns.bucket_seconds.split(",")] if ns.bucket_seconds else None,
                            progress=not ns.no_progress)
        print(report.summary())
    elif extra:
        parser.error(f"unrecognised arguments {extra}")
    if ns.stats:
        sets = _shard_sets(output_dir)
        if not sets:
            raise SystemExit(f"avgen precompute --stats: no train shard set under {output_dir}; run avgen precompute first")
        stats = latent_statistics(sets, output_dir / "latent_stats.pt")
        print(f"latent statistics of {stats['frames']} frames in {len(sets)} set(s) -> {output_dir / 'latent_stats.pt'} "
              f"(set model.init_args.codec.init_args.latent_stats to it)")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
