"""Harmony's video branch: the Wan2.2 DiT, block for block (Harmony Supp §2; Wan2.2 ``wan/modules/model.py``).

Harmony initialises its video branch from Wan2.2-TI2V-5B (Supp §2: "initialize our model with the
pre-trained weights of Wan2.2-5B"), so this module is Wan's network as released, not avgen's
adaLN-Zero DiT. Reads top-down like Wan's ``WanModel.forward``:

1. Patchify. Latents (B, T, C, h, w) -> Conv3d(C, D, kernel = stride = (1, 2, 2)) -> tokens
   (B, T*h/2*w/2, D), flattened t-major (frame, then row, then column).
2. Text. umT5 features (B, L, 4096) are zeroed at padding, zero-padded (or cut) to ``text_len``
   = 512 tokens exactly as Wan does, then Linear -> GELU(tanh) -> Linear. Cross-attention attends
   all 512 tokens, padding included (Wan passes ``context_lens=None``).
3. Time (adaLN-single, PixArt-alpha). Sinusoid [cos, sin] (256) of the Wan timestep 1000*sigma ->
   Linear -> SiLU -> Linear gives e; ``time_projection`` (SiLU -> Linear(D, 6D)) gives e0. Both are
   computed ONCE per forward and shared by every block. Timesteps may be per token (B, L): TI2V
   gives the tokens of the clean first frame timestep 0. The sinusoid is computed in fp32 as in
   diffusers (Wan's own code uses float64; the two differ by about 1e-5 in the features).
4. Blocks. Each has a learned (1, 6, D) table added to e0 in fp32, chunked into
   (shift1, scale1, gate1, shift2, scale2, gate2):

       x = x + gate1 * SelfAttn(LN(x) * (1 + scale1) + shift1)      # 3-D RoPE on q, k
       x = x + CrossAttn(LN_affine(x), text)                         # no gate, no modulation
       x = x + gate2 * FFN(LN(x) * (1 + scale2) + shift2)            # Linear -> GELU(tanh) -> Linear

   q, k, v, o are separate Linear layers; q and k get one RMSNorm across all heads (over D, before
   the head split) in both attentions. LayerNorms are computed in fp32; only the cross-attention
   norm is affine.
5. Head. LN(x) * (1 + scale) + shift with (shift, scale) = table (1, 2, D) + e (the raw time
   embedding, not e0), then Linear(D, 4 * C) (zero-initialised) and unpatchify.

3-D RoPE: interleaved pairs, theta 1e4, head channels split over (t, h, w) as
d - 4*(d//6), 2*(d//6), 2*(d//6) (44/42/42 at d = 128), integer latent-grid positions
(:func:`avgen.nn.rope_3d_angles`).

**Flow-time convention (the one place it is mapped).** Wan is trained on sigma (1 = noise,
x_sigma = (1 - sigma) x_data + sigma eps) and predicts v_wan = eps - x_data, with timestep 1000*sigma.
avgen's time is t = 1 - sigma (x_t = (1 - t) x0 + t x1, x1 = data) and its velocity is
x1 - x0 = -v_wan. :meth:`WanVideoNetwork.predict_velocity` therefore feeds
:func:`wan_timestep` = 1000 * (1 - t) and negates the output of :meth:`WanVideoNetwork.wan_forward`
(the network exactly as Wan/diffusers call it). Nothing else in avgen converts.

Public weights load through :mod:`avgen.models.harmony.wan_checkpoint` (original release layout and
diffusers ``transformer/`` layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avgen.models.registry import register_network
from avgen.nn import MLP, MultiHeadAttention, TimestepEmbedding, modulate, rope_3d_angles

__all__ = [
    "FP32_PARAMETERS",
    "WanBlock",
    "WanTokens",
    "WanVideoConditions",
    "WanVideoNetwork",
    "ti2v_inputs",
    "to_mixed_precision",
    "wan_timestep",
]


# Parameters kept in fp32 when the rest of the network runs in bf16/fp16 (diffusers'
# ``_keep_in_fp32_modules`` for Wan: the time embedding, the modulation tables and the norms).
FP32_PARAMETERS: tuple[str, ...] = ("time_embedding.", "modulation", "head_modulation", "cross_attn_norm.")


def to_mixed_precision(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Cast ``module`` to ``dtype`` except parameters named like :data:`FP32_PARAMETERS`, kept fp32 (Wan in bf16)."""
    module.to(dtype)
    for name, param in module.named_parameters():
        if any(key in name for key in FP32_PARAMETERS):
            param.data = param.data.float()
    return module


def wan_timestep(t: Tensor) -> Tensor:
    """avgen time t (data at t = 1) -> the timestep a Wan network is trained on, 1000 * sigma = 1000 * (1 - t)."""
    return 1000.0 * (1.0 - t.float())


def ti2v_inputs(x_t: Tensor, t: Tensor, image_latent: Tensor, *, per_frame: bool = False) -> tuple[Tensor, Tensor]:
    """Wan2.2 TI2V image conditioning in avgen time (``textimage2video.py``: ``masks_like``).

    The first latent frame of x_t (B, T, C, h, w) is replaced by the clean image latent
    (B, 1, C, h, w) or (B, C, h, w), and its tokens get avgen time t = 1 (clean, Wan timestep 0).
    t (B,) -> per-token times (B, T * h/2 * w/2) for a (1, 2, 2) patch, or with ``per_frame`` the
    per-frame times (B, T) they repeat (:meth:`WanVideoNetwork.embed` takes either; per frame, the
    time MLPs run on T rows instead of T * h/2 * w/2 identical ones).
    """
    if image_latent.dim() == 4:
        image_latent = image_latent.unsqueeze(1)
    batch, frames, _, height, width = x_t.shape
    x_t = torch.cat((image_latent.to(x_t.dtype), x_t[:, 1:]), dim=1)
    tokens_per_frame = (height // 2) * (width // 2)
    frame_times = t.float()[:, None].expand(batch, frames).clone()
    frame_times[:, 0] = 1.0
    return x_t, frame_times if per_frame else frame_times.repeat_interleave(tokens_per_frame, dim=1)


@dataclass
class WanVideoConditions:
    """Condition tensors computed once per sample and reused at every ODE step.

    context: (B, text_len, D) embedded text (umT5 features zero-padded to text_len, then projected).
    """

    context: Tensor


@dataclass
class WanTokens:
    """The video branch's state between :meth:`WanVideoNetwork.embed` and its head.

    tokens (B, L, D); e (B, L|1, D) and e0 (B, L|1, 6, D) time embeddings; angles (L, Dh/2) 3-D
    RoPE; mask (B, L) bool valid tokens or None; grid (T, h, w) token grid; context (B, Lc, D)
    embedded text; token_frames (B,) valid token frames per sample or None (all valid).
    """

    tokens: Tensor
    e: Tensor
    e0: Tensor
    angles: Tensor
    mask: Tensor | None
    grid: tuple[int, int, int]
    context: Tensor
    token_frames: Tensor | None


def _layer_norm_fp32(x: Tensor, norm: nn.LayerNorm | None = None, eps: float = 1e-6) -> Tensor:
    """LayerNorm in fp32 (Wan's WanLayerNorm): x (any dtype) -> fp32."""
    if norm is None:
        return F.layer_norm(x.float(), x.shape[-1:], eps=eps)
    return F.layer_norm(x.float(), x.shape[-1:], norm.weight.float(), norm.bias.float(), norm.eps)


class WanBlock(nn.Module):
    """One Wan attention block (``WanAttentionBlock``), modulated by the shared e0 plus its own table.

    The three residual parts are separate (``forward(..., part=...)``) so that a two-branch network
    (Harmony, Ovi) can interleave cross-modal updates between them (spec §1.4.3 "Block order");
    ``part="all"`` is exactly their composition. ``cross_attention=False`` drops the text cross-attention and its
    norm: Harmony's audio branch in ``audio_mmdit: single`` mode, whose text is in-context (spec
    §1.4.2; Wan block minus 37.8M at D = 3072).
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        *,
        eps: float = 1e-6,
        cross_attn_norm: bool = True,
        cross_attention: bool = True,
    ):
        super().__init__()
        self.eps = eps
        self.self_attn = MultiHeadAttention(dim, num_heads, qk_norm="across_heads", eps=eps)
        self.cross_attn = MultiHeadAttention(dim, num_heads, qk_norm="across_heads", eps=eps) if cross_attention else None
        self.cross_attn_norm = nn.LayerNorm(dim, eps=eps) if cross_attn_norm and cross_attention else None
        self.ffn = MLP(dim, ffn_dim)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def modulation_terms(self, e0: Tensor, half: int | None = None) -> tuple[Tensor, ...]:
        """e0 (B, L|1, 6, D) -> fp32 (B, L|1, D) terms: all six (shift1, scale1, gate1, shift2, scale2, gate2),
        or only those of the attention (``half=0``) or of the FFN (``half=1``)."""
        if half is None:
            return (self.modulation.float() + e0.float()).unbind(dim=2)
        rows = slice(3 * half, 3 * half + 3)
        return (self.modulation[:, rows].float() + e0[:, :, rows].float()).unbind(dim=2)

    def self_attention_residual(
        self, x: Tensor, terms: tuple[Tensor, ...], angles: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """x + gate1 * SelfAttn(LN(x) * (1 + scale1) + shift1); terms = (shift1, scale1, gate1)."""
        shift1, scale1, gate1 = terms
        dtype = x.dtype
        h = modulate(_layer_norm_fp32(x, eps=self.eps), shift1, scale1).to(dtype)
        return (x.float() + self.self_attn(h, query_angles=angles, mask=mask).float() * gate1).to(dtype)

    def cross_attention_residual(self, x: Tensor, context: Tensor) -> Tensor:
        """x + CrossAttn(LN_affine(x), text): ungated, unmodulated."""
        if self.cross_attn is None:
            raise RuntimeError("this WanBlock was built with cross_attention=False")
        h = x if self.cross_attn_norm is None else _layer_norm_fp32(x, self.cross_attn_norm).to(x.dtype)
        return x + self.cross_attn(h, context)

    def ffn_residual(self, x: Tensor, terms: tuple[Tensor, ...]) -> Tensor:
        """x + gate2 * FFN(LN(x) * (1 + scale2) + shift2); terms = (shift2, scale2, gate2)."""
        shift2, scale2, gate2 = terms
        dtype = x.dtype
        h = modulate(_layer_norm_fp32(x, eps=self.eps), shift2, scale2).to(dtype)
        return (x.float() + self.ffn(h).float() * gate2).to(dtype)

    def forward(
        self,
        x: Tensor,
        e0: Tensor | None,
        context: Tensor | None = None,
        angles: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        part: str = "all",
    ) -> Tensor:
        """x (B, L, D); e0 (B, L|1, 6, D) shared time projection; context (B, Lc, D) (None without
        cross-attention); angles (L, Dh/2) or (B, 1, L, Dh/2); mask (B, L) bool key mask.

        ``part``: ``"all"`` (the block), or one residual part, ``"self_attention"``, ``"cross_attention"``
        or ``"ffn"``, so that a two-branch network interleaves cross-modal updates between them while
        every call still goes through ``forward`` (FSDP units and checkpoint wrappers hook ``forward``).
        """
        if part == "all":
            terms = self.modulation_terms(e0)
            x = self.self_attention_residual(x, terms[:3], angles, mask)
            if self.cross_attn is not None:
                x = self.cross_attention_residual(x, context)
            return self.ffn_residual(x, terms[3:])
        if part == "self_attention":
            return self.self_attention_residual(x, self.modulation_terms(e0, 0), angles, mask)
        if part == "cross_attention":
            return self.cross_attention_residual(x, context)
        if part == "ffn":
            return self.ffn_residual(x, self.modulation_terms(e0, 1))
        raise ValueError(f"part must be 'all', 'self_attention', 'cross_attention' or 'ffn', got {part!r}")


class WanVideoNetwork(nn.Module):
    """The Wan2.2 DiT over video latents (B, T, C, h, w) -> velocity of the same shape.

    Defaults are a tiny network; the preset ``wan2.2-ti2v-5b`` (``avgen.models.create_network``) is
    the public TI2V-5B geometry.
    """

    def __init__(
        self,
        *,
        latent_channels: int = 8,
        dim: int = 64,
        ffn_dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        text_dim: int = 32,
        text_len: int = 16,
        freq_dim: int = 256,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        eps: float = 1e-6,
        cross_attn_norm: bool = True,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.latent_channels = latent_channels
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.text_dim = text_dim
        self.text_len = text_len
        self.patch_size = tuple(patch_size)
        self.rope_theta = rope_theta
        self.eps = eps

        self.patch_embedding = nn.Conv3d(latent_channels, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = MLP(text_dim, dim, dim)  # Linear -> GELU(tanh) -> Linear
        self.time_embedding = TimestepEmbedding(dim, frequency_dim=freq_dim, order="cos_sin")
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(
            [WanBlock(dim, ffn_dim, num_heads, eps=eps, cross_attn_norm=cross_attn_norm) for _ in range(num_layers)]
        )
        self.head_modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.head = nn.Linear(dim, math.prod(self.patch_size) * latent_channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Wan's ``init_weights``: Xavier Linear, Xavier patch embedding, N(0, 0.02) embeddings, zero head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for linear in (self.text_embedding.fc1, self.text_embedding.fc2, self.time_embedding.mlp[0], self.time_embedding.mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(self.head.weight)

    # ------------------------------------------------------------------ conditions
    def preprocess_conditions(self, text_features: Tensor, text_mask: Tensor | None = None) -> WanVideoConditions:
        """umT5 features (B, L, text_dim) [+ (B, L) bool mask] -> embedded, zero-padded text context.

        Padding tokens are zeroed, the sequence is zero-padded (or cut) to ``text_len``, then
        embedded: exactly Wan's ``text_embedding(cat([u, zeros(text_len - len(u))]))``.
        """
        if text_features.dim() != 3 or text_features.shape[-1] != self.text_dim:
            raise ValueError(f"text_features must be (B, L, {self.text_dim}), got {tuple(text_features.shape)}")
        if text_mask is not None:
            text_features = text_features * text_mask[..., None].to(text_features.dtype)
        length = text_features.shape[1]
        if length >= self.text_len:
            text_features = text_features[:, : self.text_len]
        else:
            text_features = F.pad(text_features, (0, 0, 0, self.text_len - length))
        return WanVideoConditions(context=self.text_embedding(text_features))

    # ------------------------------------------------------------------ geometry
    def token_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(T, C, h, w) or (B, T, C, h, w) latent shape -> token grid (T/pt, h/ph, w/pw)."""
        frames, _, height, width = latent_shape[-4:]
        pt, ph, pw = self.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(
                f"latent grid {frames}x{height}x{width} is not divisible by the patch size {self.patch_size}; "
                "pick a video size whose latent is a multiple of the patch"
            )
        return frames // pt, height // ph, width // pw

    def patchify(self, x: Tensor) -> Tensor:
        """(B, T, C, h, w) -> tokens (B, L, D), t-major."""
        tokens = self.patch_embedding(rearrange(x, "b t c h w -> b c t h w"))
        return rearrange(tokens, "b d t h w -> b (t h w) d")

    def unpatchify(self, tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """(B, L, pt*ph*pw*C) -> (B, T, C, h, w) (Wan's einsum 'fhwpqrc->cfphqwr')."""
        pt, ph, pw = self.patch_size
        f, h, w = grid
        return rearrange(
            tokens, "b (f h w) (pt ph pw c) -> b (f pt) c (h ph) (w pw)", f=f, h=h, w=w, pt=pt, ph=ph, pw=pw
        )

    # ------------------------------------------------------------------ forward
    def time_embeddings(
        self, wan_timesteps: Tensor, num_tokens: int, tokens_per_frame: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Wan timesteps (B,), per token (B, L) or, given ``tokens_per_frame``, per token frame (B, L / tokens_per_frame)
        -> e (B, L|1, D) and e0 (B, L|1, 6, D), shared by all blocks. Per frame, the embeddings are computed
        once per frame and repeated over its tokens (the same values as per token)."""
        if wan_timesteps.dim() == 1:
            wan_timesteps = wan_timesteps[:, None]
        elif (wan_timesteps.dim() == 2 and tokens_per_frame and wan_timesteps.shape[1] != num_tokens
              and wan_timesteps.shape[1] * tokens_per_frame == num_tokens):
            e, e0 = self.time_embeddings(wan_timesteps, wan_timesteps.shape[1])
            return e.repeat_interleave(tokens_per_frame, dim=1), e0.repeat_interleave(tokens_per_frame, dim=1)
        elif wan_timesteps.dim() != 2 or wan_timesteps.shape[1] != num_tokens:
            raise ValueError(
                f"timesteps must be (B,), per token (B, {num_tokens}) or per token frame, got {tuple(wan_timesteps.shape)}"
            )
        e = self.time_embedding(wan_timesteps)  # sinusoid in fp32 -> MLP
        # the projection may run in a lower precision than the (fp32-kept) time embedding, as in diffusers
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype))
        e0 = rearrange(e0, "b l (n d) -> b l n d", n=6)
        return e, e0

    def embed(
        self, x: Tensor, wan_timesteps: Tensor, conditions: WanVideoConditions, *, frame_lengths: Tensor | None = None
    ) -> WanTokens:
        """Everything before the blocks: patchify, RoPE angles, time embeddings, key mask, text context."""
        if x.dim() != 5 or x.shape[2] != self.latent_channels:
            raise ValueError(f"x must be (B, T, {self.latent_channels}, h, w), got {tuple(x.shape)}")
        grid = self.token_grid(x.shape)
        tokens = self.patchify(x)
        num_tokens = tokens.shape[1]
        angles = rope_3d_angles(*grid, self.head_dim, self.rope_theta, device=x.device)
        e, e0 = self.time_embeddings(wan_timesteps.to(x.device), num_tokens, tokens_per_frame=grid[1] * grid[2])
        mask, token_frames = None, None
        if frame_lengths is not None:
            frame_of_token = torch.arange(grid[0], device=x.device).repeat_interleave(grid[1] * grid[2])
            token_frames = (frame_lengths.to(x.device) // self.patch_size[0]).clamp(min=1)
            mask = frame_of_token[None, :] < token_frames[:, None]
        context = conditions.context.to(tokens.dtype)
        return WanTokens(tokens, e, e0, angles, mask, grid, context, token_frames)

    def final_layer(self, tokens: Tensor, e: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Wan's head: LN(x) * (1 + scale) + shift with (shift, scale) = table + e, Linear, unpatchify."""
        shift, scale = (self.head_modulation.float() + e.float()[:, :, None]).unbind(dim=2)
        out = self.head(modulate(_layer_norm_fp32(tokens, eps=self.eps), shift, scale).to(tokens.dtype))
        return self.unpatchify(out, grid)

    def wan_forward(
        self,
        x: Tensor,
        wan_timesteps: Tensor,
        conditions: WanVideoConditions,
        *,
        frame_lengths: Tensor | None = None,
    ) -> Tensor:
        """The network exactly as Wan calls it: x (B, T, C, h, w), timesteps 1000*sigma -> v_wan = eps - x_data.

        frame_lengths (B,) valid latent frames: tokens of later frames are masked out as keys of
        the self-attention (Wan's ``seq_lens``); their outputs are meaningless and should be ignored.
        """
        state = self.embed(x, wan_timesteps, conditions, frame_lengths=frame_lengths)
        tokens = state.tokens
        for block in self.blocks:
            tokens = block(tokens, state.e0, state.context, state.angles, state.mask)
        return self.final_layer(tokens, state.e, state.grid)

    def predict_velocity(
        self,
        x_t: Tensor,
        t: Tensor,
        conditions: WanVideoConditions,
        *,
        frame_lengths: Tensor | None = None,
    ) -> Tensor:
        """avgen velocity x1 - x0 at avgen time t: -wan_forward(x_t, 1000 * (1 - t)).

        x_t (B, T, C, h, w); t (B,), per token (B, L) or per token frame (B, T) in [0, 1] (data at t = 1).
        """
        return -self.wan_forward(x_t, wan_timestep(t), conditions, frame_lengths=frame_lengths)

    def forward(self, x_t: Tensor, t: Tensor, conditions: WanVideoConditions, **kwargs) -> Tensor:
        return self.predict_velocity(x_t, t, conditions, **kwargs)

    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> "WanVideoNetwork":
        """Cast to ``dtype`` except :data:`FP32_PARAMETERS`, which stay fp32 (how Wan runs in bf16)."""
        return to_mixed_precision(self, dtype)


# ---------------------------------------------------------------------------------- size presets
# Wan2.2-TI2V-5B (wan/configs/wan_ti2v_5B.py): 4,999,787,712 parameters.
register_network(
    "wan2.2-ti2v-5b", WanVideoNetwork, latent_channels=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30,
    text_dim=4096, text_len=512, freq_dim=256, patch_size=(1, 2, 2), eps=1e-6, cross_attn_norm=True,
    description="Wan2.2-TI2V-5B video DiT, Harmony's video branch (5.0B)",
)
