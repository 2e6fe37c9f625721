"""Fully sharded data parallel training, one shard unit per declared network block.

Two strategies, both reading the units from the network's ``block_classes`` (:mod:`avgen.nn.blocks`:
the outermost declared blocks of ``model.network`` and of the EMA network), so a config names a
strategy without listing classes:

* :class:`BlockFullyShardStrategy` (FSDP2, torch's ``fully_shard`` through Lightning's
  ``ModelParallelStrategy``): runs on GPUs and, with gloo, on CPUs, so the suite trains with it
  (tests/reliability/test_paper_scale.py: 2 CPU ranks, sharded blocks, same weights as DDP)::

      trainer:
        strategy:
          class_path: avgen.training.BlockFullyShardStrategy
          init_args: {param_dtype: bf16, reduce_dtype: fp32}

* :class:`BlockFSDPStrategy` (FSDP1, Lightning's ``FSDPStrategy``): GPU only, since torch 2.14's
  ``FullyShardedDataParallel`` refuses the CPU (``FSDP needs a non-CPU accelerator device``)::

      trainer:
        strategy:
          class_path: avgen.training.BlockFSDPStrategy
          init_args: {sharding_strategy: FULL_SHARD, state_dict_type: full}

Both write one checkpoint file by default (full weights gathered on rank 0, EMA included), which
``avgen generate`` / ``compare`` and ``--ckpt_path`` resume load with ``weights_only=True``.
Activation checkpointing stays the network's own option (``gradient_checkpointing: true``), which
works with or without sharding; ``checkpoint_blocks: true`` asks the strategy for it instead.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.nn import Module

from avgen.nn.blocks import declared_blocks, fsdp_auto_wrap_policy

__all__ = ["BlockFSDPStrategy", "BlockFullyShardStrategy", "block_wrap_policy_for", "fully_shard_network",
           "FORWARD_METHODS"]

# The FlowNetwork entry points (avgen.models.protocol) the modules call instead of ``forward``: FSDP2
# gathers a unit's parameters in a hook on ``forward``, so these are registered as forward methods too.
FORWARD_METHODS = ("preprocess_conditions", "predict_velocity")

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "16": torch.float16, "fp32": torch.float32, "float32": torch.float32, "32": torch.float32}


def block_wrap_policy_for(model: Module) -> Any:
    """The auto-wrap policy of a LightningModule's ``network`` and EMA copy (or of a bare network)."""
    return fsdp_auto_wrap_policy(*_networks(model))


def _networks(model: Module) -> list[Module]:
    """The LightningModule's trained network and its EMA copy (or the bare network itself)."""
    networks = [getattr(model, "network", model)]
    ema = getattr(model, "ema_network", None)
    if ema is not None:
        networks.append(ema.module)
    return networks


def _dtype(value: str | torch.dtype | None, name: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    try:
        return _DTYPES[str(value).lower()]
    except KeyError:
        raise ValueError(f"{name} must be one of {sorted(_DTYPES)} (or null), got {value!r}") from None


class BlockFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` (FSDP1, GPU only) wrapping each declared block of ``model.network`` (see the module docstring).

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


def fully_shard_network(
    network: Module,
    mesh: Any,
    *,
    mp_policy: Any = None,
    reshard_after_forward: bool = True,
    root_reshard_after_forward: bool | None = None,
    checkpoint_blocks: bool = False,
) -> list[Module]:
    """FSDP2 on one network: ``fully_shard`` each outermost declared block, then the network root.

    Bottom-up, as ``fully_shard`` asks: each block is one unit (its parameters become DTensors
    sharded on dim 0 over ``mesh``, all-gathered in its forward, gradients reduce-scattered in
    backward); the root unit holds the rest (embeddings, projections, final layer) and is gathered
    around ``forward`` and the :data:`FORWARD_METHODS` the modules call. Idempotent (a second call,
    e.g. ``fit`` then ``validate`` on one trainer, leaves the units as they are). Returns the blocks.

    Args:
        mesh: the 1-D data-parallel device mesh.
        mp_policy: a ``MixedPrecisionPolicy`` or None (parameters and reductions in their own dtype).
        reshard_after_forward: free each block's gathered parameters after its forward (and gather
            again in backward): ZeRO-3 / ``FULL_SHARD``; False keeps them to the backward (``SHARD_GRAD_OP``).
        root_reshard_after_forward: the root's; None lets torch keep the root gathered after forward
            (it is needed first in backward). An EMA copy (never backpropagated) passes True.
        checkpoint_blocks: recompute each block in backward (torch's composable ``checkpoint`` on the
            block, applied before sharding; parameter names unchanged).
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    options: dict[str, Any] = {"mesh": mesh, "mp_policy": mp_policy or MixedPrecisionPolicy()}
    blocks = declared_blocks(network)
    for block in blocks:
        if isinstance(block, FSDPModule):
            continue
        if checkpoint_blocks:
            from torch.distributed._composable import checkpoint

            checkpoint(block)
        fully_shard(block, reshard_after_forward=reshard_after_forward, ignored_params=_scalars(block), **options)
    if not isinstance(network, FSDPModule):
        fully_shard(network, reshard_after_forward=root_reshard_after_forward, ignored_params=_scalars(network),
                    **options)
        for name in FORWARD_METHODS:
            if callable(getattr(network, name, None)):
                register_fsdp_forward_method(network, name)
    return blocks


class BlockFullyShardStrategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) over each declared block of ``model.network`` and of the EMA network.

    Lightning's ``ModelParallelStrategy`` with a 1-D data-parallel sharding (``data_parallel_size``
    = world size, ``tensor_parallel_size`` = 1): it starts the ranks, builds the device mesh and
    gathers checkpoints; this class applies the sharding.

    **Where sharding happens.** In :meth:`setup`, before the parent's: by then Lightning has called
    the module's ``setup`` (``init_checkpoint`` weights are already loaded into the plain module)
    and ``configure_model`` (``compile: true`` has compiled the blocks in place), and the parent's
    setup builds the optimizer afterwards, over the sharded DTensor parameters. The LightningModule
    knows nothing about FSDP (its ``configure_model`` stays the compile hook, which this parent class
    requires to be overridden); any module whose networks declare ``block_classes`` trains sharded.

    **Units.** Per network (the trained one and the EMA copy): each outermost declared block, then
    the root (:func:`fully_shard_network`). Other top-level submodules with trainable parameters become
    one unit each, gathered around their ``forward`` (OmniSonic's trainable SpeechT5 is refused with a
    clear error: its positional ``alpha`` is a trainable scalar, which ``fully_shard`` cannot split).
    Frozen components (codec, pretrained encoders: no parameter with ``requires_grad``) are not
    sharded: every rank keeps its own full copy, as under DDP (no communication; they are dropped from
    checkpoints and rebuilt from the config, :mod:`avgen.models.base`). The EMA copy's units are
    sharded like the network's, so its update (``lerp`` of local shards) needs no communication.

    **Checkpoints.** ``save_distributed_checkpoint=False`` (default): full weights (network and EMA)
    and optimizer states gathered on rank 0 into one file, loadable with ``weights_only=True`` by
    ``avgen generate`` / ``compare`` and by ``--ckpt_path`` (resume reshards it on every rank).
    ``True`` writes a folder of per-rank shards (faster at paper size; only this strategy resumes it).

    Args:
        param_dtype: the dtype blocks compute in (``bf16``, ``fp16``, ``fp32``; None: the parameters'
            own). Shards and optimizer states keep the parameters' dtype (fp32 master weights).
        reduce_dtype: the dtype gradients are reduce-scattered in (``fp32`` with ``param_dtype: bf16``);
            also what lets a unit whose parameters mix dtypes train (reduce-scatter takes one gradient
            dtype per unit).
        reshard_after_forward: free each block's gathered parameters after its forward (``FULL_SHARD``
            / ZeRO-3, least memory); False keeps them to the backward (``SHARD_GRAD_OP`` / ZeRO-2).
        checkpoint_blocks: recompute each sharded block in the backward pass (use it or the network's
            own ``gradient_checkpointing``, not both).
        data_parallel_size: ranks the parameters are sharded over; ``"auto"``: world size /
            ``tensor_parallel_size``.
        tensor_parallel_size: 1 (no tensor parallelism: the networks define no TP plan).
        save_distributed_checkpoint, process_group_backend, timeout: ``ModelParallelStrategy``'s.
    """

    def __init__(
        self,
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        checkpoint_blocks: bool = False,
        data_parallel_size: Literal["auto"] | int = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = False,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.param_dtype = _dtype(param_dtype, "param_dtype")
        self.reduce_dtype = _dtype(reduce_dtype, "reduce_dtype")
        self.reshard_after_forward = bool(reshard_after_forward)
        self.checkpoint_blocks = bool(checkpoint_blocks)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":  # the parent's "auto" is the number of nodes (for 2-D meshes)
            world_size = self.num_nodes * self.num_processes
            if world_size % self._tensor_parallel_size:
                raise ValueError(f"tensor_parallel_size={self._tensor_parallel_size} does not divide the "
                                 f"world size {world_size}")
            self._data_parallel_size = world_size // self._tensor_parallel_size
        super().setup_environment()

    @property
    def mp_policy(self) -> Any:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype)

    def setup(self, trainer: Any) -> None:
        self.shard(self.lightning_module)
        super().setup(trainer)

    def shard(self, model: Module) -> None:
        """Apply ``fully_shard`` to ``model``'s networks and trainable components (see the class docstring)."""
        from torch.distributed.fsdp import FSDPModule, fully_shard

        mesh = self.device_mesh["data_parallel"]
        networks = _networks(model)
        for index, network in enumerate(networks):
            fully_shard_network(
                network, mesh, mp_policy=self.mp_policy, reshard_after_forward=self.reshard_after_forward,
                # the EMA copy is only evaluated: reshard it after every forward, so its update and the
                # network's always meet as shards
                root_reshard_after_forward=None if index == 0 else True,
                checkpoint_blocks=self.checkpoint_blocks and index == 0,
            )
        covered = {id(p) for network in networks for p in network.parameters()}
        for name, child in model.named_children():
            if any(id(p) in covered for p in child.parameters()) or isinstance(child, FSDPModule):
                continue  # a network, the EMA wrapper, or already sharded
            if any(p.requires_grad for p in child.parameters()):
                fully_shard(child, mesh=mesh, mp_policy=self.mp_policy, ignored_params=_scalars(child, name),
                            reshard_after_forward=self.reshard_after_forward)
        loose = [n for n, p in model.named_parameters(recurse=False) if p.requires_grad]
        if loose:
            raise ValueError(f"{type(model).__name__} has trainable parameters outside any submodule ({loose}); "
                             "BlockFullyShardStrategy shards submodules: move them into one")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume from a single-file checkpoint: each rank reads the file and keeps its own shards.

        Lightning's loader of a full checkpoint sets one parameter at a time, broadcast from rank 0
        (one collective per tensor, most of a short resumed run's time), and its strict key check counts
        the frozen components avgen leaves out of checkpoints (rebuilt from the config) as missing.
        Here the module's keys are checked as a plain resume checks them, then the weights and the
        optimizer states are set in one call each, every rank slicing its shards from the full tensors
        it read (no communication). A folder of per-rank shards goes to the parent's loader.
        """
        from lightning.fabric.strategies.model_parallel import _rekey_optimizer_state_if_needed
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        path = Path(self.broadcast(checkpoint_path))
        if not path.is_file():
            return super().load_checkpoint(path, weights_only=weights_only)
        checkpoint = torch.load(path, map_location="cpu", mmap=True,
                                weights_only=True if weights_only is None else weights_only)
        module = self.lightning_module
        state_dict = checkpoint.pop("state_dict")
        if module.strict_loading:
            _check_keys(module, state_dict)
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(module, state_dict, options=options)
        for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
            state = _rekey_optimizer_state_if_needed(state, module)
            set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=options)
        return checkpoint


def _scalars(module: Module, name: str | None = None) -> set[nn.Parameter]:
    """The frozen 0-dim parameters of ``module``, which ``fully_shard`` cannot shard: left out of the unit, a
    plain tensor on every rank (they never change). A trainable one cannot be left out (its gradient would
    not be averaged over the ranks): a clear error instead."""
    scalars = {n: p for n, p in module.named_parameters() if p.ndim == 0}
    trainable = [n for n, p in scalars.items() if p.requires_grad]
    if trainable:
        where = name or type(module).__name__
        raise ValueError(
            f"BlockFullyShardStrategy cannot shard the trainable scalar parameters {trainable[:5]} of {where} "
            "(fully_shard splits dim 0): freeze them, make them 1-element tensors, or train with DDP "
            "(e.g. SpeechT5's positional `alpha` when the speech encoder is trainable)"
        )
    return set(scalars.values())


def _check_keys(module: Module, state_dict: dict[str, Any]) -> None:
    """The missing / unexpected keys a plain resume would report (frozen components are never saved)."""
    from avgen.checkpoints import CheckpointMismatchError

    expected = set(module.state_dict().keys())  # avgen modules drop their frozen components here
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint does not fit {type(module).__name__}: {len(missing)} missing keys (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]}); other model class or sizes?"
        )
