"""The network contract every paper's backbone satisfies (checked for every registered preset)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["FlowNetwork"]


@runtime_checkable
class FlowNetwork(Protocol):
    """A velocity network of the flow ODE.

    ``preprocess_conditions`` runs once per sample (and guidance branch) before the ODE loop and
    returns a small dataclass of condition tensors, absent or dropped conditions already replaced by
    learned nulls; ``predict_velocity`` runs at every step and takes only what changes (x_t, t) plus
    those conditions. Networks return what they compute and keep no per-call state.
    """

    def preprocess_conditions(self, *args: Any, **kwargs: Any) -> Any: ...

    def predict_velocity(
        self, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None, **kwargs: Any
    ) -> Tensor | tuple[Tensor, ...]: ...
