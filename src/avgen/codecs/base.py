"""The codec interface every audio autoencoder / vocoder pair implements.

Latents are (B, T, C): time on the sequence axis, channels last (the layout every backbone in
avgen works in). ``encode`` returns *normalised* latents (roughly zero mean, unit variance per
channel), ready to be the flow-matching data point x1; ``decode`` inverts that.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class AudioCodec(nn.Module, ABC):
    """Waveform (B, S) <-> latents (B, T, C).

    Subclasses set ``sample_rate`` (Hz), ``hop_length`` (waveform samples per latent frame) and
    ``latent_channels``. Codecs are frozen by default: their parameters are excluded from training.
    """

    sample_rate: int
    hop_length: int
    latent_channels: int

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    def num_latents(self, num_samples: int) -> int:
        """Number of latent frames ``encode`` produces for ``num_samples`` waveform samples."""
        return math.ceil(num_samples / self.hop_length)

    def num_samples(self, num_latents: int) -> int:
        """Number of waveform samples ``decode`` produces for ``num_latents`` frames."""
        return num_latents * self.hop_length

    def latent_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Valid latent frames for valid waveform lengths (B,) -> (B,)."""
        return torch.div(sample_lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")

    @abstractmethod
    def encode(self, waveform: Tensor) -> Tensor:
        """(B, S) float waveform in [-1, 1] at ``sample_rate`` -> (B, T, C) normalised latents."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """(B, T, C) normalised latents -> (B, S) waveform."""

    # ---- precomputed posteriors (``avgen precompute`` shards) -------------------------------------
    def encode_posterior(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) -> the raw posterior (mean, std), each (B, T, C), *before* normalisation.

        A VAE codec overrides this so shards keep the whole posterior and training can still draw
        x1 = mean + std * eps every step (MMAudio). The default (deterministic codecs) is ``encode``
        with a zero std; its ``normalize_latents`` is then the identity.
        """
        latents = self.encode(waveform)
        return latents, torch.zeros_like(latents)

    def normalize_latents(self, raw: Tensor) -> Tensor:
        """Raw posterior-space latents (B, T, C) -> the normalised latents ``encode`` returns."""
        return raw

    def latents_from_posterior(self, mean: Tensor, std: Tensor, *, sample: bool | None = None) -> Tensor:
        """Normalised latents from a stored raw posterior: its mean, or a draw mean + std * eps.

        ``sample=None`` follows the codec's own ``posterior`` option (``"sample"`` draws, as ``encode`` does).
        """
        if sample is None:
            sample = getattr(self, "posterior", "mean") == "sample"
        raw = mean + std * torch.randn_like(mean) if sample else mean
        return self.normalize_latents(raw)

    def freeze(self) -> "AudioCodec":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "AudioCodec":
        # A frozen codec stays in eval mode (no dropout / batch-norm updates) under Lightning's .train().
        return super().train(False)
