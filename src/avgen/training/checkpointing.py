"""Checkpoints that survive interruptions: a final save, a save on Ctrl-C / SIGTERM, atomic writes,
and ``--ckpt_path last`` resolved across runs.

Lightning's ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` saves every N steps, but not
at the end of fit when N does not divide ``max_steps`` (``last.ckpt`` then silently holds an earlier
step) and not when the run is interrupted. :class:`ResumableCheckpoints` closes both gaps by writing
``last.ckpt`` into the directory of the first ``ModelCheckpoint`` with ``save_last``:

* at the end of fit, unless that step is already saved;
* after the training step during which SIGINT (Ctrl-C) arrived, then it stops the run cleanly (a
  second Ctrl-C interrupts at once, as usual);
* when Lightning stops on SIGTERM (it raises ``SIGTERMException`` between steps, e.g. a cluster's
  pre-emption notice).

Every checkpoint the trainer writes goes through :class:`AtomicCheckpointIO`: to a temporary file in
the same directory, then renamed over the target, so a kill during a save leaves the previous
checkpoint intact instead of a truncated one.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class AtomicCheckpointIO(CheckpointIO):
    """Wraps a trainer's checkpoint IO so that every save is atomic (temporary file + rename)."""

    def __init__(self, inner: CheckpointIO) -> None:
        self.inner = inner

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            self.inner.save_checkpoint(checkpoint, partial, storage_options=storage_options)
            os.replace(partial, target)  # atomic on POSIX and Windows within one file system
        finally:
            if partial.exists():
                partial.unlink()

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None, **kwargs: Any) -> dict[str, Any]:
        return self.inner.load_checkpoint(path, map_location=map_location, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


class ResumableCheckpoints(L.Callback):
    """Save ``last.ckpt`` at the end of fit and on SIGINT / SIGTERM; make every checkpoint write atomic.

    Args:
        on_train_end: write ``last.ckpt`` at the final step when the periodic saves missed it.
        on_signal: write ``last.ckpt`` when the run is interrupted by SIGINT or SIGTERM.
        atomic: route the trainer's checkpoint writes through :class:`AtomicCheckpointIO`.
    """

    def __init__(self, on_train_end: bool = True, on_signal: bool = True, atomic: bool = True) -> None:
        super().__init__()
        self.save_at_end, self.save_on_signal, self.atomic = bool(on_train_end), bool(on_signal), bool(atomic)
        self._interrupted = False
        self._previous_handler: Any = None
        self._saved_step = -1

    # -- where --------------------------------------------------------------------------------
    @staticmethod
    def owner(trainer: L.Trainer) -> ModelCheckpoint | None:
        """The first ``ModelCheckpoint`` with ``save_last`` (its ``dirpath`` receives ``last.ckpt``)."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                return callback
        return None

    @classmethod
    def last_path(cls, trainer: L.Trainer) -> Path | None:
        """``<dirpath>/last.ckpt`` of :meth:`owner` (None without one)."""
        callback = cls.owner(trainer)
        if callback is None:
            return None
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"

    def save_last(self, trainer: L.Trainer, why: str) -> Path | None:
        path, callback = self.last_path(trainer), self.owner(trainer)
        if path is None or callback is None or trainer.global_step == self._saved_step:
            return path
        trainer.save_checkpoint(str(path), weights_only=False)  # the full training state, for resuming
        self._saved_step = trainer.global_step
        # ModelCheckpoint's own later saves of last.ckpt then overwrite this file instead of adding last-v1.ckpt,
        # and it knows last.ckpt is written: its on_train_end would otherwise rewrite it after Lightning has
        # marked a cut-short epoch completed (the state a resume must not see, see on_train_batch_end).
        callback.last_model_path = str(path)
        if hasattr(callback, "_last_checkpoint_saved"):
            callback._last_checkpoint_saved = str(path)
        log.warning("%s: saved %s at step %d (resume with --ckpt_path last)", why, path, trainer.global_step)
        return path

    # -- hooks --------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.atomic and not isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            trainer.strategy.checkpoint_io = AtomicCheckpointIO(trainer.strategy.checkpoint_io)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._interrupted, self._saved_step = False, -1
        if self.save_on_signal:
            try:
                self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread (e.g. a notebook's worker thread): leave Ctrl-C alone
                self._previous_handler = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupted = True
        log.warning("Ctrl-C: saving a checkpoint after this step and stopping (press Ctrl-C again to abort now)")
        signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self._interrupted:
            self.save_last(trainer, "interrupted (SIGINT)")
            trainer.should_stop = True
        elif self.save_at_end and 0 < trainer.max_steps <= trainer.global_step:
            # the last step: save here, where a periodic save would, not in on_train_end, by when Lightning has
            # marked a cut-short epoch completed (a resume with a larger max_steps would skip its other batches)
            self.save_last(trainer, "end of fit")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()
        if self.save_at_end and not self._interrupted:
            self.save_last(trainer, "end of fit")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if self.save_on_signal and isinstance(exception, SIGTERMException):  # raised between steps
            self.save_last(trainer, "interrupted (SIGTERM)")


def find_last_checkpoint(roots: list[str | os.PathLike]) -> Path:
    """The newest ``last*.ckpt`` under ``roots`` (run folders and checkpoint directories).

    What ``--ckpt_path last`` means in avgen: resume the most recent run, not (as in Lightning) look
    only in the new run's empty folder. Raises ``FileNotFoundError`` naming where it looked.
    """
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            found += [p for p in root.rglob("last*.ckpt") if p.is_file() and not p.name.startswith(".")]
    if not found:
        where = ", ".join(str(Path(r)) for r in roots)
        raise FileNotFoundError(
            f"--ckpt_path last: no last.ckpt under {where}. Train first (avgen fit writes "
            "lightning_logs/version_N/checkpoints/last.ckpt), or pass the checkpoint's path"
        )
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)))


__all__ = ["AtomicCheckpointIO", "ResumableCheckpoints", "find_last_checkpoint"]
