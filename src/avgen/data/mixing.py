"""Batch composition over two datasets: FoleyGenEx's 1:1 VTA:TTA batches (§4.2 "Balanced sampling").

:class:`BalancedBatchSampler` draws every training batch as ``round(ratio * batch_size)`` indices of
the first dataset and the rest from the second, over the concatenation of the two. Each dataset is
walked through its own seeded permutation (re-drawn every epoch and whenever a smaller dataset runs
out), and an epoch lasts until the larger side has been seen once, so both datasets are covered
every epoch. :class:`BalancedDataModule` wraps any two LightningDataModules (ToyWorld, manifests, or
another BalancedDataModule) and is configurable from YAML by class_path nesting::

    data:
      class_path: avgen.data.BalancedDataModule
      init_args:
        batch_size: 8
        first: {class_path: avgen.data.ToyWorldDataModule, init_args: {scenarios: [vta]}}
        second: {class_path: avgen.data.ToyWorldDataModule, init_args: {scenarios: [tta], seed: 1}}

Validation/test/predict come from ``first`` (or ``second``, or both concatenated: ``eval_from``).
Under DDP each rank takes every ``world_size``-th batch itself, so the Trainer must not inject its
own sampler (``use_distributed_sampler: false``; a clear error says so otherwise). The training
loader is a :class:`~avgen.data.sampling.ResumableDataLoader`: a resumed run continues mid-epoch at
the first batch it has not trained on.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from avgen.data.composite import CompositeDataModule
from avgen.data.manifest import collate_skipping
from avgen.data.sampling import ResumableDataLoader

__all__ = ["BalancedBatchSampler", "BalancedDataModule"]

EVAL_FROM = ("first", "second", "both")


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of indices into ``ConcatDataset([a, b])`` with a fixed share of each dataset.

    Args:
        sizes: (len(a), len(b)).
        batch_size: indices per batch.
        ratio: share of the first dataset per batch; ``round(ratio * batch_size)`` indices from ``a``
            (FoleyGenEx: 0.5, strict 1:1). Both shares must be at least one.
        shuffle: seeded permutations (else in order), pure functions of (seed, epoch); the epoch is set
            by :meth:`set_epoch`.
        seed: base seed.
        num_replicas, rank: data-parallel sharding; rank r yields batches r, r + R, r + 2R, ...
            (the epoch length is rounded down to a multiple of R so every rank gets as many).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        ratio: float = 0.5,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if len(sizes) != 2 or min(sizes) <= 0:
            raise ValueError(f"BalancedBatchSampler needs two non-empty datasets, got sizes {list(sizes)}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}")
        first = int(round(ratio * batch_size))
        if first < 1 or first > batch_size - 1:
            raise ValueError(
                f"batch_size={batch_size} with ratio={ratio} leaves {first} of the first and "
                f"{batch_size - first} of the second dataset per batch; each needs at least one: raise batch_size"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside num_replicas {num_replicas}")
        self.sizes = (int(sizes[0]), int(sizes[1]))
        self.batch_size, self.ratio = int(batch_size), float(ratio)
        self.shares = (first, batch_size - first)
        self.shuffle, self.seed = shuffle, int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """A new pair of permutations (Lightning calls it at every epoch start, through :attr:`sampler`)."""
        self.epoch = int(epoch)

    @property
    def sampler(self) -> "BalancedBatchSampler":
        """Itself: Lightning sets the epoch of a batch sampler through ``batch_sampler.sampler.set_epoch``."""
        return self

    def skip_next(self, count: int) -> None:
        """Leave out the first ``count`` batches (of this rank) of the next pass only; used on resume."""
        self._skip = max(int(count), 0)

    def _total_batches(self) -> int:
        total = max(math.ceil(n / k) for n, k in zip(self.sizes, self.shares))
        return max(total // self.num_replicas, 1) * self.num_replicas

    def __len__(self) -> int:
        return self._total_batches() // self.num_replicas

    def _stream(self, which: int, generator: torch.Generator) -> Iterator[int]:
        """Endless indices of one dataset: successive permutations (or passes in order)."""
        size = self.sizes[which]
        while True:
            order = torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)
            yield from order.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        # Both permutations are pure functions of (seed, epoch), so a resumed run draws the same ones.
        generators = [torch.Generator().manual_seed(self.seed * 1_000_003 + 2 * self.epoch + i) for i in (0, 1)]
        streams = [self._stream(i, g) for i, g in enumerate(generators)]
        offset = self.sizes[0]
        skip, self._skip = self._skip, 0
        for b in range(self._total_batches()):
            first = [next(streams[0]) for _ in range(self.shares[0])]
            second = [offset + next(streams[1]) for _ in range(self.shares[1])]
            if b % self.num_replicas == self.rank:
                if skip:  # already trained on before the resume: drawn (the streams stay aligned), not yielded
                    skip -= 1
                    continue
                yield first + second


class BalancedDataModule(CompositeDataModule):
    """Two datamodules mixed at a fixed ratio in every training batch (FoleyGenEx 1:1 VTA:TTA).

    Args:
        first, second: LightningDataModules whose ``train_dataloader()`` datasets yield
            :class:`~avgen.data.batch.Sample` (ToyWorld, manifests, ...). Their own batch sizes are
            ignored for training.
        batch_size: samples per training batch (and per evaluation batch).
        ratio: share of ``first`` in each training batch.
        eval_from: where val/test/predict batches come from: ``"first"``, ``"second"`` or ``"both"``
            (the two splits concatenated, in order).
        num_workers: DataLoader workers.
        seed: seed of the batch sampler's permutations.
    """

    def __init__(
        self,
        first: L.LightningDataModule,
        second: L.LightningDataModule,
        batch_size: int = 8,
        ratio: float = 0.5,
        eval_from: str = "first",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if eval_from not in EVAL_FROM:
            raise ValueError(f"eval_from={eval_from!r} must be one of {EVAL_FROM}")
        BalancedBatchSampler((1, 1), batch_size, ratio)  # validates batch_size / ratio early
        self.first, self.second = first, second
        self.batch_size, self.ratio, self.eval_from = int(batch_size), float(ratio), eval_from
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.save_hyperparameters(ignore=["first", "second"])

    def primary_source(self) -> L.LightningDataModule:
        return self.first

    def sources(self) -> list[L.LightningDataModule]:
        return [self.first, self.second]

    def prepare_data(self) -> None:
        self.first.prepare_data()
        self.second.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.check_same_media({"first": self.first, "second": self.second})
        for dm in (self.first, self.second):
            if dm.trainer is None and self.trainer is not None:
                dm.trainer = self.trainer
            dm.setup(stage)

    @staticmethod
    def _dataset(loader: Any, who: str, split: str) -> Dataset:
        if not isinstance(loader, DataLoader):
            raise ValueError(f"BalancedDataModule: {who}.{split}_dataloader() returned {type(loader).__name__}, "
                             "expected one DataLoader over a map-style dataset of Samples")
        return loader.dataset

    def train_dataset(self) -> ConcatDataset:
        datasets = [self._dataset(dm.train_dataloader(), who, "train")
                    for dm, who in ((self.first, "first"), (self.second, "second"))]
        return ConcatDataset(datasets)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        replicas, rank = 1, 0
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            if trainer._accelerator_connector.use_distributed_sampler:
                raise ValueError(
                    "BalancedDataModule shards its balanced batches across ranks itself; set "
                    "--trainer.use_distributed_sampler=false (trainer: use_distributed_sampler: false)"
                )
            replicas, rank = trainer.world_size, trainer.global_rank
        sizes = [len(d) for d in dataset.datasets]
        sampler = BalancedBatchSampler(sizes, self.batch_size, self.ratio, shuffle=True, seed=self.seed,
                                       num_replicas=replicas, rank=rank)
        return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers, seed=self.seed,
                                   collate_fn=collate_skipping, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader | list:
        sources = {"first": [self.first], "second": [self.second], "both": [self.first, self.second]}[self.eval_from]
        datasets = []
        for dm in sources:
            loader = getattr(dm, f"{split}_dataloader")()
            if isinstance(loader, list) and not loader:
                continue  # that datamodule has no such split
            datasets.append(self._dataset(loader, "first" if dm is self.first else "second", split))
        if not datasets:
            return []
        dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_skipping)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        return self._eval_loader("predict")
