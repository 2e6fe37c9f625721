"""Harmony's twin-branch network: Wan2.2 video DiT + audio MM-DiT + GLDI in every layer pair (spec §1.4).

Harmony (arXiv 2511.21579; Supp §2) pairs the Wan2.2-TI2V-5B video DiT
(:class:`~avgen.models.harmony.video_network.WanVideoNetwork`, loadable from the public weights
through :mod:`~avgen.models.harmony.wan_checkpoint` on ``network.video``) with a symmetric audio
branch (:class:`~avgen.models.harmony.audio_network.HarmonyAudioNetwork`, Main Eq. 2) and a
Global-Local Decoupled Interaction module "at each layer" (:mod:`~avgen.models.harmony.gldi`,
Main Eq. 5-7). Block order of layer pair l (spec "Block order [D]", Ovi's fusion block):

1. audio self-attention over [R | A | S | P] and video self-attention, each adaLN-gated;
2. both cross-modal reads use the other modality's state *after* its self-attention (Ovi passes
   ``og_audio`` to the video cross-attention);
3. video: text cross-attention (ungated), then A2V (residual, Main Eq. 5-6); audio: V2A on the
   target tokens and global style on the reference tokens (Main Eq. 7), both from the audio's
   post-self-attention state;
4. the gated FFNs.

Flow time (spec "Flow-time convention"): ``forward`` takes avgen times t (data at t = 1) per sample
for each modality, feeds both branches Wan timesteps 1000 * (1 - t) and returns avgen velocities
(the negated Wan outputs) for both. Reference tokens always run clean (t = 1) and the TI2V first
frame is clean when ``conditions.image_latent`` is given (``ti2v_inputs``), inside the network.

``video_x=None`` runs the audio branch alone (no GLDI): stages 1-2 (Supp §2), also on a network
that has a video branch; ``with_video=False`` builds no video branch and no GLDI at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from avgen.models.harmony.audio_network import AudioTokens, DualStreamWanBlock, HarmonyAudioNetwork, resolve_rope_dim
from avgen.models.harmony.gldi import GLDI_MODES, ROPE_ALIGN_MODES, GLDIGeometry, GLDILayer, gldi_geometry
from avgen.models.harmony.video_network import (
    WanBlock,
    WanTokens,
    WanVideoConditions,
    WanVideoNetwork,
    ti2v_inputs,
    to_mixed_precision,
    wan_timestep,
)
from avgen.models.registry import register_network
from avgen.nn import rope_rotation

__all__ = ["HarmonyConditions", "HarmonyNetwork"]


@dataclass
class HarmonyConditions:
    """Computed once per sample by :meth:`HarmonyNetwork.preprocess_conditions` and reused at every ODE step."""

    audio_prompt: Tensor  # (B, L_p, D_audio) embedded audio caption tokens (P segment)
    audio_prompt_mask: Tensor | None  # (B, L_p) bool, True = valid
    speech: Tensor | None  # (B, T_a, D_audio) embedded transcript, F5-style filler-padded to T_a (S)
    speech_mask: Tensor | None  # (B, T_a) bool
    reference_latent: Tensor | None  # (B, L_r, C_a) clean reference-audio latent (R segment), None = no reference
    reference_mask: Tensor | None  # (B, L_r) bool
    video_context: Tensor | None  # (B, text_len, D_video) embedded video prompt; None without a video branch
    image_latent: Tensor | None  # (B, 1, C_v, h, w) clean first-frame latent (TI2V), or None


class HarmonyNetwork(nn.Module):
    """Video branch (Wan2.2 DiT) + audio branch (MM-DiT) + GLDI per layer pair. Flat kwargs (configs set them).

    Video kwargs (``video_*``) are :class:`WanVideoNetwork`'s; audio kwargs (``audio_*``, ``speech_*``)
    are :class:`HarmonyAudioNetwork`'s (``audio_mmdit`` "single" | "dual"). GLDI: ``gldi`` "on" | "off" (Ovi-style global baseline),
    ``rope_align`` "aligned" | "raw" | "none", ``window`` w, ``gldi_rope_dim`` ("t_band" = 44 of 128
    channels, "full", or an int). ``gradient_checkpointing`` recomputes each layer pair in the
    backward pass (``torch.utils.checkpoint``, non-reentrant) while training.
    Defaults are the tiny ToyWorld sizes (preset ``harmony-tiny``).
    """

    # FSDP units / checkpointed regions (avgen.nn.blocks): the outermost ones, so a two-stream audio block is one
    # unit and its inner Wan blocks are not wrapped again.
    block_classes = (WanBlock, DualStreamWanBlock, GLDILayer)

    def __init__(
        self,
        *,
        with_video: bool = True,
        # video branch (WanVideoNetwork)
        video_latent_channels: int = 12,
        video_dim: int = 64,
        video_ffn_dim: int = 128,
        video_num_heads: int = 4,
        video_num_layers: int = 2,
        video_text_dim: int = 32,
        video_text_len: int = 16,
        video_freq_dim: int = 256,
        video_patch_size: tuple[int, int, int] = (1, 2, 2),
        # audio branch (HarmonyAudioNetwork)
        audio_latent_channels: int = 8,
        audio_dim: int = 64,
        audio_ffn_dim: int = 128,
        audio_num_heads: int = 4,
        audio_num_layers: int = 2,
        audio_prompt_dim: int = 32,
        audio_freq_dim: int = 256,
        audio_input_projection: str = "conv",
        audio_rope_dim: int | str = "t_band",
        audio_mmdit: str = "single",
        speech_vocab_size: int = 64,
        speech_dim: int = 32,
        speech_max_positions: int = 8192,
        speech_num_blocks: int = 4,
        # interaction
        gldi: str | bool = "on",
        rope_align: str = "aligned",
        window: int = 1,
        gldi_rope_dim: int | str = "t_band",
        # shared
        eps: float = 1e-6,
        rope_theta: float = 10000.0,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if isinstance(gldi, bool):  # YAML 1.1 reads an unquoted on / off as a boolean
            gldi = "on" if gldi else "off"
        if gldi not in GLDI_MODES:
            raise ValueError(f"gldi must be one of {GLDI_MODES}, got {gldi!r}")
        if rope_align not in ROPE_ALIGN_MODES:
            raise ValueError(f"rope_align must be one of {ROPE_ALIGN_MODES}, got {rope_align!r}")
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.audio = HarmonyAudioNetwork(
            latent_channels=audio_latent_channels, dim=audio_dim, ffn_dim=audio_ffn_dim, num_heads=audio_num_heads,
            num_layers=audio_num_layers, prompt_dim=audio_prompt_dim, speech_vocab_size=speech_vocab_size,
            speech_dim=speech_dim, speech_max_positions=speech_max_positions, speech_num_blocks=speech_num_blocks,
            freq_dim=audio_freq_dim, input_projection=audio_input_projection, rope_dim=audio_rope_dim,
            rope_theta=rope_theta, mmdit=audio_mmdit, eps=eps,
        )
        self.video: WanVideoNetwork | None = None
        self.gldi: nn.ModuleList | None = None
        if with_video:
            if video_num_layers != audio_num_layers:
                raise ValueError(
                    f"GLDI pairs the branches layer by layer: video_num_layers ({video_num_layers}) must equal "
                    f"audio_num_layers ({audio_num_layers})"
                )
            self.video = WanVideoNetwork(
                latent_channels=video_latent_channels, dim=video_dim, ffn_dim=video_ffn_dim,
                num_heads=video_num_heads, num_layers=video_num_layers, text_dim=video_text_dim,
                text_len=video_text_len, freq_dim=video_freq_dim, patch_size=tuple(video_patch_size), eps=eps,
                rope_theta=rope_theta,
            )
            self.gldi = nn.ModuleList(
                GLDILayer(video_dim, audio_dim, video_num_heads, audio_num_heads, mode=gldi, eps=eps)
                for _ in range(video_num_layers)
            )
        self.gldi_mode = gldi
        self.rope_align = rope_align
        self.window = int(window)
        self.rope_theta = rope_theta
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.audio_rope_dim_gldi = resolve_rope_dim(gldi_rope_dim, audio_dim // audio_num_heads)
        self.video_rope_dim_gldi = resolve_rope_dim(gldi_rope_dim, video_dim // video_num_heads) if with_video else None
        # attributes the module reads
        self.has_video = bool(with_video)
        self.audio_latent_channels = audio_latent_channels
        self.video_latent_channels = video_latent_channels if with_video else None
        self.audio_prompt_dim = audio_prompt_dim
        self.video_text_dim = video_text_dim if with_video else None
        self.speech_vocab_size = speech_vocab_size
        self.audio_dim = audio_dim
        self.video_dim = video_dim if with_video else None

    # ------------------------------------------------------------------ conditions
    def preprocess_conditions(
        self,
        *,
        audio_prompt_features: Tensor,
        audio_prompt_mask: Tensor | None = None,
        transcript_ids: Tensor | None = None,
        audio_length: int,
        reference_latent: Tensor | None = None,
        reference_mask: Tensor | None = None,
        video_text_features: Tensor | None = None,
        video_text_mask: Tensor | None = None,
        image_latent: Tensor | None = None,
    ) -> HarmonyConditions:
        """Embed the conditions once per sample: caption (Wan text embedding), transcript (F5 TextEmbedding,
        filler-padded to ``audio_length`` = T_a, then Linear), video prompt (Wan's, zero-padded to text_len).

        transcript_ids (B, K) long, ``avgen.conditioning.lyrics.PAD_ID`` (-1) padded; ids are shifted by +1
        inside so that 0 is F5's filler. reference_latent (B, L_r, C_a) clean (1-3 s, Supp §10).
        """
        prompt = self.audio.embed_prompt(audio_prompt_features, audio_prompt_mask)
        speech = speech_mask = None
        if transcript_ids is not None:
            speech, speech_mask = self.audio.embed_speech(transcript_ids, int(audio_length))
        if reference_latent is not None and (reference_latent.dim() != 3 or reference_latent.shape[-1] != self.audio_latent_channels):
            raise ValueError(
                f"reference_latent must be (B, L_r, {self.audio_latent_channels}), got {tuple(reference_latent.shape)}"
            )
        video_context = None
        if video_text_features is not None:
            if self.video is None:
                raise ValueError("video_text_features given but this Harmony network has no video branch (with_video=False)")
            video_context = self.video.preprocess_conditions(video_text_features, video_text_mask).context
        if image_latent is not None and image_latent.dim() == 4:
            image_latent = image_latent.unsqueeze(1)
        return HarmonyConditions(
            audio_prompt=prompt,
            audio_prompt_mask=audio_prompt_mask,
            speech=speech,
            speech_mask=speech_mask,
            reference_latent=reference_latent,
            reference_mask=reference_mask if reference_latent is not None else None,
            video_context=video_context,
            image_latent=image_latent,
        )

    # ------------------------------------------------------------------ forward
    def _embed_audio(self, audio_x: Tensor, audio_t: Tensor, conditions: HarmonyConditions, audio_mask) -> AudioTokens:
        if audio_t.dim() != 1:
            raise ValueError(f"audio_t must be (B,) per-sample avgen times, got {tuple(audio_t.shape)}")
        return self.audio.embed(
            audio_x,
            wan_timestep(audio_t).to(audio_x.device),
            prompt=conditions.audio_prompt,
            prompt_mask=conditions.audio_prompt_mask,
            speech=conditions.speech,
            speech_mask=conditions.speech_mask,
            reference=conditions.reference_latent,
            reference_mask=conditions.reference_mask,
            target_mask=audio_mask,
        )

    def _embed_video(self, video_x: Tensor, video_t: Tensor, conditions: HarmonyConditions, frame_lengths) -> WanTokens:
        if video_t is None or video_t.dim() != 1:
            raise ValueError("video_t must be given as (B,) per-sample avgen times when video_x is")
        if conditions.video_context is None:
            raise ValueError("the conditions carry no video prompt: pass video_text_features to preprocess_conditions")
        t = video_t.to(video_x.device)
        if conditions.image_latent is not None:  # Wan2.2 TI2V: clean first frame, its tokens at t = 1
            video_x, t = ti2v_inputs(video_x, t, conditions.image_latent, per_frame=True)  # time MLPs per frame
        return self.video.embed(video_x, wan_timestep(t), WanVideoConditions(conditions.video_context), frame_lengths=frame_lengths)

    def _geometry(self, video: WanTokens, audio: AudioTokens) -> GLDIGeometry:
        batch = audio.x.shape[0]
        frames = video.token_frames
        if frames is None:
            frames = torch.full((batch,), video.grid[0], device=audio.x.device)
        return gldi_geometry(
            mode=self.gldi_mode,
            rope_align=self.rope_align,
            window=self.window,
            grid=video.grid,
            video_frames=frames,
            video_mask=video.mask,
            audio_lengths=audio.target_lengths,
            audio_mask=audio.target_mask,
            num_audio=audio.lengths[1],
            reference_mask=audio.reference_mask,
            num_reference=audio.lengths[0],
            video_head_dim=self.video.head_dim,
            audio_head_dim=self.audio.head_dim,
            video_rope_dim=self.video_rope_dim_gldi,
            audio_rope_dim=self.audio_rope_dim_gldi,
            rope_theta=self.rope_theta,
        )

    def layer_pair(
        self, index: int, a: Tensor, v: Tensor, audio: AudioTokens, video: WanTokens, geometry: GLDIGeometry
    ) -> tuple[Tensor, Tensor]:
        """Layer pair ``index`` (spec "Block order [D]"): self-attentions, cross-modal reads, FFNs."""
        video_block, gldi = self.video.blocks[index], self.gldi[index]
        # every call goes through a module's forward (``part=`` / ``direction=``): FSDP units and
        # checkpoint wrappers hook forward, never other methods
        # 1. self-attentions
        a = self.audio.block_part(index, "self_attention", a, audio)
        v = video_block(v, video.e0, None, video.angles, video.mask, part="self_attention")
        a_read, v_read = a, v  # 2. what the other modality reads
        num_ref, num_target = audio.lengths[:2]
        audio_latents = a_read[:, : num_ref + num_target]  # [R | A]
        target = a_read[:, num_ref : num_ref + num_target]
        # 3. video: text cross-attention, then A2V (Eq. 5-6)
        v = video_block(v, None, video.context, part="cross_attention")
        v = v + gldi(v, target if geometry.mode == "on" else audio_latents, geometry, direction="a2v")
        # 3. audio: V2A on the target tokens, global style on the reference tokens (Eq. 7)
        if geometry.mode == "on":
            # the global path runs even without reference tokens (an empty update): every rank then calls
            # the GLDI unit equally often, as sharded training needs (one all-gather per call, FSDP)
            reference = a_read[:, :num_ref]
            parts = [reference + gldi(reference, v_read, geometry, direction="global"),
                     target + gldi(target, v_read, geometry, direction="v2a")]
        else:  # Ovi-style baseline: every audio latent token [R | A] reads every video token
            parts = [audio_latents + gldi(audio_latents, v_read, geometry, direction="v2a")]
        a = torch.cat([*parts, a_read[:, num_ref + num_target :]], dim=1)
        # 4. FFNs
        a = self.audio.block_part(index, "ffn", a, audio)
        v = video_block(v, video.e0, part="ffn")
        return a, v

    def _checkpointing(self) -> bool:
        return self.gradient_checkpointing and self.training and torch.is_grad_enabled()

    def forward(
        self,
        audio_x: Tensor,
        audio_t: Tensor,
        conditions: HarmonyConditions,
        *,
        video_x: Tensor | None = None,
        video_t: Tensor | None = None,
        audio_mask: Tensor | None = None,
        video_frame_lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """avgen velocities (audio (B, T_a, C_a), video (B, T_v, C_v, h, w) or None) at avgen times t.

        audio_x (B, T_a, C_a) and video_x (B, T_v, C_v, h, w) noisy latents; audio_t / video_t (B,)
        per-sample times (a clean driving modality is passed at t = 1); audio_mask (B, T_a) bool valid
        target latents; video_frame_lengths (B,) valid latent frames. ``video_x=None`` runs audio only.
        """
        audio = self._embed_audio(audio_x, audio_t, conditions, audio_mask)
        audio = replace(audio, angles=rope_rotation(audio.angles))  # cos / sin once per forward, not per attention
        use_checkpoint = self._checkpointing()
        if video_x is None:
            run = (lambda f, *args: checkpoint(f, *args, use_reentrant=False)) if use_checkpoint else None
            tokens = self.audio.run_blocks(audio, run)
            return -self.audio.final_layer(tokens, audio), None
        if self.video is None:
            raise ValueError("video_x given but this Harmony network has no video branch (with_video=False)")
        video = self._embed_video(video_x, video_t, conditions, video_frame_lengths)
        geometry = _rotated(self._geometry(video, audio))
        video = replace(video, angles=rope_rotation(video.angles))
        a, v = audio.x, video.tokens
        for index in range(len(self.gldi)):
            if use_checkpoint:
                a, v = checkpoint(self.layer_pair, index, a, v, audio, video, geometry, use_reentrant=False)
            else:
                a, v = self.layer_pair(index, a, v, audio, video, geometry)
        audio_velocity = -self.audio.final_layer(a, audio)
        video_velocity = -self.video.final_layer(v, video.e, video.grid)
        return audio_velocity, video_velocity

    def predict_velocity(
        self, x_t: Tensor, t: Tensor, conditions: HarmonyConditions, latent_mask: Tensor | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor | None]:
        """The :class:`~avgen.models.FlowNetwork` entry point: ``forward`` with x_t the audio latent."""
        return self.forward(x_t, t, conditions, audio_mask=latent_mask, **kwargs)

    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> "HarmonyNetwork":
        """Cast to ``dtype`` except the time embeddings, modulation tables and norms of both branches (Wan)."""
        return to_mixed_precision(self, dtype)


def _rotated(geometry: GLDIGeometry) -> GLDIGeometry:
    """The geometry with its RoPE angles as :class:`~avgen.nn.RopeRotation` (cos / sin computed here, once per
    forward, instead of in each of the layers' attentions; the same numbers: DEVELOPERS.md "Speed hooks")."""
    fields = ("a2v_query_angles", "a2v_key_angles", "v2a_query_angles", "v2a_key_angles")
    return replace(geometry, **{f: rope_rotation(getattr(geometry, f)) for f in fields if getattr(geometry, f) is not None})


# ---------------------------------------------------------------------------------- size presets
HARMONY_PAPER_KWARGS: dict[str, Any] = dict(
    video_latent_channels=48, video_dim=3072, video_ffn_dim=14336, video_num_heads=24, video_num_layers=30,
    video_text_dim=4096, video_text_len=512, video_freq_dim=256, video_patch_size=(1, 2, 2),
    audio_latent_channels=20, audio_dim=3072, audio_ffn_dim=14336, audio_num_heads=24, audio_num_layers=30,
    audio_prompt_dim=4096, audio_freq_dim=256, audio_input_projection="conv", audio_rope_dim="t_band",
    audio_mmdit="single", speech_vocab_size=2545, speech_dim=512, speech_max_positions=8192, speech_num_blocks=4,
    gldi="on", rope_align="aligned", window=1, gldi_rope_dim="t_band", eps=1e-6,
)
HARMONY_TINY_KWARGS: dict[str, Any] = dict(
    video_latent_channels=12, video_dim=64, video_ffn_dim=128, video_num_heads=4, video_num_layers=2,
    video_text_dim=32, video_text_len=16, video_freq_dim=64, video_patch_size=(1, 2, 2),
    audio_latent_channels=8, audio_dim=64, audio_ffn_dim=128, audio_num_heads=4, audio_num_layers=2,
    audio_prompt_dim=32, audio_freq_dim=64, audio_input_projection="conv", audio_rope_dim="t_band",
    speech_vocab_size=64, speech_dim=32, speech_max_positions=1024, speech_num_blocks=1,
    gldi="on", rope_align="aligned", window=1, gldi_rope_dim="t_band",
)
register_network(
    "harmony", HarmonyNetwork, **HARMONY_PAPER_KWARGS,
    description="Harmony (spec §3): Wan2.2-TI2V-5B video + audio MM-DiT + GLDI per layer pair, about 12.8B",
)
register_network(
    "harmony-audio", HarmonyNetwork, **{**HARMONY_PAPER_KWARGS, "with_video": False},
    description="Harmony's audio branch alone at paper size (stages 1-2, Supp §2), about 4.4B",
)
register_network(
    "harmony-tiny", HarmonyNetwork, **HARMONY_TINY_KWARGS,
    description="tiny Harmony for ToyWorld on a CPU (dim 64, 2 layer pairs)",
)
register_network(
    "harmony-audio-tiny", HarmonyNetwork, **{**HARMONY_TINY_KWARGS, "with_video": False},
    description="tiny Harmony audio branch alone (stages 1-2 on ToyWorld)",
)
