"""Training from precomputed shards with litdata: :class:`StreamingDataModule`.

The shards ``avgen precompute`` writes (:mod:`avgen.data.shards`) are read with litdata's own
engine (``StreamingDataset`` + ``StreamingDataLoader``; ``CombinedStreamingDataset`` to mix sets),
which Lightning maintains:

* **DDP / multi-node**: litdata splits the chunks over ranks and workers itself (every rank gets the
  same number of batches); Lightning adds no sampler to an ``IterableDataset``. Datasets are built in
  ``setup`` (after the process group exists).
* **Mid-epoch resume**: ``StreamingDataLoader`` is stateful; Lightning (>= 2.2) stores its
  ``state_dict`` in the checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores it on
  ``--ckpt_path``, so a resumed run continues with the next unseen sample.
* **Mixing by weight**: several train sets are drawn per sample with probabilities ``weights``
  (FoleyGenEx §4.2: VTA:TTA = 1:1), or in proportion to ``size x repeat`` (``repeats``: MMAudio's
  dataset repeat factors, e.g. VGGSound x 1, AudioCaps x 1, WavCaps x 1 with Clotho x 4); by
  default in proportion to size (a plain concatenation). FoleyGenEx's media path fixes the share in
  every batch (``BalancedBatchSampler``); here it holds in expectation (within sampling error).
* **Length bucketing** (AudioGen-Omni's variable-length clips): a set written with
  ``avgen precompute --bucket_seconds`` holds one sub-set per duration bucket; every batch is drawn
  from one bucket (litdata's ``batching_method="per_stream"``), so padding stays within a bucket.

Batches are the usual :class:`~avgen.data.batch.AVBatch` (no waveform; the codec posterior and the
frozen encoders' features instead), so every model trains from them unchanged: a model skips each
encoder whose features the batch carries and draws x1 from the stored posterior.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning as L

from avgen.data.batch import AVBatch, collate
from avgen.data.shards import bucket_dirs, read_set_info, record_to_sample, set_media
from avgen.data.spec import MediaSpec

log = logging.getLogger(__name__)

__all__ = ["StreamingDataModule", "collate_records", "mixing_weights"]


def collate_records(records: list[dict[str, Any]]) -> AVBatch:
    """litdata records -> :class:`AVBatch` (the ``collate_fn`` of every streaming loader)."""
    return collate([record_to_sample(r) for r in records])


def mixing_weights(sizes: Sequence[int], weights: Sequence[float] | None, repeats: Sequence[float] | None) -> list[float]:
    """Sampling probability of each set: ``weights`` (normalised), else size x repeat, else size."""
    if weights is not None and repeats is not None:
        raise ValueError("StreamingDataModule: give weights or repeats, not both")
    for name, values in (("weights", weights), ("repeats", repeats)):
        if values is not None:
            if len(values) != len(sizes):
                raise ValueError(f"StreamingDataModule: {len(sizes)} train sets but {len(values)} {name}; give one per set")
            if any(v < 0 for v in values) or not sum(values) > 0:
                raise ValueError(f"StreamingDataModule: {name} must be non-negative and not all zero, got {list(values)}")
    raw = list(weights) if weights is not None else [n * (1.0 if repeats is None else r)
                                                     for n, r in zip(sizes, repeats or [1.0] * len(sizes))]
    total = float(sum(raw))
    return [float(w) / total for w in raw]


class StreamingDataModule(L.LightningDataModule):
    """Train (and evaluate) from shard sets written by ``avgen precompute``.

    Args:
        train: one shard set folder (``<output_dir>/<split>`` of ``avgen precompute``) or a list of them.
        weights: sampling probability of each train set (normalised), e.g. ``[1, 1]`` for FoleyGenEx's
            VTA:TTA = 1:1.
        repeats: MMAudio-style repeat factors instead: a set is drawn in proportion to size x repeat.
        val, test: shard sets of the evaluation splits (None: no such loop).
        batch_size: samples per batch (per rank).
        num_workers: loader workers per rank (litdata splits chunks over them).
        shuffle: shuffle the training chunks and the samples in them (litdata, seeded).
        seed: seed of the shuffles and of the mixing draws.
        drop_last: drop the last partial batch (None: litdata's default: True under DDP).
        bucket_by_length: read a set's duration buckets (``--bucket_seconds``), one bucket per batch; a
            set without buckets is read whole.
        cache_dir, max_cache_size: litdata's local cache for remote sets (s3://, gs://, ...).
    """

    def __init__(
        self,
        train: Union[str, list[str]],
        weights: Optional[list[float]] = None,
        repeats: Optional[list[float]] = None,
        val: Optional[str] = None,
        test: Optional[str] = None,
        batch_size: int = 8,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: Optional[bool] = None,
        bucket_by_length: bool = True,
        cache_dir: Optional[str] = None,
        max_cache_size: str = "100GB",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_sets = [train] if isinstance(train, (str, Path)) else [str(t) for t in train]
        if not self.train_sets:
            raise ValueError("StreamingDataModule: give at least one train shard set")
        if weights is not None or repeats is not None:
            mixing_weights([1] * len(self.train_sets), weights, repeats)  # validates counts early
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self._train_dataset: Any = None

    # ---- media ------------------------------------------------------------------------------
    @property
    def media(self) -> MediaSpec:
        """The media spec the first train set was precomputed with (the CLI and models read it)."""
        try:
            return set_media(self.train_sets[0])
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e}. Commands that read media themselves (generate on a video) can take the media datamodule "
                "instead: --data configs/<paper>/media.yaml"
            ) from None

    sample_rate = property(lambda self: self.media.sample_rate)
    duration = property(lambda self: self.media.duration)
    semantic_fps = property(lambda self: self.media.semantic_fps)
    sync_fps = property(lambda self: self.media.sync_fps)
    semantic_size = property(lambda self: self.media.semantic_size)
    sync_size = property(lambda self: self.media.sync_size)
    video_fps = property(lambda self: self.media.video_fps)
    video_size = property(lambda self: self.media.video_size)

    # ---- datasets ---------------------------------------------------------------------------
    def _streaming(self, path: str, *, shuffle: bool) -> Any:
        from litdata import StreamingDataset

        h = self.hparams
        return StreamingDataset(path, shuffle=shuffle, seed=h.seed, drop_last=h.drop_last, cache_dir=h.cache_dir,
                                max_cache_size=h.max_cache_size)

    def _parts(self, path: str) -> list[str]:
        """The folders litdata reads for one set: its buckets (when bucketing) or the set itself."""
        read_set_info(path)  # a clear error for a folder that is not a shard set
        buckets = bucket_dirs(path) if self.hparams.bucket_by_length else []
        return buckets or [path]

    def train_dataset(self) -> Any:
        """The train ``StreamingDataset`` (one set) or ``CombinedStreamingDataset`` (several sets / buckets)."""
        from litdata import CombinedStreamingDataset

        h = self.hparams
        per_set = [[self._streaming(p, shuffle=h.shuffle) for p in self._parts(s)] for s in self.train_sets]
        sizes = [sum(len(d) for d in parts) for parts in per_set]
        for path, size in zip(self.train_sets, sizes):
            if size == 0:
                raise ValueError(f"train shard set {path} holds no clips; rerun `avgen precompute` (its report says why)")
        set_weights = mixing_weights(sizes, h.weights, h.repeats)
        datasets, weights = [], []
        for parts, size, w in zip(per_set, sizes, set_weights):
            for d in parts:  # a set's buckets share its weight by size
                datasets.append(d)
                weights.append(w * len(d) / size)
        bucketed = any(len(parts) > 1 for parts in per_set)
        if len(datasets) == 1:
            return datasets[0]
        return CombinedStreamingDataset(datasets, seed=h.seed, weights=weights, iterate_over_all=False,
                                        batching_method="per_stream" if bucketed else "stratified")

    def setup(self, stage: Optional[str] = None) -> None:
        for path in [*self.train_sets, self.hparams.val, self.hparams.test]:
            if path is not None:
                read_set_info(path)

    def _loader(self, dataset: Any) -> Any:
        from litdata import StreamingDataLoader

        return StreamingDataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                   collate_fn=collate_records, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> Any:
        if self._train_dataset is None:
            self._train_dataset = self.train_dataset()
        return self._loader(self._train_dataset)

    def _eval_loader(self, path: Optional[str]) -> Any:
        if path is None:
            return []  # [] disables the loop
        return self._loader(self._streaming(path, shuffle=False))

    def val_dataloader(self) -> Any:
        return self._eval_loader(self.hparams.val)

    def test_dataloader(self) -> Any:
        return self._eval_loader(self.hparams.test)
