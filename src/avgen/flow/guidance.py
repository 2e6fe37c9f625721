"""Classifier-free guidance variants, all evaluated in ONE batched forward pass per ODE step.

A ``Guidance`` names how many branches it needs and how to combine their velocities; the caller
builds one condition object per branch, concatenates them along the batch ONCE before the ODE loop
(``concat_conditions``), and ``guided_velocity_fn`` repeats x and t per branch, runs the network
once and hands the per-branch velocities to ``combine``. New variants (Harmony's SyncCFG with its
per-modality anchors) only subclass ``Guidance``; callers do not change.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Guidance",
    "NoGuidance",
    "ClassifierFreeGuidance",
    "MultiConditionGuidance",
    "concat_conditions",
    "guided_velocity_fn",
]


class Guidance(ABC):
    """Combines per-branch velocities (branch order fixed by the subclass) into one."""

    num_branches: int

    @abstractmethod
    def combine(self, velocities: list[Tensor]) -> Tensor:
        """velocities: ``num_branches`` tensors of equal shape, in branch order."""

    def _check(self, velocities: Sequence[Tensor]) -> None:
        if len(velocities) != self.num_branches:
            raise ValueError(f"{type(self).__name__} expects {self.num_branches} branches, got {len(velocities)}")


class NoGuidance(Guidance):
    """A single conditional branch, returned unchanged."""

    num_branches = 1

    def combine(self, velocities: list[Tensor]) -> Tensor:
        self._check(velocities)
        return velocities[0]


class ClassifierFreeGuidance(Guidance):
    """v = v_u + s (v_c - v_u) (Ho & Salimans); branches [conditional, unconditional].

    Equal to MMAudio's w v_c + (1 - w) v_u; s = 1 returns the conditional prediction.
    """

    num_branches = 2

    def __init__(self, scale: float):
        self.scale = float(scale)

    def combine(self, velocities: list[Tensor]) -> Tensor:
        self._check(velocities)
        conditional, unconditional = velocities
        return unconditional + self.scale * (conditional - unconditional)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(scale={self.scale})"


class MultiConditionGuidance(Guidance):
    """OmniSonic multi-condition CFG (Eq. 9 / Eq. 14 of the appendix).

    v = V(all) + sum_i lambda_i (V(c_i only) - V(none)), with K condition scales lambda_i.
    Branches, in order: [all conditions, c_1 only, ..., c_K only, none] (K + 2 branches; OmniSonic
    keeps the video condition in every branch, so its "none" still carries the video).

    ``scales`` is a length-K sequence shared by the batch, or a (B, K) tensor of per-sample scales
    (a batch mixing scenarios with different presets still runs as one batched forward per step).
    """

    def __init__(self, scales: Sequence[float] | Tensor):
        if isinstance(scales, Tensor):
            if scales.dim() not in (1, 2) or scales.shape[-1] == 0:
                raise ValueError(f"per-sample scales must be (K,) or (B, K), got shape {tuple(scales.shape)}")
            self.scales: list[float] | Tensor = scales.float() if scales.dim() == 2 else [float(s) for s in scales]
        else:
            if len(scales) == 0:
                raise ValueError("MultiConditionGuidance needs at least one condition scale")
            self.scales = [float(s) for s in scales]
        self.num_branches = (self.scales.shape[-1] if isinstance(self.scales, Tensor) else len(self.scales)) + 2

    def _scale(self, i: int, like: Tensor) -> Tensor | float:
        if not isinstance(self.scales, Tensor):
            return self.scales[i]
        if self.scales.shape[0] != like.shape[0]:
            raise ValueError(f"per-sample scales are for {self.scales.shape[0]} samples, the batch has {like.shape[0]}")
        return self.scales[:, i].to(like).view(-1, *([1] * (like.dim() - 1)))

    def combine(self, velocities: list[Tensor]) -> Tensor:
        self._check(velocities)
        v_all, singles, v_none = velocities[0], velocities[1:-1], velocities[-1]
        out = v_all
        for i, v_single in enumerate(singles):
            out = out + self._scale(i, v_none) * (v_single - v_none)
        return out

    def __repr__(self) -> str:
        return f"MultiConditionGuidance(scales={self.scales})"


def concat_conditions(conditions: Sequence[Any]) -> Any:
    """Concatenate per-branch conditions along the batch axis.

    Accepts tensors, or same-typed dataclasses whose Tensor fields are concatenated along dim 0
    (None fields stay None; other fields must be equal across branches and are kept).
    """
    if len(conditions) == 0:
        raise ValueError("concat_conditions needs at least one condition")
    first = conditions[0]
    if isinstance(first, Tensor):
        return torch.cat(list(conditions), dim=0)
    if not dataclasses.is_dataclass(first):
        raise TypeError(f"conditions must be tensors or dataclasses, got {type(first).__name__}")
    for c in conditions[1:]:
        if type(c) is not type(first):
            raise TypeError(f"cannot concatenate {type(first).__name__} with {type(c).__name__}")
    values = {}
    for field in dataclasses.fields(first):
        items = [getattr(c, field.name) for c in conditions]
        if all(item is None for item in items):
            values[field.name] = None
        elif all(isinstance(item, Tensor) for item in items):
            values[field.name] = torch.cat(items, dim=0)
        elif any(item is None or isinstance(item, Tensor) for item in items):
            raise ValueError(f"field {field.name!r} is a tensor in some branches and None in others")
        else:
            if any(item != items[0] for item in items[1:]):
                raise ValueError(f"non-tensor field {field.name!r} differs between branches: {items}")
            values[field.name] = items[0]
    return dataclasses.replace(first, **values)


def guided_velocity_fn(
    predict_velocity: Callable[..., Tensor], branch_conditions: Any, guidance: Guidance, **kwargs: Any
) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap a network into velocity_fn(x, t) for ``euler_sample``.

    branch_conditions: ``concat_conditions([...])`` of ``guidance.num_branches`` per-branch
    conditions, built once. Each call repeats x and t per branch, runs ONE forward
    ``predict_velocity(x_all, t_all, branch_conditions, **kwargs)`` and combines. Tensor kwargs
    with a batch axis (e.g. a latent mask (B, T)) are repeated per branch as well.
    """
    branches = guidance.num_branches

    def repeat(value: Any) -> Any:
        return torch.cat([value] * branches, dim=0) if isinstance(value, Tensor) else value

    repeated_kwargs = {key: repeat(value) for key, value in kwargs.items()}

    def velocity_fn(x: Tensor, t: Tensor) -> Tensor:
        if branches == 1:
            return guidance.combine([predict_velocity(x, t, branch_conditions, **kwargs)])
        v = predict_velocity(repeat(x), repeat(t), branch_conditions, **repeated_kwargs)
        return guidance.combine(list(v.chunk(branches, dim=0)))

    return velocity_fn
