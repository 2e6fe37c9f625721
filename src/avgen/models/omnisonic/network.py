"""OmniSonic backbone: the TriAttn-DiT (OmniSonic §3.2.2, Fig. 2, Eq. 5-8).

Reads top-down like the method section:

1. Patchify. The audio-VAE latent map x_t (B, C, T, F) (AudioLDM: 8 x 256 x 16) is cut into
   p x p patches over (time, frequency) (p = 2, A.5) and embedded to the hidden width D (DiT
   PatchEmbed, a strided Conv2d). Tokens are ordered time-major: token (i, j) is patch-time column
   i, frequency row j; L = T' * F' tokens with T' = T / p, F' = F / p. A fixed 2-D sin-cos
   position embedding is added (DiT; the paper does not say how the TriAttn-DiT encodes position
   in self-attention).
2. Frame-aligned adaLN (Eq. 5). c_vt = c_v W_v + t: the CLIP frame features (B, N, d_vis) are
   projected to the timestep-embedding width and added to the timestep embedding t (B, D).
   Each block's adaLN (SiLU -> Linear, zero-init, 6 params) maps c_vt to
   (alpha1, beta1, gamma1, alpha2, beta2, gamma2) per *visual frame*; nearest-neighbour
   upsampling to the T' patch-time columns then gives per-frame parameters, shared by the F'
   frequency rows of a column. (SiLU -> Linear acts per frame, so it commutes with nearest
   upsampling: the code upsamples c_vt once and projects per column, which is exactly
   Upsample(Proj(c_vt)) of Eq. 5 and is checked against that order in the tests.)
3. TriCrossAttention (Eq. 6-7). Three key/value sequences, one per text condition:
   on-screen environmental caption (FLAN-T5, d_env), off-screen environmental caption (FLAN-T5,
   d_env) and speech transcript (SpeechT5 + Durator, d_sp). The visual frames are appended to
   one of them: c_on,v = [c_on | c_v W_env] when the sample's on-screen caption is non-empty,
   otherwise c_sp,v = [c_sp | c_v W_sp]; the other sequences get a projected all-zero block
   0 W (N tokens). W_env / W_sp are ``nn.Linear`` with bias, so the projected zero block is
   realised as ``W(0)`` = the bias vector repeated over the N visual positions (learnable, the
   same for every sample). Three separate cross-attentions (CA_on, CA_off, CA_sp) take x_t as
   query. RoPE (1-D, over time) rotates the audio queries (each token at its patch-time column
   i) and only the visual segment [L_c, L_c + N) of each key sequence, with the N visual frames
   placed on the audio timeline at positions k * T' / N (MMAudio's rescaling); the text keys are
   never rotated.
4. MoE gating (Eq. 8). The masked mean token of each text condition (c_on, c_off, c_sp; the text
   part, as Eq. 8's \\bar c_txt) is concatenated and mapped by a small MLP to three scores,
   softmax -> (w_on, w_off, w_sp), and the block's cross-attention output is
   w_on z_on + w_off z_off + w_sp z_sp. ``gating="sum"`` / ``"mean"`` replace the gate by the
   plain sum / mean (the "w/o MoE gating" ablation of Table 3); ``gate_logits_override``
   (e.g. ``{"speech": 0.0}``) replaces named pre-softmax scores at inference (the Fig. 4 study).

Block layout (our reading of Fig. 2(B); the figure shows adaLN -> self-attention ->
TriCrossAttention -> FFN, and Eq. 5 produces exactly six parameters): PixArt-alpha / Wan style,

    x = x + gamma1 * SelfAttn(modulate(LN(x), beta1, alpha1))     # alpha = scale, beta = shift
    x = x + TriCrossAttn(LN_affine(x), ...)                        # not modulated, no adaLN gate
    x = x + gamma2 * FFN(modulate(LN(x), beta2, alpha2))

i.e. the six adaLN parameters modulate and gate the self-attention and the FFN (DiT); the
cross-attention has its own affine LayerNorm (Wan's ``cross_attn_norm``) and its output
projections are zero-initialised (PixArt-alpha), so every block starts as the identity. The
final layer is DiT's (adaLN shift/scale from the same frame-aligned condition, zero-init linear
to p*p*C per token), then unpatchify.

Absent or CFG-dropped conditions are replaced by learned null tokens in
:meth:`OmniSonicNetwork.preprocess_conditions` (design §2): each text condition by a learned null
token (one valid key, the rest masked), the visual frames by a learned null frame repeated over
the N frames. The visual block stays routed by the sample's on-screen caption presence (its
scenario), not by whether the caption was dropped, so a dropped on-screen caption does not move
the video of an on-screen environmental source onto the speech condition; CFG branches (which
keep the video, Eq. 9) therefore see the video at the same place in every branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avgen.models.registry import register_network
from avgen.nn.rope import rope_rotation
from avgen.nn import (
    masked_mean,
    MLP,
    AdaLNZero,
    CrossAttention,
    FinalLayer,
    SelfAttention,
    TimestepEmbedding,
    gated_residual,
    modulate,
    rescaled_positions,
    rope_angles,
    sinusoidal_embedding,
    upsample_to_length,
)

__all__ = [
    "CONDITIONS",
    "GATINGS",
    "OmniSonicConditions",
    "OmniSonicNetwork",
    "TriAttnDiTBlock",
    "TriCrossAttention",
    "masked_mean",
    "sincos_2d_embedding",
]

# Order of the three text conditions everywhere (gates, logging, CFG scales).
CONDITIONS: tuple[str, ...] = ("onscreen", "offscreen", "speech")
GATINGS: tuple[str, ...] = ("moe", "sum", "mean")


def sincos_2d_embedding(rows: int, cols: int, dim: int, device=None) -> Tensor:
    """DiT's fixed 2-D sin-cos position embedding of a (rows, cols) grid flattened row-major: (rows*cols, dim).

    The first half of the channels encodes the row (patch-time column of the latent map), the
    second half the column (frequency row).
    """
    if dim % 4 != 0:
        raise ValueError(f"the 2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    r = sinusoidal_embedding(torch.arange(rows, device=device, dtype=torch.float32), dim // 2)  # (rows, D/2)
    c = sinusoidal_embedding(torch.arange(cols, device=device, dtype=torch.float32), dim // 2)  # (cols, D/2)
    grid = torch.cat([r[:, None, :].expand(rows, cols, -1), c[None, :, :].expand(rows, cols, -1)], dim=-1)
    return grid.reshape(rows * cols, dim)


def _per_token(param: Tensor, rows_per_column: int) -> Tensor:
    """Per-column adaLN parameters (B, T', D) -> per-token (B, T'*F', D) (time-major tokens)."""
    return param.repeat_interleave(rows_per_column, dim=1)


@dataclass
class OmniSonicConditions:
    """Condition tensors of one batch, computed once and reused at every ODE step.

    Text states are the encoders' outputs with absent / dropped conditions already replaced by
    the learned null token (valid mask = first position only). ``visual`` is (B, N, d_vis) with
    the learned null frame where video is absent or dropped. ``visual_to_onscreen`` (B,) bool:
    True -> the visual block joins the on-screen caption's sequence, False -> the transcript's.
    ``gate_logits_override``: pre-softmax MoE scores of the named conditions for this sampling call
    (Fig. 4, e.g. ``{"speech": 0.0}``); None uses the gate MLP's scores.
    """

    onscreen: Tensor  # (B, L_on, d_env)
    onscreen_mask: Tensor  # (B, L_on) bool
    offscreen: Tensor  # (B, L_off, d_env)
    offscreen_mask: Tensor  # (B, L_off) bool
    speech: Tensor  # (B, L_sp, d_sp)
    speech_mask: Tensor  # (B, L_sp) bool
    visual: Tensor  # (B, N, d_vis)
    visual_to_onscreen: Tensor  # (B,) bool
    gate_logits_override: dict[str, float] | None = None


class TriCrossAttention(nn.Module):
    """Three cross-attentions from the audio tokens plus their MoE-gated fusion (Eq. 7-8).

    forward(x (B, L, D), contexts: per condition (B, L_c + N, d_c), masks: per condition
    (B, L_c + N) bool, pooled (B, 2 d_env + d_sp) = [mean on | mean off | mean sp],
    query_angles (L, Dh/2), key_angles (N, Dh/2), visual_ranges: per condition (L_c, L_c + N))
    -> (fused (B, L, D), gate weights (B, 3) in :data:`CONDITIONS` order).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        env_dim: int,
        speech_dim: int,
        *,
        qk_norm: bool = True,
        gating: str = "moe",
        gate_hidden_dim: int = 256,
    ):
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {gating!r}")
        self.gating = gating
        context_dims = {"onscreen": env_dim, "offscreen": env_dim, "speech": speech_dim}
        self.attn = nn.ModuleDict(
            {name: CrossAttention(dim, context_dims[name], num_heads, qk_norm=qk_norm) for name in CONDITIONS}
        )
        for attn in self.attn.values():  # PixArt-alpha: zero-init cross-attention output
            nn.init.zeros_(attn.proj.weight)
            nn.init.zeros_(attn.proj.bias)
        # Eq. 8: MLP([c_on | c_off | c_sp]) -> 3 scores. Zero-init last layer: uniform gates at start.
        self.gate = MLP(2 * env_dim + speech_dim, gate_hidden_dim, len(CONDITIONS)) if gating == "moe" else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.fc2.weight)
            nn.init.zeros_(self.gate.fc2.bias)

    def gate_weights(self, pooled: Tensor, logits_override: dict[str, float] | None = None) -> Tensor:
        """Eq. 8: softmax(MLP(pooled)) -> (B, 3); fixed weights (1 or 1/3) when gating is off."""
        batch = pooled.shape[0]
        if self.gate is None:
            if logits_override:
                raise ValueError(f"gate_logits_override needs gating='moe', this network uses gating={self.gating!r}")
            value = 1.0 if self.gating == "sum" else 1.0 / len(CONDITIONS)
            return pooled.new_full((batch, len(CONDITIONS)), value)
        logits = self.gate(pooled)
        if logits_override:
            unknown = set(logits_override) - set(CONDITIONS)
            if unknown:
                raise ValueError(f"gate_logits_override names unknown conditions {sorted(unknown)}; use {CONDITIONS}")
            logits = logits.clone()
            for name, value in logits_override.items():
                logits[:, CONDITIONS.index(name)] = float(value)
        return logits.float().softmax(dim=-1).to(pooled.dtype)

    def forward(
        self,
        x: Tensor,
        contexts: dict[str, Tensor],
        masks: dict[str, Tensor],
        pooled: Tensor,
        *,
        query_angles: Tensor | None,
        key_angles: Tensor | None,
        visual_ranges: dict[str, tuple[int, int]],
        logits_override: dict[str, float] | None = None,
    ) -> tuple[Tensor, Tensor]:
        weights = self.gate_weights(pooled, logits_override)  # (B, 3)
        out = torch.zeros_like(x)
        for i, name in enumerate(CONDITIONS):
            z = self.attn[name](
                x,
                contexts[name],
                context_mask=masks[name],
                query_angles=query_angles,
                key_angles=key_angles,
                key_rope_range=visual_ranges[name] if key_angles is not None else None,
            )  # Eq. 7: z_c = CA_c(RoPE(x), RoPE(visual segment of c_c,v), c_c,v)
            out = torch.addcmul(out, weights[:, i, None, None].to(z.dtype), z)
        return out, weights


class TriAttnDiTBlock(nn.Module):
    """One TriAttn-DiT block (see the module docstring for the layout)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        env_dim: int,
        speech_dim: int,
        *,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        gating: str = "moe",
        gate_hidden_dim: int = 256,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qk_norm=qk_norm)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = TriCrossAttention(
            dim, num_heads, env_dim, speech_dim, qk_norm=qk_norm, gating=gating, gate_hidden_dim=gate_hidden_dim
        )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.modulation = AdaLNZero(dim, dim, num_params=6)  # Eq. 5

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        rows_per_column: int,
        cross_inputs: dict,
        *,
        self_angles: Tensor | None = None,
        token_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """x (B, L, D); c (B, T', D) the frame-aligned condition per patch-time column."""
        # Eq. 5: (alpha1, beta1, gamma1, alpha2, beta2, gamma2) per column, broadcast over its F' rows.
        # Applied on the (B, T', F', D) token grid, each column's parameters broadcast over its F' rows
        # (the same numbers as repeating them per token, without six (B, L, D) copies per block).
        scale1, shift1, gate1, scale2, shift2, gate2 = (p.unsqueeze(2) for p in self.modulation(c))

        def grid(tokens: Tensor) -> Tensor:
            return tokens.unflatten(1, (-1, rows_per_column))

        h = modulate(grid(self.norm1(x)), shift1, scale1).flatten(1, 2)
        x = gated_residual(grid(x), grid(self.attn(h, self_angles, token_mask)), gate1).flatten(1, 2)
        fused, weights = self.cross(self.norm_cross(x), **cross_inputs)
        x = x + fused
        h = modulate(grid(self.norm2(x)), shift2, scale2).flatten(1, 2)
        x = gated_residual(grid(x), grid(self.mlp(h)), gate2).flatten(1, 2)
        return x, weights


class OmniSonicNetwork(nn.Module):
    """TriAttn-DiT velocity network v_theta(x_t, t, c_on, c_off, c_sp, c_v) on latent maps.

    Args:
        latent_channels: C of the latent map (AudioLDM VAE: 8; a mel codec: 1).
        frequency_bins: F of the latent map (AudioLDM VAE: 16; a mel codec: n_mels).
        env_dim, speech_dim, visual_dim: widths of the FLAN-T5, SpeechT5(+Durator) and CLIP
            features (paper: 1024, 768, 512).
        hidden_dim, depth, num_heads, patch_size, mlp_ratio: paper 1152, 28, 16, 2, 4 (DiT-XL;
            the head count is not given by the paper, DiT-XL uses 16).
        qk_norm: per-head RMS norm of queries and keys in every self- and cross-attention
            (default True, avgen's choice for training stability, as MMAudio / SD3). The paper does
            not mention it and DiT, whose blocks the TriAttn-DiT extends, has none: ``False`` gives
            DiT's plain scaled dot-product attention.
        gating: ``"moe"`` (Eq. 8), ``"sum"`` or ``"mean"`` (Table 3 "w/o MoE gating").
        gate_hidden_dim: hidden width of the gate MLP (paper: "lightweight"; not given).
        timestep_scale: t in [0, 1] is multiplied by this before the sinusoids (DiT trains on
            integer steps 0..999; 1000 keeps that resolution).
        self_attention_rope: also rotate self-attention q/k by the time position (the paper only
            specifies RoPE for the cross-attention; off by default).
        rope_theta: RoPE base.
    """

    # Repeated blocks: per-block torch.compile and FSDP wrapping (avgen.nn.blocks).
    block_classes = (TriAttnDiTBlock,)

    def __init__(
        self,
        *,
        latent_channels: int,
        frequency_bins: int,
        env_dim: int,
        speech_dim: int,
        visual_dim: int,
        hidden_dim: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        gating: str = "moe",
        gate_hidden_dim: int = 256,
        timestep_scale: float = 1000.0,
        self_attention_rope: bool = False,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        if hidden_dim % num_heads != 0 or (hidden_dim // num_heads) % 2 != 0:
            raise ValueError(f"hidden_dim {hidden_dim} must split into {num_heads} heads of even width (RoPE)")
        self.latent_channels = latent_channels
        self.frequency_bins = frequency_bins
        self.env_dim, self.speech_dim, self.visual_dim = env_dim, speech_dim, visual_dim
        self.hidden_dim, self.num_heads, self.patch_size = hidden_dim, num_heads, patch_size
        self.head_dim = hidden_dim // num_heads
        self.gating = gating
        self.self_attention_rope = self_attention_rope
        self.rope_theta = rope_theta

        # 1. patchify
        self.patch_embed = nn.Conv2d(latent_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        # 2. timestep + frame-aligned visual condition (Eq. 5: c_vt = c_v W_v + t)
        self.timestep_embed = TimestepEmbedding(hidden_dim, scale=timestep_scale)
        self.visual_to_adaln = nn.Linear(visual_dim, hidden_dim)  # W_v
        # 3. Eq. 6: visual projections into the text spaces (W_env shared by on/off, W_sp)
        self.visual_to_env = nn.Linear(visual_dim, env_dim)
        self.visual_to_speech = nn.Linear(visual_dim, speech_dim)
        # learned null conditions (zero-init)
        self.null_onscreen = nn.Parameter(torch.zeros(env_dim))
        self.null_offscreen = nn.Parameter(torch.zeros(env_dim))
        self.null_speech = nn.Parameter(torch.zeros(speech_dim))
        self.null_visual = nn.Parameter(torch.zeros(visual_dim))
        self.blocks = nn.ModuleList(
            [
                TriAttnDiTBlock(
                    hidden_dim,
                    num_heads,
                    env_dim,
                    speech_dim,
                    mlp_ratio=mlp_ratio,
                    qk_norm=qk_norm,
                    gating=gating,
                    gate_hidden_dim=gate_hidden_dim,
                )
                for _ in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_dim, patch_size * patch_size * latent_channels, hidden_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT: xavier-uniform patch embedding like a Linear.
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)

    # ------------------------------------------------------------------ conditions
    def preprocess_conditions(
        self,
        onscreen: tuple[Tensor, Tensor],
        offscreen: tuple[Tensor, Tensor],
        speech: tuple[Tensor, Tensor],
        visual: Tensor,
        *,
        onscreen_present: Tensor,
        offscreen_present: Tensor,
        speech_present: Tensor,
        visual_present: Tensor,
        visual_to_onscreen: Tensor,
        gate_logits_override: dict[str, float] | None = None,
    ) -> OmniSonicConditions:
        """Replace absent / dropped conditions by the learned null tokens.

        onscreen / offscreen / speech: (states (B, L, d), mask (B, L) bool) from the encoders;
        visual (B, N, d_vis); *_present (B,) bool after CFG dropout; visual_to_onscreen (B,) bool
        (the sample's on-screen caption is non-empty, before dropout).
        """

        def text(pair: tuple[Tensor, Tensor], present: Tensor, null: Tensor) -> tuple[Tensor, Tensor]:
            states, mask = pair[0], pair[1].bool()
            if states.shape[1] == 0:  # a batch with no token at all: one slot for the null token
                states = states.new_zeros(states.shape[0], 1, states.shape[2])
                mask = mask.new_zeros(mask.shape[0], 1)
            keep = present.to(states.device)[:, None]
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True
            states = torch.where(keep[..., None], states, null.to(states.dtype).expand_as(states))
            return states, torch.where(keep, mask.bool(), null_mask)

        on, on_mask = text(onscreen, onscreen_present, self.null_onscreen)
        off, off_mask = text(offscreen, offscreen_present, self.null_offscreen)
        sp, sp_mask = text(speech, speech_present, self.null_speech)
        keep_v = visual_present.to(visual.device)[:, None, None]
        visual = torch.where(keep_v, visual, self.null_visual.to(visual.dtype).expand_as(visual))
        if gate_logits_override:
            unknown = set(gate_logits_override) - set(CONDITIONS)
            if unknown:
                raise ValueError(f"gate_logits_override names unknown conditions {sorted(unknown)}; use {CONDITIONS}")
        return OmniSonicConditions(on, on_mask, off, off_mask, sp, sp_mask, visual, visual_to_onscreen.bool(),
                                   dict(gate_logits_override) if gate_logits_override else None)

    def frame_condition(self, t: Tensor, visual: Tensor, num_columns: int) -> Tensor:
        """Eq. 5 input: c_vt = c_v W_v + t (B, N, D), nearest-upsampled to the T' columns -> (B, T', D)."""
        t_emb = self.timestep_embed(t)  # (B, D)
        c_vt = self.visual_to_adaln(visual) + t_emb[:, None, :]
        return upsample_to_length(c_vt, num_columns)

    def visual_contexts(self, conditions: OmniSonicConditions) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, tuple[int, int]]]:
        """Eq. 6: per condition the key/value sequence [text | visual block], its mask and visual range."""
        visual = conditions.visual
        batch, num_frames, _ = visual.shape
        v_env, v_sp = self.visual_to_env(visual), self.visual_to_speech(visual)  # c_v W_env, c_v W_sp
        zero = torch.zeros_like(visual)  # the all-zero placeholder 0 (N, d_vis)
        z_env, z_sp = self.visual_to_env(zero), self.visual_to_speech(zero)  # 0 W = the bias, repeated
        route = conditions.visual_to_onscreen.to(visual.device)[:, None, None]
        blocks = {
            "onscreen": torch.where(route, v_env, z_env),
            "offscreen": z_env,
            "speech": torch.where(route, z_sp, v_sp),
        }
        texts = {
            "onscreen": (conditions.onscreen, conditions.onscreen_mask),
            "offscreen": (conditions.offscreen, conditions.offscreen_mask),
            "speech": (conditions.speech, conditions.speech_mask),
        }
        contexts, masks, ranges = {}, {}, {}
        visual_valid = torch.ones(batch, num_frames, dtype=torch.bool, device=visual.device)
        for name in CONDITIONS:
            states, mask = texts[name]
            contexts[name] = torch.cat([states, blocks[name].to(states.dtype)], dim=1)
            masks[name] = torch.cat([mask, visual_valid], dim=1)
            ranges[name] = (states.shape[1], states.shape[1] + num_frames)
        return contexts, masks, ranges

    @staticmethod
    def pooled_conditions(conditions: OmniSonicConditions) -> Tensor:
        """Eq. 8 input: [mean(c_on) | mean(c_off) | mean(c_sp)] over valid text tokens (B, 2 d_env + d_sp)."""
        return torch.cat(
            [
                masked_mean(conditions.onscreen, conditions.onscreen_mask),
                masked_mean(conditions.offscreen, conditions.offscreen_mask),
                masked_mean(conditions.speech, conditions.speech_mask),
            ],
            dim=-1,
        )

    # ------------------------------------------------------------------ forward
    def predict_velocity(
        self,
        x_t: Tensor,
        t: Tensor,
        conditions: OmniSonicConditions,
        latent_mask: Tensor | None = None,
        *,
        return_gate_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x_t (B, C, T, F) latent map, t (B,), latent_mask (B, T) bool -> velocity (B, C, T, F).

        With ``return_gate_weights`` also the MoE gate weights of every block, (B, depth, 3) (detached).
        """
        batch, channels, frames, bins = x_t.shape
        if channels != self.latent_channels or bins != self.frequency_bins:
            raise ValueError(
                f"latent map has {channels} channels x {bins} frequency bins, the network was built for "
                f"{self.latent_channels} x {self.frequency_bins}; build it from the same codec"
            )
        p = self.patch_size
        pad_t, pad_f = (-frames) % p, (-bins) % p
        x = F.pad(x_t, (0, pad_f, 0, pad_t))
        columns, rows = (frames + pad_t) // p, (bins + pad_f) // p

        # 1. patchify (time-major tokens) + 2-D sin-cos positions
        tokens = rearrange(self.patch_embed(x), "b d tc fr -> b (tc fr) d")
        tokens = tokens + sincos_2d_embedding(columns, rows, self.hidden_dim, x.device).to(tokens.dtype)
        token_mask = None
        if latent_mask is not None:
            column_valid = F.pad(latent_mask.bool(), (0, pad_t)).reshape(batch, columns, p).any(dim=-1)
            token_mask = column_valid.repeat_interleave(rows, dim=1)  # (B, L)

        # 2. Eq. 5 condition per column
        c = self.frame_condition(t, conditions.visual, columns).to(tokens.dtype)  # (B, T', D)

        # 3. Eq. 6-7 inputs: key sequences and RoPE angles (time positions on the column grid)
        contexts, masks, ranges = self.visual_contexts(conditions)
        query_positions = torch.arange(columns, device=x.device, dtype=torch.float32).repeat_interleave(rows)
        query_angles = rope_angles(query_positions, self.head_dim, self.rope_theta)  # (L, Dh/2)
        num_frames = conditions.visual.shape[1]
        key_angles = rope_angles(rescaled_positions(num_frames, columns, x.device), self.head_dim, self.rope_theta)
        cross_inputs = {
            "contexts": contexts,
            "masks": masks,
            "pooled": self.pooled_conditions(conditions),  # 4. Eq. 8 input
            # cos / sin once per forward, not per block and per cross-attention
            "query_angles": rope_rotation(query_angles),
            "key_angles": rope_rotation(key_angles),
            "visual_ranges": ranges,
            "logits_override": conditions.gate_logits_override,
        }
        self_angles = cross_inputs["query_angles"] if self.self_attention_rope else None
        weights = []
        for block in self.blocks:
            tokens, w = block(tokens, c, rows, cross_inputs, self_angles=self_angles, token_mask=token_mask)
            weights.append(w)
        gate_weights = torch.stack(weights, dim=1).detach()  # (B, depth, 3)

        out = self.final_layer(tokens, _per_token(c, rows))  # (B, L, p*p*C)
        out = rearrange(out, "b (tc fr) (pt pf c) -> b c (tc pt) (fr pf)", tc=columns, fr=rows, pt=p, pf=p)
        velocity = out[:, :, :frames, :bins]
        return (velocity, gate_weights) if return_gate_weights else velocity

    def forward(self, x_t: Tensor, t: Tensor, conditions: OmniSonicConditions, latent_mask: Tensor | None = None) -> Tensor:
        return self.predict_velocity(x_t, t, conditions, latent_mask)


# ---------------------------------------------------------------------------------- size presets
# OmniSonic §4 / A.5: DiT-XL/2 (hidden 1152, 28 blocks, patch 2; DiT-XL's 16 heads) on AudioLDM's
# 8 x T x 16 latent map, FLAN-T5-large 1024-d captions, SpeechT5 768-d transcript, CLIP 512-d frames.
register_network("omnisonic-xl", OmniSonicNetwork, latent_channels=8, frequency_bins=16, env_dim=1024,
                 speech_dim=768, visual_dim=512, hidden_dim=1152, depth=28, num_heads=16, patch_size=2,
                 mlp_ratio=4.0, description="OmniSonic TriAttn-DiT, paper size (DiT-XL/2)")
