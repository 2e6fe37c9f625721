"""Training data order that a resumed run continues exactly: epoch-seeded samplers and a loader that
remembers its place in the epoch.

Exact resume (``avgen fit --ckpt_path last`` giving the weights of an uninterrupted run) needs the
resumed run to see the same batches in the same order from the first step after the checkpoint.
Two things make that so:

* the order of an epoch is a pure function of (seed, epoch): :class:`EpochSampler` (one dataset;
  a :class:`~torch.utils.data.distributed.DistributedSampler` underneath, so under DDP each rank
  takes its share and Lightning leaves it in place) and
  :class:`~avgen.data.mixing.BalancedBatchSampler` (two datasets) draw a fresh permutation from a
  generator seeded with the epoch, never from a generator whose state depends on how many epochs
  this process has already run;
* :class:`ResumableDataLoader` counts the batches it has handed to the training loop in the current
  epoch and implements Lightning's stateful-loader protocol (``state_dict`` / ``load_state_dict``;
  Lightning 2.x saves it in the checkpoint's ``loops.fit_loop.state_dict.combined_loader``). On
  resume it tells its sampler to skip the batches already trained on, so the next batch is the
  first unseen one: no repeat, no gap, and nothing is decoded for the skipped batches.

The count is of batches the loader's iterator yielded. Lightning fetches batches of a loader with a
length one at a time (its prefetching is off when the length is known), so at every checkpoint that
count is the number of batches trained on in this epoch; DataLoader workers prefetch *indices*, which
are not counted.

Worker processes get base seeds from the loader's generator, re-seeded from (seed, epoch) at every
epoch start, so they do not depend on the global RNG either. Datasets should still draw per-sample
randomness from the sample's index (ToyWorld: (seed, split, index); AdverbAugmentation: (seed, sample
id)), not from a worker's global RNG: persistent workers keep their RNG across epochs, so a global
draw in a worker would differ between a resumed and an uninterrupted run.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Protocol

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from avgen.seeding import mixed_seed

log = logging.getLogger(__name__)

__all__ = ["EpochSampler", "ResumableDataLoader", "epoch_seed", "train_loader"]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed seed of (seed, epoch, stream), for torch generators."""
    return mixed_seed(seed, epoch, stream)


class SkipsBatches(Protocol):
    """A sampler (or batch sampler) that can leave out the first items of its next pass."""

    epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def skip_next(self, count: int) -> None: ...


class EpochSampler(DistributedSampler):
    """The indices of one rank, in an order that is a pure function of (seed, epoch); resumable.

    A :class:`~torch.utils.data.distributed.DistributedSampler` (``torch.randperm`` seeded with
    ``seed + epoch``; each rank takes every ``num_replicas``-th index of the padded order) that also
    works without a process group (``num_replicas=1``) and can skip the first indices of its next
    pass (:meth:`skip_next`, used by :class:`ResumableDataLoader` on resume). Lightning leaves a
    DistributedSampler in place under DDP, so the same sampler serves one device and many.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: a seeded permutation per epoch (else in order).
        seed: the permutation seed; ``set_epoch`` (Lightning calls it at every epoch start) selects the epoch.
        num_replicas, rank: data-parallel sharding (default: one process).
        drop_last: drop the tail that does not divide evenly across ranks (else it is padded by repetition).
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._skip = 0

    def skip_next(self, count: int) -> None:
        """Leave out the first ``count`` indices of the next pass only (the epoch's length is unchanged)."""
        self._skip = max(int(count), 0)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose place in the epoch is saved in checkpoints and restored on resume.

    Takes every :class:`~torch.utils.data.DataLoader` argument. Its sampler (``sampler=``, batched by
    ``batch_size``) or batch sampler (``batch_sampler=``) should be resumable (:class:`EpochSampler`,
    :class:`~avgen.data.mixing.BalancedBatchSampler`: ``epoch``, ``set_epoch`` and ``skip_next``).
    ``seed`` re-seeds the loader's generator at every pass from (seed, epoch), which gives worker
    processes their base seeds.

    ``state_dict()`` is ``{"epoch", "batches", "length"}``: the epoch and how many of its ``length``
    batches were handed out. ``load_state_dict`` makes the next pass start after them (the epoch's
    length stays ``len(loader)``, which Lightning counts against); a finished epoch resumes at the
    start of the next one.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self._position = 0  # batches handed out in the current pass (skipped ones included)
        self._resume_at = 0  # batches to skip at the start of the next pass (set by load_state_dict)

    def _ordering(self) -> SkipsBatches:
        """The object that orders the epoch: a custom batch sampler, else the index sampler."""
        if self.batch_sampler is not None and type(self.batch_sampler) is not BatchSampler:
            return self.batch_sampler  # type: ignore[return-value]
        return self.sampler  # type: ignore[return-value]

    def resumable(self) -> bool:
        """Whether the sampler can skip ahead (Lightning may rebuild a loader with its own sampler, e.g. for
        ``overfit_batches``; such a loader restarts its epoch on resume, with a warning)."""
        sampler = self._ordering()
        return all(callable(getattr(sampler, name, None)) for name in ("set_epoch", "skip_next"))

    @property
    def epoch(self) -> int:
        return int(getattr(self._ordering(), "epoch", 0))

    def __iter__(self) -> Iterator[Any]:
        start, self._resume_at = self._resume_at, 0
        resumable = self._ordering()
        if start:
            batched = resumable is self.sampler and self.batch_size is not None
            resumable.skip_next(start * self.batch_size if batched else start)
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        self._position = start
        for batch in super().__iter__():
            self._position += 1
            yield batch

    # -- Lightning's stateful-loader protocol --------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self._position, "length": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches, length = int(state["epoch"]), int(state["batches"]), int(state.get("length", len(self)))
        if length != len(self):
            log.warning("the checkpoint's training epoch had %d batches but this loader has %d (another dataset "
                        "size, batch size or number of devices?): resuming at the start of epoch %d, so this "
                        "resume is not exact", length, len(self), epoch)
            batches = 0
        if batches >= len(self):  # the epoch was finished: the next one starts from its beginning
            epoch, batches = epoch + 1, 0
        if not self.resumable():
            log.warning("the training sampler %s cannot skip ahead: resuming at the start of the epoch, so this "
                        "resume is not exact", type(self._ordering()).__name__)
            return
        self._ordering().set_epoch(epoch)
        self._resume_at = batches


def train_loader(
    datamodule: L.LightningDataModule,
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    **kwargs: Any,
) -> ResumableDataLoader:
    """The resumable training loader of ``dataset``: an :class:`EpochSampler` sharded over the trainer's
    ranks (when ``datamodule`` is attached to a trainer), batched by ``batch_size``."""
    trainer = getattr(datamodule, "trainer", None)
    replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed, num_replicas=replicas, rank=rank)
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, seed=seed, **kwargs)
