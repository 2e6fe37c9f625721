"""A weight-free audio codec: normalised log-mel spectrogram, Griffin-Lim back to a waveform.

Used by the tiny configs (no VAE or vocoder weights needed) and as a reference point. Analysis
follows MMAudio's ``ext/mel_converter.py``: reflect padding of (n_fft - hop) / 2 on each side,
``center=False``, periodic Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filters,
log of the magnitude mel clamped at 1e-5 (natural log, as MMAudio's 44.1 kHz converter).

The latent is ``(log(clamp(mel, 1e-5)) - log_mean) / log_std`` with shape (B, T, n_mels), one
frame per hop: the waveform is first zero-padded to a multiple of ``hop_length`` so that
``T = ceil(S / hop_length)`` exactly, frame t covering the hop [t * hop, (t + 1) * hop) at its centre.

Decoding inverts the mel filterbank with non-negative least squares (pseudo-inverse start, then
multiplicative NNLS updates) and recovers the phase with fast Griffin-Lim (Perraudin et al. 2013,
momentum 0.99, as librosa/torchaudio) from a seeded random initial phase, so it is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from avgen.codecs.base import AudioCodec

# Slaney's Auditory Toolbox mel scale (librosa's default, htk=False): linear below 1 kHz,
# logarithmic above, 3 mels per 200 Hz in the linear part.
def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``), through ``transformers.audio_utils``."""
    from transformers.audio_utils import hertz_to_mel

    return torch.as_tensor(hertz_to_mel(hz.detach().cpu().double().numpy(), mel_scale="slaney"), dtype=hz.dtype)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    from transformers.audio_utils import mel_to_hertz

    return torch.as_tensor(mel_to_hertz(mel.detach().cpu().double().numpy(), mel_scale="slaney"), dtype=mel.dtype)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, Slaney mel scale and Slaney area normalisation.

    Filter m rises linearly from edge f[m] to f[m + 1] and falls to f[m + 2], where the n_mels + 2
    edges are equally spaced on the mel scale between f_min and f_max; each filter is scaled by
    2 / (f[m + 2] - f[m]) so that filters have constant area (librosa ``filters.mel`` defaults,
    the filterbank of MMAudio's and AudioLDM's mel converters). Computed by
    ``transformers.audio_utils.mel_filter_bank`` (``norm="slaney", mel_scale="slaney"``) on the CPU:
    these are constants, also needed when a model is built on the meta device (``avgen summary``).
    """
    from transformers.audio_utils import mel_filter_bank

    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"MelCodec: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    weights = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=float(f_min),
        max_frequency=float(f_max), sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
    )  # (n_freq, n_mels), float64
    return torch.tensor(weights.T, dtype=torch.float32, device="cpu")


class MelCodec(AudioCodec):
    """Waveform (B, S) <-> normalised log-mel (B, ceil(S / hop), n_mels). No parameters."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_mean: float = -5.0,
        log_std: float = 2.5,
        griffin_lim_iters: int = 32,
        griffin_lim_momentum: float = 0.99,
        nnls_iters: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if hop_length > n_fft:
            raise ValueError(f"MelCodec: hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        if log_std <= 0:
            raise ValueError(f"MelCodec: log_std must be positive, got {log_std}")
        self.sample_rate, self.hop_length, self.latent_channels = sample_rate, hop_length, n_mels
        self.n_fft, self.log_mean, self.log_std = n_fft, log_mean, log_std
        self.griffin_lim_iters, self.griffin_lim_momentum = griffin_lim_iters, griffin_lim_momentum
        self.nnls_iters, self.seed = nnls_iters, seed
        # Padding that centres frame t on the hop [t*hop, (t+1)*hop) (MMAudio: (n_fft - hop) / 2).
        self.pad_left = (n_fft - hop_length) // 2
        self.pad_right = n_fft - hop_length - self.pad_left
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        # Derived constants, not state: kept out of checkpoints.
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer("mel_basis", fb, persistent=False)
        self.register_buffer("mel_pinv", torch.linalg.pinv(fb.double()).float(), persistent=False)

    # ---- analysis ------------------------------------------------------------------------------
    def _pad(self, waveform: Tensor) -> Tensor:
        """(B, S) -> (B, S' + n_fft - hop) with S' = ceil(S / hop) * hop."""
        target = self.num_latents(waveform.shape[-1]) * self.hop_length
        x = F.pad(waveform, (0, target - waveform.shape[-1]))
        mode = "reflect" if target > max(self.pad_left, self.pad_right) else "constant"
        return F.pad(x.unsqueeze(1), (self.pad_left, self.pad_right), mode=mode).squeeze(1)

    def stft(self, waveform: Tensor) -> Tensor:
        """(B, S) -> complex (B, n_fft // 2 + 1, ceil(S / hop))."""
        return torch.stft(
            self._pad(waveform), self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True
        )

    def mel_magnitude(self, waveform: Tensor) -> Tensor:
        """(B, S) -> (B, n_mels, T) linear-magnitude mel spectrogram."""
        spec = self.stft(waveform)
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        return self.mel_basis @ magnitude

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, waveform: Tensor) -> Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"MelCodec.encode expects a (B, S) mono waveform, got shape {tuple(waveform.shape)}")
        waveform = waveform.float()
        if waveform.shape[-1] == 0:
            return waveform.new_zeros(waveform.shape[0], 0, self.latent_channels)
        log_mel = torch.log(torch.clamp(self.mel_magnitude(waveform), min=1e-5))
        return ((log_mel - self.log_mean) / self.log_std).transpose(1, 2)

    # ---- synthesis -----------------------------------------------------------------------------
    def istft(self, spec: Tensor) -> Tensor:
        """Least-squares inverse of :meth:`stft`: complex (B, F, T) -> (B, T * hop).

        Weighted overlap-add divided by the summed squared window, then the analysis padding is
        cropped (torch.istft refuses ``center=False`` with a Hann window: zero envelope at the ends).
        """
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]  # (B, n_fft, T)
        num_frames = spec.shape[-1]
        length = (num_frames - 1) * self.hop_length + self.n_fft
        fold = lambda x: F.fold(x, (1, length), (1, self.n_fft), stride=(1, self.hop_length)).flatten(1)  # noqa: E731
        signal = fold(frames)
        envelope = fold(self.window.pow(2)[None, :, None].expand(1, -1, num_frames))
        signal = signal / envelope.clamp(min=1e-8)
        return signal[:, self.pad_left : self.pad_left + num_frames * self.hop_length]

    def mel_to_linear(self, mel: Tensor) -> Tensor:
        """(B, n_mels, T) magnitude mel -> (B, F, T) non-negative linear magnitude.

        Non-negative least squares min ||M x - mel|| s.t. x >= 0: pseudo-inverse start clipped
        at zero, then Lee-Seung multiplicative updates x <- x * (M^T mel) / (M^T M x), which keep
        x non-negative and do not increase the residual.
        """
        basis = self.mel_basis
        x = torch.clamp(self.mel_pinv @ mel, min=1e-8)
        numerator = basis.T @ mel
        gram = basis.T @ basis
        for _ in range(self.nnls_iters):
            x = x * numerator / (gram @ x).clamp(min=1e-12)
        return x

    def griffin_lim(self, magnitude: Tensor) -> Tensor:
        """(B, F, T) linear magnitude -> (B, T * hop) waveform, fast Griffin-Lim with momentum."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        phase = torch.rand(magnitude.shape, generator=generator, dtype=magnitude.dtype) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(phase), phase).to(magnitude.device)
        previous = torch.zeros_like(angles)
        alpha = self.griffin_lim_momentum / (1 + self.griffin_lim_momentum)
        for _ in range(self.griffin_lim_iters):
            rebuilt = self.stft(self.istft(magnitude * angles))
            angles = rebuilt - alpha * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return self.istft(magnitude * angles)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"MelCodec.decode expects (B, T, {self.latent_channels}) latents, got shape {tuple(latents.shape)}"
            )
        latents = latents.float()
        if latents.shape[1] == 0:
            return latents.new_zeros(latents.shape[0], 0)
        # Clamp the log-mel to a sane range: generated latents can stray, exp() must stay finite.
        log_mel = (latents * self.log_std + self.log_mean).clamp(max=20.0).transpose(1, 2)
        magnitude = self.mel_to_linear(torch.exp(log_mel))
        return self.griffin_lim(magnitude)
