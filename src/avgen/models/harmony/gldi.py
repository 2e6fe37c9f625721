"""GLDI: Harmony's Global-Local Decoupled Interaction, one per (video block, audio block) pair (spec §1.4.3).

Notation: T_v video token frames, T_a target audio latents, w the window, N_hw tokens per frame.
T_v and T_a are **per sample** (from the video frame lengths and the audio mask), so clips of
different durations in one padded batch each get their own alignment.

(a) Local, RoPE-aligned frame-wise cross-attention in both directions, target tokens A only:

* A2V (Main Eq. 5). The N_hw queries of video frame i attend to the audio target tokens j whose
  rescaled position j' = j * T_v / T_a falls in frames [i - w, i + w], i.e.
  |floor(j * T_v / T_a) - i| <= w. RoPE: queries at i, keys at j' ("the source modality's temporal
  position indices are rescaled onto the target's timeline").
* V2A ("operates analogously"). Audio token j attends to the tokens of video frames
  floor(j * T_v / T_a) + [-w, w] (the same relation, transposed); keys at i' = i * T_a / T_v,
  queries at j. The two scalings are implemented as written (they are not one function).
* Residual (Main Eq. 6): z_v += dz_v, z_a += dz_a.

(b) Global style alignment (Main Eq. 7): only the reference tokens R cross-attend to all valid video
tokens, without RoPE: z_r += CrossAttn(z_r, z_v). Skipped when there is no reference. The target
gets the style only through its self-attention with R: the "decoupling".

Not given by the paper, spec defaults [D]: w = 1 with windows clipped at the clip edges; 1-D RoPE on
the first 44 channels of a head (Wan's time band, Ovi's audio convention; ``rope_dim``); an affine
LayerNorm on the query side and on the source side (Ovi's ``pre_attn_norm_fusion``) and q/k RMSNorm
across heads (Wan); separate q/k/v/o per attention with the output projection zero-initialised
[B:UniAVGen], so a GLDI-augmented network starts exactly at (Wan2.2, stage-2 audio).

Ablation switches (Supp Table 4, Main Table 3):

* ``gldi="off"``: the baseline "global cross-attention like Ovi" (spec §2.2): every video token
  attends to every audio latent token [R | A] and back, with Ovi's RoPE (audio 1-D positions scaled
  by T_v / T_a on ``rope_dim`` channels, video 3-D), and no global style path.
* ``rope_align``: ``"aligned"`` (the paper), ``"raw"`` (each side at its own integer positions; the
  spec's reading of "w/o RoPE Align"), ``"none"`` (no RoPE in the interaction).

Efficient form: one SDPA per direction with a boolean (B, L_query, L_key) mask built once per
forward (:func:`gldi_geometry`) and shared by every layer, no loop over frames. The dense masked
logits are L_v x T_a per head, about 0.6 % of the video self-attention at paper size
(27,280 x 157 vs 27,280^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avgen.models.harmony.audio_network import partial_rope_angles
from avgen.models.harmony.video_network import _layer_norm_fp32
from avgen.nn import MultiHeadAttention, rope_3d_angles

__all__ = ["CrossModalAttention", "GLDIGeometry", "GLDILayer", "GLDI_MODES", "ROPE_ALIGN_MODES", "gldi_geometry", "window_mask"]

GLDI_MODES = ("on", "off")
ROPE_ALIGN_MODES = ("aligned", "raw", "none")


class CrossModalAttention(nn.Module):
    """Pre-norm cross-attention from one modality to another with a zero-initialised output.

    LN_affine(x) -> q, LN_affine(source) -> k, v; q/k RMSNorm across heads (Wan); RoPE angles on
    either side; (B, Lq, D) -> (B, Lq, D) update (0 at initialisation, and 0 for a query whose
    (B, Lq, Lk) mask row is empty).
    """

    def __init__(self, dim: int, source_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim, eps=eps)
        self.norm_source = nn.LayerNorm(source_dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, source_dim, qk_norm="across_heads", eps=eps)
        self.head_dim = self.attn.head_dim
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for linear in (self.attn.q, self.attn.k, self.attn.v):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.attn.o.weight)
        nn.init.zeros_(self.attn.o.bias)

    def forward(
        self,
        x: Tensor,
        source: Tensor,
        mask: Tensor | None,
        query_angles: Tensor | None = None,
        key_angles: Tensor | None = None,
    ) -> Tensor:
        h = _layer_norm_fp32(x, self.norm_query).to(x.dtype)
        s = _layer_norm_fp32(source, self.norm_source).to(source.dtype)
        out = self.attn(h, s, mask=mask, query_angles=query_angles, key_angles=key_angles)
        if mask is not None and mask.dim() == 3:
            # a query with nothing in its window (padding) gets no update, not the output bias
            out = out * mask.any(dim=-1, keepdim=True).to(out.dtype)
        return out


def window_mask(video_frames: Tensor, audio_lengths: Tensor, num_frames: int, num_audio: int, window: int) -> Tensor:
    """(B, num_frames, num_audio) bool: |floor(j * T_v / T_a) - i| <= w inside each sample's valid range.

    video_frames (B,) T_v per sample; audio_lengths (B,) T_a per sample. Integer arithmetic, so the
    frame of audio token j is exactly floor(j * T_v / T_a).
    """
    device = video_frames.device
    j = torch.arange(num_audio, device=device)
    i = torch.arange(num_frames, device=device)
    t_v, t_a = video_frames.long()[:, None], audio_lengths.long().clamp(min=1)[:, None]
    frame_of_audio = torch.div(j[None] * t_v, t_a, rounding_mode="floor")  # (B, T_a)
    near = (frame_of_audio[:, None, :] - i[None, :, None]).abs() <= window
    valid = (i[None, :, None] < t_v[:, :, None]) & (j[None, None, :] < t_a[:, :, None])
    return near & valid


@dataclass
class GLDIGeometry:
    """Masks and RoPE angles of every GLDI attention, computed once per forward and shared by all layers.

    Local (``gldi="on"``): a2v_mask (B, L_v, T_a) video token -> audio target token; v2a_mask
    (B, T_a, L_v); global_mask (B, L_v) video keys of the reference queries (None: no reference).
    Baseline (``gldi="off"``): the same names over all audio latent tokens [R | A] instead of T_a.
    Angles (B|1, 1, L, Dh/2) or None.
    """

    mode: str
    a2v_mask: Tensor
    v2a_mask: Tensor
    a2v_query_angles: Tensor | None
    a2v_key_angles: Tensor | None
    v2a_query_angles: Tensor | None
    v2a_key_angles: Tensor | None
    global_mask: Tensor | None


def gldi_geometry(
    *,
    mode: str,
    rope_align: str,
    window: int,
    grid: tuple[int, int, int],
    video_frames: Tensor,
    video_mask: Tensor | None,
    audio_lengths: Tensor,
    audio_mask: Tensor | None,
    num_audio: int,
    reference_mask: Tensor | None,
    num_reference: int,
    video_head_dim: int,
    audio_head_dim: int,
    video_rope_dim: int,
    audio_rope_dim: int,
    rope_theta: float = 10000.0,
) -> GLDIGeometry:
    """Masks and angles of GLDI (or of the ``off`` baseline) for one forward; see the module docstring.

    grid (T_v, h, w) padded token grid; video_frames (B,) and audio_lengths (B,) the per-sample T_v
    and T_a; video_mask (B, L_v) / audio_mask (B, T_a) / reference_mask (B, L_r) valid tokens or None.
    ``video_*_dim`` belong to the A2V attention (video queries), ``audio_*_dim`` to V2A and global.
    """
    if mode not in GLDI_MODES:
        raise ValueError(f"gldi must be one of {GLDI_MODES}, got {mode!r}")
    if rope_align not in ROPE_ALIGN_MODES:
        raise ValueError(f"rope_align must be one of {ROPE_ALIGN_MODES}, got {rope_align!r}")
    num_frames, height, width = grid
    per_frame = height * width
    device = video_frames.device
    batch = video_frames.shape[0]
    frame_of_token = torch.arange(num_frames, device=device).repeat_interleave(per_frame)  # (L_v,)
    if video_mask is None:
        video_mask = torch.ones(batch, num_frames * per_frame, dtype=torch.bool, device=device)
    t_v = video_frames.float()[:, None]
    t_a = audio_lengths.float().clamp(min=1)[:, None]

    if mode == "off":  # Ovi: all audio latents [R | A] <-> all video tokens, audio positions scaled by T_v / T_a
        target = torch.ones(batch, num_audio, dtype=torch.bool, device=device) if audio_mask is None else audio_mask
        positions = torch.arange(num_audio, device=device, dtype=torch.float32)[None].expand(batch, -1)
        masks = [target]
        if num_reference:
            ref = reference_mask
            positions = torch.cat(
                (torch.arange(num_reference, device=device)[None].float() - ref.sum(1, keepdim=True).float(), positions),
                dim=1,
            )
            masks.insert(0, ref)
        audio_tokens_mask = torch.cat(masks, dim=1)
        a2v_mask = video_mask[:, :, None] & audio_tokens_mask[:, None, :]
        a2v_q = a2v_k = v2a_q = v2a_k = None
        if rope_align != "none":
            scaled = positions * (t_v / t_a) if rope_align == "aligned" else positions
            a2v_q = rope_3d_angles(*grid, video_head_dim, rope_theta, device=device)
            a2v_k = partial_rope_angles(scaled, video_rope_dim, video_head_dim, rope_theta)[:, None]
            v2a_q = partial_rope_angles(scaled, audio_rope_dim, audio_head_dim, rope_theta)[:, None]
            v2a_k = rope_3d_angles(*grid, audio_head_dim, rope_theta, device=device)
        return GLDIGeometry(mode, a2v_mask, a2v_mask.transpose(1, 2).contiguous(), a2v_q, a2v_k, v2a_q, v2a_k, None)

    frame_mask = window_mask(video_frames, audio_lengths, num_frames, num_audio, window)  # (B, T_v, T_a)
    a2v_mask = frame_mask.repeat_interleave(per_frame, dim=1) & video_mask[:, :, None]
    if audio_mask is not None:
        a2v_mask = a2v_mask & audio_mask[:, None, :]
    a2v_q = a2v_k = v2a_q = v2a_k = None
    if rope_align != "none":
        audio_positions = torch.arange(num_audio, device=device, dtype=torch.float32)[None]  # (1, T_a)
        video_positions = frame_of_token.float()[None]  # (1, L_v)
        if rope_align == "aligned":
            audio_on_video = audio_positions * (t_v / t_a)  # j' = j * T_v / T_a   (A2V keys)
            video_on_audio = video_positions * (t_a / t_v.clamp(min=1))  # i' = i * T_a / T_v   (V2A keys)
        else:
            audio_on_video, video_on_audio = audio_positions, video_positions
        a2v_q = partial_rope_angles(video_positions, video_rope_dim, video_head_dim, rope_theta)[:, None]
        a2v_k = partial_rope_angles(audio_on_video, video_rope_dim, video_head_dim, rope_theta)[:, None]
        v2a_q = partial_rope_angles(audio_positions, audio_rope_dim, audio_head_dim, rope_theta)[:, None]
        v2a_k = partial_rope_angles(video_on_audio, audio_rope_dim, audio_head_dim, rope_theta)[:, None]
    global_mask = video_mask if num_reference else None
    return GLDIGeometry(mode, a2v_mask, a2v_mask.transpose(1, 2).contiguous(), a2v_q, a2v_k, v2a_q, v2a_k, global_mask)


class GLDILayer(nn.Module):
    """One GLDI module: A2V (video queries), V2A (audio target queries) and global style (reference queries).

    Separate q/k/v/o per attention: 3 x 37.77M = 113.3M per layer at D = 3072 (spec §1.4.3). In
    ``gldi="off"`` mode the same A2V / V2A attentions are the Ovi-style global baseline and there is
    no global style attention.
    """

    def __init__(
        self, video_dim: int, audio_dim: int, video_heads: int, audio_heads: int, *, mode: str = "on", eps: float = 1e-6
    ):
        super().__init__()
        if mode not in GLDI_MODES:
            raise ValueError(f"gldi must be one of {GLDI_MODES}, got {mode!r}")
        self.mode = mode
        self.audio_to_video = CrossModalAttention(video_dim, audio_dim, video_heads, eps)
        self.video_to_audio = CrossModalAttention(audio_dim, video_dim, audio_heads, eps)
        self.global_style = CrossModalAttention(audio_dim, video_dim, audio_heads, eps) if mode == "on" else None

    def forward(self, x: Tensor, source: Tensor, geometry: GLDIGeometry, *, direction: str) -> Tensor:
        """The update of one direction: ``"a2v"`` (x video, source audio), ``"v2a"`` (x audio target or
        [R | A] in the baseline, source video) or ``"global"`` (x reference tokens, source video).
        Every call goes through ``forward`` (FSDP units and checkpoint wrappers hook it)."""
        if direction == "a2v":
            return self.audio_to_video(x, source, geometry.a2v_mask, geometry.a2v_query_angles, geometry.a2v_key_angles)
        if direction == "v2a":
            return self.video_to_audio(x, source, geometry.v2a_mask, geometry.v2a_query_angles, geometry.v2a_key_angles)
        if direction == "global":
            if self.global_style is None:
                raise RuntimeError("gldi='off' has no global style path")
            return self.global_style(x, source, geometry.global_mask)
        raise ValueError(f"direction must be 'a2v', 'v2a' or 'global', got {direction!r}")

    def video_update(self, video: Tensor, audio_source: Tensor, geometry: GLDIGeometry) -> Tensor:
        """dz_v (B, L_v, Dv) (Main Eq. 5-6): video tokens read the audio (target tokens; [R | A] in the baseline)."""
        return self(video, audio_source, geometry, direction="a2v")

    def audio_update(self, audio: Tensor, video_source: Tensor, geometry: GLDIGeometry) -> Tensor:
        """dz_a (B, T_a, Da) for the target tokens (or [R | A] in the baseline): audio reads the video."""
        return self(audio, video_source, geometry, direction="v2a")

    def reference_update(self, reference: Tensor, video_source: Tensor, geometry: GLDIGeometry) -> Tensor:
        """dz_r (B, L_r, Da) (Main Eq. 7): reference tokens read every valid video token, no RoPE."""
        return self(reference, video_source, geometry, direction="global")
