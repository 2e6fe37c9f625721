"""FSDP sharded by the network's declared blocks (the paper configs' 1.5B / 12.8B sizes).

:class:`BlockFSDPStrategy` is Lightning's ``FSDPStrategy`` whose ``auto_wrap_policy`` defaults to
the LightningModule's ``network.block_classes`` (:func:`avgen.nn.blocks.fsdp_auto_wrap_policy`):
one FSDP unit per transformer block, so a config names the strategy without listing classes::

    trainer:
      strategy:
        class_path: avgen.training.BlockFSDPStrategy
        init_args: {sharding_strategy: FULL_SHARD, state_dict_type: full}

Activation checkpointing stays the network's own option (``gradient_checkpointing: true``), which
works with or without FSDP. An explicit ``auto_wrap_policy`` argument wins.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch.nn import Module

from avgen.nn.blocks import fsdp_auto_wrap_policy

__all__ = ["BlockFSDPStrategy", "block_wrap_policy_for"]


def block_wrap_policy_for(model: Module) -> Any:
    """The auto-wrap policy of a LightningModule's ``network`` and EMA copy (or of a bare network)."""
    networks = [getattr(model, "network", model)]
    ema = getattr(model, "ema_network", None)
    if ema is not None:
        networks.append(ema.module)
    return fsdp_auto_wrap_policy(*networks)


class BlockFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` wrapping each declared block of ``model.network`` (see the module docstring).

    Args:
        checkpoint_blocks: also recompute each of those blocks in the backward pass (FSDP's activation
            checkpointing on exactly the wrapped units; use it or the network's own
            ``gradient_checkpointing``, not both).
        **kwargs: :class:`~lightning.pytorch.strategies.FSDPStrategy`'s arguments.
    """

    def __init__(self, checkpoint_blocks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_blocks = bool(checkpoint_blocks)

    def _setup_model(self, model: Module) -> Module:
        if "auto_wrap_policy" not in self.kwargs:
            self.kwargs["auto_wrap_policy"] = block_wrap_policy_for(model)
        if self.checkpoint_blocks and not self._activation_checkpointing_kwargs:
            self._activation_checkpointing_kwargs = {"auto_wrap_policy": block_wrap_policy_for(model)}
        return super()._setup_model(model)
