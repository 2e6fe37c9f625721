"""Load the public MMAudio network checkpoints (S-16k, S-44k, M-44k, L-44k) into the FoleyGenEx backbone.

FoleyGenEx is MMAudio plus new parts (§3.1.1), so it can be fine-tuned from MMAudio: every MMAudio
tensor maps onto one backbone tensor of the same shape; the new FoleyGenEx parts (the
InputEmbedding) keep their fresh initialisation (the identity on x_t, so the loaded network starts
out computing MMAudio's function). Names differ by convention, and one layout differs:

====================================  ==========================================
MMAudio (``mmaudio/model/networks.py``)  avgen ``FoleyGenExNetwork``
====================================  ==========================================
``fused_blocks.<i>.``                 ``single_blocks.<i>.``
``<block>.linear1.``                  ``<block>.attn_out.``
``<block>.adaLN_modulation.``         ``<block>.modulation.adaLN_modulation.``
``final_layer.adaLN_modulation.``     ``final_layer.modulation.adaLN_modulation.``
``final_layer.conv.``                 ``final_layer.proj.``
``empty_clip_feat`` / ``empty_sync_feat``  ``null_clip`` / ``null_sync``
``empty_string_feat`` (CLIP of "")    ``null_text``
``latent_mean`` / ``latent_std``      returned to the caller (the codec normalises latents)
====================================  ==========================================

The fused q/k/v projection of every attention (``*.attn.qkv.weight`` / ``.bias``) is laid out
differently: MMAudio splits its 3D output rows as ``(h d j)`` (q, k and v interleaved for every head
channel, its ``Rearrange('b n (h d j) -> b h n d j', j=3)``), avgen's ``QKVProjection`` as
``(j h d)`` (a q block, then k, then v). The importer permutes those rows
(:func:`mmaudio_qkv_to_avgen`) and the exporter permutes them back (:func:`avgen_qkv_to_mmaudio`).
With that, an imported network computes MMAudio's velocity on the same weights (to fp32 rounding,
~1e-6; ``tests/models/test_mmaudio_fidelity.py`` checks it against a transcription of MMAudio's
forward), given MMAudio's norm epsilons, which are FoleyGenExNetwork's defaults.

Keys that map nowhere, network tensors that nothing fills (other than the new FoleyGenEx parts)
and shape mismatches are reported; with ``strict`` (the default) they raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "FOLEYGENEX_NEW_PARTS",
    "MMAudioImport",
    "avgen_qkv_to_mmaudio",
    "avgen_to_mmaudio_key",
    "export_mmaudio_state_dict",
    "load_mmaudio_checkpoint",
    "mmaudio_qkv_to_avgen",
    "mmaudio_to_avgen_key",
]

# Parameters FoleyGenEx adds to MMAudio (§3.1); they start fresh when importing MMAudio weights.
FOLEYGENEX_NEW_PARTS = ("input_embedding.",)
LATENT_STATS = ("latent_mean", "latent_std")

_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^fused_blocks\.(\d+)\.", r"single_blocks.\1."),
    (r"\.linear1\.", ".attn_out."),
    (r"^(joint_blocks\.\d+\.(?:latent|clip|text)_block|single_blocks\.\d+|final_layer)\.adaLN_modulation\.",
     r"\1.modulation.adaLN_modulation."),
    (r"^final_layer\.conv\.", "final_layer.proj."),
    (r"^empty_clip_feat$", "null_clip"),
    (r"^empty_sync_feat$", "null_sync"),
    (r"^empty_string_feat$", "null_text"),
)


_INVERSE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^single_blocks\.(\d+)\.", r"fused_blocks.\1."),
    (r"\.attn_out\.", ".linear1."),
    (r"\.modulation\.adaLN_modulation\.", ".adaLN_modulation."),
    (r"^final_layer\.proj\.", "final_layer.conv."),
    (r"^null_clip$", "empty_clip_feat"),
    (r"^null_sync$", "empty_sync_feat"),
    (r"^null_text$", "empty_string_feat"),
)
_QKV_KEY = re.compile(r"\.attn\.qkv\.(weight|bias)$")  # the same name on both sides


def mmaudio_to_avgen_key(key: str) -> str:
    """The FoleyGenExNetwork name of an MMAudio network state-dict key (renames applied in order)."""
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def avgen_to_mmaudio_key(key: str) -> str:
    """The MMAudio name of a FoleyGenExNetwork state-dict key (inverse of :func:`mmaudio_to_avgen_key`)."""
    for pattern, replacement in _INVERSE_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def mmaudio_qkv_to_avgen(tensor: Tensor) -> Tensor:
    """Rows of a fused qkv weight (3D, D) or bias (3D,): MMAudio's (h d j) -> avgen's (j h d).

    Row c * 3 + j of MMAudio (channel c = head * Dh + d, j in q/k/v) becomes row j * D + c. The
    permutation does not depend on the number of heads.
    """
    return rearrange(tensor, "(c j) ... -> (j c) ...", j=3)


def avgen_qkv_to_mmaudio(tensor: Tensor) -> Tensor:
    """Inverse of :func:`mmaudio_qkv_to_avgen`: avgen's (j h d) rows -> MMAudio's (h d j)."""
    return rearrange(tensor, "(j c) ... -> (c j) ...", j=3)


@dataclass
class MMAudioImport:
    """What an import did: latent statistics for the codec and the keys that did not match."""

    latent_mean: Tensor | None  # (C,) dataset latent mean (MMAudio stores it in the network)
    latent_std: Tensor | None  # (C,)
    loaded: list[str] = field(default_factory=list)  # avgen keys filled from the checkpoint
    fresh: list[str] = field(default_factory=list)  # new FoleyGenEx parts left at their initialisation
    unexpected: list[str] = field(default_factory=list)  # MMAudio keys that map onto nothing
    missing: list[str] = field(default_factory=list)  # backbone keys the checkpoint did not fill
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs network shape"

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.mismatched)


def _read_state_dict(source: str | Path | dict[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"MMAudio checkpoint {path} does not exist; download e.g. mmaudio_large_44k.pth")
        state = torch.load(path, map_location="cpu", weights_only=True)
    # MMAudio's released *.pth files are the bare network state dict; training snapshots nest it.
    for wrapper in ("weights", "network", "state_dict", "model"):
        if isinstance(state.get(wrapper), dict) and not any(isinstance(v, Tensor) for v in state.values()):
            state = state[wrapper]
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("the MMAudio checkpoint is not a state dict of tensors (wrong file?)")
    return state


@torch.no_grad()
def load_mmaudio_checkpoint(
    network: nn.Module, source: str | Path | dict[str, Tensor], *, strict: bool = True
) -> MMAudioImport:
    """Copy an MMAudio network checkpoint (path or state dict) into ``network`` (a FoleyGenExNetwork).

    Returns an :class:`MMAudioImport` with MMAudio's latent_mean / latent_std (hand them to the
    codec, e.g. ``avgen.codecs.MMAudioCodec``'s buffers) and the unmatched keys. With ``strict``,
    any unexpected, missing (outside the new FoleyGenEx parts) or mismatched key raises a
    ``ValueError`` before anything is copied.
    """
    state = _read_state_dict(source)
    own = network.state_dict()
    report = MMAudioImport(latent_mean=None, latent_std=None)
    updates: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in LATENT_STATS:
            setattr(report, key, value.detach().reshape(-1).float().clone())
            continue
        target = mmaudio_to_avgen_key(key)
        if target not in own:
            report.unexpected.append(key)
        elif tuple(own[target].shape) != tuple(value.shape):
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs network {tuple(own[target].shape)}")
        else:
            updates[target] = mmaudio_qkv_to_avgen(value) if _QKV_KEY.search(key) else value
    for key in own:
        if key in updates:
            continue
        (report.fresh if key.startswith(FOLEYGENEX_NEW_PARTS) else report.missing).append(key)
    report.loaded = sorted(updates)
    if strict and not report.ok:
        raise ValueError(
            "MMAudio checkpoint does not fit this FoleyGenEx backbone: "
            f"{len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]}), "
            f"{len(report.missing)} missing (e.g. {report.missing[:3]}), "
            f"{len(report.mismatched)} mismatched (e.g. {report.mismatched[:2]}); build the network with the "
            f"checkpoint's size: {_mmaudio_sizes()} (avgen.models.create_network('<name>'); FoleyGenEx "
            "network: <name>), or pass strict=False"
        )
    for key, value in updates.items():
        own[key].copy_(value.to(own[key].dtype))
    return report


@torch.no_grad()
def export_mmaudio_state_dict(
    network: nn.Module, *, latent_mean: Tensor | None = None, latent_std: Tensor | None = None
) -> dict[str, Tensor]:
    """A FoleyGenExNetwork's weights as an MMAudio network state dict (names and qkv layout).

    The new FoleyGenEx parts (InputEmbedding) have no MMAudio counterpart and are left out, so the
    result is MMAudio's function only for a network without conditional injection (or one whose
    InputEmbedding is still the identity). latent_mean / latent_std (C,) are stored as MMAudio
    stores them, (1, 1, C), when given.
    """
    state: dict[str, Tensor] = {}
    for key, value in network.state_dict().items():
        if key.startswith(FOLEYGENEX_NEW_PARTS):
            continue
        value = value.detach().clone()
        state[avgen_to_mmaudio_key(key)] = avgen_qkv_to_mmaudio(value) if _QKV_KEY.search(key) else value
    for name, stat in (("latent_mean", latent_mean), ("latent_std", latent_std)):
        if stat is not None:
            state[name] = stat.detach().reshape(1, 1, -1).clone()
    return state


def _mmaudio_sizes() -> str:
    """The MMAudio presets of the registry, described for an error message (sizes live in one place)."""
    from avgen.models.registry import list_networks, network_preset

    parts = []
    for name in list_networks("mmaudio-*"):
        k = network_preset(name).kwargs
        parts.append(f"{name}: hidden {k['hidden_dim']}, {k['num_heads']} heads, {k['num_joint_blocks']}+"
                     f"{k['num_single_blocks']} blocks, {k['latent_channels']} latent channels")
    return "; ".join(parts)
