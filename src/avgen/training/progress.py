"""Progress as log lines, for runs whose output goes to a file (``avgen fit ... > train.log``).

Lightning's progress bar redraws one terminal line; written to a file it shows nothing useful until
the run ends. When stderr is not a terminal, ``avgen`` replaces it with :class:`LogProgress`, which
logs ``step N/M`` with the progress-bar metrics every ``every_n_steps`` steps.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import lightning as L

log = logging.getLogger("avgen.progress")


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class LogProgress(L.Callback):
    """Log ``step N/M (x s/step): metric=value ...`` every ``every_n_steps`` training steps and at the end."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self._started = 0.0
        self.lines: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def _line(self, trainer: L.Trainer) -> str:
        step, total = trainer.global_step, trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        seconds = (time.monotonic() - self._started) / max(step, 1)
        metrics = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(trainer.progress_bar_metrics.items())
                           if _is_number(v))
        return f"step {step}{f'/{total}' if total else ''} (epoch {trainer.current_epoch}, {seconds:.2f} s/step) {metrics}".rstrip()

    def _emit(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            line = self._line(trainer)
            self.lines.append(line)
            log.info(line)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step % self.every_n_steps == 0:
            self._emit(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step % self.every_n_steps:
            self._emit(trainer)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


__all__ = ["LogProgress", "is_terminal"]
