"""Adaptive layer norm (DiT adaLN-Zero) with global or frame-aligned conditions.

A condition c is either global, (B, Dc), or frame-aligned, (B, T, Dc): one vector per latent
frame (MMAudio's ``extended_c``; OmniSonic Eq. 5, where the visual condition plus the timestep is
upsampled to the latent frame rate). Modulation parameters come back shaped to broadcast against
(B, T, D) in both cases, so blocks never branch on which kind they got.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgen.nn.conv import ChannelLastConv1d

__all__ = ["modulate", "modulate_unit", "gated_residual", "AdaLNZero", "upsample_to_length", "FinalLayer"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift (DiT); scale=shift=0 is the identity. One fused multiply-add."""
    return torch.addcmul(shift, x, 1 + scale)


def modulate_unit(x: Tensor, shift: Tensor, unit_scale: Tensor) -> Tensor:
    """x * unit_scale + shift, where ``unit_scale`` already is 1 + scale (:class:`AdaLNZero` with
    ``unit_scales`` folds the 1 into its bias): :func:`modulate` in one op on the full tensor."""
    return torch.addcmul(shift, x, unit_scale)


def gated_residual(x: Tensor, update: Tensor, gate: Tensor) -> Tensor:
    """x + gate * update (adaLN-Zero's gated residual) in one fused multiply-add."""
    return torch.addcmul(x, update, gate)


def upsample_to_length(x: Tensor, length: int, mode: str = "nearest-exact") -> Tensor:
    """Resample a sequence (B, L, D) to (B, length, D) along time.

    nearest-exact repeats each source frame over the latent frames it covers (MMAudio: 192 sync
    tokens -> 250 latents; OmniSonic Eq. 5 nearest upsampling).
    """
    if x.shape[1] == length:
        return x
    return F.interpolate(x.transpose(1, 2), size=length, mode=mode).transpose(1, 2)


class AdaLNZero(nn.Module):
    """SiLU -> Linear(cond_dim, num_params * dim), zero-initialised (adaLN-Zero, DiT).

    Zero init makes every modulated block start as the identity: shift = scale = gate = 0.
    forward(c): c (B, Dc) -> num_params tensors (B, 1, D); c (B, T, Dc) -> (B, T, D).

    Speed options (same parameters, same function to fp32 rounding):

    * ``unit_scales``: indices of the parameters that are scales; they come back as 1 + scale, the
      1 folded into the Linear's bias (a (num_params * D,) add instead of one per modulated
      tensor), for :func:`modulate_unit`.
    * ``forward(c, activated=True)``: c already is SiLU(c). A network whose blocks share one
      condition computes SiLU once per forward instead of once per block (it does not depend on x_t).
    """

    def __init__(self, dim: int, cond_dim: int | None = None, num_params: int = 6, unit_scales: Sequence[int] = ()):
        super().__init__()
        self.num_params = num_params
        if any(not 0 <= i < num_params for i in unit_scales):
            raise ValueError(f"unit_scales {tuple(unit_scales)} must index the {num_params} parameters")
        self.unit_scales = tuple(sorted(set(unit_scales)))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, num_params * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def _unit_offset(self, bias: Tensor) -> Tensor:
        """(num_params * D,) ones at the unit-scale parameters, zeros elsewhere: a constant, kept per
        (dtype, device) outside the state dict (not on the meta device, not while compiling)."""
        key = (bias.dtype, str(bias.device))
        cache = self.__dict__.setdefault("_unit_offsets", {})
        offset = None if torch.compiler.is_compiling() else cache.get(key)
        if offset is None:
            dim = bias.shape[0] // self.num_params
            unit = torch.tensor([float(i in self.unit_scales) for i in range(self.num_params)], device=bias.device)
            offset = unit.to(bias.dtype).repeat_interleave(dim)
            if bias.device.type != "meta" and not torch.compiler.is_compiling():
                cache[key] = offset
        return offset

    def forward(self, c: Tensor, activated: bool = False) -> tuple[Tensor, ...]:
        if c.dim() == 2:
            c = c.unsqueeze(1)  # global: one set of parameters for all frames
        if c.dim() != 3:
            raise ValueError(f"adaLN condition must be (B, D) or (B, T, D), got {tuple(c.shape)}")
        act, linear = self.adaLN_modulation
        h = c if activated else act(c)
        bias = linear.bias
        if self.unit_scales:
            bias = bias + self._unit_offset(bias)
        return F.linear(h, linear.weight, bias).chunk(self.num_params, dim=-1)


class FinalLayer(nn.Module):
    """LayerNorm -> adaLN (shift, scale) -> projection to the output channels, all zero-init.

    Zero-init output means the network predicts v = 0 at initialisation (DiT), so training starts
    from a neutral velocity field. kernel_size > 1 uses a Conv1d over time (MMAudio uses 7).
    norm_eps: the LayerNorm's eps (DiT: 1e-6; MMAudio's FinalBlock: torch's default 1e-5).
    """

    def __init__(
        self, dim: int, out_dim: int, cond_dim: int | None = None, kernel_size: int = 1, norm_eps: float = 1e-6
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.modulation = AdaLNZero(dim, cond_dim, num_params=2, unit_scales=(1,))
        self.kernel_size = kernel_size
        self.proj = nn.Linear(dim, out_dim) if kernel_size == 1 else ChannelLastConv1d(dim, out_dim, kernel_size)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, c: Tensor, mask: Tensor | None = None, c_activated: bool = False) -> Tensor:
        """c_activated: c already is SiLU(c) (see :class:`AdaLNZero`)."""
        shift, unit_scale = self.modulation(c, activated=c_activated)
        x = modulate_unit(self.norm(x), shift, unit_scale)
        return self.proj(x) if self.kernel_size == 1 else self.proj(x, mask)
