"""Public Wan2.2 DiT weights -> :class:`~avgen.models.harmony.video_network.WanVideoNetwork`.

Two public layouts carry the same tensors under different names:

* the original release (``Wan-AI/Wan2.2-TI2V-5B``: ``config.json`` with ``dim``/``num_heads``, and
  ``diffusion_pytorch_model*.safetensors`` of Wan's ``WanModel``);
* diffusers (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, subfolder ``transformer``: ``config.json`` with
  ``num_attention_heads``, and the ``WanTransformer3DModel`` state dict).

Each has an explicit rename table (diffusers' ``scripts/convert_wan_to_diffusers.py`` relates the
two; note Wan's ``norm3`` is diffusers' ``norm2``, the affine cross-attention norm). Every load
returns a :class:`~avgen.codecs.checkpoints.LoadReport`: ``unexpected`` lists checkpoint keys in the
checkpoint's own naming that map onto nothing, ``missing`` the avgen keys nobody filled,
``mismatched`` shape disagreements. ``strict=True`` raises on any of them before copying anything.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from avgen.checkpoints import LoadReport, read_state_dict, strip_prefixes
from avgen.models.harmony.video_network import WanVideoNetwork

__all__ = [
    "DIFFUSERS_RENAMES",
    "ORIGINAL_RENAMES",
    "detect_layout",
    "load_wan_state_dict",
    "network_kwargs_from_config",
    "read_wan_checkpoint",
    "wan_key_to_avgen",
    "wan_video_network_from_pretrained",
]

# (pattern, replacement), applied in order to every key; anchored so nothing renames by accident.
ORIGINAL_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^text_embedding\.0\.", "text_embedding.fc1."),
    (r"^text_embedding\.2\.", "text_embedding.fc2."),
    (r"^time_embedding\.0\.", "time_embedding.mlp.0."),
    (r"^time_embedding\.2\.", "time_embedding.mlp.2."),
    (r"^(blocks\.\d+)\.norm3\.", r"\1.cross_attn_norm."),  # Wan's norm3 = the affine cross-attention LN
    (r"^(blocks\.\d+)\.ffn\.0\.", r"\1.ffn.fc1."),
    (r"^(blocks\.\d+)\.ffn\.2\.", r"\1.ffn.fc2."),
    (r"^head\.modulation$", "head_modulation"),
    (r"^head\.head\.", "head."),
)

DIFFUSERS_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.fc1."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.fc2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.mlp.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.mlp.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^(blocks\.\d+)\.attn1\.", r"\1.self_attn."),
    (r"^(blocks\.\d+)\.attn2\.", r"\1.cross_attn."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.to_q\.", r"\1.q."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.to_k\.", r"\1.k."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.to_v\.", r"\1.v."),
    (r"^(blocks\.\d+\.(?:self|cross)_attn)\.to_out\.0\.", r"\1.o."),
    (r"^(blocks\.\d+)\.norm2\.", r"\1.cross_attn_norm."),  # diffusers' norm2 = Wan's norm3
    (r"^(blocks\.\d+)\.ffn\.net\.0\.proj\.", r"\1.ffn.fc1."),
    (r"^(blocks\.\d+)\.ffn\.net\.2\.", r"\1.ffn.fc2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^scale_shift_table$", "head_modulation"),
    (r"^proj_out\.", "head."),
)

_RENAMES = {"original": ORIGINAL_RENAMES, "diffusers": DIFFUSERS_RENAMES}


def wan_key_to_avgen(key: str, layout: str) -> str:
    """The avgen name of one checkpoint key in ``layout`` ("original" or "diffusers")."""
    if layout not in _RENAMES:
        raise ValueError(f"layout must be 'original' or 'diffusers', got {layout!r}")
    for pattern, replacement in _RENAMES[layout]:
        key = re.sub(pattern, replacement, key)
    return key


def detect_layout(keys) -> str:
    """'diffusers' when the keys are WanTransformer3DModel's, 'original' when they are WanModel's."""
    keys = list(keys)
    if any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys):
        return "diffusers"
    if any(k.startswith(("time_embedding.", "text_embedding.")) or ".self_attn." in k for k in keys):
        return "original"
    raise ValueError(
        "cannot tell the Wan checkpoint layout: expected WanModel keys (time_embedding.*, blocks.N.self_attn.*) "
        f"or diffusers WanTransformer3DModel keys (condition_embedder.*, blocks.N.attn1.*); first keys: {keys[:5]}"
    )


def _weights_dir(path: Path) -> Path:
    """The folder holding the DiT weights: ``path`` itself, or its diffusers ``transformer/`` subfolder."""
    if any(path.glob("*.safetensors")):
        return path
    if (path / "transformer").is_dir():
        return path / "transformer"
    raise FileNotFoundError(
        f"no *.safetensors weights in {path} (nor in {path / 'transformer'}); point at the downloaded "
        "Wan2.2-TI2V-5B folder (original layout) or at Wan2.2-TI2V-5B-Diffusers / its transformer/ folder"
    )


def read_wan_checkpoint(source: str | os.PathLike) -> tuple[dict[str, Tensor], dict | None]:
    """(state dict, config.json or None) from a folder of (sharded) safetensors or one checkpoint file."""
    path = Path(source)
    if path.is_file():
        state = read_state_dict(path, what="Wan DiT")
        config_file = path.parent / "config.json"
    elif path.is_dir():
        folder = _weights_dir(path)
        from safetensors.torch import load_file

        state = {}
        for shard in sorted(folder.glob("*.safetensors")):
            state.update(load_file(str(shard), device="cpu"))
        config_file = folder / "config.json"
    else:
        raise FileNotFoundError(f"Wan DiT checkpoint {path} does not exist; download Wan-AI/Wan2.2-TI2V-5B(-Diffusers)")
    for wrapper in ("state_dict", "model", "module"):  # training snapshots nest the network
        if isinstance(state.get(wrapper), Mapping):
            state = dict(state[wrapper])
    state = strip_prefixes(state, ("module.", "model."))
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    return state, config


def network_kwargs_from_config(config: Mapping) -> dict:
    """WanVideoNetwork kwargs from an original (``dim``, ``num_heads``) or diffusers config.json."""
    if "num_attention_heads" in config:  # diffusers WanTransformer3DModel
        if config.get("image_dim") or config.get("added_kv_proj_dim"):
            raise ValueError("image-conditioned Wan (I2V-14B, image_dim / added_kv_proj_dim) is not supported")
        heads = config["num_attention_heads"]
        return dict(
            latent_channels=config["in_channels"],
            dim=heads * config["attention_head_dim"],
            ffn_dim=config["ffn_dim"],
            num_heads=heads,
            num_layers=config["num_layers"],
            text_dim=config.get("text_dim", 4096),
            text_len=512,  # diffusers' Wan pipelines pad prompts to max_sequence_length=512
            freq_dim=config.get("freq_dim", 256),
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            eps=config.get("eps", 1e-6),
            cross_attn_norm=config.get("cross_attn_norm", True),
        )
    if "dim" in config and "num_heads" in config:  # Wan's WanModel
        if config.get("model_type", "t2v") in ("i2v", "flf2v", "vace"):
            raise ValueError(f"Wan model_type {config['model_type']!r} (image cross-attention) is not supported")
        if config.get("in_dim") != config.get("out_dim", config.get("in_dim")):
            raise ValueError(f"in_dim {config.get('in_dim')} != out_dim {config.get('out_dim')} is not supported")
        return dict(
            latent_channels=config["in_dim"],
            dim=config["dim"],
            ffn_dim=config["ffn_dim"],
            num_heads=config["num_heads"],
            num_layers=config["num_layers"],
            text_dim=config.get("text_dim", 4096),
            text_len=config.get("text_len", 512),
            freq_dim=config.get("freq_dim", 256),
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            eps=config.get("eps", 1e-6),
            cross_attn_norm=config.get("cross_attn_norm", True),
        )
    raise ValueError(f"not a Wan DiT config.json (keys: {sorted(config)[:8]}...)")


@torch.no_grad()
def load_wan_state_dict(
    network: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    layout: str | None = None,
    strict: bool = True,
    source: str = "Wan DiT checkpoint",
    prefix: str = "",
) -> LoadReport:
    """Copy a Wan state dict (original or diffusers naming) into ``network``.

    ``prefix`` is prepended to every mapped key (e.g. ``"video."`` when the Wan DiT lives inside a
    bigger network such as Harmony's two-branch model, whose own keys are then ``missing``: load
    those with ``strict=False``). A network built on the meta device gets the tensors assigned.
    """
    layout = layout or detect_layout(state_dict)
    own = network.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        target = prefix + wan_key_to_avgen(key, layout)
        if target not in own:
            unexpected.append(key)
        elif tuple(own[target].shape) != tuple(value.shape):
            mismatched.append(f"{key} -> {target}: checkpoint {tuple(value.shape)} vs network {tuple(own[target].shape)}")
        else:
            mapped[target] = value
    report = LoadReport(
        source=f"{source} ({layout} layout)",
        loaded=sorted(mapped),
        missing=sorted(set(own) - set(mapped)),
        unexpected=sorted(unexpected),
        mismatched=mismatched,
    )
    if strict and not report.ok:
        raise ValueError(
            f"{report.source} does not fit the network ({report.describe()}); build the network from the "
            "checkpoint's config.json (network_kwargs_from_config) or pass strict=False"
        )
    if not report.ok:
        warnings.warn(f"{report.source}: partial load ({report.describe()})", stacklevel=2)
    on_meta = any(p.is_meta for p in network.parameters())
    if on_meta:
        typed = {k: v.to(own[k].dtype) for k, v in mapped.items()}
        network.load_state_dict(typed, strict=False, assign=True)
    else:
        for key, value in mapped.items():
            own[key].copy_(value.to(own[key].dtype))
    return report


def wan_video_network_from_pretrained(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    strict: bool = True,
) -> tuple[WanVideoNetwork, LoadReport]:
    """Build a WanVideoNetwork from a downloaded Wan folder (either layout) and load its weights.

    ``source``: the ``Wan2.2-TI2V-5B`` folder, the ``Wan2.2-TI2V-5B-Diffusers`` folder (its
    ``transformer/`` is used) or that ``transformer/`` folder. The network is built on the meta
    device and the checkpoint tensors are assigned, so a 5B model is never initialised twice.
    ``dtype`` bf16/fp16 keeps the time embedding, modulation tables and norms in fp32
    (:meth:`WanVideoNetwork.to_mixed_precision`, diffusers' ``_keep_in_fp32_modules``).
    """
    state, config = read_wan_checkpoint(source)
    if config is None:
        raise FileNotFoundError(f"no config.json next to the Wan weights in {source}; it says the network size")
    with torch.device("meta"):
        network = WanVideoNetwork(**network_kwargs_from_config(config))
    if dtype != torch.float32:
        network.to_mixed_precision(dtype)  # fp32 time embedding, modulation tables and norms, as in diffusers
    report = load_wan_state_dict(network, state, strict=strict, source=str(source))
    if any(p.is_meta for p in network.parameters()):
        missing = [n for n, p in network.named_parameters() if p.is_meta]
        raise ValueError(f"{source}: parameters left unfilled on the meta device: {missing[:5]}; the checkpoint is incomplete")
    return network, report
