"""Lightning's FSDP1 strategy with Harmony's wrap and activation-checkpointing policy filled in.

``configs/harmony/paper.yaml`` now shards with FSDP2 instead, :class:`avgen.training.BlockFullyShardStrategy`
(``checkpoint_blocks: true``), which reads the same units from ``HarmonyNetwork.block_classes`` and which
the suite trains with on CPU; this FSDP1 strategy stays for GPU runs that prefer it (the stage configs).

At paper size (about 12.8B trainable parameters, Supp §2 fine-tunes every one at lr 1e-5) AdamW's
states alone exceed an 80 GB GPU under DDP, so ``configs/harmony/paper.yaml`` shards with FSDP: each
Wan block (both branches are built of them) and each GLDI layer is its own FSDP unit and is
recomputed in the backward pass (activation checkpointing). ``use_orig_params`` keeps the frozen
encoders and codecs (no gradients) in the same wrapped module as the trained network.

A config names it as the trainer's strategy::

    strategy:
      class_path: avgen.models.harmony.fsdp.HarmonyFSDPStrategy
      init_args:
        activation_checkpointing: true
"""

from __future__ import annotations

from typing import Any

from avgen.models.harmony.network import HarmonyNetwork
from avgen.training.fsdp import BlockFSDPStrategy

__all__ = ["HARMONY_FSDP_UNITS", "HarmonyFSDPStrategy"]

# The FSDP units (and checkpointed regions): HarmonyNetwork.block_classes, the Wan blocks of both branches
# (the audio branch's two-stream block in ``audio_mmdit: dual``, never the Wan blocks inside it) and GLDI.
HARMONY_FSDP_UNITS = HarmonyNetwork.block_classes


class HarmonyFSDPStrategy(BlockFSDPStrategy):
    """:class:`~avgen.training.BlockFSDPStrategy` over HarmonyNetwork's outermost declared blocks, with
    activation checkpointing on them by default.

    Args:
        activation_checkpointing: recompute each unit in the backward pass (default True).
        sharding_strategy: FSDP's (``"FULL_SHARD"``, ``"SHARD_GRAD_OP"``, ``"HYBRID_SHARD"`` ...).
        state_dict_type: ``"full"`` (one checkpoint file, loadable by ``avgen generate``) or ``"sharded"``.
        **kwargs: the rest of :class:`~lightning.pytorch.strategies.FSDPStrategy`'s arguments.
    """

    def __init__(
        self,
        activation_checkpointing: bool = True,
        sharding_strategy: str = "FULL_SHARD",
        state_dict_type: str = "full",
        use_orig_params: bool = True,
        **kwargs: Any,
    ):
        super().__init__(
            checkpoint_blocks=activation_checkpointing,
            sharding_strategy=sharding_strategy,
            state_dict_type=state_dict_type,
            use_orig_params=use_orig_params,
            **kwargs,
        )
        self.harmony_activation_checkpointing = bool(activation_checkpointing)
