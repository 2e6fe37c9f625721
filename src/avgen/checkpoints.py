"""Every checkpoint avgen reads, in one place.

* **avgen training checkpoints** (written by ``avgen fit``): :func:`read_training_checkpoint` (clear
  errors for missing, empty or foreign files, always ``weights_only=True``), the paper that wrote a
  checkpoint (:func:`checkpoint_class_path`, :func:`paper_name`), the wrong-paper check
  (:func:`check_checkpoint_class`), :func:`load_model` (rebuild any paper's model from its checkpoint)
  and :func:`initialise_from_checkpoint` (a new run starting from another run's weights: the
  ``init_checkpoint`` model option of every paper).
* **public checkpoints** of other projects (MMAudio, BigVGAN, Wan, ...) through explicit key maps.
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
from typing import Any

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


def read_state_dict(path: str | os.PathLike, *, what: str) -> dict[str, Tensor]:
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


# ---------------------------------------------------------------------------------- avgen checkpoints
class CheckpointError(ValueError):
    """A file is not a readable avgen checkpoint (missing, empty, truncated, or not written by avgen)."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model the config builds (another paper, other sizes)."""


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """Load an ``avgen fit`` checkpoint with ``weights_only=True``; every failure names the file and the fix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; give the path of a .ckpt written by `avgen fit`")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes): an interrupted copy or save? use another checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickles of arbitrary objects
        raise CheckpointError(
            f"checkpoint {path!r} cannot be read as an avgen checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); it is truncated, corrupt or not a Lightning checkpoint. avgen only "
            "loads tensors and plain values (weights_only=True), never arbitrary pickled objects"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {path!r} holds no 'state_dict': it is not a Lightning checkpoint written by `avgen fit` "
            "(public weights of another project load through the paper's importer, e.g. FoleyGenEx.load_mmaudio)"
        )
    return dict(checkpoint)


def checkpoint_class_path(checkpoint: Mapping) -> str | None:
    """The model class (``module.Class``) that wrote a checkpoint, or None when it records none."""
    avgen_info = checkpoint.get("avgen") or {}
    hparams = checkpoint.get("hyper_parameters") or {}
    return avgen_info.get("model_class") or hparams.get("_class_path")


def paper_name(class_path: str | None) -> str:
    """A readable name of the paper/model behind a class path: ``avgen.models.omnisonic.module.OmniSonic`` -> ``OmniSonic``."""
    return "an unknown model" if not class_path else class_path.rpartition(".")[2]


def _same_class(a: str, b: str) -> bool:
    # Configs may name a class by a re-export (avgen.models.FoleyGenEx); compare the resolved classes.
    if a == b:
        return True
    try:
        return _resolve_class(a) is _resolve_class(b)
    except (ImportError, AttributeError, ValueError):
        return False


def _resolve_class(class_path: str) -> type:
    import importlib

    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"{class_path!r} is not a module.Class path")
    return getattr(importlib.import_module(module_name), class_name)


def check_checkpoint_class(checkpoint: Mapping, expected_class_path: str, path: str | os.PathLike = "<checkpoint>") -> None:
    """Raise :class:`CheckpointMismatchError` when ``checkpoint`` was written by another model class."""
    trained = checkpoint_class_path(checkpoint)
    if trained is not None and not _same_class(trained, expected_class_path):
        paper_dir = trained.split(".")[2] if trained.startswith("avgen.models.") and trained.count(".") >= 3 else "<paper>"
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)} was trained with {trained}, config builds {expected_class_path} "
            f"(a {paper_name(trained)} checkpoint, a {paper_name(expected_class_path)} model); use the config the "
            f"checkpoint was trained with (configs/{paper_dir}/...), or avgen.checkpoints.load_model(path), which "
            "builds the checkpoint's own model"
        )


def load_model(checkpoint_path: str | os.PathLike, map_location: Any = "cpu", **kwargs: Any):
    """Rebuild the model a checkpoint was trained with (any paper) and load its weights.

    The class comes from the checkpoint itself (``avgen.model_class``, written by every avgen
    model); frozen encoders and codecs are rebuilt from the saved hyper-parameters. Loads with
    ``weights_only=True``. ``<Paper>.load_from_checkpoint`` cannot do this for the base class:
    Lightning filters the saved arguments by the *base* class signature, dropping the paper's own.
    """
    path = os.fspath(checkpoint_path)
    checkpoint = read_training_checkpoint(path)
    class_path = checkpoint_class_path(checkpoint)
    if not class_path:
        raise CheckpointError(
            f"checkpoint {path} records no model class (not written by `avgen fit`?); "
            "load it with <PaperClass>.load_from_checkpoint(path, **init_args) instead"
        )
    try:
        cls = _resolve_class(class_path)
    except (ImportError, AttributeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} names model class {class_path!r}, which cannot be imported ({err})") from None
    from avgen.models.base import FlowMatchingModule

    if not (isinstance(cls, type) and issubclass(cls, FlowMatchingModule)):
        raise CheckpointError(f"checkpoint {path}: {class_path!r} is not an avgen model (FlowMatchingModule subclass)")
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **kwargs)


def initialise_from_checkpoint(module: nn.Module, path: str | os.PathLike) -> None:
    """Copy another run's trained weights into ``module`` (a new run starts from them; not a resume).

    The checkpoint must come from the same model class (e.g. OmniSonic stage 1 -> stage 2). When the
    source has no EMA and ``module`` keeps one, the EMA starts from the loaded network.
    """
    path = os.fspath(path)
    checkpoint = read_training_checkpoint(path)
    check_checkpoint_class(checkpoint, f"{type(module).__module__}.{type(module).__qualname__}", path)
    state = dict(checkpoint["state_dict"])
    if getattr(module, "ema_network", None) is not None:
        if not any(k.startswith("ema_network.") for k in state):
            state.update({f"ema_network.module.{k[len('network.'):]}": v for k, v in state.items() if k.startswith("network.")})
        state.setdefault("ema_network.num_updates", torch.zeros((), dtype=torch.long))
    try:
        module.load_state_dict(state, strict=True)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"init_checkpoint {path}: {err}") from None
