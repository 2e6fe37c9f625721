"""The Wan video VAE (Wan2.1 / Wan2.2) through diffusers' ``AutoencoderKLWan``, normalised as Wan does.

Wan2.2-TI2V-5B's VAE (``Wan2.2_VAE.pth``; diffusers ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, subfolder
``vae``): 48 latent channels, stride (4, 16, 16) (2x2 pixel patchify + 8x convolutional), causal in
time: F = 4k + 1 frames -> k + 1 latent frames, the first frame encoded alone.

The diffusers model returns *raw* latents; the Wan pipelines normalise them per channel with the
48-value ``latents_mean`` / ``latents_std`` tables of the VAE config (Wan's ``Wan2_2_VAE.__init__``
holds the same tables): z_n = (mu - mean_c) / std_c, and decode feeds z_n * std_c + mean_c. This
wrapper applies exactly that, so ``encode`` gives what Wan's DiT was trained on. Encoding takes the
posterior mean (Wan's ``encode`` returns mu; diffusers' pipelines use ``sample_mode="argmax"`` for
the image condition); ``sample_posterior=True`` draws from it instead.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from avgen.codecs.video import VideoCodec

__all__ = ["WanVideoCodec"]


class WanVideoCodec(VideoCodec):
    """Frames (B, F, 3, H, W) in [0, 1] <-> normalised Wan latents (B, T, C, h, w)."""

    causal = True

    def __init__(self, vae, *, sample_posterior: bool = False):
        super().__init__()
        config = vae.config
        self.vae = vae
        self.sample_posterior = sample_posterior
        self.latent_channels = int(config.z_dim)
        # diffusers' _encode processes the first frame, then chunks of 4: the time stride is 4 by construction
        self.temporal_stride = 2 ** sum(bool(d) for d in config.temperal_downsample)
        if self.temporal_stride != 4:
            raise ValueError(f"AutoencoderKLWan encodes in chunks of 4 frames; this config has stride {self.temporal_stride}")
        self.spatial_stride = (config.patch_size or 1) * 2 ** (len(config.dim_mult) - 1)
        mean, std = config.latents_mean, config.latents_std
        if len(mean) != self.latent_channels or len(std) != self.latent_channels:
            raise ValueError(
                f"the VAE config has {len(mean)} latents_mean / {len(std)} latents_std values for z_dim "
                f"{self.latent_channels}; use the config.json shipped with the checkpoint"
            )
        self.register_buffer("latents_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.freeze()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, subfolder: str | None = None, dtype: torch.dtype = torch.float32, **kwargs
    ) -> "WanVideoCodec":
        """Load ``AutoencoderKLWan`` by public name (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) or local folder.

        ``subfolder`` defaults to ``vae`` when the folder is a whole pipeline (has ``vae/``).
        """
        from diffusers import AutoencoderKLWan

        if subfolder is None and os.path.isdir(os.path.join(os.fspath(name_or_path), "vae")):
            subfolder = "vae"
        if subfolder is None and not os.path.isdir(os.fspath(name_or_path)):
            subfolder = "vae"  # a hub name is a pipeline repo
        vae = AutoencoderKLWan.from_pretrained(name_or_path, subfolder=subfolder, torch_dtype=dtype)
        return cls(vae, **kwargs)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)  # diffusers layout (B, C, T, h, w)
        return self.latents_mean.view(shape).to(like), self.latents_std.view(shape).to(like)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        self.check_frames(frames)
        dtype = next(self.vae.parameters()).dtype
        x = (frames * 2.0 - 1.0).permute(0, 2, 1, 3, 4).to(dtype)  # (B, 3, F, H, W) in [-1, 1]
        posterior = self.vae.encode(x).latent_dist
        mu = posterior.sample() if self.sample_posterior else posterior.mean
        mean, std = self._stats(mu.float())
        return ((mu.float() - mean) / std).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        if latents.dim() != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"latents must be (B, T, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        z = latents.float().permute(0, 2, 1, 3, 4)
        mean, std = self._stats(z)
        dtype = next(self.vae.parameters()).dtype
        video = self.vae.decode((z * std + mean).to(dtype)).sample  # (B, 3, F, H, W) in [-1, 1]
        return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)
