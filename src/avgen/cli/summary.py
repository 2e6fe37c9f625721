"""``avgen summary --config C``: parameter counts per submodule, built on the meta device (no weights)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Union

import torch
from lightning.pytorch.cli import LightningArgumentParser

from avgen.conditioning.tiny import register_tiny_models
from avgen.models.base import FlowMatchingModule

__all__ = ["summary", "model_summary"]


def model_summary(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(name, parameters) per top-level submodule, then per submodule of ``model.network``."""
    rows = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    network = getattr(model, "network", None)
    if isinstance(network, torch.nn.Module):
        rows += [
            (f"network.{name}", sum(p.numel() for p in child.parameters()))
            for name, child in network.named_children()
        ]
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        rows.append(("(own parameters)", direct))
    return rows


def _meta_or_cpu_instantiator(class_type: type, *args: Any, **kwargs: Any) -> Any:
    """Build on the meta device; a component whose constructor computes with real tensors (e.g. a
    mel filterbank's ``.item()``) is built on the CPU instead, and named, so the counts stay exact."""
    try:
        return class_type(*args, **kwargs)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
        print(f"note: {class_type.__name__} cannot be built on the meta device; built on the CPU", file=sys.stderr)
        with torch.device("cpu"):
            return class_type(*args, **kwargs)


def network_summary(argv: list[str]) -> None:
    """``avgen summary --network NAME [--network NAME ...]`` / ``--networks``: presets by name, on the meta device."""
    from avgen.models import create_network, list_networks, network_preset

    parser = argparse.ArgumentParser(prog="avgen summary", description="Parameter counts of network presets.")
    parser.add_argument("--network", action="append", default=[], help="a preset of avgen.models.list_networks()")
    parser.add_argument("--networks", action="store_true", help="list the registered presets")
    ns = parser.parse_args(argv)
    if ns.networks or not ns.network:
        for name in list_networks():
            print(f"{name}: {network_preset(name).description}")
        return
    for name in ns.network:
        network = create_network(name, device="meta")
        for child_name, child in network.named_children():
            print(f"{name}.{child_name}: {sum(p.numel() for p in child.parameters()):,}")
        print(f"{name} total parameters: {sum(p.numel() for p in network.parameters()):,}")


def summary(argv: list[str]) -> None:
    """Print the parameter counts of the model a config builds (or of presets: ``--network NAME``)."""
    if any(a.startswith("--network") for a in argv):
        return network_summary(argv)
    register_tiny_models()
    import avgen.codecs  # noqa: F401  (short class names in configs resolve only for imported classes)
    import avgen.conditioning  # noqa: F401
    import avgen.models  # noqa: F401

    parser = LightningArgumentParser(
        prog="avgen summary",
        description="Print parameter counts per submodule of the configured model, built on the meta "
        "device (no weights allocated), then the total.",
    )
    parser.add_argument("-c", "--config", action="config", help="the model config (configs/<paper>/<name>.yaml)")
    parser.add_lightning_class_args(FlowMatchingModule, "model", subclass_mode=True)
    # The other sections of a full config are accepted and ignored.
    for key in ("trainer", "data", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{key}", type=Optional[Union[dict, bool, str]], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=True, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt_path", type=Optional[str], default=None, help=argparse.SUPPRESS)
    parser.add_instantiator(_meta_or_cpu_instantiator, torch.nn.Module, subclasses=True)
    config = parser.parse_args(argv)
    with torch.device("meta"):
        model = parser.instantiate_classes(config).model
    rows = model_summary(model)
    for name, count in rows:
        print(f"{name}: {count:,}")
    print(f"total parameters: {sum(p.numel() for p in model.parameters()):,}")


