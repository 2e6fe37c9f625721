"""AudioGen-Omni flow-prediction network (arXiv 2508.00733 §3, §3.2-3.4, Fig. 1).

Reads top-down like the method section:

1. Token groups (Fig. 1), each with its own input projection (MMAudio's, spec §1.4.1):
   * A, the audio latent (queries and keys; Conv1d k7 -> SELU -> ConvMLP k7);
   * V, the semantic video stream, MetaCLIP frames at 8 fps (Linear -> ConvMLP k3);
   * T, the lyrics / transcript stream: the LT-encoder (:class:`~avgen.conditioning.lyrics.TextEmbedding`,
     §3.2, trainable) gives one 768-d vector per latent frame, then Linear -> SwiGLU;
   * C, the Flan-T5 caption tokens (Linear -> SwiGLU): keys and values only, never queried or updated
     ("concatenated with Flan-T5 embeddings along the temporal dimension as part of the attention key",
     §3.4.1), so in every joint block C is a pre-only stream (adaLN(shift, scale) -> QKV).
2. Conditions (§3.3, §3.4.1). Global: c_g = TimestepEmbedding(t) + MLP(concat[e_start, e_dur, C_p,
   V_p, T_p]) with learnable per-second start / duration embeddings and average-pooled caption,
   video (CLIP + Synchformer, Fig. 1b legend) and lyric features; MLP = Linear(5D -> D) -> SwiGLU
   (``pooled_fusion="concat"``) or MMAudio's sum -> SwiGLU (``"sum"``). Frame-aligned: c_f = c_g +
   the projected Synchformer features upsampled (nearest) to the latent frames. A is modulated by
   c_f, V, T and C by c_g (MMAudio).
3. Joint MMDiT blocks over [A | V | T | C] (one attention over the concatenated sequence, the output
   split back per stream, §3.4); V and T are pre-only in the last joint block (MMAudio).
4. Single-stream audio blocks (FLUX-style, §3) over A, modulated by c_f.
5. Final layer: adaLN(shift, scale) -> Conv1d k7, conditioned on c_g; zero-initialised.

PAAPI (§3.4): RoPE only on the temporally structured streams, phase-aligned on the audio timeline:
A at frame i, T token i at frame i (it is padded to the frame budget), CLIP frame i at
``i * latent_rate / semantic_rate`` (by *rate*, not by length, so clips of different durations in one
batch stay aligned), C not rotated. ``paapi=False`` rotates nothing (the isotropic ablation);
``paapi_text=False`` leaves T unrotated.

Variable length (§3.3): latent_mask (B, N) marks the valid frames; padded A / T frames and padded CLIP
frames are masked as keys, convolutions see zeros there, pooled features average over valid entries
only and the Synchformer features of each clip are upsampled onto that clip's own frames, so a sample
gives the same output in a padded batch as alone. Absent conditions are replaced by learned nulls
(one CLIP and one sync vector repeated, a (L, 768) caption, all-filler lyrics = F5-TTS's drop_text).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgen.conditioning.lyrics import PAD_ID, TextEmbedding
from avgen.conditioning.sync import SYNC_SEGMENT_TOKENS
from avgen.models.registry import register_network
from avgen.nn.blocks import run_block
from avgen.nn.mmdit import initialize_mmdit_weights
from avgen.nn.rope import rope_rotation
from avgen.nn import (
    ChannelLastConv1d,
    ConvMLP,
    FinalLayer,
    JointBlock,
    PerSecondEmbedding,
    StreamBlock,
    StreamInput,
    StreamSpec,
    SwiGLU,
    TimestepEmbedding,
    masked_fill_padding,
    masked_mean,
    mmaudio_hidden_dim,
    positions_at_rate,
    rope_angles,
)

__all__ = ["AudioGenOmniConditions", "AudioGenOmniNetwork", "masked_mean", "upsample_per_sample"]

POOLED_FUSIONS = ("concat", "sum")


def upsample_per_sample(x: Tensor, lengths: Tensor, target_lengths: Tensor, target_length: int) -> Tensor:
    """Nearest-exact resampling of each sample's valid part onto its own valid target frames.

    x (B, L, D) with ``lengths`` (B,) valid entries -> (B, target_length, D): frame n < target_lengths[b]
    takes entry floor((n + 0.5) * lengths[b] / target_lengths[b]) (torch's nearest-exact, which MMAudio
    uses for an unpadded clip); frames past a target length are zero.
    """
    n = torch.arange(target_length, device=x.device, dtype=torch.float64)[None, :]
    ratio = lengths.to(torch.float64)[:, None] / target_lengths.to(torch.float64).clamp_min(1)[:, None]
    index = torch.floor((n + 0.5) * ratio).long()
    index = torch.minimum(index, (lengths[:, None] - 1).clamp_min(0)).clamp_min(0)
    out = torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    valid = n < target_lengths[:, None].to(n.dtype)
    return masked_fill_padding(out, valid)


@dataclass
class AudioGenOmniConditions:
    """Condition tensors computed once per sample and reused at every ODE step.

    clip (B, F, D) / clip_mask (B, F); lyrics (B, N, D) with lyrics_mask (B, N) (text tokens, not
    filler); caption (B, L, D) with caption_key_mask (B, L) or None (all attended); sync (B, N, D) the
    frame-aligned sync features; pooled (B, D) = MLP(concat[timing, pooled features]) (the part of c_g
    that does not depend on t).
    """

    clip: Tensor
    clip_mask: Tensor
    lyrics: Tensor
    lyrics_mask: Tensor
    caption: Tensor
    caption_key_mask: Tensor | None
    sync: Tensor
    pooled: Tensor

    def __post_init__(self) -> None:
        # The CLIP key mask attention takes: None when every frame is valid (the usual case: the unmasked
        # path). Decided here, once per sample, not per step: a data-dependent branch inside
        # predict_velocity would break the compiled sampling step's graph.
        valid = self.clip_mask.device.type != "meta" and bool(self.clip_mask.all())
        self.clip_keys = None if valid else self.clip_mask

    @property
    def latent_length(self) -> int:
        return self.sync.shape[1]


class AudioGenOmniNetwork(nn.Module):
    """The AudioGen-Omni MMDiT predicting the flow velocity of audio latents (B, N, C).

    Args:
        latent_channels: codec latent channels (MMAudio 44k mel-VAE: 40).
        semantic_dim, sync_dim, caption_dim: encoder widths (MetaCLIP bigG 1280, Synchformer 768,
            Flan-T5-base 768).
        caption_length: caption tokens (77).
        lyrics_vocab_size, lyrics_dim, lyrics_max_positions, lyrics_blocks: the LT-encoder (VoiceBPE
            6681, 768, 4000, 4 ConvNeXt-V2 blocks).
        hidden_dim, num_heads, num_joint_blocks, num_single_blocks, mlp_ratio: size (paper, spec §3:
            1024, 16, 8, 16, 4 -> 1.55B).
        latent_rate, semantic_rate: frames per second of the latent and CLIP streams (PAAPI positions).
        paapi: RoPE on A, V and T (True) or on nothing (the isotropic ablation).
        paapi_text: rotate T as well (default True; only with ``paapi``).
        mask_caption_padding: mask caption pad tokens as keys (MMAudio attends them: False).
        mask_lyrics_filler: mask the filler frames of T as keys (default: only frames beyond the clip).
        pooled_fusion: ``"concat"`` (Linear(5D -> D) -> SwiGLU, §3.3) or ``"sum"`` (MMAudio).
        max_seconds: largest whole second of the start / duration embeddings (clamped above).
        gradient_checkpointing: recompute each joint / single block in backward instead of storing
            its activations (:func:`avgen.nn.blocks.run_block`; needed at the paper's 1.55B size).
    """

    # Repeated blocks: activation checkpointing, per-block torch.compile and FSDP wrapping (avgen.nn.blocks).
    block_classes = (JointBlock, StreamBlock)

    def __init__(
        self,
        *,
        latent_channels: int,
        semantic_dim: int,
        sync_dim: int,
        caption_dim: int,
        caption_length: int = 77,
        lyrics_vocab_size: int = 6681,
        lyrics_dim: int = 768,
        lyrics_max_positions: int = 4000,
        lyrics_blocks: int = 4,
        hidden_dim: int = 1024,
        num_heads: int = 16,
        num_joint_blocks: int = 8,
        num_single_blocks: int = 16,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        latent_rate: float = 44100 / 1024,
        semantic_rate: float = 8.0,
        paapi: bool = True,
        paapi_text: bool = True,
        mask_caption_padding: bool = False,
        mask_lyrics_filler: bool = False,
        pooled_fusion: str = "concat",
        max_seconds: int = 30,
        timestep_frequency_dim: int = 256,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        if hidden_dim % num_heads != 0 or (hidden_dim // num_heads) % 2 != 0:
            raise ValueError(f"hidden_dim {hidden_dim} must split into {num_heads} heads of even size (RoPE pairs)")
        if num_joint_blocks < 1:
            raise ValueError("num_joint_blocks must be >= 1: the joint blocks are where the conditions enter")
        if pooled_fusion not in POOLED_FUSIONS:
            raise ValueError(f"pooled_fusion must be one of {POOLED_FUSIONS}, got {pooled_fusion!r}")
        self.latent_channels = latent_channels
        self.semantic_dim, self.sync_dim, self.caption_dim = semantic_dim, sync_dim, caption_dim
        self.caption_length, self.lyrics_dim = caption_length, lyrics_dim
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.head_dim = hidden_dim // num_heads
        self.latent_rate, self.semantic_rate = float(latent_rate), float(semantic_rate)
        self.paapi, self.paapi_text = bool(paapi), bool(paapi_text)
        self.mask_caption_padding, self.mask_lyrics_filler = bool(mask_caption_padding), bool(mask_lyrics_filler)
        self.pooled_fusion = pooled_fusion
        hidden = mmaudio_hidden_dim(hidden_dim, mlp_ratio)

        # 1. token groups and their projections
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(latent_channels, hidden_dim, 7), nn.SELU(), ConvMLP(hidden_dim, hidden, 7)
        )
        self.clip_input_proj = nn.Sequential(nn.Linear(semantic_dim, hidden_dim), ConvMLP(hidden_dim, hidden, 3))
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_SEGMENT_TOKENS, sync_dim))
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(sync_dim, hidden_dim, 7), nn.SELU(), ConvMLP(hidden_dim, hidden, 3)
        )
        self.lyrics_encoder = TextEmbedding(
            lyrics_vocab_size, lyrics_dim, max_positions=lyrics_max_positions, num_blocks=lyrics_blocks
        )
        self.lyrics_input_proj = nn.Sequential(nn.Linear(lyrics_dim, hidden_dim), SwiGLU(hidden_dim, hidden))
        self.caption_input_proj = nn.Sequential(nn.Linear(caption_dim, hidden_dim), SwiGLU(hidden_dim, hidden))

        # 2. conditions
        self.t_embed = TimestepEmbedding(hidden_dim, frequency_dim=timestep_frequency_dim)
        self.timing = PerSecondEmbedding(hidden_dim, max_seconds=max_seconds)
        self.caption_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        self.clip_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        self.sync_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        self.lyrics_cond_proj = nn.Linear(hidden_dim, hidden_dim)
        fusion_in = 5 * hidden_dim if pooled_fusion == "concat" else hidden_dim
        self.global_cond_mlp = nn.Sequential(nn.Linear(fusion_in, hidden_dim), SwiGLU(hidden_dim, hidden))

        # learned nulls of absent / dropped conditions (lyrics: all filler, nothing to learn)
        self.null_clip = nn.Parameter(torch.zeros(1, semantic_dim))
        self.null_sync = nn.Parameter(torch.zeros(1, sync_dim))
        self.null_caption = nn.Parameter(torch.zeros(caption_length, caption_dim))

        # 3-4. transformer: joint blocks over [A | V | T | C] (shared avgen.nn.JointBlock), V and T
        # pre-only in the last one, C keys/values only in every one; then single-stream A blocks.
        kwargs = dict(mlp_ratio=mlp_ratio, qk_norm=qk_norm)
        self.joint_blocks = nn.ModuleList(
            JointBlock(
                hidden_dim,
                num_heads,
                [
                    StreamSpec("audio", kernel_size=3),
                    StreamSpec("clip", kernel_size=3, role="pre_only" if i == num_joint_blocks - 1 else "full"),
                    StreamSpec("lyrics", kernel_size=1, role="pre_only" if i == num_joint_blocks - 1 else "full"),
                    StreamSpec("caption", kernel_size=1, role="kv_only"),
                ],
                **kwargs,
            )
            for i in range(num_joint_blocks)
        )
        self.single_blocks = nn.ModuleList(
            StreamBlock(hidden_dim, num_heads, kernel_size=3, **kwargs) for _ in range(num_single_blocks)
        )

        # 5. output
        self.final_layer = FinalLayer(hidden_dim, latent_channels, kernel_size=7, norm_eps=1e-5)  # torch LayerNorm eps, as MMAudio
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier Linears, N(0, 0.02) timestep MLP, zero adaLN, output and nulls (DiT / MMAudio)."""
        initialize_mmdit_weights(self, self.t_embed, self.final_layer,
                                 zeros=(self.sync_pos_emb, self.null_clip, self.null_sync, self.null_caption))

    # ----------------------------------------------------------------------------- conditions
    def preprocess_conditions(
        self,
        *,
        semantic_features: Tensor,
        semantic_mask: Tensor,
        sync_features: Tensor,
        sync_lengths: Tensor,
        caption_features: Tensor,
        caption_mask: Tensor,
        lyrics_ids: Tensor,
        video_present: Tensor,
        caption_present: Tensor,
        lyrics_present: Tensor,
        seconds_start: Tensor,
        seconds_total: Tensor,
        latent_mask: Tensor,
    ) -> AudioGenOmniConditions:
        """Project the condition streams once (reused across ODE steps).

        semantic_features (B, F, Ds) with semantic_mask (B, F) valid frames; sync_features (B, Ts, Dy)
        (Ts a multiple of 8) with sync_lengths (B,) valid tokens (for a clip without video: the
        frames / tokens its duration would have, filled by the nulls); caption_features (B, L, Dc) with
        caption_mask (B, L); lyrics_ids (B, K) VoiceBPE ids padded with -1; *_present (B,) bool select
        the learned nulls where False; seconds_start / seconds_total (B,) the timing condition;
        latent_mask (B, N) the valid latent frames of each clip.
        """
        batch, length = latent_mask.shape
        self._check(semantic_features, sync_features, caption_features, lyrics_ids, batch)
        latent_lengths = latent_mask.sum(dim=1)
        video = video_present.to(torch.bool).view(batch, 1, 1)

        # V: CLIP frames at 8 fps. The masks come from the caller for present and absent video alike
        # (a clip without video gets placeholder frames spanning its own duration), so a dropped
        # video's nulls cover the same frames as its features would.
        clip_mask = semantic_mask.to(torch.bool)
        clip_mask = clip_mask | ~clip_mask.any(dim=1, keepdim=True)  # never an empty stream
        clip = torch.where(video, semantic_features, self.null_clip.to(semantic_features.dtype))
        clip = self._project(self.clip_input_proj, clip, clip_mask)

        # Synchformer: segment positions, projection, then each clip's tokens onto its own frames
        sync = torch.where(video, sync_features, self.null_sync.to(sync_features.dtype))
        sync = (sync.unflatten(1, (-1, SYNC_SEGMENT_TOKENS)) + self.sync_pos_emb).flatten(1, 2)
        ts = sync.shape[1]
        sync_lengths = sync_lengths.to(latent_mask.device).clamp(1, ts)
        sync_mask = torch.arange(ts, device=latent_mask.device)[None] < sync_lengths[:, None]
        conv, act, mlp = self.sync_input_proj
        sync = mlp(act(conv(sync, sync_mask)), sync_mask)
        sync = upsample_per_sample(sync, sync_lengths, latent_lengths, length)

        # T: the LT-encoder on the frame budget; absent lyrics are all filler (F5-TTS drop_text)
        ids = torch.where(lyrics_present.to(torch.bool).view(batch, 1), lyrics_ids, torch.full_like(lyrics_ids, PAD_ID))
        lyrics, lyrics_mask = self.lyrics_encoder(ids, length, latent_mask)
        lyrics = self.lyrics_input_proj(lyrics)

        # C: Flan-T5 tokens, keys and values only
        caption_on = caption_present.to(torch.bool).view(batch, 1, 1)
        caption = torch.where(caption_on, caption_features, self.null_caption.to(caption_features.dtype))
        caption_mask = torch.where(caption_on.view(batch, 1), caption_mask.to(torch.bool), torch.ones_like(caption_mask, dtype=torch.bool))
        caption = self.caption_input_proj(caption)

        # global condition without t: timing + pooled caption / video / lyric features
        pooled = [
            self.caption_cond_proj(masked_mean(caption, caption_mask if self.mask_caption_padding else None)),
            self.clip_cond_proj(masked_mean(clip, clip_mask)) + self.sync_cond_proj(masked_mean(sync, latent_mask)),
            self.lyrics_cond_proj(masked_mean(lyrics, lyrics_mask)),
        ]
        timing = self.timing(seconds_start.to(latent_mask.device), seconds_total.to(latent_mask.device))
        if self.pooled_fusion == "concat":
            fused = self.global_cond_mlp(torch.cat([timing, *pooled], dim=-1))
        else:
            start, total = timing.chunk(2, dim=-1)
            fused = self.global_cond_mlp(start + total + sum(pooled))
        return AudioGenOmniConditions(
            clip=clip,
            clip_mask=clip_mask,
            lyrics=lyrics,
            lyrics_mask=lyrics_mask,
            caption=caption,
            caption_key_mask=caption_mask if self.mask_caption_padding else None,
            sync=sync,
            pooled=fused,
        )

    @staticmethod
    def _project(proj: nn.Sequential, x: Tensor, mask: Tensor) -> Tensor:
        linear, conv_mlp = proj
        return conv_mlp(masked_fill_padding(linear(x), mask), mask)

    def _check(self, semantic: Tensor, sync: Tensor, caption: Tensor, lyrics_ids: Tensor, batch: int) -> None:
        for name, tensor, dim in (
            ("semantic_features", semantic, self.semantic_dim),
            ("sync_features", sync, self.sync_dim),
            ("caption_features", caption, self.caption_dim),
        ):
            if tensor.dim() != 3 or tensor.shape[0] != batch or tensor.shape[-1] != dim:
                raise ValueError(
                    f"{name} must be (B={batch}, length, {dim}), got {tuple(tensor.shape)}; check the encoder's "
                    "output_dim against the network config"
                )
        if sync.shape[1] % SYNC_SEGMENT_TOKENS != 0:
            raise ValueError(f"sync_features length {sync.shape[1]} is not a multiple of {SYNC_SEGMENT_TOKENS}")
        if caption.shape[1] != self.caption_length:
            raise ValueError(f"caption_features has {caption.shape[1]} tokens, the network expects {self.caption_length}")
        if lyrics_ids.dim() != 2 or lyrics_ids.shape[0] != batch:
            raise ValueError(f"lyrics_ids must be (B={batch}, K), got {tuple(lyrics_ids.shape)}")

    # ----------------------------------------------------------------------------- PAAPI
    def stream_angles(
        self, num_latents: int, num_clip: int, device: torch.device, offset: float = 0.0
    ) -> dict[str, Tensor | None]:
        """RoPE angles per stream (PAAPI): A and T at frames 0..N-1, V by rate, C none; all None if off.

        ``offset`` moves every temporal stream together along the audio timeline; RoPE scores depend
        only on differences, so the output does not change (the tests check it).
        """
        if not self.paapi:
            return {"audio": None, "clip": None, "lyrics": None, "caption": None}
        frame_pos = torch.arange(num_latents, device=device, dtype=torch.float32) + offset
        clip_pos = positions_at_rate(num_clip, self.semantic_rate, self.latent_rate, device=device) + offset
        frames = rope_angles(frame_pos, self.head_dim)
        clip = rope_angles(clip_pos, self.head_dim)
        return {"audio": frames, "clip": clip, "lyrics": frames if self.paapi_text else None, "caption": None}

    # ----------------------------------------------------------------------------- velocity
    def predict_velocity(
        self, x_t: Tensor, t: Tensor, conditions: AudioGenOmniConditions, latent_mask: Tensor | None = None
    ) -> Tensor:
        """x_t (B, N, C), t (B,) in [0, 1] -> velocity (B, N, C); zero at padded frames."""
        batch, length, channels = x_t.shape
        if channels != self.latent_channels:
            raise ValueError(f"x_t has {channels} channels, the network expects {self.latent_channels}")
        if conditions.latent_length != length:
            raise ValueError(
                f"conditions were preprocessed for {conditions.latent_length} latent frames but x_t has {length}"
            )
        if t.shape != (batch,):
            raise ValueError(f"t must be (B={batch},), got {tuple(t.shape)}")
        # latent_mask None = every frame valid: no key masks, no zeroing before the convolutions

        conv, act, mlp = self.audio_input_proj
        audio = mlp(act(conv(x_t, latent_mask)), latent_mask)
        clip, lyrics, caption = conditions.clip, conditions.lyrics, conditions.caption
        global_c = (self.t_embed(t) + conditions.pooled).unsqueeze(1)  # (B, 1, D)
        frame_c = global_c + conditions.sync  # (B, N, D)
        # SiLU of the adaLN conditions once per forward, not per block (it does not depend on x_t)
        global_act, frame_act = F.silu(global_c), F.silu(frame_c)
        # cos / sin once per forward, not per block and per q / k
        angles = {name: None if a is None else rope_rotation(a)
                  for name, a in self.stream_angles(length, clip.shape[1], x_t.device).items()}
        if self.mask_lyrics_filler:
            lyric_keys = conditions.lyrics_mask if latent_mask is None else latent_mask & conditions.lyrics_mask
        else:
            lyric_keys = latent_mask
        clip_keys = conditions.clip_keys  # None when every CLIP frame is valid: the unmasked attention path
        ckpt = self.gradient_checkpointing and self.training

        for block in self.joint_blocks:
            audio, clip, lyrics, _ = run_block(
                block,
                [
                    StreamInput(audio, frame_act, angles["audio"], latent_mask, c_activated=True),
                    StreamInput(clip, global_act, angles["clip"], clip_keys, c_activated=True),
                    StreamInput(lyrics, global_act, angles["lyrics"], lyric_keys, c_activated=True),
                    StreamInput(caption, global_act, mask=conditions.caption_key_mask, c_activated=True),
                ],
                checkpointing=ckpt,
            )
        for block in self.single_blocks:
            audio = run_block(block, audio, frame_act, angles["audio"], latent_mask, True, checkpointing=ckpt)
        velocity = self.final_layer(audio, global_act, latent_mask, c_activated=True)
        return masked_fill_padding(velocity, latent_mask)

    def forward(self, x_t: Tensor, t: Tensor, latent_mask: Tensor, **conditions: Tensor) -> Tensor:
        """Training path: preprocess_conditions (keyword tensors) + predict_velocity."""
        prepared = self.preprocess_conditions(latent_mask=latent_mask, **conditions)
        return self.predict_velocity(x_t, t, prepared, latent_mask)


# ---------------------------------------------------------------------------------- size presets
# Paper size (spec §3): MetaCLIP bigG 1280-d frames, Synchformer 768-d, Flan-T5-base 768-d x 77 tokens,
# VoiceBPE 6681 ids, MMAudio 44.1 kHz latents (40 channels at 43.07 Hz).
_PAPER_INPUTS = dict(latent_channels=40, semantic_dim=1280, sync_dim=768, caption_dim=768, caption_length=77,
                     lyrics_vocab_size=6681, lyrics_dim=768, lyrics_max_positions=4000, lyrics_blocks=4)
register_network("audiogen-omni", AudioGenOmniNetwork, hidden_dim=1024, num_heads=16, num_joint_blocks=8,
                 num_single_blocks=16, description="AudioGen-Omni paper size (1.556B; Table 1: 1.55B)", **_PAPER_INPUTS)
register_network("audiogen-omni-tiny", AudioGenOmniNetwork, hidden_dim=64, num_heads=4, num_joint_blocks=2,
                 num_single_blocks=2, description="AudioGen-Omni, tiny (tests, ToyWorld on a CPU)",
                 **{**_PAPER_INPUTS, "lyrics_dim": 32, "lyrics_blocks": 2})
