"""FoleyGenEx backbone: the MMAudio multimodal transformer (FoleyGenEx §3, MMAudio §3.2-3.3).

Reads top-down like the method section:

1. Input projections (no residuals). Audio latent: Conv1d k7 -> SELU -> ConvMLP k7. CLIP video
   frames: Linear -> ConvMLP k3. Synchformer features: a learnable position embedding per token
   of each 8-token segment, then Conv1d k7 -> SELU -> ConvMLP k3. Text: Linear -> SwiGLU MLP.
2. Conditions. Global: c_g = TimestepEmbedding(t) + MLP(Linear(mean clip) + Linear(mean text)).
   Frame-aligned: c_f = c_g + sync features upsampled (nearest-exact) to the latent length, so
   every latent frame gets its own adaLN shift/scale/gate (MMAudio's synchronisation module).
3. Joint blocks over [latent | clip | text]: per-stream weights, ONE attention (MMDiT; the shared
   :mod:`avgen.nn.mmdit` blocks). The latent stream is modulated by c_f, clip and text by c_g. In
   the last joint block clip and text are pre-only: they only contribute keys/values.
4. Single-stream latent blocks (self-attention), modulated by c_f.
5. Final layer: adaLN (2 params) + Conv1d k7 to the latent channels, conditioned on c_g
   (MMAudio's checkpoints, its issue #55) or c_f.

RoPE (interleaved pairs, theta 1e4) rotates Q/K of latent positions 0..T-1 and of CLIP frames at
rescaled positions i * T / F (8 fps frames placed on the latent timeline); text gets none.
QK-norm is a per-head RMSNorm. adaLN modulations and the final layer are zero-initialised, so
every block starts as the identity and the initial velocity is 0 (DiT's adaLN-Zero).

Absent conditions (``video_present`` / ``text_present`` False, including CFG dropout) are
replaced by learned, zero-initialised null features before projection: one CLIP vector and one
sync vector repeated over time, and a (text_length, text_dim) null text sequence (MMAudio freezes
the CLIP encoding of "" there; here it is learned, same shape).

With MMAudio's norm epsilons (the defaults: LayerNorm 1e-5, QK RMSNorm torch's default) and weights
imported by :mod:`avgen.models.foleygenex.mmaudio_checkpoint`, the network without injection computes
MMAudio's velocity: the same outputs, to fp32 rounding (~1e-6), as a transcription of MMAudio's
forward on the same weights, block by block, for the conditional and null-condition velocity and a
25-step CFG sample (``tests/models/test_mmaudio_fidelity.py``).

FoleyGenEx additions (§3.1), both switchable so that the network can be MMAudio's:

* Conditional injection (``conditional_injection=True``): the InputEmbedding concatenates x_t with
  the masked conditional (context) latent on the channel axis, projects back to the latent width,
  adds a ConvPositionEmbedding residual (F5-TTS) and hands the result to MMAudio's audio input
  projection ("projected into the MMDiT input space"). It is initialised as the identity on x_t
  (projection [I | 0], last position conv zero), so an injected network starts out computing
  the MMAudio function it was initialised / fine-tuned from. Off, the parameters are MMAudio's, key
  for key (names and shapes checked against a dump of MMAudio's checkpoints), and so is the function
  (the fidelity test above).
* Multimodal dynamic masking: ``preprocess_conditions`` takes per-frame CLIP weights and a
  latent-rate sync mask (:mod:`avgen.models.foleygenex.masking`); masked features are all-zero
  (the paper's FV0), CLIP before its projection, sync after projection and upsampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgen.conditioning.sync import SYNC_SEGMENT_TOKENS
from avgen.models.registry import register_network
from avgen.nn.blocks import run_block
from avgen.nn.mmdit import initialize_mmdit_weights
from avgen.nn.rope import RopeCache, RopeRotation
from avgen.nn import (
    ChannelLastConv1d,
    ConvMLP,
    ConvPositionEmbedding,
    FinalLayer,
    JointBlock,
    StreamBlock,
    StreamInput,
    StreamSpec,
    SwiGLU,
    TimestepEmbedding,
    masked_fill_padding,
    mmaudio_hidden_dim,
    rescaled_positions,
    rope_angles,
    upsample_to_length,
)

__all__ = [
    "FoleyGenExConditions",
    "FoleyGenExNetwork",
    "InputEmbedding",
    "MMAudioJointBlock",
    "SYNC_SEGMENT_TOKENS",
    "StreamBlock",  # re-exported from avgen.nn.mmdit, where it lives
]



@dataclass
class FoleyGenExConditions:
    """Condition tensors computed once per sample and reused at every ODE step.

    clip (B, F, D) and text (B, L, D) are projected token streams; sync (B, T, D) is the projected
    sync stream already upsampled to the latent length T; clip_global / text_global (B, D) are the
    pooled vectors entering the global condition. cond_latent (B, T, C) is FoleyGenEx's masked
    conditional latent (clean context frames, zeros where the model generates), fixed across ODE
    steps; None means "no reference" (all-zero, the paper's FA0) for an injecting network.
    """

    clip: Tensor
    text: Tensor
    sync: Tensor
    clip_global: Tensor
    text_global: Tensor
    cond_latent: Tensor | None = None

    @property
    def latent_length(self) -> int:
        return self.sync.shape[1]


class MMAudioJointBlock(JointBlock):
    """MMAudio's joint block: [latent (conv k3) | clip (conv k3) | text (linear)] in ONE attention.

    The shared :class:`avgen.nn.JointBlock` with MMAudio's three streams; ``pre_only`` makes clip and
    text pre-only (MMAudio's last joint block). The latent stream is modulated by the frame-aligned
    condition and masked as keys at padded frames; clip and text by the global condition, and always
    attended (MMAudio attends its text padding tokens too).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, qk_norm: bool, pre_only: bool,
                 norm_eps: float = 1e-5, qk_norm_eps: float | None = None):
        role = "pre_only" if pre_only else "full"
        streams = [StreamSpec("latent", kernel_size=3), StreamSpec("clip", role, 3), StreamSpec("text", role, 1)]
        super().__init__(dim, num_heads, streams, mlp_ratio=mlp_ratio, qk_norm=qk_norm, norm_eps=norm_eps,
                         qk_norm_eps=qk_norm_eps)

    def forward(self, latent: Tensor, clip: Tensor, text: Tensor, global_c: Tensor, frame_c: Tensor,
                latent_angles: Tensor | RopeRotation, clip_angles: Tensor | RopeRotation,
                latent_mask: Tensor | None = None, c_activated: bool = False):
        """c_activated: global_c and frame_c already are SiLU(c) (computed once per forward)."""
        latent, clip, text = super().forward([
            StreamInput(latent, frame_c, latent_angles, latent_mask, c_activated),
            StreamInput(clip, global_c, clip_angles, c_activated=c_activated),
            StreamInput(text, global_c, c_activated=c_activated),
        ])
        return latent, clip, text


class InputEmbedding(nn.Module):
    """FoleyGenEx's conditional injection (§3.1, Fig. 2), after F5-TTS's InputEmbedding.

    h = Linear(concat(x_t, cond_latent)) (2C -> C); out = h + ConvPositionEmbedding(h).
    The output keeps the latent width C, so MMAudio's audio input projection follows unchanged.
    ``groups`` of the position convolutions defaults to gcd(C, 16) (F5-TTS uses 16 groups; MMAudio's
    20 / 40 latent channels are not multiples of 16). Initialised as the identity on x_t.
    """

    def __init__(self, channels: int, *, kernel_size: int = 31, groups: int | None = None):
        super().__init__()
        groups = math.gcd(channels, 16) if groups is None else groups
        if channels % groups != 0:
            raise ValueError(f"input_embedding_groups={groups} must divide the latent channels {channels}")
        self.proj = nn.Linear(2 * channels, channels)
        self.conv_pos_embed = ConvPositionEmbedding(channels, kernel_size=kernel_size, groups=groups)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """proj = [I | 0] and a zero last position conv: out = x_t at initialisation."""
        channels = self.proj.out_features
        self.proj.weight.zero_()
        self.proj.weight[:, :channels].copy_(torch.eye(channels))
        self.proj.bias.zero_()
        nn.init.zeros_(self.conv_pos_embed.conv2.weight)
        nn.init.zeros_(self.conv_pos_embed.conv2.bias)

    def forward(self, x_t: Tensor, cond_latent: Tensor, mask: Tensor | None = None) -> Tensor:
        """x_t, cond_latent (B, T, C) -> (B, T, C); padded frames are zero."""
        h = masked_fill_padding(self.proj(torch.cat([x_t, cond_latent], dim=-1)), mask)
        return h + self.conv_pos_embed(h, mask)


class FoleyGenExNetwork(nn.Module):
    """MMAudio backbone predicting the flow velocity of audio latents (B, T, C).

    conditional_injection: add FoleyGenEx's InputEmbedding (strategies M-3 and full); False
    (M-1, M-2, MMAudio) leaves MMAudio's parameters, and with MMAudio's weights imported, its function. input_embedding_kernel_size /
    input_embedding_groups: the ConvPositionEmbedding (F5-TTS: 31, 16). norm_eps: eps of every
    non-affine LayerNorm (MMAudio: torch's default 1e-5); qk_norm_eps: eps of the QK RMSNorm (None,
    MMAudio's ``torch.nn.RMSNorm`` default: the fp32 machine epsilon, also under bf16).
    gradient_checkpointing: recompute each joint / single block in backward instead of storing its
    activations (:func:`avgen.nn.blocks.run_block`); same gradients, less memory, ~1/3 more compute.
    """

    # Repeated blocks: activation checkpointing, per-block torch.compile and FSDP wrapping (avgen.nn.blocks).
    block_classes = (MMAudioJointBlock, StreamBlock)

    def __init__(
        self,
        *,
        latent_channels: int,
        semantic_dim: int,
        sync_dim: int,
        text_dim: int,
        text_length: int = 77,
        hidden_dim: int,
        num_heads: int,
        num_joint_blocks: int,
        num_single_blocks: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        timestep_frequency_dim: int = 256,
        final_layer_condition: str = "global",
        conditional_injection: bool = False,
        input_embedding_kernel_size: int = 31,
        input_embedding_groups: int | None = None,
        norm_eps: float = 1e-5,
        qk_norm_eps: float | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        if final_layer_condition not in ("global", "frame_aligned"):
            raise ValueError(f"final_layer_condition must be 'global' or 'frame_aligned', got {final_layer_condition!r}")
        if hidden_dim % num_heads != 0 or (hidden_dim // num_heads) % 2 != 0:
            raise ValueError(f"hidden_dim {hidden_dim} must split into {num_heads} heads of even size (RoPE pairs)")
        if num_joint_blocks < 1:
            raise ValueError("num_joint_blocks must be >= 1: the last joint block is where clip/text enter")
        self.latent_channels = latent_channels
        self.semantic_dim, self.sync_dim, self.text_dim = semantic_dim, sync_dim, text_dim
        self.text_length = text_length
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.final_layer_condition = final_layer_condition
        hidden = mmaudio_hidden_dim(hidden_dim, mlp_ratio)

        # 1. input projections (FoleyGenEx's InputEmbedding first, when injecting)
        self.conditional_injection = conditional_injection
        self.input_embedding = (
            InputEmbedding(latent_channels, kernel_size=input_embedding_kernel_size, groups=input_embedding_groups)
            if conditional_injection
            else None
        )
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(latent_channels, hidden_dim, 7), nn.SELU(), ConvMLP(hidden_dim, hidden, 7)
        )
        self.clip_input_proj = nn.Sequential(nn.Linear(semantic_dim, hidden_dim), ConvMLP(hidden_dim, hidden, 3))
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_SEGMENT_TOKENS, sync_dim))
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(sync_dim, hidden_dim, 7), nn.SELU(), ConvMLP(hidden_dim, hidden, 3)
        )
        self.text_input_proj = nn.Sequential(nn.Linear(text_dim, hidden_dim), SwiGLU(hidden_dim, hidden))

        # 2. conditions
        self.t_embed = TimestepEmbedding(hidden_dim, frequency_dim=timestep_frequency_dim)
        self.clip_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        self.text_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        self.global_cond_mlp = SwiGLU(hidden_dim, hidden)

        # learned null features for absent / dropped conditions
        self.null_clip = nn.Parameter(torch.zeros(1, semantic_dim))
        self.null_sync = nn.Parameter(torch.zeros(1, sync_dim))
        self.null_text = nn.Parameter(torch.zeros(text_length, text_dim))

        # 3-4. transformer
        self.joint_blocks = nn.ModuleList(
            MMAudioJointBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                              pre_only=i == num_joint_blocks - 1, norm_eps=norm_eps, qk_norm_eps=qk_norm_eps)
            for i in range(num_joint_blocks)
        )
        self.single_blocks = nn.ModuleList(
            StreamBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, kernel_size=3, qk_norm=qk_norm,
                        norm_eps=norm_eps, qk_norm_eps=qk_norm_eps)
            for _ in range(num_single_blocks)
        )

        # 5. output
        self.final_layer = FinalLayer(hidden_dim, latent_channels, kernel_size=7, norm_eps=norm_eps)

        self._rope_cache = RopeCache()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier Linears, N(0, 0.02) timestep MLP, zero adaLN and output (DiT/MMAudio init)."""
        initialize_mmdit_weights(self, self.t_embed, self.final_layer,
                                 zeros=(self.sync_pos_emb, self.null_clip, self.null_sync, self.null_text))
        if self.input_embedding is not None:
            self.input_embedding.reset_parameters()

    # ----------------------------------------------------------------------------- conditions
    def preprocess_conditions(
        self,
        semantic_features: Tensor,
        sync_features: Tensor,
        text_features: Tensor,
        *,
        video_present: Tensor,
        text_present: Tensor,
        latent_length: int,
        cond_latent: Tensor | None = None,
        semantic_weights: Tensor | None = None,
        sync_frame_mask: Tensor | None = None,
    ) -> FoleyGenExConditions:
        """Project the condition streams once (reused across ODE steps).

        semantic_features (B, F, Ds) CLIP frames, sync_features (B, Ts, Dy) with Ts a multiple of
        8, text_features (B, text_length, Dt); video_present / text_present (B,) bool select
        the learned null features where False (clip and sync are dropped together, MMAudio).
        FoleyGenEx (§3.1): cond_latent (B, T, C) the masked conditional latent (needs
        ``conditional_injection``); semantic_weights (B, F) in [0, 1] scale the CLIP frames before
        projection (bilinear image of the audio mask); sync_frame_mask (B, T) bool zeroes the
        projected, upsampled sync condition at masked latent frames (0 = all-zero feature, FV0).
        """
        self._check_conditions(semantic_features, sync_features, text_features, video_present, text_present)
        self._check_masks(semantic_features, latent_length, cond_latent, semantic_weights, sync_frame_mask)
        batch = semantic_features.shape[0]
        video = video_present.to(torch.bool).view(batch, 1, 1)
        text_on = text_present.to(torch.bool).view(batch, 1, 1)
        # torch.where (not arithmetic blending) so absent features cannot leak in, even as NaN
        clip_f = torch.where(video, semantic_features, self.null_clip.to(semantic_features.dtype))
        sync_f = torch.where(video, sync_features, self.null_sync.to(sync_features.dtype))
        text_f = torch.where(text_on, text_features, self.null_text.to(text_features.dtype))
        if semantic_weights is not None:  # multimodal dynamic masking of the CLIP frames
            clip_f = clip_f * semantic_weights.unsqueeze(-1).to(clip_f.dtype)

        sync_f = sync_f.unflatten(1, (-1, SYNC_SEGMENT_TOKENS)) + self.sync_pos_emb  # (B, S, 8, Dy)
        sync_f = self.sync_input_proj(sync_f.flatten(1, 2))  # (B, Ts, D)
        sync_f = upsample_to_length(sync_f, latent_length)  # (B, T, D)
        if sync_frame_mask is not None:  # the identical mask, at the latent rate
            sync_f = sync_f * sync_frame_mask.unsqueeze(-1).to(sync_f.dtype)

        clip_f = self.clip_input_proj(clip_f)  # (B, F, D)
        text_f = self.text_input_proj(text_f)  # (B, L, D)
        return FoleyGenExConditions(
            clip=clip_f,
            text=text_f,
            sync=sync_f,
            clip_global=self.clip_cond_proj(clip_f.mean(dim=1)),
            text_global=self.text_cond_proj(text_f.mean(dim=1)),
            cond_latent=cond_latent,
        )

    def _check_masks(self, semantic, latent_length, cond_latent, semantic_weights, sync_frame_mask) -> None:
        batch, frames = semantic.shape[:2]
        if cond_latent is not None:
            if not self.conditional_injection:
                raise ValueError(
                    "a conditional latent was given but the network has no InputEmbedding "
                    "(conditional_injection=False, mask strategies m1/m2); build it with conditional_injection=True"
                )
            if cond_latent.shape != (batch, latent_length, self.latent_channels):
                raise ValueError(
                    f"cond_latent must be (B, T, C) = ({batch}, {latent_length}, {self.latent_channels}), "
                    f"got {tuple(cond_latent.shape)}"
                )
        if semantic_weights is not None and semantic_weights.shape != (batch, frames):
            raise ValueError(f"semantic_weights must be (B, F) = ({batch}, {frames}), got {tuple(semantic_weights.shape)}")
        if sync_frame_mask is not None and sync_frame_mask.shape != (batch, latent_length):
            raise ValueError(
                f"sync_frame_mask must be (B, T) = ({batch}, {latent_length}), got {tuple(sync_frame_mask.shape)}"
            )

    def _check_conditions(self, semantic, sync, text, video_present, text_present) -> None:
        batch = semantic.shape[0]
        expected = {
            "semantic_features": (semantic, self.semantic_dim),
            "sync_features": (sync, self.sync_dim),
            "text_features": (text, self.text_dim),
        }
        for name, (tensor, dim) in expected.items():
            if tensor.dim() != 3 or tensor.shape[0] != batch or tensor.shape[-1] != dim:
                raise ValueError(
                    f"{name} must be (B={batch}, length, {dim}), got {tuple(tensor.shape)}; "
                    f"check the encoder's output_dim against the network config"
                )
        if sync.shape[1] % SYNC_SEGMENT_TOKENS != 0:
            raise ValueError(
                f"sync_features length {sync.shape[1]} is not a multiple of {SYNC_SEGMENT_TOKENS} "
                f"(Synchformer emits {SYNC_SEGMENT_TOKENS} tokens per segment); pass whole segments"
            )
        if text.shape[1] != self.text_length:
            raise ValueError(
                f"text_features has {text.shape[1]} tokens, the network expects text_length="
                f"{self.text_length}; pad/truncate the text encoder output (context_length) to match"
            )
        for name, flag in (("video_present", video_present), ("text_present", text_present)):
            if flag.shape != (batch,):
                raise ValueError(f"{name} must be a (B={batch},) bool tensor, got shape {tuple(flag.shape)}")

    # ----------------------------------------------------------------------------- positions
    def _angles(self, length: int, target_length: int, device: torch.device) -> RopeRotation:
        """RoPE rotation (cos / sin of (length, Dh/2) angles) for positions i * target_length / length, cached."""
        return self._rope_cache.get(
            ("rescaled", length, target_length, self.head_dim),
            lambda: rope_angles(rescaled_positions(length, target_length, device=device), self.head_dim),
            device,
        )

    # ----------------------------------------------------------------------------- velocity
    def embed_latent(self, x_t: Tensor, latent_mask: Tensor | None = None, cond_latent: Tensor | None = None) -> Tensor:
        """x_t (B, T, C) -> (B, T, D): [InputEmbedding(x_t, cond_latent) ->] MMAudio's audio projection.

        With conditional injection and no cond_latent the conditional latent is all-zero (FA0).
        """
        if self.input_embedding is not None:
            if cond_latent is None:
                cond_latent = torch.zeros_like(x_t)
            x_t = self.input_embedding(x_t, cond_latent.to(x_t.dtype), latent_mask)
        conv, act, mlp = self.audio_input_proj
        return mlp(act(conv(x_t, latent_mask)), latent_mask)

    def predict_velocity(
        self, x_t: Tensor, t: Tensor, conditions: FoleyGenExConditions, latent_mask: Tensor | None = None
    ) -> Tensor:
        """x_t (B, T, C), t (B,) in [0, 1] -> velocity (B, T, C); zero at padded frames."""
        batch, length, channels = x_t.shape
        if channels != self.latent_channels:
            raise ValueError(f"x_t has {channels} channels, the network expects {self.latent_channels}")
        if conditions.latent_length != length:
            raise ValueError(
                f"conditions were preprocessed for latent_length={conditions.latent_length} but x_t has "
                f"{length} frames; call preprocess_conditions with latent_length={length}"
            )
        if t.shape != (batch,):
            raise ValueError(f"t must be (B={batch},), got {tuple(t.shape)}")
        if latent_mask is not None and latent_mask.shape != (batch, length):
            raise ValueError(f"latent_mask must be (B, T) = ({batch}, {length}), got {tuple(latent_mask.shape)}")

        latent = self.embed_latent(x_t, latent_mask, conditions.cond_latent)
        clip, text = conditions.clip, conditions.text
        global_c = self.t_embed(t) + self.global_cond_mlp(conditions.clip_global + conditions.text_global)  # (B, D)
        global_c = global_c.unsqueeze(1)  # (B, 1, D)
        frame_c = global_c + conditions.sync  # (B, T, D): frame-aligned adaLN condition

        latent_angles = self._angles(length, length, x_t.device)
        clip_angles = self._angles(clip.shape[1], length, x_t.device)  # CLIP frames on the latent timeline
        # SiLU of the adaLN conditions once per forward, not once per block (it does not depend on x_t)
        global_act, frame_act = F.silu(global_c), F.silu(frame_c)
        ckpt = self.gradient_checkpointing and self.training

        for block in self.joint_blocks:
            latent, clip, text = run_block(block, latent, clip, text, global_act, frame_act, latent_angles,
                                           clip_angles, latent_mask, True, checkpointing=ckpt)
        for block in self.single_blocks:
            latent = run_block(block, latent, frame_act, latent_angles, latent_mask, True, checkpointing=ckpt)

        final_act = global_act if self.final_layer_condition == "global" else frame_act
        velocity = self.final_layer(latent, final_act, latent_mask, c_activated=True)
        return masked_fill_padding(velocity, latent_mask)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        semantic_features: Tensor,
        sync_features: Tensor,
        text_features: Tensor,
        video_present: Tensor,
        text_present: Tensor,
        latent_mask: Tensor | None = None,
        *,
        cond_latent: Tensor | None = None,
        semantic_weights: Tensor | None = None,
        sync_frame_mask: Tensor | None = None,
    ) -> Tensor:
        """Training path: preprocess_conditions + predict_velocity in one call."""
        conditions = self.preprocess_conditions(
            semantic_features,
            sync_features,
            text_features,
            video_present=video_present,
            text_present=text_present,
            latent_length=x_t.shape[1],
            cond_latent=cond_latent,
            semantic_weights=semantic_weights,
            sync_frame_mask=sync_frame_mask,
        )
        return self.predict_velocity(x_t, t, conditions, latent_mask)


# ---------------------------------------------------------------------------------- size presets
# MMAudio's four released networks (mmaudio/model/networks.py; reference/mmaudio_av_benchmark.md):
# CLIP DFN5B 1024-d frames and 77 text tokens, Synchformer 768-d, head dim 64, MLP ratio 4.
_MMAUDIO_INPUTS = dict(semantic_dim=1024, sync_dim=768, text_dim=1024, text_length=77, mlp_ratio=4.0)
register_network("mmaudio-s-16k", FoleyGenExNetwork, latent_channels=20, hidden_dim=448, num_heads=7,
                 num_joint_blocks=4, num_single_blocks=8, description="MMAudio small_16k (157M)", **_MMAUDIO_INPUTS)
register_network("mmaudio-s-44k", FoleyGenExNetwork, latent_channels=40, hidden_dim=448, num_heads=7,
                 num_joint_blocks=4, num_single_blocks=8, description="MMAudio small_44k (157M)", **_MMAUDIO_INPUTS)
register_network("mmaudio-m-44k", FoleyGenExNetwork, latent_channels=40, hidden_dim=896, num_heads=14,
                 num_joint_blocks=4, num_single_blocks=8, description="MMAudio medium_44k (621M)", **_MMAUDIO_INPUTS)
register_network("mmaudio-l-44k", FoleyGenExNetwork, latent_channels=40, hidden_dim=896, num_heads=14,
                 num_joint_blocks=7, num_single_blocks=14,
                 description="MMAudio large_44k = MMAudio-L-44.1kHz, FoleyGenEx's paper size (1.03B)", **_MMAUDIO_INPUTS)
