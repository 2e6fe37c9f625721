"""Shared test set-up: deterministic seeds and a CPU thread cap so the suite behaves alike everywhere."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def single_thread():
    """One thread for modules of many tiny ops, where thread hand-offs on a shared CPU cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------------------------- trained checkpoints
# One tiny trained checkpoint per paper for the whole session: the CLI, task and comparison tests share
# it instead of each training their own.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/: cli_support, toy_paper
from cli_support import (  # noqa: E402
    FOLEYGENEX_FAST,
    FOLEYGENEX_TINY,
    HARMONY_FAST,
    HARMONY_TINY,
    OMNISONIC_FAST,
    OMNISONIC_TINY,
    last_checkpoint,
)


@pytest.fixture(scope="session")
def foleygenex_fit(tmp_path_factory) -> tuple[Path, Path]:
    """(run root, last.ckpt) of the tiny FoleyGenEx config trained 30 steps, validated at 15 and 30."""
    from avgen.cli import main

    root = tmp_path_factory.mktemp("foleygenex_fit")
    main(["fit", "--config", FOLEYGENEX_TINY, *FOLEYGENEX_FAST, f"--trainer.default_root_dir={root}",
          "--trainer.max_steps=30", "--trainer.val_check_interval=15"])
    return root, last_checkpoint(root)


@pytest.fixture(scope="session")
def omnisonic_fit(tmp_path_factory) -> tuple[Path, Path]:
    """(run root, last.ckpt) of the tiny OmniSonic config on 1 s clips trained 6 steps, validated at 3 and 6."""
    from avgen.cli import main

    root = tmp_path_factory.mktemp("omnisonic_fit")
    main(["fit", "--config", OMNISONIC_TINY, *OMNISONIC_FAST, f"--trainer.default_root_dir={root}",
          "--trainer.max_steps=6", "--trainer.val_check_interval=3"])
    return root, last_checkpoint(root)


@pytest.fixture(scope="session")
def harmony_fit(tmp_path_factory) -> tuple[Path, Path]:
    """(run root, last.ckpt) of the tiny Harmony config trained 2 steps (the evaluation step is tested in-process)."""
    from avgen.cli import main

    root = tmp_path_factory.mktemp("harmony_fit")
    main(["fit", "--config", HARMONY_TINY, *HARMONY_FAST, f"--trainer.default_root_dir={root}",
          "--trainer.max_steps=2", "--trainer.limit_val_batches=0"])
    return root, last_checkpoint(root)
