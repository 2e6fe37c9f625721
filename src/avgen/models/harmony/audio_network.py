"""Harmony's audio branch: an "MM-DiT" over [reference | target | speech | prompt] tokens (spec §1.4.2).

Main Eq. 2: eps_a = MM-DiT(concat(z'_{a,t}, e_speech, e_prompt), t_a) with z'_{a,t} = [z_r ; z_{a,t}]
(the clean reference latent prepended along time, Supp §10). The paper calls the branch "symmetric
... to ensure structural parity" with the video branch but gives no width, so (spec [D], as Ovi's
audio tower) it has the Wan2.2-5B geometry and Wan's adaLN-single modulation, and realises "MM-DiT"
as one token sequence

    [ R (reference, clean) | A (noisy target) | S (speech transcript) | P (audio caption) ]

through Wan blocks without text cross-attention (``audio_mmdit: "single"``, like FLUX single
blocks: the text is in-context). Per token (spec §1.4.2):

========  =======================================  ==========================  =================
segment   embedding                                1-D RoPE position           timestep
========  =======================================  ==========================  =================
R         input projection of the clean latent     -L_r .. -1 (own length)     clean (avgen t=1)
A         input projection of x_t                  0 .. T_a - 1                t_a
S         F5 ``TextEmbedding`` (512) + Linear      0 .. T_a - 1 (filler-padded) t_a
P         Wan text embedding of umT5 features      none                        t_a
========  =======================================  ==========================  =================

* Input projection [B:Ovi]: ChannelLastConv1d(C, D, k7) -> SiLU -> ConvMLP SwiGLU (hidden
  int(2 * 4D / 3) rounded to 256, k7, bias-free); option ``input_projection="linear"``. R and A are
  projected separately (each with its own padding mask), so a convolution never mixes the clean
  reference with the noisy target: R reaches A only through attention [D].
* RoPE rotates the first ``rope_dim`` channels of each head (Ovi: 44 of 128, Wan's time band;
  ``"t_band"`` = that width for any head size, ``"full"`` = every channel). Unrotated channels are
  given angle 0, which is the identity.
* Head: Wan's (table + time embedding e, LN, Linear(D, C) zero-initialised), on the A tokens only;
  R, S and P tokens never reach the output (so never the loss).
* Key masks: R by its reference mask, A by the audio mask, S by the transcript's token mask (filler
  is masked) and the audio mask, P by the caption mask ([D]: Wan's video text attends its zero
  padding; here the caption is in-context, so its padding is masked).

``audio_mmdit: "dual"`` (option): SD3 two-stream blocks (:class:`DualStreamWanBlock`): the audio group
[R | A] and the text group [S | P] each have their own q/k/v/o, FFN and modulation table and meet in
one joint attention; the text stream is modulated by the same per-sample t_a (spec §1.4.2;
251.8M per block at paper size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avgen.conditioning.lyrics import TextEmbedding
from avgen.models.harmony.video_network import WanBlock, _layer_norm_fp32
from avgen.nn import (
    MLP,
    joint_attention,
    ChannelLastConv1d,
    ConvMLP,
    RopeRotation,
    TimestepEmbedding,
    mmaudio_hidden_dim,
    modulate,
    rope_3d_split,
    rope_angles,
)

__all__ = ["AudioTokens", "DualStreamWanBlock", "HarmonyAudioNetwork", "partial_rope_angles", "resolve_rope_dim"]

MMDIT_MODES = ("single", "dual")
INPUT_PROJECTIONS = ("conv", "linear")


def resolve_rope_dim(rope_dim: int | str, head_dim: int) -> int:
    """``"t_band"`` -> Wan's time band width for this head (44 at 128), ``"full"`` -> head_dim, int -> itself."""
    if rope_dim == "t_band":
        value = rope_3d_split(head_dim)[0]
    elif rope_dim == "full":
        value = head_dim
    elif isinstance(rope_dim, int):
        value = rope_dim
    else:
        raise ValueError(f"rope_dim must be an even int, 't_band' or 'full', got {rope_dim!r}")
    if value % 2 or not 0 < value <= head_dim:
        raise ValueError(f"rope_dim {value} must be even and in (0, head_dim={head_dim}]")
    return value


def partial_rope_angles(positions: Tensor, rope_dim: int, head_dim: int, theta: float = 10000.0) -> Tensor:
    """1-D RoPE angles on the first ``rope_dim`` channels of a head, zero (identity) on the rest.

    positions (..., L) (fractional allowed; NaN = no rotation) -> angles (..., L, head_dim / 2), fp32.
    """
    no_rope = torch.isnan(positions)
    angles = rope_angles(torch.where(no_rope, torch.zeros_like(positions), positions), rope_dim, theta)
    angles = angles.masked_fill(no_rope[..., None], 0.0)
    return F.pad(angles, (0, (head_dim - rope_dim) // 2))


@dataclass
class AudioTokens:
    """The audio branch's state between :meth:`HarmonyAudioNetwork.embed` and its head.

    x (B, L, D) the [R | A | S | P] sequence; e_target (B, 1, D) time embedding of the target
    (for the head); e0 (B, L|1, 6, D) per-token time projection; angles (B|1, 1, L, Dh/2); mask
    (B, L) bool keys; lengths (L_r, T_a, L_s, L_p) of the segments; reference_mask (B, L_r) or None;
    target_mask (B, T_a) or None; target_lengths (B,) valid target latents.
    """

    x: Tensor
    e_target: Tensor
    e0: Tensor
    angles: Tensor
    mask: Tensor
    lengths: tuple[int, int, int, int]
    reference_mask: Tensor | None
    target_mask: Tensor | None
    target_lengths: Tensor

    @property
    def target_slice(self) -> slice:
        return slice(self.lengths[0], self.lengths[0] + self.lengths[1])


def _rope_span(angles: Tensor | RopeRotation, span: slice) -> Tensor | RopeRotation:
    """The tokens ``span`` of RoPE angles (..., L, r/2) or of their precomputed rotation (..., L, r)."""
    if isinstance(angles, RopeRotation):
        return angles.tokens(span)
    return angles[..., span, :]


class DualStreamWanBlock(nn.Module):
    """SD3-style two-stream block built from two Wan blocks without cross-attention (``audio_mmdit: dual``).

    Stream 1 is the audio group [R | A], stream 2 the text group [S | P]; each has its own modulation
    table, q/k/v/o and FFN, and the two meet in ONE attention over the whole sequence
    (:func:`avgen.nn.joint_attention`). ``forward(..., split=L_r + T_a, part=...)`` as :class:`WanBlock`'s.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, eps: float = 1e-6):
        super().__init__()
        self.audio = WanBlock(dim, ffn_dim, num_heads, eps=eps, cross_attention=False)
        self.text = WanBlock(dim, ffn_dim, num_heads, eps=eps, cross_attention=False)
        self.eps = eps

    def self_attention_residual(self, x: Tensor, e0: Tensor, split: int, angles: Tensor, mask: Tensor | None) -> Tensor:
        """Both streams' gated residual around ONE joint attention over [audio group | text group]."""
        dtype = x.dtype
        e0_parts = (e0[:, :split], e0[:, split:]) if e0.shape[1] > 1 else (e0, e0)
        parts, spans = (x[:, :split], x[:, split:]), (slice(None, split), slice(split, None))
        qkvs, gates = [], []
        for block, part, e0_part, span in zip((self.audio, self.text), parts, e0_parts, spans):
            shift1, scale1, gate1 = block.modulation_terms(e0_part, 0)
            h = modulate(_layer_norm_fp32(part, eps=self.eps), shift1, scale1).to(dtype)
            qkvs.append(block.self_attn.project(h, query_angles=_rope_span(angles, span)))
            gates.append(gate1)
        key_masks = None if mask is None else (mask[:, :split], mask[:, split:])
        outs = joint_attention(qkvs, key_masks)
        updated = []
        for block, part, out, gate1 in zip((self.audio, self.text), parts, outs, gates):
            attended = block.self_attn.o(rearrange(out, "b h l d -> b l (h d)"))
            updated.append((part.float() + attended.float() * gate1).to(dtype))
        return torch.cat(updated, dim=1)

    def ffn_residual(self, x: Tensor, e0: Tensor, split: int) -> Tensor:
        e0_audio, e0_text = (e0[:, :split], e0[:, split:]) if e0.shape[1] > 1 else (e0, e0)
        audio = self.audio.ffn_residual(x[:, :split], self.audio.modulation_terms(e0_audio, 1))
        text = self.text.ffn_residual(x[:, split:], self.text.modulation_terms(e0_text, 1))
        return torch.cat((audio, text), dim=1)

    def forward(
        self, x: Tensor, e0: Tensor, angles: Tensor, mask: Tensor | None = None, *, split: int, part: str = "all"
    ) -> Tensor:
        """x (B, L, D) = [audio group (``split`` tokens) | text group]; ``part`` "all", "self_attention" or "ffn".

        Wrap THIS module as one FSDP unit (not its inner WanBlocks, whose ``forward`` it does not call).
        """
        if part in ("all", "self_attention"):
            x = self.self_attention_residual(x, e0, split, angles, mask)
        if part in ("all", "ffn"):
            x = self.ffn_residual(x, e0, split)
        if part not in ("all", "self_attention", "ffn"):
            raise ValueError(f"part must be 'all', 'self_attention' or 'ffn', got {part!r}")
        return x


class HarmonyAudioNetwork(nn.Module):
    """Audio MM-DiT of Harmony (spec §1.4.2). Wan timesteps in, v_wan out (the joint network maps avgen time).

    Defaults are tiny; the paper size (spec §3) is dim 3072, ffn 14336, 24 heads, 30 layers,
    latent_channels 20 (MMAudio 16 kHz), prompt_dim 4096 (umT5-XXL), speech vocabulary 2545 (F5's
    Emilia ``vocab.txt``; +1 filler), speech_dim 512, speech_max_positions 8192.
    """

    def __init__(
        self,
        *,
        latent_channels: int = 8,
        dim: int = 64,
        ffn_dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        prompt_dim: int = 32,
        speech_vocab_size: int = 64,
        speech_dim: int = 32,
        speech_max_positions: int = 8192,
        speech_num_blocks: int = 4,
        freq_dim: int = 256,
        input_projection: str = "conv",
        input_kernel_size: int = 7,
        rope_dim: int | str = "t_band",
        rope_theta: float = 10000.0,
        mmdit: str = "single",
        eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"audio dim {dim} is not divisible by num_heads {num_heads}")
        if mmdit not in MMDIT_MODES:
            raise ValueError(f"audio_mmdit must be one of {MMDIT_MODES}, got {mmdit!r}")
        if input_projection not in INPUT_PROJECTIONS:
            raise ValueError(f"input_projection must be one of {INPUT_PROJECTIONS}, got {input_projection!r}")
        self.latent_channels = latent_channels
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.prompt_dim = prompt_dim
        self.speech_vocab_size = speech_vocab_size
        self.rope_dim = resolve_rope_dim(rope_dim, self.head_dim)
        self.rope_theta = rope_theta
        self.eps = eps
        self.mmdit = mmdit

        self.input_projection_kind = input_projection
        if input_projection == "conv":  # Ovi's audio patch embedding
            self.input_conv = ChannelLastConv1d(latent_channels, dim, input_kernel_size)
            self.input_mlp = ConvMLP(dim, mmaudio_hidden_dim(dim, 4.0, 256), kernel_size=input_kernel_size)
        else:
            self.input_linear = nn.Linear(latent_channels, dim)
        self.prompt_embedding = MLP(prompt_dim, dim, dim)  # Wan's text embedding: Linear -> GELU(tanh) -> Linear
        self.speech_embedding = TextEmbedding(
            speech_vocab_size, speech_dim, max_positions=speech_max_positions, num_blocks=speech_num_blocks
        )
        self.speech_projection = nn.Linear(speech_dim, dim)
        self.time_embedding = TimestepEmbedding(dim, frequency_dim=freq_dim, order="cos_sin")
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        if mmdit == "single":
            blocks = [WanBlock(dim, ffn_dim, num_heads, eps=eps, cross_attention=False) for _ in range(num_layers)]
        else:
            blocks = [DualStreamWanBlock(dim, ffn_dim, num_heads, eps=eps) for _ in range(num_layers)]
        self.blocks = nn.ModuleList(blocks)
        self.head_modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.head = nn.Linear(dim, latent_channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Wan's ``init_weights`` where it applies: Xavier Linear, N(0, 0.02) text/time embeddings, zero head.

        Convolutions (Ovi's input projection, F5's ConvNeXt) keep PyTorch's default init.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for linear in (self.prompt_embedding.fc1, self.prompt_embedding.fc2, *self.time_embedding.mlp[::2]):
            nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ conditions
    def embed_prompt(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """umT5 features (B, L, prompt_dim) -> P tokens (B, L, D); padding features are zeroed first (as Wan)."""
        if features.dim() != 3 or features.shape[-1] != self.prompt_dim:
            raise ValueError(f"audio prompt features must be (B, L, {self.prompt_dim}), got {tuple(features.shape)}")
        if mask is not None:
            features = features * mask[..., None].to(features.dtype)
        return self.prompt_embedding(features)

    def embed_speech(self, transcript_ids: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Transcript ids (B, K) (``PAD_ID`` -1 padded) -> S tokens (B, length, D) and their (B, length) token mask."""
        features, mask = self.speech_embedding(transcript_ids, length)
        return self.speech_projection(features), mask

    def project_latents(self, latents: Tensor, mask: Tensor | None) -> Tensor:
        """Audio latents (B, T, C) -> tokens (B, T, D) (Ovi's input projection, or a Linear)."""
        if latents.dim() != 3 or latents.shape[-1] != self.latent_channels:
            raise ValueError(f"audio latents must be (B, T, {self.latent_channels}), got {tuple(latents.shape)}")
        if self.input_projection_kind == "linear":
            return self.input_linear(latents)
        hidden = F.silu(self.input_conv(latents, mask))
        return self.input_mlp(hidden, mask)

    # ------------------------------------------------------------------ forward
    def embed(
        self,
        x: Tensor,
        wan_timesteps: Tensor,
        *,
        prompt: Tensor,
        prompt_mask: Tensor | None = None,
        speech: Tensor | None = None,
        speech_mask: Tensor | None = None,
        reference: Tensor | None = None,
        reference_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
    ) -> AudioTokens:
        """Build the [R | A | S | P] sequence, its per-token time modulation, RoPE angles and key mask.

        x (B, T_a, C) noisy target; wan_timesteps (B,) = 1000 * sigma_a; prompt (B, L_p, D) embedded
        caption; speech (B, T_a, D) embedded transcript or None; reference (B, L_r, C) clean latent or None.
        """
        batch, num_target, _ = x.shape
        device = x.device
        if wan_timesteps.dim() != 1 or wan_timesteps.shape[0] != batch:
            raise ValueError(f"audio timesteps must be (B,) = ({batch},), got {tuple(wan_timesteps.shape)}")
        if speech is not None and speech.shape[1] != num_target:
            raise ValueError(
                f"the speech embedding covers {speech.shape[1]} frames but the audio has {num_target}; "
                "preprocess_conditions(audio_length=...) must be given the target latent length"
            )
        ones = lambda n: torch.ones(batch, n, dtype=torch.bool, device=device)  # noqa: E731

        segments, masks, positions = [], [], []
        num_reference = 0
        if reference is not None:
            num_reference = reference.shape[1]
            ref_mask = ones(num_reference) if reference_mask is None else reference_mask.to(device, torch.bool)
            segments.append(self.project_latents(reference.to(x.dtype), ref_mask))
            masks.append(ref_mask)
            # negative positions -L_r .. -1 counted from each sample's own reference length
            ref_len = ref_mask.sum(dim=1, keepdim=True)
            positions.append(torch.arange(num_reference, device=device)[None].float() - ref_len.float())
        else:
            reference_mask = None
        tgt_mask = ones(num_target) if target_mask is None else target_mask.to(device, torch.bool)
        segments.append(self.project_latents(x, target_mask))
        masks.append(tgt_mask)
        frames = torch.arange(num_target, device=device, dtype=torch.float32)[None].expand(batch, -1)
        positions.append(frames)
        num_speech = 0
        if speech is not None:
            num_speech = num_target
            segments.append(speech.to(x.dtype))
            valid = tgt_mask if speech_mask is None else speech_mask.to(device, torch.bool) & tgt_mask
            masks.append(valid)
            positions.append(frames)
        num_prompt = prompt.shape[1]
        segments.append(prompt.to(x.dtype))
        masks.append(ones(num_prompt) if prompt_mask is None else prompt_mask.to(device, torch.bool))
        positions.append(torch.full((batch, num_prompt), float("nan"), device=device))  # P: no RoPE

        tokens = torch.cat(segments, dim=1)
        angles = partial_rope_angles(torch.cat(positions, dim=1), self.rope_dim, self.head_dim, self.rope_theta)

        # Per-token timesteps: R clean (Wan timestep 0 = avgen t 1), everything else at t_a. Only two
        # distinct values, so embed both and select per token (the projection is per token).
        e_target = self.time_embedding(wan_timesteps.to(device)[:, None])  # (B, 1, D)
        e0_target = self._project_time(e_target)
        if num_reference:
            e0_clean = self._project_time(self.time_embedding(torch.zeros(1, 1, device=device)))
            is_reference = (torch.arange(tokens.shape[1], device=device) < num_reference)[None, :, None, None]
            e0 = torch.where(is_reference, e0_clean, e0_target)
        else:
            e0 = e0_target
        target_lengths = tgt_mask.sum(dim=1)
        return AudioTokens(
            x=tokens,
            e_target=e_target,
            e0=e0,
            angles=angles[:, None],
            mask=torch.cat(masks, dim=1),
            lengths=(num_reference, num_target, num_speech, num_prompt),
            reference_mask=masks[0] if num_reference else None,
            target_mask=target_mask,
            target_lengths=target_lengths,
        )

    def _project_time(self, e: Tensor) -> Tensor:
        """e (B, L, D) -> e0 (B, L, 6, D); the projection may run in a lower precision than the fp32 time
        embedding (as in :meth:`WanVideoNetwork.time_embeddings`)."""
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype))
        return rearrange(e0, "b l (n d) -> b l n d", n=6)

    def final_layer(self, tokens: Tensor, state: AudioTokens) -> Tensor:
        """Wan's head on the A tokens only: (B, L, D) -> v_wan (B, T_a, C)."""
        target = tokens[:, state.target_slice]
        shift, scale = (self.head_modulation.float() + state.e_target.float()[:, :, None]).unbind(dim=2)
        return self.head(modulate(_layer_norm_fp32(target, eps=self.eps), shift, scale).to(target.dtype))

    # ------------------------------------------------------------------ blocks, in parts (for GLDI) or whole
    def block_part(self, index: int, part: str, x: Tensor, state: AudioTokens) -> Tensor:
        """Block ``index``: ``part`` "all", "self_attention" (self / joint attention) or "ffn", through its forward."""
        block = self.blocks[index]
        if self.mmdit == "dual":
            split = state.lengths[0] + state.lengths[1]
            return block(x, state.e0, state.angles, state.mask, split=split, part=part)
        return block(x, state.e0, None, state.angles, state.mask, part=part)

    def block(self, index: int, x: Tensor, state: AudioTokens) -> Tensor:
        """Block ``index`` in full: self/joint attention, then the FFN (no text cross-attention)."""
        return self.block_part(index, "all", x, state)

    def run_blocks(self, state: AudioTokens, checkpoint_fn=None) -> Tensor:
        """The audio-only stack (stages 1-2; no GLDI): every block in full."""
        x = state.x
        for index in range(len(self.blocks)):
            x = self.block(index, x, state) if checkpoint_fn is None else checkpoint_fn(self.block, index, x, state)
        return x
