"""Loading public checkpoints into avgen's codec modules through explicit key maps.

Every loader goes through :func:`load_mapped_state_dict`: the checkpoint (already mapped onto the
module's parameter names) is compared with the module's own state dict and every difference is
reported - keys the checkpoint lacks (``missing``), keys the module has no place for
(``unexpected``) and keys whose shapes disagree (``mismatched``). With ``strict=True`` (the
default) any difference raises; with ``strict=False`` the matching tensors are loaded and the rest
is reported as a warning, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn


@dataclasses.dataclass
class LoadReport:
    """What a checkpoint load matched and what it did not."""

    source: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "key: checkpoint (shape) vs module (shape)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 12) -> str:
        parts = []
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("shape mismatch", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
                parts.append(f"{len(keys)} {name}: {shown}")
        return "; ".join(parts) if parts else "all keys matched"


def read_checkpoint(path: str | os.PathLike, *, what: str) -> dict[str, Tensor]:
    """A state dict from a ``.pt``/``.pth``/``.ckpt`` (torch, ``weights_only``) or ``.safetensors`` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: checkpoint file {path!r} does not exist; give the path of the downloaded file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path, device="cpu"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: {path!r} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Drop wrapper prefixes (``module.`` from DDP, ...) when every key carries one of them."""
    out = dict(state_dict)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def fold_weight_norm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fold weight-normalised tensors into plain weights: ``w = g * v / ||v||`` (norm over all dims but 0).

    Handles both layouts torch has written: ``X.weight_g`` / ``X.weight_v`` (``nn.utils.weight_norm``)
    and ``X.parametrizations.weight.original0`` / ``original1`` (``nn.utils.parametrizations``).
    """
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        for g_suffix, v_suffix in ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_suffix):
                pairs.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pairs.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise ValueError(f"weight-norm pair for {base!r} is incomplete in the checkpoint (has only {sorted(gv)})")
        v = gv["v"].float()
        norm = torch.linalg.vector_norm(v.flatten(1), dim=1).reshape(-1, *([1] * (v.ndim - 1)))
        out[f"{base}.weight"] = (gv["g"].float() * v / norm).to(gv["v"].dtype)
    return out


def load_mapped_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool, source: str) -> LoadReport:
    """Copy ``state_dict`` (keys already in the module's naming) into ``module``; report differences."""
    own = module.state_dict()
    loaded, mismatched = [], []
    for key, value in state_dict.items():
        if key in own:
            if tuple(own[key].shape) == tuple(value.shape):
                loaded.append(key)
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs module {tuple(own[key].shape)}")
    report = LoadReport(
        source=source,
        loaded=loaded,
        missing=sorted(set(own) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(own)),
        mismatched=mismatched,
    )
    if not report.ok and strict:
        raise ValueError(
            f"{source}: checkpoint does not match the module ({report.describe()}). Check the mode/config "
            "matches the checkpoint, or pass strict=False to load the matching keys and keep the rest."
        )
    if not report.ok:
        warnings.warn(f"{source}: partial load ({report.describe()})", stacklevel=3)
    with torch.no_grad():
        for key in loaded:
            own[key].copy_(state_dict[key])
    return report


def building_on_meta() -> bool:
    """True inside ``with torch.device("meta"):`` (the ``avgen summary`` path): build, load nothing."""
    return torch.get_default_device().type == "meta"
