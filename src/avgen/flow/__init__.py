"""Flow matching: probability path, time samplers, (masked) loss, Euler sampling, guidance.

Convention: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, v = x1 - x0. Noise-level
papers (Wan/Harmony) map onto it with sigma = 1 - t and sigma' = s sigma / (1 + (s - 1) sigma).
Every guidance variant runs all of its branches in one batched forward per ODE step.
"""

from avgen.flow.guidance import (
    ClassifierFreeGuidance,
    Guidance,
    MultiConditionGuidance,
    NoGuidance,
    concat_conditions,
    guided_velocity_fn,
)
from avgen.flow.loss import flow_matching_loss, frame_losses
from avgen.flow.path import TimeSampler, interpolate, shift_sigma, span_mask, target_velocity
from avgen.flow.sampling import euler_sample, sampling_times

__all__ = [
    "ClassifierFreeGuidance",
    "Guidance",
    "MultiConditionGuidance",
    "NoGuidance",
    "TimeSampler",
    "concat_conditions",
    "euler_sample",
    "flow_matching_loss",
    "frame_losses",
    "guided_velocity_fn",
    "interpolate",
    "sampling_times",
    "shift_sigma",
    "span_mask",
    "target_velocity",
]
