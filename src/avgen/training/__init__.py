"""Training utilities shared by every paper: EMA, learning-rate schedules, callbacks."""

from avgen.training.callbacks import GeneratedMediaLogger, OracleMetrics
from avgen.training.ema import EMANetwork
from avgen.training.inverse_lr import InverseLR
from avgen.training.schedules import LinearWarmupLR, WarmupStepLR

__all__ = ["EMANetwork", "GeneratedMediaLogger", "InverseLR", "LinearWarmupLR", "OracleMetrics", "WarmupStepLR"]
