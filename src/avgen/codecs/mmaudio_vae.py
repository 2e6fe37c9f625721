"""MMAudio's mel-spectrogram VAE (Cheng et al. 2025, ``mmaudio/ext/autoencoder``), written for avgen.

A 1-D convolutional VAE over log-mel frames built from EDM2 magnitude-preserving layers
(Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models"):

* ``MPConv1D`` (EDM2 Eq. 47 with the weight normalisation of Eq. 66): the stored weight ``v`` is
  used as ``w = v / (eps + ||v_o|| / sqrt(fan_in)) / sqrt(fan_in)`` per output channel ``o``, i.e.
  every output filter has unit norm scaled by ``1 / sqrt(fan_in)``, so unit-variance inputs give
  unit-variance outputs. MMAudio bakes this into the weight once after loading
  (``remove_weight_norm``); here it is computed in ``forward`` from the stored tensor, which gives
  the same numbers from the same checkpoint tensors (and no load-order state flag).
* ``mp_silu(x) = silu(x) / 0.596`` (EDM2 Eq. 81), ``mp_sum(a, b, t) = lerp(a, b, t) / sqrt((1-t)^2 + t^2)``
  (EDM2 Eq. 88), ``normalize`` (pixel norm: unit RMS over the chosen dims, eps 1e-4).

Layout (MMAudio ``VAE``/``Encoder1D``/``Decoder1D``): ``ch_mult (1, 2, 4)``, 2 residual blocks per
encoder level (3 per decoder level), one x2 temporal downsample after encoder level 0 (1x1 conv,
average pool, 1x1 conv) mirrored by a nearest-exact x2 upsample + conv after decoder level 1,
attention only in the middle blocks, activations clamped at +-256 after every block, the output
conv scaled by ``1 + learnable_gain``. The log-mel input is standardised per mel bin with the
``data_mean``/``data_std`` tables below (MMAudio's hard-coded VGGSound statistics) before
encoding and un-standardised after decoding.

Presets: 16 kHz 80 mels -> 20 latent channels (hidden 384); 44.1 kHz 128 mels -> 40 (hidden 512).
Parameter names equal MMAudio's, so :func:`map_mmaudio_vae_state_dict` only has to strip wrapper
prefixes and reshape the stored ``(1, n_mels, 1)`` standardisation buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avgen.checkpoints import LoadReport, load_mapped_state_dict, read_state_dict, strip_prefixes

# fmt: off
# Per-mel-bin log-mel statistics MMAudio standardises its VAE input with (``vae.py``).
DATA_MEAN_80D = [
    -1.6058, -1.3676, -1.2520, -1.2453, -1.2078, -1.2224, -1.2419, -1.2439, -1.2922, -1.2927,
    -1.3170, -1.3543, -1.3401, -1.3836, -1.3907, -1.3912, -1.4313, -1.4152, -1.4527, -1.4728,
    -1.4568, -1.5101, -1.5051, -1.5172, -1.5623, -1.5373, -1.5746, -1.5687, -1.6032, -1.6131,
    -1.6081, -1.6331, -1.6489, -1.6489, -1.6700, -1.6738, -1.6953, -1.6969, -1.7048, -1.7280,
    -1.7361, -1.7495, -1.7658, -1.7814, -1.7889, -1.8064, -1.8221, -1.8377, -1.8417, -1.8643,
    -1.8857, -1.8929, -1.9173, -1.9379, -1.9531, -1.9673, -1.9824, -2.0042, -2.0215, -2.0436,
    -2.0766, -2.1064, -2.1418, -2.1855, -2.2319, -2.2767, -2.3161, -2.3572, -2.3954, -2.4282,
    -2.4659, -2.5072, -2.5552, -2.6074, -2.6584, -2.7107, -2.7634, -2.8266, -2.8981, -2.9673,
]
DATA_STD_80D = [
    1.0291, 1.0411, 1.0043, 0.9820, 0.9677, 0.9543, 0.9450, 0.9392, 0.9343, 0.9297, 0.9276, 0.9263,
    0.9242, 0.9254, 0.9232, 0.9281, 0.9263, 0.9315, 0.9274, 0.9247, 0.9277, 0.9199, 0.9188, 0.9194,
    0.9160, 0.9161, 0.9146, 0.9161, 0.9100, 0.9095, 0.9145, 0.9076, 0.9066, 0.9095, 0.9032, 0.9043,
    0.9038, 0.9011, 0.9019, 0.9010, 0.8984, 0.8983, 0.8986, 0.8961, 0.8962, 0.8978, 0.8962, 0.8973,
    0.8993, 0.8976, 0.8995, 0.9016, 0.8982, 0.8972, 0.8974, 0.8949, 0.8940, 0.8947, 0.8936, 0.8939,
    0.8951, 0.8956, 0.9017, 0.9167, 0.9436, 0.9690, 1.0003, 1.0225, 1.0381, 1.0491, 1.0545, 1.0604,
    1.0761, 1.0929, 1.1089, 1.1196, 1.1176, 1.1156, 1.1117, 1.1070,
]
DATA_MEAN_128D = [
    -3.3462, -2.6723, -2.4893, -2.3143, -2.2664, -2.3317, -2.1802, -2.4006, -2.2357, -2.4597,
    -2.3717, -2.4690, -2.5142, -2.4919, -2.6610, -2.5047, -2.7483, -2.5926, -2.7462, -2.7033,
    -2.7386, -2.8112, -2.7502, -2.9594, -2.7473, -3.0035, -2.8891, -2.9922, -2.9856, -3.0157,
    -3.1191, -2.9893, -3.1718, -3.0745, -3.1879, -3.2310, -3.1424, -3.2296, -3.2791, -3.2782,
    -3.2756, -3.3134, -3.3509, -3.3750, -3.3951, -3.3698, -3.4505, -3.4509, -3.5089, -3.4647,
    -3.5536, -3.5788, -3.5867, -3.6036, -3.6400, -3.6747, -3.7072, -3.7279, -3.7283, -3.7795,
    -3.8259, -3.8447, -3.8663, -3.9182, -3.9605, -3.9861, -4.0105, -4.0373, -4.0762, -4.1121,
    -4.1488, -4.1874, -4.2461, -4.3170, -4.3639, -4.4452, -4.5282, -4.6297, -4.7019, -4.7960,
    -4.8700, -4.9507, -5.0303, -5.0866, -5.1634, -5.2342, -5.3242, -5.4053, -5.4927, -5.5712,
    -5.6464, -5.7052, -5.7619, -5.8410, -5.9188, -6.0103, -6.0955, -6.1673, -6.2362, -6.3120,
    -6.3926, -6.4797, -6.5565, -6.6511, -6.8130, -6.9961, -7.1275, -7.2457, -7.3576, -7.4663,
    -7.6136, -7.7469, -7.8815, -8.0132, -8.1515, -8.3071, -8.4722, -8.7418, -9.3975, -9.6628,
    -9.7671, -9.8863, -9.9992, -10.0860, -10.1709, -10.5418, -11.2795, -11.3861,
]
DATA_STD_128D = [
    2.3804, 2.4368, 2.3772, 2.3145, 2.2803, 2.2510, 2.2316, 2.2083, 2.1996, 2.1835, 2.1769, 2.1659,
    2.1631, 2.1618, 2.1540, 2.1606, 2.1571, 2.1567, 2.1612, 2.1579, 2.1679, 2.1683, 2.1634, 2.1557,
    2.1668, 2.1518, 2.1415, 2.1449, 2.1406, 2.1350, 2.1313, 2.1415, 2.1281, 2.1352, 2.1219, 2.1182,
    2.1327, 2.1195, 2.1137, 2.1080, 2.1179, 2.1036, 2.1087, 2.1036, 2.1015, 2.1068, 2.0975, 2.0991,
    2.0902, 2.1015, 2.0857, 2.0920, 2.0893, 2.0897, 2.0910, 2.0881, 2.0925, 2.0873, 2.0960, 2.0900,
    2.0957, 2.0958, 2.0978, 2.0936, 2.0886, 2.0905, 2.0845, 2.0855, 2.0796, 2.0840, 2.0813, 2.0817,
    2.0838, 2.0840, 2.0917, 2.1061, 2.1431, 2.1976, 2.2482, 2.3055, 2.3700, 2.4088, 2.4372, 2.4609,
    2.4731, 2.4847, 2.5072, 2.5451, 2.5772, 2.6147, 2.6529, 2.6596, 2.6645, 2.6726, 2.6803, 2.6812,
    2.6899, 2.6916, 2.6931, 2.6998, 2.7062, 2.7262, 2.7222, 2.7158, 2.7041, 2.7485, 2.7491, 2.7451,
    2.7485, 2.7233, 2.7297, 2.7233, 2.7145, 2.6958, 2.6788, 2.6439, 2.6007, 2.4786, 2.2469, 2.1877,
    2.1392, 2.0717, 2.0107, 1.9676, 1.9140, 1.7102, 0.9101, 0.7164,
]
# fmt: on
_MEL_STATS = {80: (DATA_MEAN_80D, DATA_STD_80D), 128: (DATA_MEAN_128D, DATA_STD_128D)}

# MMAudio's two VAEs (``VAE_16k`` / ``VAE_44k``).
VAE_PRESETS: dict[str, dict] = {
    "16k": dict(data_dim=80, embed_dim=20, hidden_dim=384),
    "44k": dict(data_dim=128, embed_dim=40, hidden_dim=512),
}


# ---- EDM2 magnitude-preserving primitives ------------------------------------------------------
def mp_normalize(x: Tensor, dim: int | Sequence[int] | None = None, eps: float = 1e-4) -> Tensor:
    """Scale ``x`` to unit RMS over ``dim`` (default: all but the first): ``x / (eps + ||x|| / sqrt(n))``."""
    if dim is None:
        dim = list(range(1, x.ndim))
    # reduced in at least fp32 (bf16 / fp16 inputs), fp64 stays fp64
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32))
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    """Magnitude-preserving SiLU (EDM2 Eq. 81): unit-variance Gaussian in, unit second moment out."""
    return F.silu(x) / 0.596


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving blend (EDM2 Eq. 88): ``((1 - t) a + t b) / sqrt((1 - t)^2 + t^2)``."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1D(nn.Module):
    """Bias-free 1-D convolution with a magnitude-preserving weight (EDM2 Eq. 47, 66), 'same' padding.

    ``weight`` (out, in, k) is the stored (raw) tensor of the checkpoint; the effective kernel is
    ``gain * mp_normalize(weight) / sqrt(in * k)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size))

    def effective_weight(self, gain: float | Tensor = 1.0) -> Tensor:
        w = self.weight.to(torch.promote_types(self.weight.dtype, torch.float32))
        return mp_normalize(w) / math.sqrt(w[0].numel()) * gain

    def forward(self, x: Tensor, gain: float | Tensor = 1.0) -> Tensor:
        w = self.effective_weight(gain).to(x.dtype)
        return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResnetBlock1D(nn.Module):
    """pixel-norm -> (mp_silu -> conv) x 2, shortcut 1x1 conv when the width changes, mp_sum(t=0.3)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size)
        if in_dim != out_dim:
            self.nin_shortcut = MPConv1D(in_dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T)
        x = mp_normalize(x, dim=1)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.in_dim != self.out_dim:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, t=0.3)


class AttnBlock1D(nn.Module):
    """Self-attention over time with cosine (pixel-normalised) q, k, v and a 1x1 projection.

    The 3C qkv channels are laid out as (head, channel, {q,k,v}), MMAudio's layout.
    """

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MPConv1D(channels, channels * 3, 1)
        self.proj_out = MPConv1D(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        qkv = rearrange(self.qkv(x), "b (h c three) t -> b h c three t", h=self.num_heads, three=3)
        q, k, v = mp_normalize(qkv, dim=2).unbind(3)  # each (B, H, C/H, T)
        q, k, v = (rearrange(y, "b h c t -> b h t c") for y in (q, k, v))
        h = rearrange(F.scaled_dot_product_attention(q, k, v), "b h t c -> b (h c) t")
        return mp_sum(x, self.proj_out(h), t=0.3)


class Downsample1D(nn.Module):
    """1x1 conv, average pool by 2 along time, 1x1 conv: (B, C, T) -> (B, C, T // 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1)
        self.conv2 = MPConv1D(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample1D(nn.Module):
    """Nearest-exact x2 upsampling along time, then a k=3 conv: (B, C, T) -> (B, C, 2T)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = MPConv1D(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each, optional resampler."""

    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)


class _Mid(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels, kernel_size)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels, kernel_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder1D(nn.Module):
    """Standardised log-mel (B, n_mels, T) -> posterior moments (B, 2 * embed_dim, T / 2^len(down_layers))."""

    def __init__(
        self,
        *,
        in_dim: int,
        embed_dim: int,
        dim: int,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        down_layers: Sequence[int] = (0,),
        attn_layers: Sequence[int] = (),
        kernel_size: int = 3,
        clip_act: float = 256.0,
    ) -> None:
        super().__init__()
        self.clip_act, self.down_layers = clip_act, tuple(down_layers)
        self.conv_in = MPConv1D(in_dim, dim, kernel_size)
        self.down = nn.ModuleList()
        block_in = dim
        for level, mult in enumerate(ch_mult):
            blocks, attn = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock1D(block_in, dim * mult, kernel_size))
                block_in = dim * mult
                if level in attn_layers:
                    attn.append(AttnBlock1D(block_in))
            stage = _Level(blocks, attn)
            if level in self.down_layers:
                stage.downsample = Downsample1D(block_in)
            self.down.append(stage)
        self.mid = _Mid(block_in, kernel_size)
        self.conv_out = MPConv1D(block_in, 2 * embed_dim, kernel_size)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
                h = h.clamp(-self.clip_act, self.clip_act)
            if level in self.down_layers:
                h = stage.downsample(h)
        h = self.mid(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    """Latent (B, embed_dim, T') -> standardised log-mel (B, n_mels, T' * 2^len(down_layers))."""

    def __init__(
        self,
        *,
        out_dim: int,
        embed_dim: int,
        dim: int,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        down_layers: Sequence[int] = (0,),
        attn_layers: Sequence[int] = (),
        kernel_size: int = 3,
        clip_act: float = 256.0,
    ) -> None:
        super().__init__()
        self.clip_act = clip_act
        # Upsampling happens at the end of level l + 1 for an encoder downsample after level l.
        self.up_layers = tuple(level + 1 for level in down_layers)
        block_in = dim * ch_mult[-1]
        self.conv_in = MPConv1D(embed_dim, block_in, kernel_size)
        # MMAudio builds the decoder's middle residual blocks with the default kernel size 3.
        self.mid = _Mid(block_in, 3)
        stages: list[_Level] = []
        for level in reversed(range(len(ch_mult))):
            blocks, attn = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock1D(block_in, dim * ch_mult[level], 3))
                block_in = dim * ch_mult[level]
                if level in attn_layers:
                    attn.append(AttnBlock1D(block_in))
            stage = _Level(blocks, attn)
            if level in self.up_layers:
                stage.upsample = Upsample1D(block_in)
            stages.insert(0, stage)  # self.up[level] is the stage of that level
        self.up = nn.ModuleList(stages)
        self.conv_out = MPConv1D(block_in, out_dim, kernel_size)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z)).clamp(-self.clip_act, self.clip_act)
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
                h = h.clamp(-self.clip_act, self.clip_act)
            if level in self.up_layers:
                h = stage.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class MMAudioVAE(nn.Module):
    """MMAudio's mel VAE: log-mel (B, n_mels, T) <-> latent (B, embed_dim, T / 2).

    ``data_mean``/``data_std`` (per mel bin) default to MMAudio's tables for 80 and 128 mels, to 0/1
    otherwise. ``attn_layers`` is MMAudio's ``[3]`` (no level has index 3 for three levels: attention
    only in the middle blocks); ``down_layers=(0,)`` gives the single x2 time downsample.
    """

    def __init__(
        self,
        *,
        data_dim: int,
        embed_dim: int,
        hidden_dim: int,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        down_layers: Sequence[int] = (0,),
        attn_layers: Sequence[int] = (3,),
        kernel_size: int = 3,
        clip_act: float = 256.0,
    ) -> None:
        super().__init__()
        self.data_dim, self.embed_dim = data_dim, embed_dim
        self.downsample_factor = 2 ** len(down_layers)
        mean, std = _MEL_STATS.get(data_dim, ([0.0] * data_dim, [1.0] * data_dim))
        self.register_buffer("data_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("data_std", torch.tensor(std, dtype=torch.float32))
        shared = dict(
            embed_dim=embed_dim, dim=hidden_dim, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
            down_layers=down_layers, attn_layers=attn_layers, kernel_size=kernel_size, clip_act=clip_act,
        )
        self.encoder = Encoder1D(in_dim=data_dim, **shared)
        self.decoder = Decoder1D(out_dim=data_dim, **shared)

    def normalize(self, log_mel: Tensor) -> Tensor:
        return (log_mel - self.data_mean[:, None]) / self.data_std[:, None]

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.data_std[:, None] + self.data_mean[:, None]

    def encode(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel (B, n_mels, T) -> posterior (mean, logvar), each (B, embed_dim, T / 2).

        As MMAudio's ``DiagonalGaussianDistribution``: moments split in halves along channels,
        logvar clamped to [-30, 20].
        """
        if log_mel.shape[-1] % self.downsample_factor:
            raise ValueError(
                f"MMAudioVAE.encode: {log_mel.shape[-1]} mel frames is not a multiple of {self.downsample_factor}; "
                "pad the waveform to a multiple of the codec hop_length"
            )
        mean, logvar = self.encoder(self.normalize(log_mel)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """Latent (B, embed_dim, T') -> log-mel (B, n_mels, 2 T')."""
        return self.unnormalize(self.decoder(z))


def map_mmaudio_vae_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MMAudio VAE checkpoint (``v1-16.pth`` / ``v1-44.pth``) -> :class:`MMAudioVAE` keys.

    Strips ``module.`` / ``vae.`` wrappers and flattens the ``(1, n_mels, 1)`` ``data_mean`` /
    ``data_std`` buffers (MMAudio reshapes them after registering) to ``(n_mels,)``.
    """
    out = strip_prefixes(state_dict, ("module.", "vae."))
    for key in ("data_mean", "data_std"):
        if key in out:
            out[key] = out[key].reshape(-1)
    return out


def load_mmaudio_vae(vae: MMAudioVAE, path: str, *, strict: bool = True) -> LoadReport:
    """Load an MMAudio VAE checkpoint file into ``vae`` through :func:`map_mmaudio_vae_state_dict`."""
    state = read_state_dict(path, what="MMAudio VAE")
    return load_mapped_state_dict(vae, map_mmaudio_vae_state_dict(state), strict=strict, source=f"MMAudio VAE {path}")
