"""Item 10: no misleading start-up notices; progress as log lines when output is not a terminal;
the tiny configs run under DDP without extra flags."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from avgen.cli import quiet_third_party_notices
from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder
from avgen.training import LogProgress
from avgen.training.progress import is_terminal

REPO = Path(__file__).resolve().parents[2]


def test_no_random_weights_notice_for_tiny_and_meta_clip(caplog):
    with caplog.at_level(logging.WARNING):
        CLIPTextEncoder("avgen-tiny-clip")
        with torch.device("meta"):
            CLIPVisionEncoder("ViT-B-16", pretrained="openai")  # a paper config's encoder, architecture only
    assert "No pretrained weights loaded" not in caplog.text
    quiet_third_party_notices()
    assert logging.getLogger("bitsandbytes").getEffectiveLevel() >= logging.ERROR


def test_help_imports_no_torch():
    code = "import sys; from avgen.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert out.returncode == 0 and out.stdout.strip().endswith("False") and "commands:" in out.stdout


def test_progress_is_logged_when_not_a_terminal(corpus, helpers, tmp_path, caplog):
    from avgen.data import ManifestDataModule

    assert not is_terminal(io.StringIO())
    m = corpus.manifest("m.jsonl", [{"id": f"ok{i}", "audio": "good.wav"} for i in range(4)])
    progress = LogProgress(every_n_steps=2)
    with caplog.at_level(logging.INFO, logger="avgen.progress"):
        helpers.trainer(tmp_path, max_steps=5, callbacks=[progress]).fit(
            helpers.Probe(), ManifestDataModule(train_manifest=str(m), batch_size=2, duration=0.5))
    assert [line.split(" (")[0] for line in progress.lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert "step 4/5" in caplog.text


def test_tiny_foleygenex_needs_no_flag_for_ddp():
    config = yaml.safe_load((REPO / "configs/foleygenex/tiny.yaml").read_text())
    assert config["trainer"]["use_distributed_sampler"] is False  # BalancedDataModule shards batches itself
