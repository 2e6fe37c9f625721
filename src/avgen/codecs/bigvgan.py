"""BigVGAN mel-spectrogram vocoder (Lee et al. 2023, "BigVGAN: A Universal Neural Vocoder with
Large-Scale Training"), a native torch implementation that loads NVIDIA's checkpoints.

Why native: NVIDIA's ``bigvgan`` PyPI package imports librosa at package import and pulls
librosa/numba/nnAudio/pesq/auraloss (twenty packages) for training-only code; the generator itself
is a few plain convolutions. Parameter and buffer names here equal NVIDIA's, so checkpoints load
after folding weight normalisation (:func:`avgen.codecs.checkpoints.fold_weight_norm`).

Generator (BigVGAN Sec. 3): ``conv_pre`` (k=7) -> for each upsampling stage: transposed conv
(stride u, kernel k, padding (k - u) / 2, channels halved) -> the mean of ``len(resblock_kernel_sizes)``
AMP blocks -> anti-aliased Snake(Beta) -> ``conv_post`` (k=7, 1 channel) -> tanh (or clamp to
[-1, 1] when ``use_tanh_at_final`` is false, BigVGAN-v2).

AMP block: residual units of anti-aliased periodic activations, ``x <- x + conv(act(x))`` (type "2")
or ``x <- x + conv2(act(conv1(act(x))))`` with dilated ``conv1`` (type "1"). The activation is
``Activation1d``: x2 upsampling with a Kaiser-windowed sinc low-pass (12 taps), SnakeBeta
``x + 1 / (beta + 1e-9) * sin^2(alpha x)`` (alpha, beta stored in log scale when ``snake_logscale``),
then a low-pass x2 downsampling - the alias-free activation of StyleGAN3 (Karras et al. 2021).

Presets (``BIGVGAN_PRESETS``): MMAudio's 16 kHz vocoder (Make-An-Audio 2's BigVGAN, 80 mels, 256x,
``best_netG.pt``) and ``nvidia/bigvgan_v2_44khz_128band_512x`` (128 mels, 512x). A checkpoint
directory in NVIDIA's layout (``config.json`` + ``bigvgan_generator.pt``) carries its own config.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avgen.checkpoints import LoadReport, fold_weight_norm, load_mapped_state_dict, read_state_dict, strip_prefixes

_COMMON = dict(
    resblock="1",
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    activation="snakebeta",
    snake_logscale=True,
    upsample_initial_channel=1536,
)
BIGVGAN_PRESETS: dict[str, dict[str, Any]] = {
    # MMAudio ext/bigvgan (Make-An-Audio 2): 16 kHz, 80 mels (fmax 8 kHz, log10), hop 256.
    "mmaudio_16k": dict(
        _COMMON, num_mels=80, upsample_rates=[4, 4, 2, 2, 2, 2], upsample_kernel_sizes=[8, 8, 4, 4, 4, 4],
        sampling_rate=16000, hop_size=256, use_tanh_at_final=True, use_bias_at_final=True,
    ),
    # nvidia/bigvgan_v2_44khz_128band_512x: 44.1 kHz, 128 mels (fmax 22.05 kHz, ln), hop 512.
    "nvidia/bigvgan_v2_44khz_128band_512x": dict(
        _COMMON, num_mels=128, upsample_rates=[8, 4, 2, 2, 2, 2], upsample_kernel_sizes=[16, 8, 4, 4, 4, 4],
        sampling_rate=44100, hop_size=512, use_tanh_at_final=False, use_bias_at_final=False,
    ),
}
_REQUIRED = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock",
             "resblock_kernel_sizes", "resblock_dilation_sizes", "activation")


# ---- anti-aliased periodic activation ----------------------------------------------------------
def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """(1, 1, kernel_size) Kaiser-windowed sinc low-pass, unit DC gain (StyleGAN3 / BigVGAN filter).

    Kaiser beta from the transition width (Kaiser's formula: attenuation
    A = 2.285 (N/2 - 1) pi (4 half_width) + 7.95); taps at half-integer times for even sizes.
    """
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class LowPassFilter1d(nn.Module):
    """Depthwise low-pass with replicate padding and a stride (the decimating half of a resampler)."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int = 12) -> None:
        super().__init__()
        self.stride = stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, T // stride)
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(x.shape[1], -1, -1).to(x.dtype), stride=self.stride, groups=x.shape[1])


class UpSample1d(nn.Module):
    """Zero-stuffing x ratio upsampling through a sinc low-pass (transposed depthwise conv)."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, ratio * T)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        w = self.filter.expand(x.shape[1], -1, -1).to(x.dtype)
        x = self.ratio * F.conv_transpose1d(x, w, stride=self.ratio, groups=x.shape[1])
        return x[..., self.crop_left : x.shape[-1] - self.crop_right]


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class Snake(nn.Module):
    """``x + 1 / (alpha + 1e-9) * sin^2(alpha x)`` per channel (Ziyin et al. 2020)."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        alpha = alpha.exp() if self.logscale else alpha
        return x + 1.0 / (alpha + 1e-9) * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """``x + 1 / (beta + 1e-9) * sin^2(alpha x)``: separate frequency (alpha) and magnitude (beta)."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: Tensor) -> Tensor:
        alpha, beta = self.alpha[None, :, None], self.beta[None, :, None]
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + 1.0 / (beta + 1e-9) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """Anti-aliased activation: upsample x2 -> periodic nonlinearity -> downsample x2."""

    def __init__(self, act: nn.Module, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(ratio, kernel_size)
        self.downsample = DownSample1d(ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _activation(kind: str, channels: int, logscale: bool) -> Activation1d:
    if kind == "snakebeta":
        return Activation1d(SnakeBeta(channels, logscale))
    if kind == "snake":
        return Activation1d(Snake(channels, logscale))
    raise ValueError(f"BigVGAN: activation must be 'snake' or 'snakebeta', got {kind!r}")


def _same_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)


class AMPBlock1(nn.Module):
    """Per dilation d: x <- x + conv2(act(conv1_d(act(x)))) (anti-aliased multi-periodicity block)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], activation: str, logscale: bool) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_same_conv(channels, kernel_size, 1) for _ in dilations)
        self.activations = nn.ModuleList(_activation(activation, channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x


class AMPBlock2(nn.Module):
    """Per dilation d: x <- x + conv_d(act(x))."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], activation: str, logscale: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)
        self.activations = nn.ModuleList(_activation(activation, channels, logscale) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x


class BigVGAN(nn.Module):
    """Mel (B, num_mels, T) -> waveform (B, 1, T * prod(upsample_rates)) in [-1, 1].

    ``config`` uses NVIDIA's ``config.json`` keys; unknown keys (training settings) are kept in
    ``self.config`` and ignored.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        missing = [k for k in _REQUIRED if k not in config]
        if missing:
            raise ValueError(f"BigVGAN config lacks {missing}; give a full NVIDIA-style config.json")
        if len(config["upsample_rates"]) != len(config["upsample_kernel_sizes"]):
            raise ValueError("BigVGAN config: upsample_rates and upsample_kernel_sizes differ in length")
        self.config = dict(config)
        c = self.config
        logscale = bool(c.get("snake_logscale", True))
        block_cls = {"1": AMPBlock1, "2": AMPBlock2}.get(str(c["resblock"]))
        if block_cls is None:
            raise ValueError(f"BigVGAN config: resblock must be '1' or '2', got {c['resblock']!r}")
        self.num_kernels = len(c["resblock_kernel_sizes"])
        self.hop_length = math.prod(c["upsample_rates"])
        width = c["upsample_initial_channel"]
        if width // 2 ** len(c["upsample_rates"]) < 1:
            raise ValueError(
                f"BigVGAN config: upsample_initial_channel={width} halves to 0 channels over "
                f"{len(c['upsample_rates'])} upsampling stages; use at least {2 ** len(c['upsample_rates'])}"
            )
        self.conv_pre = nn.Conv1d(c["num_mels"], width, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(c["upsample_rates"], c["upsample_kernel_sizes"])):
            ch_in, ch = width // 2**i, width // 2 ** (i + 1)
            # A one-element list: NVIDIA's layout (``ups.{i}.0.weight``).
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(ch_in, ch, k, u, padding=(k - u) // 2)]))
            for kernel, dilations in zip(c["resblock_kernel_sizes"], c["resblock_dilation_sizes"]):
                self.resblocks.append(block_cls(ch, kernel, list(dilations), c["activation"], logscale))
        self.activation_post = _activation(c["activation"], ch, logscale)
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=bool(c.get("use_bias_at_final", True)))
        self.use_tanh_at_final = bool(c.get("use_tanh_at_final", True))

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.use_tanh_at_final else x.clamp(-1.0, 1.0)


def map_bigvgan_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """NVIDIA / Make-An-Audio 2 BigVGAN checkpoint -> :class:`BigVGAN` keys.

    Unwraps ``{"generator": state_dict}``, strips ``module.``, folds weight normalisation
    (``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``) into ``weight``.
    """
    if "generator" in state_dict and isinstance(state_dict["generator"], Mapping):
        state_dict = state_dict["generator"]
    return fold_weight_norm(strip_prefixes(state_dict, ("module.",)))


def resolve_bigvgan(name_or_path: str | None, preset: str, overrides: Mapping[str, Any] | None = None) -> tuple[dict, str | None]:
    """(config, checkpoint file or None) for a vocoder source.

    ``None``: the preset's architecture, no weights. A directory: NVIDIA's layout (``config.json`` +
    ``bigvgan_generator.pt``). A file: a generator checkpoint with the preset's architecture (e.g.
    MMAudio's ``best_netG.pt``). Anything else: a Hugging Face repo id fetched with
    ``huggingface_hub`` (from the local cache when offline).
    """
    config: dict[str, Any] = dict(BIGVGAN_PRESETS[preset])
    checkpoint = None
    if name_or_path is None:
        pass
    elif os.path.isdir(name_or_path):
        config_file = os.path.join(name_or_path, "config.json")
        checkpoint = os.path.join(name_or_path, "bigvgan_generator.pt")
        for f in (config_file, checkpoint):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"BigVGAN directory {name_or_path!r} lacks {os.path.basename(f)} (NVIDIA layout)")
        with open(config_file) as fh:
            config = json.load(fh)
    elif os.path.isfile(name_or_path):
        checkpoint = name_or_path
    elif name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        from huggingface_hub import hf_hub_download

        try:
            with open(hf_hub_download(name_or_path, "config.json")) as fh:
                config = json.load(fh)
            checkpoint = hf_hub_download(name_or_path, "bigvgan_generator.pt")
        except Exception as err:  # network / cache miss: say what to do
            raise FileNotFoundError(
                f"BigVGAN {name_or_path!r} is not in the local Hugging Face cache and cannot be downloaded ({err}); "
                "download it elsewhere and pass the directory holding config.json and bigvgan_generator.pt"
            ) from err
    else:
        raise FileNotFoundError(f"BigVGAN: {name_or_path!r} is neither a file, a directory nor a Hugging Face repo id")
    config.update(overrides or {})
    return config, checkpoint


def load_bigvgan_weights(model: BigVGAN, checkpoint: str, *, strict: bool = True) -> LoadReport:
    state = read_state_dict(checkpoint, what="BigVGAN")
    return load_mapped_state_dict(model, map_bigvgan_state_dict(state), strict=strict, source=f"BigVGAN {checkpoint}")
