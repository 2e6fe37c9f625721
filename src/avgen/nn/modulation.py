"""Adaptive layer norm (DiT adaLN-Zero) with global or frame-aligned conditions.

A condition c is either global, (B, Dc), or frame-aligned, (B, T, Dc): one vector per latent
frame (MMAudio's ``extended_c``; OmniSonic Eq. 5, where the visual condition plus the timestep is
upsampled to the latent frame rate). Modulation parameters come back shaped to broadcast against
(B, T, D) in both cases, so blocks never branch on which kind they got.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from avgen.nn.conv import ChannelLastConv1d

__all__ = ["modulate", "AdaLNZero", "upsample_to_length", "FinalLayer"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift (DiT); scale=shift=0 is the identity."""
    return x * (1 + scale) + shift


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
    """

    def __init__(self, dim: int, cond_dim: int | None = None, num_params: int = 6):
        super().__init__()
        self.num_params = num_params
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, num_params * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        if c.dim() == 2:
            c = c.unsqueeze(1)  # global: one set of parameters for all frames
        if c.dim() != 3:
            raise ValueError(f"adaLN condition must be (B, D) or (B, T, D), got {tuple(c.shape)}")
        return self.adaLN_modulation(c).chunk(self.num_params, dim=-1)


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
        self.modulation = AdaLNZero(dim, cond_dim, num_params=2)
        self.kernel_size = kernel_size
        self.proj = nn.Linear(dim, out_dim) if kernel_size == 1 else ChannelLastConv1d(dim, out_dim, kernel_size)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, c: Tensor, mask: Tensor | None = None) -> Tensor:
        shift, scale = self.modulation(c)
        x = modulate(self.norm(x), shift, scale)
        return self.proj(x) if self.kernel_size == 1 else self.proj(x, mask)
