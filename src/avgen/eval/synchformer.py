"""Synchformer (Iashin et al., ICASSP 2024, "Synchformer: Efficient Synchronization from Sparse Cues"):
the audio-visual offset classifier behind DeSync (MMAudio Table 1, av-benchmark).

An own implementation of the evaluated network, checkpoint ``24-01-04T16-39-21`` (trained on
AudioSet; config ``configs/sync.yaml`` of v-iashin/Synchformer), with the parameter names of its
state dict, so both public files load strictly: the training checkpoint ``24-01-04T16-39-21.pt``
(state dict under ``"model"``) and MMAudio / av-benchmark's ``synchformer_state_dict.pth`` (the bare
state dict av-benchmark loads). Sec. 3 of the paper; forward as ``model/sync_model.py``:

* **visual branch** ``vfeat_extractor``: MotionFormer + per-time-step spatial aggregation, avgen's
  :class:`avgen.conditioning.sync.SyncEncoder` (``encode_windows``): each 16-frame window (25 fps,
  224 px, [-1, 1]) gives 8 tokens;
* **audio branch** ``afeat_extractor`` (Sec. 3.1, AST): per 0.64-s segment a 128-bin log-mel
  spectrogram of 66 frames, AST patching (16 x 16 patches, stride 10 in both axes: 12 frequency x 6
  time patches, a CLS and a distillation token, learned positions), a 12-layer pre-norm ViT
  (``ast.encoder.layer.*``, LayerNorm eps 1e-12), final LayerNorm; the two auxiliary tokens dropped,
  then per time patch a pre-norm transformer layer with its own CLS token pools the 12 frequency
  patches (``freq_attn_agg``, the same computation as the visual spatial pooling,
  :class:`avgen.conditioning.sync.SpatialPool`): 6 tokens per segment;
* ``vproj`` / ``aproj`` (Linear 768 -> 768), then the **global transformer** (Sec. 3.2,
  ``GlobalTransformer``): input LayerNorms per modality, the sequence
  ``[OFF, 14 x 8 visual, MOD, 14 x 6 audio]`` (198 tokens) plus a learned position embedding
  (``pos_emb_cfg.pos_emb``), 3 minGPT blocks (8 heads, separate ``query``/``key``/``value``),
  ``ln_f``, and ``off_head`` (Linear) on the OFF token: 21 offset logits for ``linspace(-2, 2, 21)``.

Audio front-end, av-benchmark's ``encode_audio_with_sync`` (Synchformer's ``AudioMelSpectrogram`` ->
``AudioLog`` -> ``PadOrTruncate`` -> ``AudioNormalizeAST``): 16 kHz, segments of 10,240 samples with
hop 5,120; ``torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, win_length=400, hop_length=160,
n_mels=128)`` (periodic Hann window of 400 samples centred in the 1024-point frame, ``center=True``
with reflect padding, power 2, HTK mel scale without area normalisation, 0-8000 Hz): 65 frames;
``log(x + 1e-6)``; zero-padded at the end to 66 frames; ``(x + 4.2677393) / (2 * 4.5689974)``.
(The AST front-end of AudioSet classifiers is a Kaldi fbank; Synchformer's is this mel spectrogram,
and so is av-benchmark's.)

:class:`SynchformerBackend` (``--synchformer FILE``) runs the DeSync protocol of
:mod:`avgen.eval.desync` on a (video, audio) pair: :meth:`SynchformerBackend.offset_logits`.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.conditioning._common import resize_short_side_center_crop
from avgen.conditioning.sync import SpatialPool, SyncEncoder, synchformer_to_avgen_key
from avgen.data.media import resample
from avgen.eval.backends import BackendUnavailable, EmbeddingBackend
from avgen.eval.desync import SYNCHFORMER, DeSync, SynchformerGrid, crop_starts
from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric

__all__ = ["SynchformerMel", "SYNCHFORMER_MEL", "synchformer_mel_filters", "synchformer_log_mel", "ASTFeatures",
           "GlobalTransformer", "Synchformer", "SynchformerBackend", "load_synchformer_av_state_dict",
           "read_synchformer_checkpoint", "score_desync", "frames_at_fps"]

_FIX = ("--synchformer <synchformer_state_dict.pth of MMAudio / av-benchmark, or Synchformer's "
        "24-01-04T16-39-21.pt (github.com/v-iashin/Synchformer)>")


# ------------------------------------------------------------------------------------------ front-end
@dataclass(frozen=True)
class SynchformerMel:
    """The audio front-end constants (Synchformer ``configs/sync.yaml`` / av-benchmark)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 128
    max_spec_t: int = 66  # frames the AST position embedding was cut to (``max_spec_t``)
    log_eps: float = 1e-6
    mean: float = -4.2677393  # AST's AudioSet statistics
    std: float = 4.5689974


SYNCHFORMER_MEL = SynchformerMel()


def synchformer_mel_filters(cfg: SynchformerMel = SYNCHFORMER_MEL) -> Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters of torchaudio's ``MelSpectrogram`` defaults: HTK mel
    scale, no area normalisation, 0 Hz to Nyquist (``transformers.audio_utils.mel_filter_bank``, the
    same construction as ``torchaudio.functional.melscale_fbanks``)."""
    from transformers.audio_utils import mel_filter_bank

    weights = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels, min_frequency=0.0,
                              max_frequency=cfg.sample_rate / 2, sampling_rate=cfg.sample_rate, norm=None, mel_scale="htk")
    return torch.from_numpy(np.asarray(weights, dtype=np.float64))


def synchformer_log_mel(segments: Tensor, cfg: SynchformerMel = SYNCHFORMER_MEL, filters: Tensor | None = None) -> Tensor:
    """(N, samples) audio segments at 16 kHz -> (N, max_spec_t, n_mels) normalised log-mel, time-major
    (the layout the AST patching takes). Computed in float64, returned as float32."""
    x = segments.double()
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64, device=x.device)
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, window=window, center=True, pad_mode="reflect",
                      return_complex=True).abs().pow(2)  # (N, freq, frames)
    filters = synchformer_mel_filters(cfg) if filters is None else filters
    mel = torch.einsum("nft,fm->nmt", spec, filters.to(x.device, torch.float64))
    log_mel = torch.log(mel + cfg.log_eps)
    frames = log_mel.shape[-1]
    if frames < cfg.max_spec_t:  # PadOrTruncate: zeros after the log, before the normalisation
        log_mel = F.pad(log_mel, (0, cfg.max_spec_t - frames), value=0.0)
    log_mel = log_mel[..., : cfg.max_spec_t]
    log_mel = (log_mel - cfg.mean) / (2 * cfg.std)
    return rearrange(log_mel, "n m t -> n t m").float()


# ---------------------------------------------------------------------------------------- audio branch
class _ASTLayer(nn.Module):
    """A pre-norm ViT layer with the Hugging Face AST names (transformers 4.27, which Synchformer pins):
    ``attention.attention.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
    ``output.dense``, ``layernorm_before`` / ``layernorm_after``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention = nn.ModuleDict({
            "attention": nn.ModuleDict({name: nn.Linear(dim, dim) for name in ("query", "key", "value")}),
            "output": nn.ModuleDict({"dense": nn.Linear(dim, dim)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(dim, hidden)})
        self.output = nn.ModuleDict({"dense": nn.Linear(hidden, dim)})
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layernorm_before(x)
        qkv = self.attention["attention"]
        q, k, v = (rearrange(qkv[n](h), "b l (h d) -> b h l d", h=self.num_heads) for n in ("query", "key", "value"))
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)")
        x = x + self.attention["output"]["dense"](attended)
        return x + self.output["dense"](F.gelu(self.intermediate["dense"](self.layernorm_after(x))))


class _ASTEmbeddings(nn.Module):
    """Patches (Conv2d over the (frequency, time) spectrogram) + CLS + distillation token + positions."""

    def __init__(self, dim: int, patch_size: int, stride: int, num_patches: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.patch_embeddings = nn.ModuleDict({"projection": nn.Conv2d(1, dim, patch_size, stride=stride)})
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 2, dim))

    def forward(self, spec: Tensor) -> Tensor:
        """(N, T, F) -> (N, 2 + f * t, D); patches in frequency-major ``(f t)`` order, as AST flattens them."""
        patches = self.patch_embeddings["projection"](rearrange(spec, "n t f -> n 1 f t"))
        patches = rearrange(patches, "n d f t -> n (f t) d")
        aux = torch.cat([self.cls_token, self.distillation_token], dim=1).expand(patches.shape[0], -1, -1)
        return torch.cat([aux, patches], dim=1) + self.position_embeddings


class _AST(nn.Module):
    """AST's ``ASTModel`` (embeddings, ``encoder.layer``, final ``layernorm``); no pooler weights."""

    def __init__(self, dim: int, depth: int, num_heads: int, hidden: int, patch_size: int, stride: int,
                 num_patches: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.embeddings = _ASTEmbeddings(dim, patch_size, stride, num_patches)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(_ASTLayer(dim, num_heads, hidden, eps) for _ in range(depth))})
        self.layernorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.embeddings(spec)
        for layer in self.encoder["layer"]:
            x = layer(x)
        return self.layernorm(x)


class ASTFeatures(nn.Module):
    """Synchformer's ``afeat_extractor``: (N, T=66, F=128) log-mel segments -> (N, t=6, D) tokens.

    ``factorize_freq_time=True``, ``agg_freq_module="TransformerEncoderLayer"``, time aggregation
    Identity, no global representation (``configs/sync.yaml``). Defaults are AST-base (ViT-B).
    """

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_hidden: int = 3072,
                 n_mels: int = 128, max_spec_t: int = 66, patch_size: int = 16, stride: int = 10) -> None:
        super().__init__()
        self.num_freq = (n_mels - patch_size) // stride + 1
        self.num_time = (max_spec_t - patch_size) // stride + 1
        self.n_mels, self.max_spec_t, self.dim = n_mels, max_spec_t, dim
        self.ast = _AST(dim, depth, num_heads, mlp_hidden, patch_size, stride, self.num_freq * self.num_time)
        # nn.TransformerEncoderLayer(norm_first, GELU, eps 1e-6, dim_feedforward = AST's intermediate size)
        self.freq_attn_agg = SpatialPool(dim, num_heads, mlp_ratio=mlp_hidden / dim)

    def forward(self, spec: Tensor) -> Tensor:
        if spec.shape[-2:] != (self.max_spec_t, self.n_mels):
            raise ValueError(f"ASTFeatures expects (N, {self.max_spec_t}, {self.n_mels}) log-mel, got {tuple(spec.shape)}")
        tokens = self.ast(spec)[:, 2:]  # drop CLS and distillation tokens
        per_time = rearrange(tokens, "n (f t) d -> (n t) f d", f=self.num_freq, t=self.num_time)
        return rearrange(self.freq_attn_agg(per_time), "(n t) d -> n t d", t=self.num_time)


# ----------------------------------------------------------------------------------- global transformer
class _SelfAttention(nn.Module):
    """minGPT's self-attention (no mask): separate ``key`` / ``query`` / ``value`` and ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GlobalTransformer: n_embd {dim} is not divisible by n_head {num_heads}")
        self.num_heads = num_heads
        self.key, self.query, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (rearrange(f(x), "b l (h d) -> b h l d", h=self.num_heads) for f in (self.query, self.key, self.value))
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)"))


class _Block(nn.Module):
    """x + attn(ln1 x); then + mlp(ln2 .) with mlp = Linear(4x) -> GELU -> Linear (``mlp.0`` / ``mlp.2``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _PositionEmbedding(nn.Module):
    """``RandInitPositionalEncoding`` (kept under the checkpoint's name ``pos_emb_cfg``)."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, length, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pos_emb


class GlobalTransformer(nn.Module):
    """Synchformer's offset transformer (``model/sync_model.py``): (B, Nv, D), (B, Na, D) -> (B, classes)."""

    def __init__(self, n_embd: int = 768, n_layer: int = 3, n_head: int = 8, seq_len: int = 198,
                 num_classes: int = 21) -> None:
        super().__init__()
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, n_embd))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, n_embd))
        self.pos_emb_cfg = _PositionEmbedding(seq_len, n_embd)
        self.blocks = nn.Sequential(*(_Block(n_embd, n_head) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.off_head = nn.Linear(n_embd, num_classes)
        self.seq_len = seq_len

    def forward(self, vis: Tensor, aud: Tensor) -> Tensor:
        b = vis.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(vis),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(aud)], dim=1)
        if x.shape[1] != self.seq_len:
            raise ValueError(f"GlobalTransformer: {x.shape[1]} tokens, but the position embedding has {self.seq_len} "
                             "(1 + segments x visual tokens + 1 + segments x audio tokens)")
        x = self.ln_f(self.blocks(self.pos_emb_cfg(x)))
        return self.off_head(x[:, 0])


# ------------------------------------------------------------------------------------------- the model
class Synchformer(nn.Module):
    """The audio-visual Synchformer; defaults are the evaluated checkpoint (ViT-B branches, 3-layer head).

    ``extract_vfeats`` (B, S, 3, 16, H, W) in [-1, 1] -> (B, S, 8, D); ``extract_afeats`` (B, S, 66, 128)
    -> (B, S, 6, D); ``compare_v_a`` -> (B, 21) offset logits (av-benchmark's names).
    """

    def __init__(self, *, vis_dim: int = 768, vis_depth: int = 12, vis_heads: int = 12, patch_size: int = 16,
                 tubelet: int = 2, image_size: int = 224, window: int = 16, vis_mlp_ratio: float = 4.0,
                 aud_dim: int = 768, aud_depth: int = 12, aud_heads: int = 12, aud_mlp_hidden: int = 3072,
                 n_mels: int = 128, max_spec_t: int = 66, aud_patch: int = 16, aud_stride: int = 10,
                 n_embd: int = 768, n_layer: int = 3, n_head: int = 8, num_segments: int = 14,
                 num_classes: int = 21) -> None:
        super().__init__()
        self.vfeat_extractor = SyncEncoder(embed_dim=vis_dim, depth=vis_depth, num_heads=vis_heads, patch_size=patch_size,
                                           tubelet=tubelet, image_size=image_size, num_frames_per_window=window,
                                           stride=window // 2, mlp_ratio=vis_mlp_ratio, frozen=True)
        self.afeat_extractor = ASTFeatures(aud_dim, aud_depth, aud_heads, aud_mlp_hidden, n_mels, max_spec_t,
                                           aud_patch, aud_stride)
        self.vproj = nn.Linear(vis_dim, n_embd)
        self.aproj = nn.Linear(aud_dim, n_embd)
        seq_len = 2 + num_segments * (self.vfeat_extractor.num_times + self.afeat_extractor.num_time)
        self.transformer = GlobalTransformer(n_embd, n_layer, n_head, seq_len, num_classes)
        self.num_segments, self.image_size, self.window = num_segments, image_size, window
        self.eval()

    def extract_vfeats(self, windows: Tensor) -> Tensor:
        b = windows.shape[0]
        flat = rearrange(windows, "b s c t h w -> (b s) c t h w")
        return rearrange(self.vfeat_extractor.encode_windows(flat), "(b s) t d -> b s t d", b=b)

    def extract_afeats(self, spec: Tensor) -> Tensor:
        b = spec.shape[0]
        feats = self.afeat_extractor(rearrange(spec, "b s t f -> (b s) t f"))
        return rearrange(feats, "(b s) t d -> b s t d", b=b)

    def compare_v_a(self, vis: Tensor, aud: Tensor) -> Tensor:
        vis = rearrange(self.vproj(vis), "b s t d -> b (s t) d")
        aud = rearrange(self.aproj(aud), "b s t d -> b (s t) d")
        return self.transformer(vis, aud)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], **architecture: Any) -> "Synchformer":
        """A Synchformer shaped like ``state`` (official key names): widths, depths and patch sizes are read
        from its tensors; head counts (not visible in shapes) come from ``architecture`` (default: the real
        12 / 12 / 8). Loaded strictly by :func:`load_synchformer_av_state_dict`."""
        state = _strip_module(state)

        def count(prefix: str) -> int:
            found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
            return max(found) + 1 if found else 0

        v, a, t = "vfeat_extractor.", "afeat_extractor.ast.", "transformer."
        tubelet_weight = state[v + "patch_embed_3d.proj.weight"]  # (D, 3, tubelet, p, p)
        vis_dim, _, tubelet, patch = (int(s) for s in tubelet_weight.shape[:4])
        num_patches = int(state[v + "pos_embed"].shape[1]) - 1
        aud_patch = int(state[a + "embeddings.patch_embeddings.projection.weight"].shape[-1])
        shape = dict(
            vis_dim=vis_dim, vis_depth=count(v + "blocks."), patch_size=patch, tubelet=tubelet,
            image_size=math.isqrt(num_patches) * patch, window=int(state[v + "temp_embed"].shape[1]) * tubelet,
            vis_mlp_ratio=state[v + "blocks.0.mlp.fc1.weight"].shape[0] / vis_dim,
            aud_dim=int(state[a + "embeddings.cls_token"].shape[-1]), aud_depth=count(a + "encoder.layer."),
            aud_mlp_hidden=int(state[a + "encoder.layer.0.intermediate.dense.weight"].shape[0]), aud_patch=aud_patch,
            n_embd=int(state[t + "OFF_tok"].shape[-1]), n_layer=count(t + "blocks."),
            num_classes=int(state[t + "off_head.weight"].shape[0]),
        )
        model = cls(**{**shape, **architecture})
        load_synchformer_av_state_dict(model, state)
        return model.eval()


# ------------------------------------------------------------------------------------------ checkpoints
_UNUSED_VISUAL = "vfeat_extractor.patch_embed.proj."  # MotionFormer's 2-D patch embedding, kept only to count patches


def _strip_module(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def official_to_avgen_key(key: str) -> str:
    """A key of the Synchformer state dict -> the key of :class:`Synchformer` (identity except the two
    ``nn.TransformerEncoderLayer`` aggregators, which avgen runs as timm blocks)."""
    if key.startswith("vfeat_extractor."):
        return "vfeat_extractor." + synchformer_to_avgen_key(key.removeprefix("vfeat_extractor."))
    if key.startswith("afeat_extractor.freq_attn_agg."):
        return "afeat_extractor." + synchformer_to_avgen_key(key.removeprefix("afeat_extractor."), prefix="freq_attn_agg.")
    return key


def load_synchformer_av_state_dict(model: Synchformer, state: dict[str, Tensor]) -> None:
    """Load a Synchformer state dict in its official names into ``model`` with ``strict=True``.

    Only MotionFormer's unused 2-D ``patch_embed.proj`` may be absent or is dropped; any other missing
    or unexpected key, or a shape mismatch, raises ``RuntimeError`` (``load_state_dict``'s message).
    """
    official = {k: v for k, v in _strip_module(state).items() if not k.startswith(_UNUSED_VISUAL)}
    mapped = {official_to_avgen_key(k): v for k, v in official.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(k for k in official if official_to_avgen_key(k) not in own)
    mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(own[official_to_avgen_key(k)].shape)}" for k, v in official.items()
                  if official_to_avgen_key(k) in own and own[official_to_avgen_key(k)].shape != v.shape]
    if missing or unexpected or mismatched:
        problems = (("Missing keys", missing), ("Unexpected keys", unexpected), ("Shape mismatch", mismatched))
        raise RuntimeError("; ".join(f"{name} ({len(keys)}): {keys[:8]}" for name, keys in problems if keys))
    model.load_state_dict(mapped, strict=True)


class _Inert:
    """Stands in for a pickled non-tensor object (the training config) while reading a checkpoint: it
    accepts any arguments and state and runs no code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _inert_class(qualified: str) -> tuple[type, str]:
    """A fresh placeholder class allowed under the pickled name ``qualified`` (``torch.serialization.safe_globals``)."""
    return type(qualified.rpartition(".")[2], (_Inert,), {}), qualified


def read_synchformer_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of a Synchformer checkpoint: a bare state dict (``synchformer_state_dict.pth``) or
    a training checkpoint with it under ``"model"`` / ``"state_dict"`` (``24-01-04T16-39-21.pt``).

    Always read with ``weights_only=True``. The training checkpoint also pickles its OmegaConf config;
    each such class is allowed as an inert placeholder (it runs no code and is discarded), one at a
    time as the safe unpickler names them. Raises :class:`BackendUnavailable` naming the file and the fix.
    """
    if not os.path.isfile(path):
        raise BackendUnavailable("synchformer", f"no Synchformer checkpoint at {path!r}", _FIX)
    placeholders: list[tuple[type, str]] = []
    checkpoint = None
    for _ in range(64):
        try:
            with warnings.catch_warnings(), torch.serialization.safe_globals(placeholders):
                warnings.simplefilter("ignore")
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            break
        except Exception as err:  # noqa: BLE001 - re-raised below with the file and the fix
            match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            name = match.group(1) if match else None
            if name is not None and "." not in name:  # a builtin, reported without its module
                name = f"builtins.{name}"
            if name is None or any(name == allowed for _, allowed in placeholders):
                raise BackendUnavailable("synchformer", f"{path} cannot be read as a Synchformer checkpoint "
                                         f"({str(err).splitlines()[0][:200]})", _FIX) from None
            placeholders.append(_inert_class(name))
    if checkpoint is None:
        raise BackendUnavailable("synchformer", f"{path}: too many pickled objects besides the weights", _FIX)
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict) or not any(str(k).removeprefix("module.").startswith("afeat_extractor.") for k in state):
        raise BackendUnavailable("synchformer", f"{path} holds no audio-visual Synchformer state dict (no "
                                 "'afeat_extractor.*' keys; a visual-only or other checkpoint?)", _FIX)
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


# ---------------------------------------------------------------------------------------------- video
def frames_at_fps(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """Indices of the source frames shown at ``k / target_fps`` for the whole clip (the last frame whose
    time ``i / fps`` is not after it; the rule of :func:`avgen.data.media.load_video`)."""
    count = int(math.floor(num_frames / fps * target_fps + 1e-6))
    idx = np.floor((np.arange(count) / target_fps + 1e-4) * fps).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


# --------------------------------------------------------------------------------------------- backend
class SynchformerBackend(EmbeddingBackend):
    """DeSync's offset classifier: :meth:`offset_logits` of a (video, audio) pair -> (crops, 21)."""

    has_logits = False

    def __init__(self, checkpoint: str, grid: SynchformerGrid = SYNCHFORMER, **architecture: Any) -> None:
        super().__init__()
        state = read_synchformer_checkpoint(checkpoint)
        try:
            self.model = Synchformer.from_state_dict(state, num_segments=grid.num_segments, **architecture)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("synchformer", f"{checkpoint} does not match the Synchformer layout "
                                     f"({str(err).splitlines()[0][:300]})", _FIX) from None
        if self.model.transformer.off_head.out_features != grid.num_classes:
            raise BackendUnavailable("synchformer", f"{checkpoint} has {self.model.transformer.off_head.out_features} "
                                     f"offset classes, DeSync's grid {grid.num_classes}", _FIX)
        self.name = f"synchformer:{os.path.splitext(os.path.basename(checkpoint))[0]}"
        self.grid, self.sample_rate = grid, grid.sample_rate
        self.register_buffer("mel_filters", synchformer_mel_filters(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.model.transformer.OFF_tok.device

    def _video(self, frames: np.ndarray | Tensor, fps: float) -> Tensor:
        """(T, H, W, 3) uint8 at ``fps`` -> (T25, 3, H, W) uint8 at the grid's 25 fps."""
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"Synchformer: expected video frames (T, H, W, 3), got {tuple(frames.shape)}")
        idx = frames_at_fps(frames.shape[0], float(fps), self.grid.fps)
        return rearrange(frames[torch.from_numpy(idx)], "t h w c -> t c h w")

    def _windows(self, frames: Tensor, first: int) -> Tensor:
        """The crop's ``num_segments`` windows (S, 3, window, size, size) in [-1, 1] (av-benchmark: bicubic
        resize of the short side, centre crop, ``Normalize(0.5, 0.5)``)."""
        g = self.grid
        crop = frames[first: first + g.crop_frames].to(self.device)
        crop = crop.float() / 255.0 if not crop.is_floating_point() else crop.float()
        crop = resize_short_side_center_crop(crop, self.model.image_size) * 2.0 - 1.0
        starts = range(0, g.crop_frames - g.segment_frames + 1, g.frame_stride)
        return torch.stack([rearrange(crop[s: s + g.segment_frames], "t c h w -> c t h w") for s in starts])

    def _segments(self, audio: np.ndarray, first: int) -> Tensor:
        g = self.grid
        crop = torch.as_tensor(audio[first: first + g.crop_samples], dtype=torch.float64, device=self.device)
        return crop.unfold(0, g.segment_samples, g.sample_stride)  # (S, 10240)

    @torch.no_grad()
    def offset_logits(self, video_frames: np.ndarray | Tensor, fps: float, audio: np.ndarray | Tensor, rate: int) -> Tensor:
        """Offset logits (2, 21) of the first and the last 4.8-s crop (:func:`avgen.eval.desync.crop_starts`).

        The audio is resampled to 16 kHz (its DC offset kept, as av-benchmark), the video taken at 25 fps.
        The crops lie on the part both streams cover; a pair shorter than 4.8 s raises ``ValueError``.
        """
        # av-benchmark's SynchformerAudioDataset resamples to 16 kHz and keeps the DC offset (no ``prepare``)
        wave = np.asarray(torch.as_tensor(audio).detach().cpu().double())
        wave = wave.mean(axis=0) if wave.ndim == 2 else wave  # (channels, samples) -> mono, as av-benchmark
        wave = resample(wave, int(rate), self.sample_rate)
        frames = self._video(video_frames, fps)
        per_frame = self.grid.sample_rate / self.grid.fps
        usable = min(frames.shape[0], int(wave.shape[0] // per_frame))
        crops = crop_starts(usable, self.grid)
        windows = torch.stack([self._windows(frames, f) for f, _ in crops])  # (C, S, 3, 16, H, W)
        spec = synchformer_log_mel(torch.cat([self._segments(wave, s) for _, s in crops]), filters=self.mel_filters)
        spec = rearrange(spec, "(c s) t f -> c s t f", c=len(crops))
        return self.model.compare_v_a(self.model.extract_vfeats(windows), self.model.extract_afeats(spec)).float().cpu()

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        raise BackendUnavailable(self.name, "Synchformer scores (video, audio) pairs, it has no audio embedding",
                                 "use the desync metric (offset_logits)")


# ---------------------------------------------------------------------------------------------- metric
def score_desync(ctx: Any) -> float:
    """DeSync of one model's generated set: mean |offset| over both crops of every clip with a video
    (``ctx.video(id)`` + ``ctx.audio("generated", id)``); NaN when no clip can be scored. Clips without
    a video or shorter than 4.8 s are skipped and counted on stderr. Offset logits are cached per sample
    (a skipped clip as an empty array), so a rerun computes only new clips."""
    from tqdm import tqdm

    backend, metric = ctx.backend, DeSync(grid=ctx.backend.grid)
    progress = tqdm(total=len(ctx.ids), desc="desync (Synchformer)", unit="clip", file=sys.stderr, leave=False)

    def compute(sample_id: str) -> np.ndarray:
        progress.update(1)  # only clips not in the cache are computed
        skipped = np.zeros((0, backend.grid.num_classes), dtype=np.float32)
        video = ctx.video(sample_id)
        if video is None:
            return skipped
        audio, rate = ctx.audio("generated", sample_id)
        try:
            return backend.offset_logits(video[0], video[1], audio, rate).numpy()
        except ValueError as err:
            if "at least" not in str(err):  # only the too-short clip is a skip; anything else is a bug or bad input
                raise
            return skipped

    cached = ctx.cached("generated", f"{backend.name}-offset_logits", list(ctx.ids), compute)
    progress.close()
    skipped = [i for i, logits in cached.items() if len(logits) == 0]
    for logits in cached.values():
        if len(logits):
            metric.update(torch.as_tensor(np.asarray(logits)))
    if skipped:
        print(f"desync: skipped {len(skipped)} clip(s) without a video or shorter than {backend.grid.crop_seconds:.1f} s "
              f"(both streams must cover one crop): {skipped[:5]}", file=sys.stderr)
    return float(metric.compute()) if int(metric.num) else float("nan")


# ----------------------------------------------------------------------------------------- registry
def _build(value: str | None) -> SynchformerBackend:
    if not value:
        raise BackendUnavailable("synchformer", "no Synchformer weights given", _FIX)
    return SynchformerBackend(value)


register_backend(BackendSpec("synchformer", _build, "Synchformer audio-visual checkpoint (synchformer_state_dict.pth "
                                                    "of MMAudio / av-benchmark, or 24-01-04T16-39-21.pt) for desync"))
register_metric(MetricSpec(
    "desync", False, "DeSync (MMAudio Table 1): mean |audio-video offset| (s) Synchformer predicts on the first and "
    "last 4.8 s of each clip against its video (av-benchmark protocol)", "synchformer", score_desync, needs_video=True))
