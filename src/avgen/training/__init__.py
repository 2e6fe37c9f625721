"""Training utilities shared by every paper: EMA, learning-rate schedules, callbacks."""

from avgen.training.callbacks import GeneratedMediaLogger, OracleMetrics
from avgen.training.checkpointing import AtomicCheckpointIO, ResumableCheckpoints, find_last_checkpoint
from avgen.training.ema import EMANetwork
from avgen.training.fsdp import BlockFSDPStrategy, BlockFullyShardStrategy
from avgen.training.inverse_lr import InverseLR
from avgen.training.optimizers import fastest_adam
from avgen.training.progress import LogProgress
from avgen.training.schedules import LinearWarmupLR, WarmupStepLR

__all__ = [
    "AtomicCheckpointIO", "BlockFSDPStrategy", "BlockFullyShardStrategy", "EMANetwork", "GeneratedMediaLogger", "InverseLR", "LinearWarmupLR", "LogProgress",
    "OracleMetrics", "ResumableCheckpoints", "WarmupStepLR", "fastest_adam", "find_last_checkpoint",
]
