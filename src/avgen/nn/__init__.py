"""Paper-agnostic neural-network blocks shared by every avgen backbone.

- attention: SDPA with boolean masks (True = keep, fully masked rows give 0), RMS QK-norm,
  per-stream QKV projection, MMDiT joint attention, self- and cross-attention with RoPE,
  MultiHeadAttention with separate q/k/v/o and QK RMSNorm across heads (Wan).
- mmdit: MMDiT stream / joint blocks over any list of streams with roles full / pre_only /
  kv_only, per-stream RoPE, key masks and kernel sizes (MMAudio, AudioGen-Omni).
- rope: angles-based rotary embeddings (1-D, rescaled positions, 3-D Wan split, segment-only).
- modulation: adaLN-Zero for global (B, D) or frame-aligned (B, T, D) conditions, final layer.
- embeddings: sinusoidal/timestep, ConvPositionEmbedding, per-second and number embeddings.
- convnext: GRN and ConvNeXt-V2 block with padding mask.
- mlp / conv: MLP, SwiGLU, ConvMLP, channel-last Conv1d.
- blocks: per-block activation checkpointing, torch.compile and FSDP wrapping for networks that
  declare ``block_classes`` (``avgen.nn.blocks``).

Sequences are (B, T, D) channel-last; padding masks are (B, T) bool with True = valid.
"""

from avgen.nn.attention import (
    CrossAttention,
    MultiHeadAttention,
    QKVProjection,
    RMSNorm,
    SelfAttention,
    joint_attention,
    scaled_dot_product_attention,
)
from avgen.nn.conv import ChannelLastConv1d, masked_fill_padding, masked_mean
from avgen.nn.convnext import GRN, ConvNeXtV2Block
from avgen.nn.embeddings import (
    ConvPositionEmbedding,
    NumberEmbedding,
    PerSecondEmbedding,
    TimestepEmbedding,
    sinusoidal_embedding,
)
from avgen.nn.mlp import MLP, ConvMLP, SwiGLU, mmaudio_hidden_dim
from avgen.nn.mmdit import STREAM_ROLES, JointBlock, StreamBlock, StreamInput, StreamSpec
from avgen.nn.modulation import AdaLNZero, FinalLayer, gated_residual, modulate, modulate_unit, upsample_to_length
from avgen.nn.rope import (
    RopeCache,
    RopeRotation,
    rope_rotation,
    apply_rope,
    apply_rope_to_segment,
    positions_at_rate,
    rescaled_positions,
    rope_3d_angles,
    rope_3d_split,
    rope_angles,
    rope_frequencies,
)

__all__ = [
    "AdaLNZero",
    "ChannelLastConv1d",
    "ConvMLP",
    "ConvNeXtV2Block",
    "ConvPositionEmbedding",
    "CrossAttention",
    "FinalLayer",
    "GRN",
    "JointBlock",
    "MLP",
    "MultiHeadAttention",
    "NumberEmbedding",
    "PerSecondEmbedding",
    "QKVProjection",
    "RMSNorm",
    "STREAM_ROLES",
    "SelfAttention",
    "StreamBlock",
    "StreamInput",
    "StreamSpec",
    "SwiGLU",
    "TimestepEmbedding",
    "RopeCache",
    "RopeRotation",
    "rope_rotation",
    "gated_residual",
    "modulate_unit",
    "apply_rope",
    "apply_rope_to_segment",
    "joint_attention",
    "masked_fill_padding",
    "masked_mean",
    "mmaudio_hidden_dim",
    "modulate",
    "positions_at_rate",
    "rescaled_positions",
    "rope_3d_angles",
    "rope_3d_split",
    "rope_angles",
    "rope_frequencies",
    "scaled_dot_product_attention",
    "sinusoidal_embedding",
    "upsample_to_length",
]
