"""Shared set-up of the console-script tests (tests/ is put on sys.path by conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback

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


class ShardingProbe(Callback):
    """A callback (``--trainer.callbacks+=cli_support.ShardingProbe``) that writes, per rank, the training
    loss of every step and how the module's parameters are held (:func:`describe_sharding`) to
    ``<default_root_dir>/probe_rank<r>.json``."""

    def __init__(self):
        self.losses: list[float] = []
        self.units: dict = {}
        self.leaf_calls = 0

    def on_train_start(self, trainer, module):
        from avgen.nn.blocks import declared_blocks

        self.units = describe_sharding(module)
        # calls of a leaf inside the network's first block: once per step, twice when the block is
        # recomputed in backward (activation checkpointing); the EMA network only runs in validation
        block = declared_blocks(module.network)[0]
        leaf = next(m for m in block.modules() if m is not block and not list(m.children()))
        leaf.register_forward_pre_hook(lambda *args: setattr(self, "leaf_calls", self.leaf_calls + 1))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_fit_end(self, trainer, module):
        path = Path(trainer.default_root_dir) / f"probe_rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"losses": self.losses, "units": self.units, "world_size": trainer.world_size,
                                    "leaf_calls_per_step": self.leaf_calls / max(len(self.losses), 1)}))


def describe_sharding(module) -> dict:
    """For each declared block of the network and the EMA network, and each frozen component: whether it is
    its own FSDP2 unit (its ``fully_shard`` group holds exactly its parameters), per parameter
    [placements ("plain" for a tensor), local numel, full numel], and for blocks the composable APIs
    applied to them (``fully_shard``, ``checkpoint``)."""
    from torch.distributed._composable.contract import _get_registry
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from avgen.nn.blocks import declared_blocks

    def params(part):
        return [[str(p.placements), p.to_local().numel(), p.numel()] if isinstance(p, DTensor)
                else ["plain", p.numel(), p.numel()] for p in part.parameters()]

    def own_unit(part) -> bool:
        if not isinstance(part, FSDPModule):
            return False
        group = part._get_fsdp_state()._fsdp_param_group
        own = {id(p) for p in part.parameters()}
        return group is not None and {id(p.sharded_param) for p in group.fsdp_params} == own

    networks = {"network": module.network}
    if module.ema_network is not None:
        networks["ema_network.module"] = module.ema_network.module
    described = {}
    for prefix, network in networks.items():
        described[prefix] = {"unit": isinstance(network, FSDPModule), "params": []}
        for index, block in enumerate(declared_blocks(network)):
            described[f"{prefix}.block{index}"] = {"unit": own_unit(block), "params": params(block),
                                                   "apis": sorted(_get_registry(block) or {})}
    for name in module.frozen_module_names():
        component = getattr(module, name)
        described[name] = {"unit": isinstance(component, FSDPModule), "params": params(component)}
    return described


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
    import sys

    run_avgen_commands(json.loads(sys.argv[1]))
