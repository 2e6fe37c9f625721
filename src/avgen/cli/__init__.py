"""The ``avgen`` command (``avgen --help`` lists the subcommands).

* ``avgen fit|validate|test|predict --config configs/<paper>/<name>.yaml [--a.b=c]``: LightningCLI in
  subclass mode for model and data, so any model runs on any datamodule (design §2).
* ``avgen generate --config C --ckpt_path K --output_dir D [inputs] [options]``: one ``<id>.wav`` per
  sample; the options (and their help) come from the configured paper's generation interface
  (``models/<paper>/tasks.py``), so this package names no paper.
* ``avgen compare --checkpoints A.ckpt B.ckpt --data C --output_dir D``: every checkpoint on the same
  samples and seeds; results.csv / results.md / plots (``avgen.cli.compare``).
* ``avgen evaluate --generated DIR --reference C``: the same metrics on a folder of any system's files.
* ``avgen summary --config C``: parameter counts per submodule, built on the meta device.
* ``avgen toyworld export --n N --output_dir D``: ToyWorld as real files (mp4 + wav + manifest).
* ``avgen build-manifest <corpus> --root DIR --output M.jsonl``: a paper corpus's local copy as a validated manifest.
* ``avgen precompute --config C --output_dir S [--stats]``: frozen encoder features + codec posteriors as
  litdata shards for ``avgen.data.StreamingDataModule`` (``avgen.cli.precompute``).

Heavy modules (torch, Lightning) are imported only by the subcommand that runs, so ``--help`` is quick.
"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["main", "run_cli"]

COMMANDS = {
    "fit": "Train a model: avgen fit --config configs/<paper>/<name>.yaml [--a.b=c ...]",
    "validate": "Run the validation loop (loss per t bin, oracle metrics) of a config or checkpoint",
    "test": "Run the test loop of a config, usually with --ckpt_path",
    "predict": "Run Trainer.predict over the datamodule's predict split",
    "generate": "Write one <id>.wav per sample from a checkpoint (datamodule predict split, a manifest or one video)",
    "compare": "Score checkpoints of any papers on the same samples: results.csv/.md, plots (avgen compare --help)",
    "evaluate": "Score a folder of generated wavs/mp4s from any system against a datamodule's samples",
    "summary": "Print parameter counts per submodule without allocating weights (meta device)",
    "toyworld": "ToyWorld data tools: `avgen toyworld export` writes mp4 + wav + manifest files",
    "build-manifest": "Validate a corpus's local copy (VGGSound, AudioCaps, LRS3, ...) and write its manifest + report",
    "precompute": "Run a config's frozen encoders + codec once per clip into litdata shards (--stats: latent stats)",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "generate")


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [
        "usage: avgen <command> [options]",
        "",
        "avgen: train, evaluate and sample video-to-audio / audio-video generation models",
        "(OmniSonic, AudioGen-Omni, FoleyGenEx, Harmony) with PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()),
        "",
        "Run `avgen <command> --help` for the options of a command, e.g.",
        "  avgen fit --config configs/foleygenex/tiny.yaml --trainer.max_steps=100",
        "  avgen fit --config configs/foleygenex/tiny.yaml --print_config",
        "  avgen generate --config configs/omnisonic/tiny.yaml --help   (the paper's generation options)",
    ]
    return "\n".join(lines)


def run_cli(args=None, *, run: bool = True):
    """Build (and with ``run`` execute) the LightningCLI of ``avgen fit|validate|test|predict|generate``.

    ``run=False`` only parses ``args`` (no subcommand) and instantiates model, data and trainer,
    for notebooks and tests: ``run_cli(["--config", "configs/foleygenex/tiny.yaml"], run=False).model``.
    """
    from avgen.cli.lightning import run_cli as _run_cli

    return _run_cli(args, run=run)


def quiet_third_party_notices() -> None:
    """Silence start-up notices that are not about the user's run.

    bitsandbytes (imported by transformers / diffusers integrations) warns on every start that its
    CPU 4-bit GEMM kernel is missing; avgen never quantises to 4 bits.
    """
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``avgen`` console script; ``args`` replaces ``sys.argv[1:]`` (tests)."""
    quiet_third_party_notices()
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command = argv[0]
    if command == "summary":
        from avgen.cli.summary import summary

        summary(argv[1:])
    elif command == "compare":
        from avgen.cli.compare import main as compare_main

        compare_main(argv[1:])
    elif command == "evaluate":
        from avgen.cli.compare import evaluate_main

        evaluate_main(argv[1:])
    elif command == "toyworld":
        from avgen.cli.toyworld import toyworld

        toyworld(argv[1:])
    elif command == "build-manifest":
        from avgen.cli.build_manifest import build_manifest

        build_manifest(argv[1:])
    elif command == "precompute":
        from avgen.cli.precompute import main as precompute_main

        precompute_main(argv[1:])
    elif command in LIGHTNING_COMMANDS:
        from avgen.cli.lightning import run_cli as _run_cli

        # args=None lets LightningCLI read sys.argv itself (the DDP launcher re-executes it).
        _run_cli(None if args is None else argv)
    else:
        print(usage(), file=sys.stderr)
        raise SystemExit(f"avgen: unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
