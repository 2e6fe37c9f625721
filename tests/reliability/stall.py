"""A callback for the exact-resume test's kill -9: it stops a training process at a known point.

Imported by the ``avgen fit`` subprocess (tests/reliability is put on its PYTHONPATH).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class StallAfterStep(L.Callback):
    """At the start of the batch after ``step`` (whose periodic checkpoint is then on disk), write
    ``marker`` and wait to be killed. The next batch has already been drawn from the loader, as it
    would be in a run killed at a random moment."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = int(step), marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(300)  # the test kills this process with SIGKILL long before
