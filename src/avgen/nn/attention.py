"""Attention building blocks shared by every backbone.

Tensors are (B, H, L, Dh) inside attention and (B, L, D) outside. Masks are boolean with
True = keep. A query row whose keys are all masked returns zeros rather than NaN (an empty caption,
a sample without video).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avgen.nn.rope import RopeRotation, apply_rope, apply_rope_to_segment

__all__ = [
    "scaled_dot_product_attention",
    "RMSNorm",
    "QKVProjection",
    "SelfAttention",
    "joint_attention",
    "CrossAttention",
    "MultiHeadAttention",
]


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v over (B, H, L, Dh) tensors.

    mask: None, (B, Lk) key padding mask or (B, Lq, Lk) bool, True = attend. Rows with no key
    to attend to give 0 (SDPA would give NaN).
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = keep), got {mask.dtype}")
    if mask.dim() == 2:
        mask = mask[:, None, :]  # (B, 1, Lk): same for every query
    if mask.dim() != 3:
        raise ValueError(f"attention mask must be (B, Lk) or (B, Lq, Lk), got {tuple(mask.shape)}")
    has_key = mask.any(dim=-1, keepdim=True)  # (B, Lq|1, 1)
    safe = mask | ~has_key  # a fully masked row attends everywhere, then gets zero values or is zeroed below
    if has_key.shape[1] == 1:
        # key padding: a sample without keys averages zeroed values, so its output is exactly 0; zeroing
        # v costs a pass over Lk keys instead of Lq queries (a caption of 77 tokens vs thousands of latents)
        return F.scaled_dot_product_attention(q, k, v * has_key[:, None].to(v.dtype), attn_mask=safe[:, None])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None])
    return out * has_key[:, None].to(out.dtype)


class RMSNorm(nn.Module):
    """RMS normalisation with a learnable gain (QK-norm over the head dim, SD3/MMAudio).

    eps: added to the mean square. None does what ``torch.nn.RMSNorm(eps=None)`` (MMAudio's
    QK-norm) computes: the machine epsilon of the dtype the statistics are computed in, which is
    fp32 (1.19e-7) for fp16 / bf16 / fp32 inputs (torch upcasts half types and takes the upcast
    type's epsilon) and fp64's for fp64. The statistics are computed in fp32 (or fp64) either way.
    """

    def __init__(self, dim: int, eps: float | None = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, keep_compute_dtype: bool = False) -> Tensor:
        """x (..., dim) -> normalised x in x's dtype, or in the fp32 (fp64) compute dtype with
        ``keep_compute_dtype`` (for RoPE, which rotates in fp32 next: no bf16 round trip between)."""
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # promote(x, fp32)
        eps = torch.finfo(compute_dtype).eps if self.eps is None else self.eps
        # F.rms_norm: x * rsqrt(mean(x^2) + eps) * weight, one fused kernel where torch has one (CUDA)
        normed = F.rms_norm(x.to(compute_dtype), (x.shape[-1],), self.weight.to(compute_dtype), eps)
        # cast back to x's dtype so q/k keep v's dtype under autocast (SDPA needs one dtype)
        return normed if keep_compute_dtype else normed.to(x.dtype)


def _norm_and_rotate(norm: nn.Module, x: Tensor, angles: Tensor | RopeRotation | None, dtype: torch.dtype) -> Tensor:
    """QK-norm then RoPE of one head tensor, cast to ``dtype`` once at the end (not norm -> dtype -> fp32 -> dtype)."""
    if angles is None:
        return norm(x)
    if isinstance(norm, RMSNorm):
        x = norm(x, keep_compute_dtype=True)
    return apply_rope(x, angles, out_dtype=dtype)


class QKVProjection(nn.Module):
    """One fused Linear to (q, k, v) per head, optional per-head RMS QK-norm and RoPE.

    (B, L, D) -> three (B, H, L, Dh). This is the per-stream half of an MMDiT block: each stream
    owns one of these, and the streams then meet in one attention call (``joint_attention``).

    Row layout of the fused weight: ``(n h d)``, a block of q rows, then k, then v. MMAudio's
    checkpoints interleave them per channel, ``(h d n)``; the MMAudio importer permutes the rows
    (``avgen.models.foleygenex.mmaudio_checkpoint.mmaudio_qkv_to_avgen``).
    qk_norm_eps: the QK RMSNorm's eps; None = torch's ``nn.RMSNorm`` default, MMAudio's (the fp32
    machine epsilon, see :class:`RMSNorm`).
    """

    def __init__(
        self, dim: int, num_heads: int, qk_norm: bool = True, bias: bool = True, qk_norm_eps: float | None = 1e-6
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, angles: Tensor | RopeRotation | None = None) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = rearrange(self.qkv(x), "b l (n h d) -> n b h l d", n=3, h=self.num_heads)
        q = _norm_and_rotate(self.q_norm, q, angles, v.dtype)
        k = _norm_and_rotate(self.k_norm, k, angles, v.dtype)
        return q, k, v

    def key_value(self, x: Tensor, angles: Tensor | RopeRotation | None = None) -> tuple[Tensor, Tensor]:
        """Keys and values only (a stream that is never queried): the k and v rows of the fused weight."""
        dim = self.qkv.out_features // 3
        bias = None if self.qkv.bias is None else self.qkv.bias[dim:]
        k, v = rearrange(F.linear(x, self.qkv.weight[dim:], bias), "b l (n h d) -> n b h l d", n=2, h=self.num_heads)
        return _norm_and_rotate(self.k_norm, k, angles, v.dtype), v


def joint_attention(
    qkvs: Sequence[tuple[Tensor | None, Tensor, Tensor]], key_masks: Sequence[Tensor | None] | None = None
) -> list[Tensor | None]:
    """MMDiT joint attention (SD3, MMAudio): per-stream q/k/v, ONE attention over all streams.

    qkvs: per stream (q, k, v), each (B, H, L_i, Dh); q may be None for a stream that only gives
    keys and values (never queried, AudioGen-Omni's caption). key_masks: per stream (B, L_i) bool
    or None (= all valid). The keys/values of all streams and the queries of the queried streams
    are concatenated along the sequence, attended together, and the output is split back into
    per-stream (B, H, L_i, Dh) tensors in the same order (None for a stream without queries).
    """
    queried = [q is not None for q, _, _ in qkvs]
    if not any(queried):
        raise ValueError("joint attention needs at least one stream with queries")
    key_lengths = [k.shape[-2] for _, k, _ in qkvs]
    q = torch.cat([s[0] for s in qkvs if s[0] is not None], dim=-2)
    k, v = (torch.cat([s[i] for s in qkvs], dim=-2) for i in (1, 2))
    mask = None
    if key_masks is not None and any(m is not None for m in key_masks):
        batch = k.shape[0]
        mask = torch.cat(
            [
                torch.ones(batch, n, dtype=torch.bool, device=k.device) if m is None else m
                for m, n in zip(key_masks, key_lengths)
            ],
            dim=1,
        )
    out = scaled_dot_product_attention(q, k, v, mask)
    outs = iter(out.split([s[0].shape[-2] for s in qkvs if s[0] is not None], dim=-2))
    return [next(outs) if has_queries else None for has_queries in queried]


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK-norm and optional RoPE: (B, L, D) -> (B, L, D)."""

    def __init__(
        self, dim: int, num_heads: int, qk_norm: bool = True, bias: bool = True, qk_norm_eps: float | None = 1e-6
    ):
        super().__init__()
        self.qkv = QKVProjection(dim, num_heads, qk_norm=qk_norm, bias=bias, qk_norm_eps=qk_norm_eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, angles: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        out = scaled_dot_product_attention(*self.qkv(x, angles), mask)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class CrossAttention(nn.Module):
    """Queries from x (B, Lq, D) attend to a context (B, Lk, Dc).

    RoPE is optional on each side: ``query_angles`` (Lq, Dh/2) rotate every query;
    ``key_angles`` rotate the keys, all of them, or only keys [start, end) when
    ``key_rope_range=(start, end)`` is given (OmniSonic Eq. 7 rotates only the visual segment of a
    [caption | visual] context). Positions may be rescaled (Harmony) before computing angles.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        qk_norm: bool = True,
        bias: bool = True,
        qk_norm_eps: float | None = 1e-6,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        context_mask: Tensor | None = None,
        query_angles: Tensor | None = None,
        key_angles: Tensor | None = None,
        key_rope_range: tuple[int, int] | None = None,
    ) -> Tensor:
        k, v = rearrange(self.kv(context), "b l (n h d) -> n b h l d", n=2, h=self.num_heads)
        q = _norm_and_rotate(self.q_norm, rearrange(self.q(x), "b l (h d) -> b h l d", h=self.num_heads),
                             query_angles, v.dtype)
        k = self.k_norm(k)
        if key_angles is not None:
            if key_rope_range is None:
                k = apply_rope(k, key_angles)
            else:
                k = apply_rope_to_segment(k, key_angles, *key_rope_range)
        out = scaled_dot_product_attention(q, k, v, context_mask)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with separate q/k/v/o projections (Wan 2.x, diffusers' WanAttention).

    Separate projections keep public checkpoints loadable by renaming keys alone. ``qk_norm``:

    * ``"across_heads"`` (Wan): one RMSNorm over the full width D of q and of k, *before* the head
      split, so the statistics are shared by all heads (diffusers ``rms_norm_across_heads``);
    * ``"per_head"`` (SD3, MMAudio): RMSNorm over each head's Dh channels;
    * ``"none"``.

    forward(x (B, Lq, D), context (B, Lk, Dc) or None for self-attention) -> (B, Lq, D). RoPE angles
    (Lq, Dh/2) / (Lk, Dh/2) rotate q / k after the norm (self-attention reuses the query angles);
    ``mask`` is a (B, Lk) or (B, Lq, Lk) bool keep-mask.
    """

    QK_NORMS = ("across_heads", "per_head", "none")

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context_dim: int | None = None,
        *,
        qk_norm: str = "across_heads",
        bias: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if qk_norm not in self.QK_NORMS:
            raise ValueError(f"qk_norm must be one of {self.QK_NORMS}, got {qk_norm!r}")
        context_dim = dim if context_dim is None else context_dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qk_norm = qk_norm
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(context_dim, dim, bias=bias)
        self.v = nn.Linear(context_dim, dim, bias=bias)
        self.o = nn.Linear(dim, dim, bias=bias)
        norm_dim = dim if qk_norm == "across_heads" else self.head_dim
        self.norm_q = RMSNorm(norm_dim, eps) if qk_norm != "none" else nn.Identity()
        self.norm_k = RMSNorm(norm_dim, eps) if qk_norm != "none" else nn.Identity()

    def _heads(self, x: Tensor, norm: nn.Module) -> Tensor:
        if self.qk_norm == "across_heads":
            x = norm(x)  # statistics over all D channels, before splitting into heads
        x = rearrange(x, "b l (h d) -> b h l d", h=self.num_heads)
        return norm(x) if self.qk_norm == "per_head" else x

    def project(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        query_angles: Tensor | None = None,
        key_angles: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(q, k, v), each (B, H, L, Dh), normed and rotated: what ``forward`` attends with (MMDiT
        streams call it and meet in one ``joint_attention``)."""
        if context is None:
            context = x
            key_angles = query_angles if key_angles is None else key_angles
        q = self._heads(self.q(x), self.norm_q)
        k = self._heads(self.k(context), self.norm_k)
        v = rearrange(self.v(context), "b l (h d) -> b h l d", h=self.num_heads)
        if query_angles is not None:
            q = apply_rope(q, query_angles)
        if key_angles is not None:
            k = apply_rope(k, key_angles)
        return q, k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        query_angles: Tensor | None = None,
        key_angles: Tensor | None = None,
    ) -> Tensor:
        q, k, v = self.project(x, context, query_angles=query_angles, key_angles=key_angles)
        out = scaled_dot_product_attention(q, k, v, mask)
        return self.o(rearrange(out, "b h l d -> b l (h d)"))
