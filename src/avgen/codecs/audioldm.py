"""AudioLDM's mel-VAE + HiFi-GAN as an :class:`~avgen.codecs.base.AudioCodec` (OmniSonic's audio VAE).

OmniSonic (§3, A.5) generates in the latent space of AudioLDM's autoencoder: 16 kHz audio, STFT
1024 / hop 160 / Hann 1024, 64 mel bins up to 8 kHz, ``log(clamp(mel, 1e-5))``; the VAE (diffusers
``AutoencoderKL``, one input channel) encodes the log-mel "image" [B, 1, T_frames, 64] into a latent
map [B, 8, T_frames / 4, 16] (10.24 s = 1024 frames -> 8 x 256 x 16), and the ``SpeechT5HifiGan``
vocoder (transformers) turns log-mel frames back into 16 kHz audio. Latents are multiplied by the
VAE's learned ``scaling_factor`` (read from ``vae.config.scaling_factor``; AudioLDM's is the
checkpoint's ``scale_by_std`` value, not Stable Diffusion's 0.18215) and divided by it before decoding.

The flat codec interface is (B, T, C) with time on the sequence axis: the latent map (B, C, T, F)
(channels, time, frequency) is exposed as (B, T, C * F) channel-major (``'b c t f -> b t (c f)'``),
``latent_map_channels`` = C = 8, ``latent_frequency_bins`` = F = 16, ``latent_channels`` = 128.
:meth:`to_latent_map` / :meth:`from_latent_map` convert between the two (the OmniSonic backbone
patchifies the map 2 x 2 over time and frequency). One latent frame covers ``160 * 4 = 640`` samples.

Front end (AudioLDM's ``audioldm/audio/tools.py`` + ``stft.py``, matched exactly by default):

1. ``normalize_wav``: remove the clip's mean, divide by its peak (+ 1e-8) and scale to
   ``peak_normalize`` = 0.5, then clip to [-1, 1] (``get_mel_from_wav``). The VAE was trained on
   such inputs: without this step a clip peaking at 0.9 enters the VAE log(0.9 / 0.5) = 0.59 nats
   higher than AudioLDM's own pipeline would feed it. ``peak_normalize=None`` skips the step (and
   the clipping). With ``lengths`` the mean and peak are taken over each clip's valid samples and
   the padding stays zero (AudioLDM normalises before it pads).
2. Zero-pad to a multiple of ``hop_length * 4`` (AudioLDM pads to its fixed 1024 x 160 samples;
   the multiple makes the VAE's downsampling divide the frame count).
3. ``TacotronSTFT``: reflect-pad n_fft / 2 on both sides, periodic Hann window, magnitude
   sqrt(re^2 + im^2) (no epsilon), Slaney mel filters (librosa defaults; the filterbank of
   :func:`~avgen.codecs.mel.mel_filterbank`), ``log(clamp(mel, 1e-5))``; the S / hop + 1 frames are
   cropped to S / hop (``_pad_spec``), so frame k is centred on sample k * hop.

``frame_alignment="melcodec"`` instead frames as :class:`~avgen.codecs.mel.MelCodec` does
((n_fft - hop) / 2 reflect padding, frame k centred on k * hop + hop / 2, i.e. half a hop later than
AudioLDM's, and sqrt(. + 1e-9)); with ``peak_normalize=None`` that is avgen's earlier front end, kept
as an option for latents computed with it.

Weights: ``pretrained`` is a public diffusers repository (``cvssp/audioldm-m-full``) or a local
directory with ``vae/`` and ``vocoder/`` subfolders (``save_pretrained`` output). Under
``with torch.device("meta")`` the architecture is built from the local configs or the built-in
table ``KNOWN_CONFIGS`` without weights (the scaling factor then defaults to 1.0: counting only).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from einops import rearrange
from torch import Tensor
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from avgen.codecs.base import AudioCodec
from avgen.codecs.mel import MelCodec

FRAME_ALIGNMENTS: tuple[str, ...] = ("audioldm", "melcodec")

# Architectures of cvssp/audioldm-m-full (diffusers conversion script's AudioLDM settings:
# ch 128 x [1, 2, 4], 2 layers per block, 8 latent channels; vocoder upsampling 5*4*2*2*2 = 160).
KNOWN_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "cvssp/audioldm-m-full": {
        "vae": dict(
            in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=1.0,
        ),
        "vocoder": dict(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], normalize_before=False,
        ),
    },
}


def _load_configs(pretrained: str, vae_subfolder: str, vocoder_subfolder: str) -> tuple[dict, SpeechT5HifiGanConfig]:
    """Configs only (meta-device builds): local directory, else the built-in table."""
    if os.path.isdir(pretrained):
        vae_config = dict(AutoencoderKL.load_config(pretrained, subfolder=vae_subfolder))
        vocoder_config = SpeechT5HifiGanConfig.from_pretrained(os.path.join(pretrained, vocoder_subfolder))
        return vae_config, vocoder_config
    if pretrained in KNOWN_CONFIGS:
        known = KNOWN_CONFIGS[pretrained]
        return dict(known["vae"]), SpeechT5HifiGanConfig(**known["vocoder"])
    raise OSError(
        f"AudioLDMCodec: cannot build {pretrained!r} on the meta device: not a local directory and not in "
        f"the built-in table {sorted(KNOWN_CONFIGS)}. Pass a directory with '{vae_subfolder}/' and "
        f"'{vocoder_subfolder}/' configs."
    )


class AudioLDMCodec(AudioCodec):
    """Waveform (B, S) at 16 kHz <-> AudioLDM VAE latents (B, ceil(S / 640), 8 * 16), frozen.

    Args:
        pretrained: diffusers repository name or local directory (see module docstring).
        vae_subfolder, vocoder_subfolder: where the VAE / vocoder live inside ``pretrained``.
        sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max: mel analysis (AudioLDM:
            16000, 1024, 160, 1024, 64, 0, 8000). ``hop_length`` here is the *mel* hop; the codec's
            ``hop_length`` attribute is samples per latent frame (mel hop x VAE downsampling).
        sample_posterior: draw from the VAE posterior in ``encode`` (else its mode, the default).
        peak_normalize: AudioLDM's ``normalize_wav`` target peak (0.5) applied before the mel, with
            mean removal and clipping to [-1, 1]; None feeds the waveform as given.
        frame_alignment: ``"audioldm"`` (TacotronSTFT framing, the default) or ``"melcodec"``
            (MelCodec's framing, half a hop later; see the module docstring).
    """

    def __init__(
        self,
        pretrained: str = "cvssp/audioldm-m-full",
        vae_subfolder: str = "vae",
        vocoder_subfolder: str = "vocoder",
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        win_length: int = 1024,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        sample_posterior: bool = False,
        peak_normalize: float | None = 0.5,
        frame_alignment: str = "audioldm",
    ) -> None:
        super().__init__()
        if frame_alignment not in FRAME_ALIGNMENTS:
            raise ValueError(f"AudioLDMCodec: frame_alignment must be one of {FRAME_ALIGNMENTS}, got {frame_alignment!r}")
        if peak_normalize is not None and not 0.0 < peak_normalize <= 1.0:
            raise ValueError(f"AudioLDMCodec: peak_normalize must be in (0, 1] or None, got {peak_normalize}")
        self.peak_normalize = None if peak_normalize is None else float(peak_normalize)
        self.frame_alignment = frame_alignment
        if win_length != n_fft:
            raise ValueError(
                f"AudioLDMCodec: win_length ({win_length}) must equal n_fft ({n_fft}) (AudioLDM uses 1024 / 1024)"
            )
        self.pretrained, self.sample_posterior = pretrained, bool(sample_posterior)
        meta = torch.get_default_device().type == "meta"
        if meta:
            vae_config, vocoder_config = _load_configs(pretrained, vae_subfolder, vocoder_subfolder)
            self.vae = AutoencoderKL(**{k: v for k, v in vae_config.items() if not k.startswith("_")})
            self.vocoder = SpeechT5HifiGan(vocoder_config)
        else:
            self.vae = AutoencoderKL.from_pretrained(pretrained, subfolder=vae_subfolder, torch_dtype=torch.float32)
            self.vocoder = SpeechT5HifiGan.from_pretrained(pretrained, subfolder=vocoder_subfolder, dtype=torch.float32)
        # The mel front end (no parameters): STFT and filterbank from MelCodec.
        with torch.device("cpu"):
            self.mel = MelCodec(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)

        vae_cfg, voc_cfg = self.vae.config, self.vocoder.config
        if vae_cfg.in_channels != 1 or vae_cfg.out_channels != 1:
            raise ValueError(f"AudioLDMCodec: the VAE must map 1 channel (a mel image), got {vae_cfg.in_channels}")
        self.downsample = 2 ** (len(vae_cfg.block_out_channels) - 1)
        if n_mels % self.downsample:
            raise ValueError(f"AudioLDMCodec: n_mels={n_mels} is not divisible by the VAE downsampling {self.downsample}")
        if voc_cfg.model_in_dim != n_mels:
            raise ValueError(f"AudioLDMCodec: the vocoder takes {voc_cfg.model_in_dim} mel bins, the codec has n_mels={n_mels}")
        vocoder_hop = 1
        for r in voc_cfg.upsample_rates:
            vocoder_hop *= int(r)
        if vocoder_hop != hop_length:
            raise ValueError(
                f"AudioLDMCodec: the vocoder upsamples by {vocoder_hop} but the mel hop is {hop_length}; they must match"
            )
        if int(voc_cfg.sampling_rate) != int(sample_rate):
            raise ValueError(
                f"AudioLDMCodec: the vocoder runs at {voc_cfg.sampling_rate} Hz, the codec at sample_rate={sample_rate}"
            )

        self.sample_rate = int(sample_rate)
        self.mel_hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.hop_length = self.mel_hop_length * self.downsample  # waveform samples per latent frame
        self.latent_map_channels = int(vae_cfg.latent_channels)
        self.latent_frequency_bins = self.n_mels // self.downsample
        self.latent_channels = self.latent_map_channels * self.latent_frequency_bins
        self.scaling_factor = float(vae_cfg.scaling_factor)
        self.freeze()

    # ---- layout helpers ----------------------------------------------------------------------
    def to_latent_map(self, latents: Tensor) -> Tensor:
        """(B, T, C * F) flat latents -> (B, C, T, F) latent map."""
        return rearrange(latents, "b t (c f) -> b c t f", c=self.latent_map_channels, f=self.latent_frequency_bins)

    def from_latent_map(self, latent_map: Tensor) -> Tensor:
        """(B, C, T, F) latent map -> (B, T, C * F) flat latents."""
        if latent_map.ndim != 4 or latent_map.shape[1] != self.latent_map_channels or latent_map.shape[3] != self.latent_frequency_bins:
            raise ValueError(
                f"AudioLDMCodec: expected a latent map (B, {self.latent_map_channels}, T, {self.latent_frequency_bins}), "
                f"got {tuple(latent_map.shape)}"
            )
        return rearrange(latent_map, "b c t f -> b t (c f)")

    # ---- mel ---------------------------------------------------------------------------------
    def normalize_waveform(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """AudioLDM's ``normalize_wav`` + clip: (x - mean) / (max|x - mean| + 1e-8) * peak, in [-1, 1].

        Statistics per clip over its valid samples (``lengths`` (B,), default: all); the padding
        past a length stays zero. Identity when ``peak_normalize`` is None.
        """
        if self.peak_normalize is None:
            return waveform
        valid = torch.ones_like(waveform, dtype=torch.bool)
        if lengths is not None:
            valid = torch.arange(waveform.shape[-1], device=waveform.device)[None, :] < lengths.to(waveform.device)[:, None]
        weights = valid.to(waveform.dtype)
        mean = (waveform * weights).sum(-1, keepdim=True) / weights.sum(-1, keepdim=True).clamp(min=1.0)
        centred = (waveform - mean) * weights
        peak = centred.abs().amax(dim=-1, keepdim=True)
        return torch.clamp(centred / (peak + 1e-8) * self.peak_normalize, -1.0, 1.0)

    def log_mel(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, S) -> (B, 4 * ceil(S / hop_length), n_mels) natural-log mel (AudioLDM's image, time first)."""
        waveform = self.normalize_waveform(waveform, lengths)
        target = self.num_latents(waveform.shape[-1]) * self.hop_length
        waveform = F.pad(waveform, (0, target - waveform.shape[-1]))
        if self.frame_alignment == "melcodec":
            mel = self.mel.mel_magnitude(waveform)  # (B, n_mels, frames)
        else:  # TacotronSTFT: centred frames (n_fft / 2 reflect padding), the extra last frame cropped
            n_fft, hop = self.mel.n_fft, self.mel_hop_length
            mode = "reflect" if target > n_fft // 2 else "constant"
            padded = F.pad(waveform[:, None], (n_fft // 2, n_fft // 2), mode=mode)[:, 0]
            spec = torch.stft(padded, n_fft, hop, window=self.mel.window, center=False, return_complex=True)
            magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2))[..., : target // hop]
            mel = self.mel.mel_basis @ magnitude
        return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, S) -> (B, ceil(S / 640), C * F); ``lengths`` (B,) valid samples for the normalisation."""
        if waveform.ndim != 2:
            raise ValueError(f"AudioLDMCodec.encode expects a (B, S) mono waveform, got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] == 0:
            return waveform.new_zeros(waveform.shape[0], 0, self.latent_channels)
        image = self.log_mel(waveform.float(), lengths)[:, None]  # (B, 1, frames, n_mels)
        posterior = self.vae.encode(image).latent_dist
        z = posterior.sample() if self.sample_posterior else posterior.mode()  # (B, C, T, F)
        return self.from_latent_map(z * self.scaling_factor)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def decode_mel(self, latents: Tensor) -> Tensor:
        """(B, T, C * F) normalised latents -> (B, 4 T, n_mels) log-mel."""
        image = self.vae.decode(self.to_latent_map(latents.float()) / self.scaling_factor).sample  # (B, 1, 4T, n_mels)
        return image[:, 0]

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.latent_channels:
            raise ValueError(
                f"AudioLDMCodec.decode expects (B, T, {self.latent_channels}) latents, got shape {tuple(latents.shape)}"
            )
        if latents.shape[1] == 0:
            return latents.new_zeros(latents.shape[0], 0)
        waveform = self.vocoder(self.decode_mel(latents))  # (B, 4T * mel_hop)
        return waveform.reshape(latents.shape[0], -1)
