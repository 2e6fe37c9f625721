"""Items 3 and 4: ``--ckpt_path last`` resumes the newest run (or fails loudly); ``last.ckpt`` holds the
final step, is written on SIGINT / SIGTERM, atomically; the tiny configs keep the best by val/loss."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from avgen.cli import main
from avgen.data import ManifestDataModule
from avgen.training import AtomicCheckpointIO, ResumableCheckpoints

REPO = Path(__file__).resolve().parents[2]


def step_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.fixture
def data(corpus):
    m = corpus.manifest("m.jsonl", [{"id": f"ok{i}", "audio": "good.wav"} for i in range(8)])
    return lambda: ManifestDataModule(train_manifest=str(m), batch_size=2, duration=0.5)


def fit(helpers, root: Path, data, module=None, max_steps: int = 6):
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=4, save_last=True, save_top_k=0)
    trainer = helpers.trainer(root, max_steps=max_steps, enable_checkpointing=True,
                              callbacks=[checkpoint, ResumableCheckpoints()])
    trainer.fit(module or helpers.Probe(), data())
    return trainer, root / "ckpt" / "last.ckpt"


def test_last_checkpoint_holds_the_final_step(helpers, data, tmp_path):
    trainer, last = fit(helpers, tmp_path, data)
    assert trainer.global_step == 6 and step_of(last) == 6  # ModelCheckpoint alone leaves step 4 here
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]  # no last-v1, no partial file


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_last_checkpoint_and_stops(helpers, data, tmp_path, signum):
    class Interrupted(helpers.Probe):
        def training_step(self, batch, batch_idx):  # noqa: ANN001
            if self.global_step == 2:
                os.kill(os.getpid(), signum)  # Ctrl-C / a scheduler's SIGTERM during the third step
            return super().training_step(batch, batch_idx)

    if signum == signal.SIGTERM:
        with pytest.raises(SIGTERMException):
            fit(helpers, tmp_path, data, Interrupted(), max_steps=50)
    else:
        trainer, _ = fit(helpers, tmp_path, data, Interrupted(), max_steps=50)
        assert trainer.global_step == 3
    assert step_of(tmp_path / "ckpt" / "last.ckpt") == 3  # the step that was running, completed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_checkpoint_writes_are_atomic(tmp_path):
    target = tmp_path / "last.ckpt"
    TorchCheckpointIO().save_checkpoint({"global_step": 1}, target)

    class DiesMidWrite(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):  # noqa: ANN001
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO(DiesMidWrite()).save_checkpoint({"global_step": 2}, target)
    assert torch.load(target, weights_only=True) == {"global_step": 1} and os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("paper", ["foleygenex", "omnisonic"])
def test_tiny_configs_save_periodically_on_signals_and_the_best_by_val_loss(paper):
    config = yaml.safe_load((REPO / f"configs/{paper}/tiny.yaml").read_text())
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in config["trainer"]["callbacks"]}
    assert "ResumableCheckpoints" in callbacks and "DataReportCallback" in callbacks
    checkpoints = [c.get("init_args", {}) for c in config["trainer"]["callbacks"]
                   if c["class_path"].endswith("ModelCheckpoint")]
    assert any(c.get("save_last") and c.get("every_n_train_steps") for c in checkpoints)
    assert any(c.get("monitor") == "val/loss" and c.get("mode", "min") == "min" and c.get("save_top_k", 1) >= 1
               for c in checkpoints)


def test_ckpt_path_last_fails_loudly_without_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no last\.ckpt under .*lightning_logs"):
        main(["fit", "--config", str(REPO / "configs/foleygenex/tiny.yaml"), "--ckpt_path=last",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1",
              "--trainer.enable_progress_bar=false"])


@pytest.mark.slow
def test_ckpt_path_last_resumes_the_newest_run(foleygenex_fit, tmp_path, caplog):
    from cli_support import FOLEYGENEX_FAST, FOLEYGENEX_TINY

    source_root, source_last = foleygenex_fit
    shutil.copytree(source_root / "lightning_logs", tmp_path / "lightning_logs")
    resumed_from = tmp_path / source_last.relative_to(source_root)
    with caplog.at_level(logging.INFO):
        main(["fit", "--config", FOLEYGENEX_TINY, *FOLEYGENEX_FAST, f"--trainer.default_root_dir={tmp_path}",
              "--ckpt_path=last", f"--trainer.max_steps={step_of(source_last) + 1}",
              "--trainer.val_check_interval=1000"])
    assert f"Restoring states from the checkpoint path at {resumed_from}" in caplog.text
    assert [p.name for p in resumed_from.parent.glob("last*.ckpt")] == ["last.ckpt"]
    newest = max(tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert newest != resumed_from and step_of(newest) == step_of(source_last) + 1
