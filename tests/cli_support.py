"""Shared set-up of the console-script tests (tests/ is put on sys.path by conftest.py)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLEYGENEX_TINY = str(REPO / "configs" / "foleygenex" / "tiny.yaml")
# The tiny config shrunk further: small splits, 1 s clips, short validation sampling.
FOLEYGENEX_FAST = [
    "--data.init_args.batch_size=4",
    "--data.init_args.first.init_args.train_size=8",
    "--data.init_args.second.init_args.train_size=8",
    "--data.init_args.first.init_args.val_size=4",
    "--data.init_args.first.init_args.test_size=4",
    "--data.init_args.first.init_args.predict_size=2",
    "--data.init_args.first.init_args.duration=1.0",
    "--data.init_args.second.init_args.duration=1.0",
    "--model.init_args.duration=1.0",
    "--model.init_args.num_val_sampling_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]

OMNISONIC_TINY = str(REPO / "configs" / "omnisonic" / "tiny.yaml")
# OmniSonic's tiny config shrunk further: 3-clip batches and splits, 1 s clips, short validation sampling.
OMNISONIC_FAST = [
    "--data.init_args.batch_size=3",
    "--data.init_args.train_size=6",
    "--data.init_args.val_size=3",
    "--data.init_args.test_size=3",
    "--data.init_args.predict_size=1",
    "--data.init_args.duration=1.0",
    "--model.init_args.duration=1.0",
    "--model.init_args.num_val_sampling_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


HARMONY_TINY = str(REPO / "configs" / "harmony" / "tiny.yaml")
# The tiny Harmony config shrunk further: 0.5 s clips, 4 training clips, 2-step validation sampling.
HARMONY_FAST = [
    "--data.init_args.batch_size=2",
    "--data.init_args.train_size=4",
    "--data.init_args.val_size=2",
    "--data.init_args.predict_size=2",
    "--data.init_args.duration=0.5",
    "--model.init_args.duration=0.5",
    "--model.init_args.num_val_sampling_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def last_checkpoint(root: Path) -> Path:
    """The newest last.ckpt under a run root."""
    candidates = sorted(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert candidates, f"no last.ckpt under {root}"
    return candidates[-1]


def run_avgen_commands(commands: list[list[str]]) -> None:
    """Run several ``avgen`` commands one after another in this process.

    Under ``--trainer.strategy=ddp`` Lightning starts the other ranks once, by re-running this script
    with the same arguments: every rank then runs every command, so several DDP fits share one launch
    (and one import of torch, Lightning and transformers per rank).
    """
    from avgen.cli import main

    for command in commands:
        main(command)


if __name__ == "__main__":  # python tests/cli_support.py '<JSON list of avgen argument lists>'
    import json
    import sys

    run_avgen_commands(json.loads(sys.argv[1]))
