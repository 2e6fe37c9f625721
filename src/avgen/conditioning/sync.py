"""Synchformer visual branch: a MotionFormer (divided space-time ViT-B/16) over 16-frame windows.

Synchformer (Iashin et al., ICASSP 2024) extracts audio-visual synchronisation features; MMAudio
and the papers built on it use only its visual feature extractor (``vfeat_extractor``, config
``divided_224_16x4.yaml`` of MotionFormer). For each window of 16 frames at 25 fps (stride 8):

1. tubelet embedding: Conv3d with kernel/stride (2, 16, 16) -> 8 x 14 x 14 tokens of 768-d;
2. a CLS token; spatial position embedding (197 rows) tiled over time + a temporal embedding (8);
3. 12 divided space-time blocks (TimeSformer "divided" attention): temporal attention across
   the 8 time steps of each spatial location, then spatial attention across the 14 x 14 patches of
   each time step, then an MLP; the CLS token attends to all tokens in both steps;
4. final LayerNorm, CLS dropped, then per time step a pre-norm transformer layer with its own CLS
   token pools the 196 patches into one vector (``spatial_attn_agg``); no temporal pooling.

So each window gives 8 tokens x 768 and a clip of F frames gives ((F - 16) // 8 + 1) x 8 tokens:
192 tokens for 8 s at 25 fps (MMAudio's ``sync_f``, "24 fps" in the papers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from avgen.conditioning._common import FrozenEncoder, check_frames, resize_short_side_center_crop, seeded_build

# Tokens per 16-frame window of the real Synchformer (16 frames / tubelet 2); MMAudio-style networks
# add a learned position embedding per token of a segment and slice sync features by whole segments.
SYNC_SEGMENT_TOKENS = 8

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class TubeletEmbed(nn.Module):
    """(N, 3, T, H, W) -> (N, T/t * H/p * W/p, D), time-major token order ``(t h w)``."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet: int) -> None:
        super().__init__()
        k = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.proj(x), "n d t h w -> n (t h w) d")


class DividedAttention(nn.Module):
    """One factor of divided space-time attention (TimeSformer, Bertasius et al. 2021).

    Tokens are [CLS, patches in (t p) order]. The CLS query attends to every token; each patch
    query attends to the CLS token plus the patches sharing its spatial location (``axis="time"``)
    or its time step (``axis="space"``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, axis: Literal["time", "space"], num_times: int, num_patches: int) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (b, h, 1, d)

        group = "(b p) h t d" if axis == "time" else "(b t) h p d"
        split = partial(rearrange, pattern=f"b h (t p) d -> {group}", t=num_times, p=num_patches)
        q_, k_, v_ = split(q[:, :, 1:]), split(k[:, :, 1:]), split(v[:, :, 1:])
        # every group also sees the CLS key/value of its own sample
        repeats = q_.shape[0] // x.shape[0]
        k_ = torch.cat([k[:, :, :1].repeat_interleave(repeats, dim=0), k_], dim=2)
        v_ = torch.cat([v[:, :, :1].repeat_interleave(repeats, dim=0), v_], dim=2)
        out = F.scaled_dot_product_attention(q_, k_, v_)
        out = rearrange(out, f"{group} -> b h (t p) d", t=num_times, p=num_patches)

        out = torch.cat([cls_out, out], dim=2)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class DividedSpaceTimeBlock(nn.Module):
    """x + TimeAttn(norm3 x); then + SpaceAttn(norm1 .); then + MLP(norm2 .) (MotionFormer order)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm3 = LayerNorm6(dim)
        self.timeattn = DividedAttention(dim, num_heads)
        self.norm1 = LayerNorm6(dim)
        self.attn = DividedAttention(dim, num_heads)
        self.norm2 = LayerNorm6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor, num_times: int, num_patches: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), "time", num_times, num_patches)
        x = x + self.attn(self.norm1(x), "space", num_times, num_patches)
        return x + self.mlp(self.norm2(x))


class SpatialPool(nn.Module):
    """Pools the patches of one time step into its CLS output with a pre-norm transformer layer.

    Synchformer uses ``nn.TransformerEncoderLayer(norm_first=True, GELU, eps=1e-6)`` with a
    prepended learnable CLS token; timm's ``Block`` is the same computation (checkpoint names are
    mapped by :func:`synchformer_to_avgen_key`).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm6, act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        """(N, P, D) -> (N, D)."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.block(x)[:, 0]


class SyncEncoder(FrozenEncoder):
    """Synchformer visual features: (B, F, 3, H, W) in [0, 1] at 25 fps -> (B, S * 8, D).

    Defaults are the real Synchformer (MotionFormer ``divided_224_16x4``): ViT-B/16, 224 px,
    tubelets of 2 frames, 16-frame windows with stride 8. ``pretrained`` is a Synchformer
    checkpoint path (the official ``*.pt``'s state dict or MMAudio's ``synchformer_state_dict.pth``);
    only its ``vfeat_extractor`` entries are used.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        tubelet: int = 2,
        image_size: int = 224,
        num_frames_per_window: int = 16,
        stride: int = 8,
        mlp_ratio: float = 4.0,
        pretrained: str | None = None,
        frozen: bool = True,
        init_seed: int = 0,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        if image_size % patch_size or num_frames_per_window % tubelet:
            raise ValueError(
                f"SyncEncoder: image_size ({image_size}) must be a multiple of patch_size ({patch_size}) "
                f"and num_frames_per_window ({num_frames_per_window}) a multiple of tubelet ({tubelet})."
            )
        self.embed_dim, self.image_size = embed_dim, image_size
        self.window, self.stride, self.chunk_size = num_frames_per_window, stride, chunk_size
        self.num_times = num_frames_per_window // tubelet  # tokens per window
        self.num_patches = (image_size // patch_size) ** 2

        with seeded_build(init_seed) as device:
            self.patch_embed_3d = TubeletEmbed(3, embed_dim, patch_size, tubelet)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
            self.temp_embed = nn.Parameter(torch.zeros(1, self.num_times, embed_dim))
            self.blocks = nn.ModuleList(DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
            self.norm = LayerNorm6(embed_dim)
            self.spatial_attn_agg = SpatialPool(embed_dim, num_heads, mlp_ratio)
            if device.type != "meta":
                self._init_weights()
        if pretrained is not None and device.type != "meta":
            load_synchformer_checkpoint(self, pretrained, strict=True)
        self._apply_frozen(frozen)

    def _init_weights(self) -> None:
        # MotionFormer's init (trunc-normal 0.02 Linears, unit LayerNorms, trunc-normal CLS/pos), except
        # the tubelet conv: MotionFormer zero-initialises it (it is always overwritten by weights), which
        # would make randomly initialised features independent of the video.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.cls_token, self.pos_embed, self.spatial_attn_agg.cls_token):
            trunc_normal_(p, std=0.02)

    @property
    def output_dim(self) -> int:
        return self.embed_dim

    def num_segments(self, num_frames: int) -> int:
        if num_frames < self.window:
            raise ValueError(
                f"SyncEncoder: a video of {num_frames} frames is too short; at least {self.window} frames "
                f"({self.window / 25:.2f} s at 25 fps) are needed for one synchronisation window. "
                "Pad or loop the clip, or drop it from the manifest."
            )
        return (num_frames - self.window) // self.stride + 1

    def num_tokens(self, num_frames: int) -> int:
        """Tokens for ``num_frames`` frames: ((F - 16) // 8 + 1) * 8 with the real settings."""
        return self.num_segments(num_frames) * self.num_times

    def encode_windows(self, x: Tensor) -> Tensor:
        """(N, 3, T, H, W) normalised windows -> (N, T / tubelet, D)."""
        x = self.patch_embed_3d(x)  # (N, t*p, D)
        pos = self.pos_embed[:, 1:].repeat(1, self.num_times, 1) + self.temp_embed.repeat_interleave(
            self.num_patches, dim=1
        )
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x + pos], dim=1)
        for block in self.blocks:
            x = block(x, self.num_times, self.num_patches)
        x = self.norm(x[:, 1:])
        x = rearrange(x, "n (t p) d -> (n t) p d", t=self.num_times)
        return rearrange(self.spatial_attn_agg(x), "(n t) d -> n t d", t=self.num_times)

    def forward(self, frames: Tensor) -> Tensor:
        check_frames(frames, "SyncEncoder")
        b, f = frames.shape[:2]
        s = self.num_segments(f)
        with self.grad_context():
            images = resize_short_side_center_crop(rearrange(frames, "b f c h w -> (b f) c h w"), self.image_size)
            images = rearrange(images * 2.0 - 1.0, "(b f) c h w -> b f c h w", b=b)  # [0, 1] -> [-1, 1]
            windows = images.unfold(1, self.window, self.stride)  # (b, s, c, h, w, window)
            windows = rearrange(windows, "b s c h w t -> (b s) c t h w")
            tokens = torch.cat([self.encode_windows(w) for w in windows.split(self.chunk_size)])
        return rearrange(tokens, "(b s) t d -> b (s t) d", b=b, s=s)

    def load_synchformer_checkpoint(self, path: str, strict: bool = True) -> "SyncCheckpointReport":
        return load_synchformer_checkpoint(self, path, strict=strict)


# ----------------------------------------------------------------------------------------------
# Official checkpoint -> SyncEncoder
# ----------------------------------------------------------------------------------------------

# nn.TransformerEncoderLayer names (Synchformer's spatial aggregator) -> timm Block names.
_AGG_RENAMES = {
    "self_attn.in_proj_weight": "block.attn.qkv.weight",
    "self_attn.in_proj_bias": "block.attn.qkv.bias",
    "self_attn.out_proj.weight": "block.attn.proj.weight",
    "self_attn.out_proj.bias": "block.attn.proj.bias",
    "linear1.weight": "block.mlp.fc1.weight",
    "linear1.bias": "block.mlp.fc1.bias",
    "linear2.weight": "block.mlp.fc2.weight",
    "linear2.bias": "block.mlp.fc2.bias",
    "norm1.weight": "block.norm1.weight",
    "norm1.bias": "block.norm1.bias",
    "norm2.weight": "block.norm2.weight",
    "norm2.bias": "block.norm2.bias",
    "cls_token": "cls_token",
}
# Present in the official MotionFormer state dict but unused by the feature extractor: the 2-D
# patch embedding (kept there only to count patches) and classification heads.
_UNUSED_PREFIXES = ("patch_embed.proj.", "head.", "pre_logits.", "head_drop.")


def synchformer_to_avgen_key(key: str, prefix: str = "spatial_attn_agg.") -> str:
    """Map a MotionFormer key (without the ``vfeat_extractor.`` prefix) to a SyncEncoder key.

    ``prefix`` names the aggregator module: Synchformer's audio branch pools frequencies with the same
    layer under ``freq_attn_agg.`` (:mod:`avgen.eval.synchformer`)."""
    if key.startswith(prefix) and key[len(prefix) :] in _AGG_RENAMES:
        return prefix + _AGG_RENAMES[key[len(prefix) :]]
    return key  # tubelet embed, CLS / position embeddings, blocks and norm share the official names


@dataclass
class SyncCheckpointReport:
    """What :func:`load_synchformer_checkpoint` did with a checkpoint."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # known-unused official entries
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys with no place in the module
    missing: list[str] = field(default_factory=list)  # module keys the checkpoint does not fill
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs module shape"

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.mismatched)

    def describe(self) -> str:
        groups = (("unexpected", self.unexpected), ("missing", self.missing), ("shape mismatch", self.mismatched))
        return "; ".join(f"{name} ({len(keys)}): {keys}" for name, keys in groups if keys)


def _read_state_dict(path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Synchformer checkpoint {path!r} does not exist; check the sync encoder's pretrained path."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle of non-tensor objects (e.g. OmegaConf training args)
        raise ValueError(
            f"Synchformer checkpoint {path!r} cannot be loaded with weights_only=True ({err}). The official "
            "training checkpoint also pickles its OmegaConf config; in a trusted environment save its "
            "tensors only, e.g. torch.save(torch.load(p, weights_only=False)['state_dict'], 'synchformer.pth'), "
            "or use MMAudio's synchformer_state_dict.pth."
        ) from err
    for key in ("state_dict", "model", "model_state"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise ValueError(f"Synchformer checkpoint {path!r} does not hold a state dict of tensors.")
    return ckpt


def load_synchformer_checkpoint(encoder: SyncEncoder, path: str, *, strict: bool = True) -> SyncCheckpointReport:
    """Load the ``vfeat_extractor`` weights of a Synchformer checkpoint into ``encoder``.

    Accepts a full Synchformer state dict (keys ``vfeat_extractor.*``, ``afeat_extractor.*``, ...,
    optionally under ``state_dict`` and/or with a DDP ``module.`` prefix) or a bare MotionFormer one.
    Unmatched keys raise ``ValueError`` listing them unless ``strict=False``, in which case the
    matching tensors are loaded and the report says what was left out.
    """
    raw = _read_state_dict(path)
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    if any(k.startswith("vfeat_extractor.") for k in raw):
        raw = {k.removeprefix("vfeat_extractor."): v for k, v in raw.items() if k.startswith("vfeat_extractor.")}

    report = SyncCheckpointReport(path=str(path))
    own = encoder.state_dict()
    mapped: dict[str, Tensor] = {}
    mismatched_targets: set[str] = set()
    for key, value in raw.items():
        if key.startswith(_UNUSED_PREFIXES):
            report.ignored.append(key)
            continue
        target = synchformer_to_avgen_key(key)
        if target not in own:
            report.unexpected.append(key)
        elif own[target].shape != value.shape:
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[target].shape)}")
            mismatched_targets.add(target)
        else:
            mapped[target] = value
    report.missing = sorted(set(own) - set(mapped) - mismatched_targets)
    if strict and not report.ok:
        raise ValueError(
            f"Synchformer checkpoint {path!r} does not match SyncEncoder(embed_dim={encoder.embed_dim}, "
            f"depth={len(encoder.blocks)}, image_size={encoder.image_size}): {report.describe()}. "
            "Check that the checkpoint is the Synchformer visual branch and the encoder sizes match; "
            "pass strict=False to load the matching tensors anyway."
        )
    encoder.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    return report

