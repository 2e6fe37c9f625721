"""Run by tests/data/test_streaming.py: 2-process DDP (gloo, CPU) fits from a shard set, full and cut + resumed.

argv: <shard set> <output folder>. Each rank writes the ids of every batch it trained on to
<output>/<run>-rank<r>.json for the runs "full" (4 steps), "cut" (2 steps, checkpointed) and "rest"
(resumed from the cut run's checkpoint up to 4 steps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from avgen.data.streaming import StreamingDataModule


class Recorder(L.LightningModule):
    """Records the ids of every training batch it sees (a stand-in for a model; also used in-process by the tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch.ids))
        return self.layer(torch.ones(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(shards: str, out: Path, run: str, steps: int, ckpt: str | None = None) -> None:
    model = Recorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=out, use_distributed_sampler=False)
    trainer.fit(model, datamodule=StreamingDataModule(shards, batch_size=1, shuffle=True, seed=5), ckpt_path=ckpt)
    (out / f"{run}-rank{trainer.global_rank}.json").write_text(json.dumps(model.seen))
    if run == "cut":
        trainer.save_checkpoint(out / "cut.ckpt")


if __name__ == "__main__":
    shards, out = sys.argv[1], Path(sys.argv[2])
    fit(shards, out, "full", 4)
    fit(shards, out, "cut", 2)
    fit(shards, out, "rest", 4, ckpt=str(out / "cut.ckpt"))
