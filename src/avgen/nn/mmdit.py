"""MMDiT blocks shared by every joint-attention backbone (SD3 §5.1, MMAudio §3.2, AudioGen-Omni §3.4).

Every modality is a *stream* with its own weights (adaLN-Zero, fused q/k/v + QK-norm, output
projection, FFN); the streams meet in ONE attention over the concatenation of their tokens
(``joint_attention``), and the output is split back per stream. After the joint blocks, the audio
stream alone goes through single-stream blocks (self-attention, same ``StreamBlock``).

Declaring streams
-----------------
A :class:`JointBlock` is built from a list of :class:`StreamSpec` (name, role, kernel size)::

    block = JointBlock(dim, num_heads, [
        StreamSpec("latent", kernel_size=3),                  # updated (role "full")
        StreamSpec("clip", kernel_size=3, role="pre_only"),   # MMAudio's last block
        StreamSpec("text", kernel_size=1, role="full"),
        StreamSpec("caption", kernel_size=1, role="kv_only"), # AudioGen-Omni's caption
    ])

Each stream's module is the attribute ``<name>_block`` (a :class:`StreamBlock`), so state-dict
keys read ``<name>_block.attn.qkv.weight`` as in MMAudio. Roles:

* ``"full"``: queries, keys and values; updated (attention output + FFN, adaLN with 6 params).
* ``"pre_only"``: gives q/k/v and is queried, but its attention output is discarded and it is not
  updated (adaLN with shift/scale only, no output projection, no FFN): MMAudio's clip and text
  streams in its last joint block. It returns its input unchanged.
* ``"kv_only"``: gives only keys and values; never queried, never updated (AudioGen-Omni's caption
  stream, spec §1.4.2). Same parameters as ``pre_only`` (2-param adaLN, the fused qkv Linear,
  whose q rows are never used) except that it has no q-norm (no queries). Its tokens influence the
  other streams only through attention. It returns its input unchanged.

kernel_size 1 gives Linear output projection + SwiGLU FFN (text); > 1 gives Conv1d(k) over time +
ConvMLP(k) (MMAudio: k = 3 for the latent and clip streams).

Calling
-------
``block(inputs)`` takes one :class:`StreamInput` per declared stream, in the declared order, and
returns one tensor per stream (the updated x, or the input x for pre_only / kv_only)::

    latent, clip, text, caption = block([
        StreamInput(latent, frame_c, angles=latent_angles, mask=latent_mask),
        StreamInput(clip, global_c, angles=clip_angles, mask=clip_mask),
        StreamInput(text, global_c, angles=text_angles, mask=text_mask),
        StreamInput(caption, global_c),            # no RoPE, every token attended
    ])

* ``x`` (B, L, D). ``c``: the adaLN condition, global (B, D) / (B, 1, D) or frame-aligned (B, L, D)
  (MMAudio modulates the latent stream by c_g + upsampled sync, the others by c_g).
* ``angles``: RoPE angles from :func:`avgen.nn.rope_angles`, (L, Dh/2) shared by the batch or
  (B, 1, L, Dh/2) per sample (e.g. rate-based positions under variable lengths); None = no RoPE.
* ``mask``: (B, L) bool key mask, True = valid; masked tokens are never attended to, and a
  conv stream zeroes them before its convolutions. None = all valid (MMAudio attends its text
  padding tokens).

Norms: LayerNorms without affine, ``norm_eps`` default 1e-5 (torch's default, MMAudio); QK RMSNorm
``qk_norm_eps`` default None (torch's ``nn.RMSNorm`` default, MMAudio). With these defaults and
MMAudio's weights (qkv rows permuted, see ``avgen.models.foleygenex.mmaudio_checkpoint``) the blocks
compute MMAudio's (tests/models/test_mmaudio_fidelity.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from avgen.nn.attention import QKVProjection, joint_attention, scaled_dot_product_attention
from avgen.nn.conv import ChannelLastConv1d
from avgen.nn.rope import RopeRotation
from avgen.nn.mlp import ConvMLP, SwiGLU, mmaudio_hidden_dim
from avgen.nn.modulation import AdaLNZero, gated_residual, modulate_unit

__all__ = ["STREAM_ROLES", "JointBlock", "StreamBlock", "StreamInput", "StreamSpec"]

STREAM_ROLES = ("full", "pre_only", "kv_only")


@dataclass(frozen=True)
class StreamSpec:
    """How one stream of a joint block is built: its name (module ``<name>_block``), role, kernel size."""

    name: str
    role: str = "full"
    kernel_size: int = 1

    def __post_init__(self) -> None:
        if self.role not in STREAM_ROLES:
            raise ValueError(f"stream {self.name!r}: role must be one of {STREAM_ROLES}, got {self.role!r}")
        if not self.name.isidentifier():
            raise ValueError(f"stream name must be a Python identifier (it names a module), got {self.name!r}")


@dataclass
class StreamInput:
    """One stream's tensors for a joint-block call: x (B, L, D), adaLN condition c, RoPE angles, key mask.

    ``angles`` may be a precomputed :class:`avgen.nn.rope.RopeRotation` (a network's
    :class:`~avgen.nn.rope.RopeCache`); ``c_activated``: c already is SiLU(c), computed once per
    forward for all blocks (see :class:`avgen.nn.AdaLNZero`).
    """

    x: Tensor
    c: Tensor
    angles: Tensor | RopeRotation | None = None
    mask: Tensor | None = None
    c_activated: bool = False


class StreamBlock(nn.Module):
    """One stream of an MMDiT block (MMAudio's MMDitSingleBlock), adaLN-Zero modulated.

    pre_attention: LayerNorm -> modulate(shift, scale) -> fused QKV (+ QK-norm, RoPE).
    post_attention (role "full" only): x + gate * proj(attn); x + gate * FFN(modulate(LayerNorm(x))).
    Called directly, it is a single-stream block: self-attention over x alone (MMAudio's fused
    blocks). See the module docstring for roles, kernel sizes and eps.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        kernel_size: int = 1,
        qk_norm: bool = True,
        role: str = "full",
        norm_eps: float = 1e-5,
        qk_norm_eps: float | None = None,
    ):
        super().__init__()
        if role not in STREAM_ROLES:
            raise ValueError(f"role must be one of {STREAM_ROLES}, got {role!r}")
        self.role = role
        self.kernel_size = kernel_size
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn = QKVProjection(dim, num_heads, qk_norm=qk_norm, qk_norm_eps=qk_norm_eps)
        if role == "kv_only":
            self.attn.q_norm = nn.Identity()  # never queried: a q gain would get no gradient (DDP)
        # scales (params 1 and 4) come back as 1 + scale, the 1 folded into the adaLN bias
        self.modulation = AdaLNZero(dim, num_params=6 if role == "full" else 2,
                                    unit_scales=(1, 4) if role == "full" else (1,))
        if role != "full":
            return
        hidden = mmaudio_hidden_dim(dim, mlp_ratio)
        if kernel_size == 1:
            self.attn_out = nn.Linear(dim, dim)
            self.ffn = SwiGLU(dim, hidden)
        else:
            self.attn_out = ChannelLastConv1d(dim, dim, kernel_size)
            self.ffn = ConvMLP(dim, hidden, kernel_size)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)

    @property
    def pre_only(self) -> bool:
        """True when the stream is not updated (roles pre_only and kv_only)."""
        return self.role != "full"

    def _project_out(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.attn_out(x) if self.kernel_size == 1 else self.attn_out(x, mask)

    def pre_attention(self, x: Tensor, c: Tensor, angles: Tensor | RopeRotation | None = None, c_activated: bool = False):
        """x (B, L, D), c (B, D) / (B, 1, D) / (B, L, D) -> ((q, k, v) each (B, H, L, Dh), modulation).

        For a kv_only stream q is None (its queries are never formed). c_activated: c is SiLU(c).
        The modulation's scales are 1 + scale (:func:`avgen.nn.modulate_unit`).
        """
        params = self.modulation(c, activated=c_activated)
        h = modulate_unit(self.norm1(x), params[0], params[1])
        if self.role == "kv_only":
            return (None, *self.attn.key_value(h, angles)), params
        return self.attn(h, angles), params

    def post_attention(self, x: Tensor, attn: Tensor | None, params: tuple[Tensor, ...], mask: Tensor | None = None):
        """attn (B, H, L, Dh) -> updated x (B, L, D); pre_only / kv_only streams return x unchanged."""
        if self.role != "full":
            return x
        _, _, gate_msa, shift_mlp, unit_scale_mlp, gate_mlp = params
        x = gated_residual(x, self._project_out(rearrange(attn, "b h l d -> b l (h d)"), mask), gate_msa)
        return gated_residual(x, self.ffn(modulate_unit(self.norm2(x), shift_mlp, unit_scale_mlp), mask), gate_mlp)

    def forward(self, x: Tensor, c: Tensor, angles: Tensor | RopeRotation | None = None, mask: Tensor | None = None,
                c_activated: bool = False) -> Tensor:
        """Single-stream block: self-attention over x alone (MMAudio's fused blocks)."""
        if self.role != "full":
            raise ValueError(f"a {self.role} stream is not updated; a single-stream block needs role 'full'")
        qkv, params = self.pre_attention(x, c, angles, c_activated)
        return self.post_attention(x, scaled_dot_product_attention(*qkv, mask), params, mask)


class JointBlock(nn.Module):
    """MMDiT joint block over any list of streams, per-stream weights and ONE attention.

    streams: the :class:`StreamSpec` of each stream, in call order; every stream gets a
    :class:`StreamBlock` named ``<name>_block``. forward(inputs) takes one :class:`StreamInput`
    per stream and returns one tensor per stream (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        streams: Sequence[StreamSpec],
        *,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        norm_eps: float = 1e-5,
        qk_norm_eps: float | None = None,
    ):
        super().__init__()
        streams = tuple(streams)
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        if not any(s.role != "kv_only" for s in streams):
            raise ValueError("a joint block needs at least one queried (full or pre_only) stream")
        self.streams = streams
        for spec in streams:
            block = StreamBlock(dim, num_heads, mlp_ratio=mlp_ratio, kernel_size=spec.kernel_size, qk_norm=qk_norm,
                                role=spec.role, norm_eps=norm_eps, qk_norm_eps=qk_norm_eps)
            self.add_module(f"{spec.name}_block", block)

    def stream_block(self, name: str) -> StreamBlock:
        return getattr(self, f"{name}_block")

    def forward(self, inputs: Sequence[StreamInput]) -> list[Tensor]:
        if len(inputs) != len(self.streams):
            raise ValueError(
                f"joint block declared {len(self.streams)} streams {[s.name for s in self.streams]}, "
                f"got {len(inputs)} inputs"
            )
        blocks = [self.stream_block(spec.name) for spec in self.streams]
        pre = [block.pre_attention(s.x, s.c, s.angles, s.c_activated) for block, s in zip(blocks, inputs)]
        outs = joint_attention([qkv for qkv, _ in pre], key_masks=[s.mask for s in inputs])
        return [
            block.post_attention(s.x, out, params, s.mask)
            for block, s, out, (_, params) in zip(blocks, inputs, outs, pre)
        ]


def initialize_mmdit_weights(network: nn.Module, timestep_embedding: nn.Module, final_layer: nn.Module,
                             zeros: Sequence[Tensor] = ()) -> None:
    """MMAudio's (DiT's) initialisation of an MMDiT network.

    Xavier-uniform Linear weights with zero biases; the timestep MLP N(0, 0.02); every adaLN
    modulation and the final projection zero (adaLN-Zero: each block starts as the identity and the
    network predicts zero velocity); ``zeros`` (learned nulls, position tables) zero as well.
    """
    from avgen.nn.modulation import AdaLNZero

    for module in network.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(timestep_embedding.mlp[0].weight, std=0.02)
    nn.init.normal_(timestep_embedding.mlp[2].weight, std=0.02)
    for module in network.modules():
        if isinstance(module, AdaLNZero):
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)
    nn.init.zeros_(final_layer.proj.weight)
    nn.init.zeros_(final_layer.proj.bias)
    for tensor in zeros:
        nn.init.zeros_(tensor)
