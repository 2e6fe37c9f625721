"""Item 2: another paper's checkpoint, or a file that is no checkpoint, is refused with the file and both papers named.

Lightning's CLI replaces the config's model class with the checkpoint's before the model loads the weights;
avgen checks the class first (``AvgenCLI._parse_ckpt_path``), so the wrong paper never runs silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avgen.checkpoints import CheckpointError, CheckpointMismatchError, read_training_checkpoint
from avgen.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
OMNISONIC_TINY = str(REPO / "configs" / "omnisonic" / "tiny.yaml")


def test_a_foleygenex_checkpoint_is_refused_by_the_omnisonic_config(foleygenex_fit, tmp_path):
    _, ckpt = foleygenex_fit
    with pytest.raises(CheckpointMismatchError) as error:
        run_cli(["test", "--config", OMNISONIC_TINY, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={ckpt}",
                 "--trainer.enable_progress_bar=false"])
    message = str(error.value)
    assert str(ckpt) in message and "FoleyGenEx" in message and "OmniSonic" in message


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_garbage_checkpoints_name_the_file(tmp_path, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        read_training_checkpoint(path)
    assert str(path) in str(error.value) and "weights_only=False" not in str(error.value)


def test_a_state_dict_of_another_project_is_not_taken_for_a_run(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"blocks.0.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_training_checkpoint(path)
