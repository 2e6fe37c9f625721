"""MMAudio's audio codec: waveform -> log-mel -> mel VAE latent, and back through BigVGAN.

The codec MMAudio (Cheng et al. 2025) trains its flow network in, and the one FoleyGenEx builds on.
FoleyGenEx's own DAC-VAE is not public; this is its substitute (see docs/codecs.md).

* Mel front end = MMAudio's ``MelConverter`` (reflect padding of (n_fft - hop) / 2 on each side,
  ``center=False``, Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filters, clamp at
  1e-5, then log10 at 16 kHz or the natural log at 44.1 kHz), computed by
  :meth:`avgen.codecs.mel.MelCodec.mel_magnitude`.
* 16k: 16 kHz, n_fft 1024, hop 256, 80 mels up to 8 kHz -> 20 latent channels at 31.25 Hz.
  44k: 44.1 kHz, n_fft 2048, hop 512, 128 mels up to 22.05 kHz -> 40 channels at 43.07 Hz.
  The VAE halves the frame rate, so one latent frame = ``hop_length`` = 2 mel hops (512 / 1024).
* Encode: the waveform is zero-padded at the end to a multiple of ``hop_length`` (so
  T = ceil(S / hop_length) exactly), the posterior mean (``posterior="mean"``) or a sample
  ``mean + std * eps`` (``"sample"``, what MMAudio's training uses) is taken, and normalised with the
  per-channel dataset statistics: ``(z - latent_mean) / latent_std``. MMAudio keeps these two
  vectors in its *network* checkpoint; here they are codec buffers, given as numbers / lists or read
  from any checkpoint holding ``latent_mean`` / ``latent_std`` (``latent_stats=`` an MMAudio
  network ``.pth``). Default 0 / 1 (no normalisation).
* Decode: ``z = latents * latent_std + latent_mean`` -> VAE decoder -> log-mel -> BigVGAN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from avgen.codecs.base import AudioCodec
from avgen.codecs.bigvgan import BigVGAN, load_bigvgan_weights, resolve_bigvgan
from avgen.checkpoints import LoadReport, building_on_meta, read_state_dict
from avgen.codecs.mel import MelCodec
from avgen.codecs.mmaudio_vae import VAE_PRESETS, MMAudioVAE, load_mmaudio_vae

MMAUDIO_MODES: dict[str, dict[str, Any]] = {
    "16k": dict(sample_rate=16000, n_fft=1024, mel_hop=256, n_mels=80, f_max=8000.0, log="log10",
                vocoder_preset="mmaudio_16k"),
    "44k": dict(sample_rate=44100, n_fft=2048, mel_hop=512, n_mels=128, f_max=22050.0, log="ln",
                vocoder_preset="nvidia/bigvgan_v2_44khz_128band_512x"),
}


def _stat_vector(value: float | Sequence[float] | Tensor | None, channels: int, default: float, name: str) -> Tensor:
    if value is None:
        value = default
    t = torch.as_tensor(value, dtype=torch.float32, device="cpu").reshape(-1)
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"MMAudioCodec: {name} has {t.numel()} values but the VAE has {channels} latent channels")
    return t.clone()


class MMAudioCodec(AudioCodec):
    """MMAudio's mel VAE + BigVGAN: waveform (B, S) <-> normalised latents (B, ceil(S / hop_length), C).

    Args:
        mode: ``"16k"`` (80 mels -> 20 ch, hop 512 samples) or ``"44k"`` (128 mels -> 40 ch, hop 1024).
        vae_pretrained: MMAudio VAE checkpoint (``v1-16.pth`` / ``v1-44.pth``); None keeps the
            seeded random initialisation (tests, ``avgen summary``).
        vocoder_pretrained: BigVGAN source: a directory in NVIDIA's layout, a generator checkpoint
            file (MMAudio's ``best_netG.pt`` at 16k) or a Hugging Face repo id
            (``nvidia/bigvgan_v2_44khz_128band_512x`` at 44k, from the local cache); None: random.
        latent_mean, latent_std: per-channel latent statistics (a number or C numbers).
        latent_stats: a checkpoint file holding ``latent_mean`` / ``latent_std`` (e.g. an MMAudio
            network ``.pth``); overrides ``latent_mean`` / ``latent_std``.
        posterior: ``"mean"`` (deterministic) or ``"sample"`` (mean + std * eps) for ``encode``.
        strict: raise when a checkpoint does not match exactly (else load what matches and warn).
        overrides: architecture overrides, ``{"vae": {...MMAudioVAE kwargs}, "vocoder": {...BigVGAN config}}``
            (tiny test configs).
        init_seed: seed of the random initialisation (weights not loaded from a checkpoint).
    """

    def __init__(
        self,
        mode: Literal["16k", "44k"] = "44k",
        vae_pretrained: str | None = None,
        vocoder_pretrained: str | None = None,
        latent_mean: float | list[float] | None = None,
        latent_std: float | list[float] | None = None,
        latent_stats: str | None = None,
        posterior: Literal["mean", "sample"] = "mean",
        strict: bool = True,
        overrides: dict[str, dict[str, Any]] | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in MMAUDIO_MODES:
            raise ValueError(f"MMAudioCodec: mode must be one of {sorted(MMAUDIO_MODES)}, got {mode!r}")
        if posterior not in ("mean", "sample"):
            raise ValueError(f"MMAudioCodec: posterior must be 'mean' or 'sample', got {posterior!r}")
        unknown = set(overrides or {}) - {"vae", "vocoder"}
        if unknown:
            raise ValueError(f"MMAudioCodec: overrides takes the keys 'vae' and 'vocoder', got {sorted(unknown)}")
        spec = MMAUDIO_MODES[mode]
        self.mode, self.posterior = mode, posterior
        self.log_base10 = spec["log"] == "log10"
        self.mel_hop = spec["mel_hop"]
        meta = building_on_meta()

        # The mel analysis of MMAudio's MelConverter (MelCodec's STFT/filterbank; its own
        # normalisation and Griffin-Lim are not used).
        self.mel = MelCodec(
            sample_rate=spec["sample_rate"], n_fft=spec["n_fft"], hop_length=spec["mel_hop"],
            n_mels=spec["n_mels"], f_max=spec["f_max"],
        )
        vae_kwargs = dict(VAE_PRESETS[mode], **(overrides or {}).get("vae", {}))
        vocoder_config, vocoder_file = resolve_bigvgan(
            None if meta else vocoder_pretrained, spec["vocoder_preset"], (overrides or {}).get("vocoder")
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.vae = MMAudioVAE(**vae_kwargs)
            self.vocoder = BigVGAN(vocoder_config)
        if self.vae.data_dim != spec["n_mels"] or vocoder_config["num_mels"] != spec["n_mels"]:
            raise ValueError(
                f"MMAudioCodec({mode}): the mel front end has {spec['n_mels']} bins but the VAE takes "
                f"{self.vae.data_dim} and the vocoder {vocoder_config['num_mels']}; do not override data_dim/num_mels"
            )
        if self.vocoder.hop_length != self.mel_hop:
            raise ValueError(
                f"MMAudioCodec({mode}): the vocoder upsamples by {self.vocoder.hop_length} but one mel frame is "
                f"{self.mel_hop} samples; its upsample_rates must multiply to {self.mel_hop}"
            )

        self.sample_rate = spec["sample_rate"]
        self.hop_length = self.mel_hop * self.vae.downsample_factor
        self.latent_channels = self.vae.embed_dim
        channels = self.latent_channels
        mean = _stat_vector(latent_mean, channels, 0.0, "latent_mean")
        std = _stat_vector(latent_std, channels, 1.0, "latent_std")
        if latent_stats is not None and not meta:
            stats = read_state_dict(latent_stats, what="MMAudioCodec latent_stats")
            if "latent_mean" not in stats or "latent_std" not in stats:
                raise ValueError(f"MMAudioCodec: {latent_stats!r} holds no latent_mean / latent_std tensors")
            mean = _stat_vector(stats["latent_mean"], channels, 0.0, f"latent_mean of {latent_stats}")
            std = _stat_vector(stats["latent_std"], channels, 1.0, f"latent_std of {latent_stats}")
        if not meta and not bool((std > 0).all()):
            raise ValueError("MMAudioCodec: latent_std must be positive in every channel")
        self.register_buffer("latent_mean", mean.to(torch.get_default_device()))
        self.register_buffer("latent_std", std.to(torch.get_default_device()))

        self.load_reports: dict[str, LoadReport] = {}
        if not meta:
            if vae_pretrained is not None:
                self.load_reports["vae"] = load_mmaudio_vae(self.vae, vae_pretrained, strict=strict)
            if vocoder_file is not None:
                self.load_reports["vocoder"] = load_bigvgan_weights(self.vocoder, vocoder_file, strict=strict)
        self.freeze()

    # ---- mel front end -------------------------------------------------------------------------
    def log_mel(self, waveform: Tensor) -> Tensor:
        """(B, S) with S a multiple of hop_length -> (B, n_mels, S / mel_hop) log-mel (log10 at 16k, ln at 44k)."""
        magnitude = self.mel.mel_magnitude(waveform).clamp(min=1e-5)
        return torch.log10(magnitude) if self.log_base10 else torch.log(magnitude)

    # ---- codec interface -----------------------------------------------------------------------
    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, waveform: Tensor) -> Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"MMAudioCodec.encode expects a (B, S) mono waveform, got shape {tuple(waveform.shape)}")
        waveform = waveform.float()
        if waveform.shape[-1] == 0:
            return waveform.new_zeros(waveform.shape[0], 0, self.latent_channels)
        target = self.num_latents(waveform.shape[-1]) * self.hop_length
        waveform = torch.nn.functional.pad(waveform, (0, target - waveform.shape[-1]))
        mean, logvar = self.vae.encode(self.log_mel(waveform))  # (B, C, T)
        z = mean if self.posterior == "mean" else mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        z = (z - self.latent_mean[:, None]) / self.latent_std[:, None]
        return z.transpose(1, 2)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode_posterior(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """The VAE posterior before normalisation: (mean, exp(logvar / 2)), each (B, T, C)."""
        waveform = waveform.float()
        target = self.num_latents(waveform.shape[-1]) * self.hop_length
        waveform = torch.nn.functional.pad(waveform, (0, target - waveform.shape[-1]))
        mean, logvar = self.vae.encode(self.log_mel(waveform))  # (B, C, T)
        return mean.transpose(1, 2), torch.exp(0.5 * logvar).transpose(1, 2)

    def normalize_latents(self, raw: Tensor) -> Tensor:
        """(z - latent_mean) / latent_std per channel, on (B, T, C)."""
        return (raw.float() - self.latent_mean) / self.latent_std

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"MMAudioCodec.decode expects (B, T, {self.latent_channels}) latents, got shape {tuple(latents.shape)}"
            )
        latents = latents.float()
        if latents.shape[1] == 0:
            return latents.new_zeros(latents.shape[0], 0)
        z = latents.transpose(1, 2) * self.latent_std[:, None] + self.latent_mean[:, None]
        return self.vocoder(self.vae.decode(z)).squeeze(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, sample_rate={self.sample_rate}, hop_length={self.hop_length}, latent_channels={self.latent_channels}"
