"""Per-block training and speed hooks any network can opt into by declaring its block classes.

A network lists the classes of its repeated transformer blocks in a ``block_classes`` class
attribute (e.g. ``block_classes = (JointBlock, StreamBlock)``). The helpers below then work on
every instance of those classes:

* :func:`run_block` runs one block, under activation checkpointing when the network asks for it
  (``gradient_checkpointing=True``; recomputes the block's activations in backward instead of
  keeping them: needed for the 1.5B / 12.8B configs);
* :func:`compile_blocks` applies ``torch.compile`` to each block in place (``nn.Module.compile``:
  parameter names and state-dict keys do not change, the Python glue between blocks stays eager);
* :func:`fsdp_auto_wrap_policy` / :func:`fsdp_block_classes`: an FSDP auto-wrap policy that shards
  by block (Lightning's ``FSDPStrategy(auto_wrap_policy=...)``; see
  :class:`avgen.training.BlockFSDPStrategy`, which reads the classes from the module's network);
  FSDP2 applies ``fully_shard`` to the same :func:`declared_blocks`
  (:class:`avgen.training.BlockFullyShardStrategy`).

Only the outermost declared blocks count: a declared class nested inside another declared block
(MMAudio's :class:`StreamBlock` inside a :class:`JointBlock`) is handled by its parent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["block_classes", "declared_blocks", "run_block", "compile_blocks", "fsdp_block_classes",
           "fsdp_auto_wrap_policy"]


def block_classes(network: nn.Module) -> tuple[type[nn.Module], ...]:
    """The network's declared ``block_classes``; a clear error when it declares none."""
    classes = tuple(getattr(network, "block_classes", ()) or ())
    if not classes:
        raise ValueError(
            f"{type(network).__name__} declares no block classes; add a class attribute "
            "`block_classes = (MyBlock, ...)` naming its repeated transformer blocks (see DEVELOPERS.md)"
        )
    bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, nn.Module))]
    if bad:
        raise TypeError(f"{type(network).__name__}.block_classes must be nn.Module subclasses, got {bad}")
    return classes


def declared_blocks(network: nn.Module) -> list[nn.Module]:
    """The outermost submodules that are instances of the network's ``block_classes``, in order."""
    classes = block_classes(network)
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, classes):
                blocks.append(child)
            else:
                visit(child)

    visit(network)
    return blocks


def run_block(block: nn.Module, *args: Any, checkpointing: bool = False, **kwargs: Any) -> Any:
    """``block(*args, **kwargs)``, under activation checkpointing when ``checkpointing`` and grad is on.

    Non-reentrant checkpointing (``use_reentrant=False``): works with keyword and non-tensor
    arguments, with compiled blocks and under autocast; the recomputed forward gives the same
    numbers, so gradients equal the plain ones (tests/nn/test_speed_blocks.py).
    """
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


def compile_blocks(network: nn.Module, *, backend: str = "inductor", dynamic: bool | None = None,
                   mode: str | None = None, fullgraph: bool = False) -> list[nn.Module]:
    """``torch.compile`` every declared block in place (idempotent); returns the blocks.

    ``dynamic=None`` (torch's automatic dynamic shapes): the first call compiles for its shapes; a
    call with another length or batch (variable-length batches, the CFG-doubled sampling batch)
    recompiles once with symbolic sizes, which then serves every length. ``True`` traces
    symbolically from the first call (slower to trace). Sampling calls the same blocks at every
    Euler step, so the per-step work compiles once.
    """
    blocks = declared_blocks(network)
    for block in blocks:
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile(backend=backend, dynamic=dynamic, mode=mode, fullgraph=fullgraph)
    return blocks


def fsdp_block_classes(network: nn.Module) -> set[type[nn.Module]]:
    """The set Lightning's ``FSDPStrategy(auto_wrap_policy=..., activation_checkpointing_policy=...)`` takes.

    A class set wraps *every* instance, nested ones too (a ``StreamBlock`` inside a ``JointBlock``
    becomes its own unit); :func:`fsdp_auto_wrap_policy` wraps exactly the outermost blocks.
    """
    return set(block_classes(network))


def fsdp_auto_wrap_policy(*networks: nn.Module):
    """torch's ``CustomPolicy`` wrapping exactly the outermost declared blocks of ``networks``
    (e.g. the trained network and its EMA copy): one FSDP unit per transformer block."""
    from torch.distributed.fsdp.wrap import CustomPolicy

    if not networks:
        raise ValueError("fsdp_auto_wrap_policy needs at least one network")
    targets = {id(block) for network in networks for block in declared_blocks(network)}
    return CustomPolicy(lambda module: id(module) in targets)
