"""Stable Audio Open's Oobleck VAE (Evans et al. 2024) through diffusers' ``AutoencoderOobleck``.

A waveform VAE (no mel, no vocoder): strided Snake/ConvNet encoder, 64 latent channels at
``sample_rate / 2048`` (44100 / 2048 = 21.5 Hz), ``std = softplus(scale) + 1e-4`` posterior. The
public VAE (``stabilityai/stable-audio-open-1.0``, subfolder ``vae``; gated on the Hub) is stereo:
a mono input is duplicated to both channels and the decoded stereo pair is averaged back to mono.
avgen's latents are ``(z - latent_mean) / latent_std`` (default 0 / 1: the raw posterior; diffusers
defines no scaling factor for this VAE).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from avgen.codecs.base import AudioCodec
from avgen.checkpoints import building_on_meta


class OobleckCodec(AudioCodec):
    """Waveform (B, S) <-> (B, ceil(S / hop), C) latents of a diffusers ``AutoencoderOobleck``.

    Args:
        pretrained: Hub repo id or local directory (``from_pretrained``); None builds ``config``
            with random weights (tests; the architecture under ``avgen summary``).
        subfolder: subfolder of ``pretrained`` holding the VAE (``"vae"`` for Stable Audio Open).
        config: ``AutoencoderOobleck`` constructor arguments used when ``pretrained`` is None (or
            on the meta device); default: diffusers' defaults = the Stable Audio Open VAE.
        posterior: ``"mean"`` (the posterior mode) or ``"sample"``.
        latent_mean, latent_std: latent normalisation (scalars).
        init_seed: seed of the random initialisation.
    """

    def __init__(
        self,
        pretrained: str | None = "stabilityai/stable-audio-open-1.0",
        subfolder: str | None = "vae",
        config: dict[str, Any] | None = None,
        posterior: Literal["mean", "sample"] = "mean",
        latent_mean: float = 0.0,
        latent_std: float = 1.0,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderOobleck

        if posterior not in ("mean", "sample"):
            raise ValueError(f"OobleckCodec: posterior must be 'mean' or 'sample', got {posterior!r}")
        if latent_std <= 0:
            raise ValueError(f"OobleckCodec: latent_std must be positive, got {latent_std}")
        if pretrained is None or building_on_meta():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                self.vae = AutoencoderOobleck(**(config or {}))
        else:
            try:
                self.vae = AutoencoderOobleck.from_pretrained(pretrained, subfolder=subfolder)
            except (OSError, ValueError) as err:
                raise FileNotFoundError(
                    f"OobleckCodec: cannot load {pretrained!r} (subfolder {subfolder!r}): {err}. The public VAE is gated "
                    "on the Hugging Face Hub; download it where the Hub is reachable and pass the local directory"
                ) from err
        cfg = self.vae.config
        self.posterior, self.latent_mean, self.latent_std = posterior, float(latent_mean), float(latent_std)
        self.audio_channels = int(cfg.audio_channels)
        self.sample_rate = int(cfg.sampling_rate)
        self.hop_length = math.prod(cfg.downsampling_ratios)
        self.latent_channels = int(cfg.decoder_input_channels)
        self.freeze()

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, waveform: Tensor) -> Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"OobleckCodec.encode expects a (B, S) mono waveform, got shape {tuple(waveform.shape)}")
        waveform = waveform.float()
        if waveform.shape[-1] == 0:
            return waveform.new_zeros(waveform.shape[0], 0, self.latent_channels)
        x = F.pad(waveform, (0, self.num_latents(waveform.shape[-1]) * self.hop_length - waveform.shape[-1]))
        x = x.unsqueeze(1).expand(-1, self.audio_channels, -1)  # mono -> the VAE's channels
        dist = self.vae.encode(x).latent_dist
        z = dist.mode() if self.posterior == "mean" else dist.sample()
        return ((z - self.latent_mean) / self.latent_std).transpose(1, 2)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode_posterior(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """The VAE posterior before normalisation: (mean, std), each (B, T, C)."""
        waveform = waveform.float()
        x = F.pad(waveform, (0, self.num_latents(waveform.shape[-1]) * self.hop_length - waveform.shape[-1]))
        dist = self.vae.encode(x.unsqueeze(1).expand(-1, self.audio_channels, -1)).latent_dist
        return dist.mean.transpose(1, 2), dist.std.transpose(1, 2)

    def normalize_latents(self, raw: Tensor) -> Tensor:
        return (raw.float() - self.latent_mean) / self.latent_std

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"OobleckCodec.decode expects (B, T, {self.latent_channels}) latents, got shape {tuple(latents.shape)}"
            )
        latents = latents.float()
        if latents.shape[1] == 0:
            return latents.new_zeros(latents.shape[0], 0)
        z = latents.transpose(1, 2) * self.latent_std + self.latent_mean
        return self.vae.decode(z).sample.mean(dim=1)  # (B, channels, S) -> mono
