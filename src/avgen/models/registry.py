"""Network size presets, listed and built by name (as timm / open_clip list their models).

Each ``models/<paper>/network.py`` ends with its presets::

    register_network("mmaudio-l-44k", FoleyGenExNetwork, hidden_dim=896, num_heads=14, ...)

and everything else reads sizes from here: ``avgen.models.list_networks()``,
``avgen.models.create_network("mmaudio-s-16k", hidden_dim=64)`` (also on the meta device, for
counting), a paper module's ``network: mmaudio-l-44k`` option in YAML (its condition encoders then
override the input widths they determine), tests that run over every preset, and importers of public
weights that describe the sizes a checkpoint needs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["NetworkPreset", "register_network", "list_networks", "network_preset", "create_network"]


@dataclass(frozen=True)
class NetworkPreset:
    """A named network size: the class and the keyword arguments that build it."""

    name: str
    network_class: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def build(self, **overrides: Any) -> nn.Module:
        return self.network_class(**{**self.kwargs, **overrides})


_PRESETS: dict[str, NetworkPreset] = {}


def register_network(name: str, network_class: type[nn.Module], *, description: str = "", **kwargs: Any) -> NetworkPreset:
    """Register ``name`` -> ``network_class(**kwargs)``. Re-registering the same name replaces it."""
    preset = NetworkPreset(name, network_class, dict(kwargs), description)
    _PRESETS[name] = preset
    return preset


def _import_papers() -> None:
    # Presets register when their network module is imported; make sure every built-in paper is.
    import avgen.models  # noqa: F401


def list_networks(pattern: str = "*") -> list[str]:
    """Names of the registered presets matching a shell-style ``pattern`` (``"mmaudio-*"``), sorted."""
    _import_papers()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def network_preset(name: str) -> NetworkPreset:
    _import_papers()
    if name not in _PRESETS:
        raise KeyError(f"unknown network preset {name!r}; registered: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def create_network(name: str, *, device: str | torch.device | None = None, **overrides: Any) -> nn.Module:
    """Build the preset ``name`` with ``overrides``; ``device="meta"`` allocates no weights (parameter counts)."""
    preset = network_preset(name)
    if device is None:
        return preset.build(**overrides)
    with torch.device(device):
        return preset.build(**overrides)
