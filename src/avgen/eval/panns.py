"""PANNs Cnn14 (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks", Sec. 3.1,
Table 1): the AudioSet tagger behind FD_PANNs, KL_PANNs and IS in MMAudio's av-benchmark.

An own implementation of the 16 kHz Cnn14 with the parameter names of the public checkpoint
``Cnn14_16k_mAP=0.438.pth`` (zenodo record 3987831; a dict whose ``"model"`` entry is the state
dict), so that file loads with ``load_state_dict(strict=True)``:

* front-end (the checkpoint stores it): ``spectrogram_extractor.stft.conv_real/conv_imag.weight``
  (n_fft//2+1, 1, n_fft) - a DFT with a periodic Hann window as a strided 1-d convolution over the
  reflect-padded signal (``center=True``), power = real^2 + imag^2; ``logmel_extractor.melW``
  (n_fft//2+1, 64) - librosa's Slaney mel filters (50-8000 Hz); 10 log10(max(mel, 1e-10)).
  16 kHz: window 512, hop 160, 64 mel bins (av-benchmark ``extraction_models.py``).
* ``bn0`` over the 64 mel bins, six ``conv_block{i}`` (two 3x3 convolutions without bias, each
  followed by batch norm and ReLU; 2x2 average pooling, 1x1 in the last) of widths
  64..2048, the mean over frequency, max + mean over time, ``fc1`` (2048) + ReLU: the 2048-d
  embedding FD_PANNs uses; ``fc_audioset`` on it: the 527 logits (KL and IS take their softmax).

The widths are read from the state dict, so a tiny local instance (used in the tests) loads through
the same path as the real file. Evaluation mode only: dropout and SpecAugment are training-time.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.codecs.mel import mel_filterbank
from avgen.eval.backends import BackendUnavailable, EmbeddingBackend, load_weights_file

__all__ = ["Cnn14", "PannsBackend", "CNN14_16K"]

# The 16 kHz checkpoint's front-end (av-benchmark: Cnn14(sample_rate=16000, window_size=512,
# hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527)).
CNN14_16K = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50.0, fmax=8000.0)
CNN14_WIDTHS = (64, 128, 256, 512, 1024, 2048)


class _Stft(nn.Module):
    """The DFT as two fixed 1-d convolutions (``conv_real`` / ``conv_imag``), as the checkpoint stores it."""

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
        angle = 2 * np.pi * np.outer(k, n) / n_fft
        self.conv_real = nn.Conv1d(1, len(k), n_fft, bias=False)
        self.conv_imag = nn.Conv1d(1, len(k), n_fft, bias=False)
        with torch.no_grad():  # e^{-i angle} * window
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(angle) * window)[:, None])
            self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(angle) * window)[:, None])
        self.requires_grad_(False)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.stft = _Stft(n_fft)

    def forward(self, waveform: Tensor) -> Tensor:
        """(B, S) -> power spectrogram (B, 1, frames, n_fft//2+1)."""
        x = F.pad(waveform[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real = F.conv1d(x, self.stft.conv_real.weight, stride=self.hop_length)
        imag = F.conv1d(x, self.stft.conv_imag.weight, stride=self.hop_length)
        return rearrange(real**2 + imag**2, "b f t -> b 1 t f")


class _LogMel(nn.Module):
    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
        super().__init__()
        self.melW = nn.Parameter(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T.contiguous(), requires_grad=False)

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10((power @ self.melW).clamp(min=1e-10))  # ref 1.0, amin 1e-10, no top_db


class _ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """Cnn14 with the public checkpoint's parameter names; ``forward`` -> (embedding (B, D), logits (B, classes))."""

    def __init__(self, sample_rate: int = 16000, window_size: int = 512, hop_size: int = 160, mel_bins: int = 64,
                 fmin: float = 50.0, fmax: float = 8000.0, classes_num: int = 527,
                 widths: tuple[int, ...] = CNN14_WIDTHS, embedding_dim: int | None = None) -> None:
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"Cnn14 has six conv blocks, got widths {widths}")
        self.sample_rate, self.window_size, self.hop_size = sample_rate, window_size, hop_size
        self.spectrogram_extractor = _Spectrogram(window_size, hop_size)
        self.logmel_extractor = _LogMel(sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        channels = (1, *widths)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(channels[i], channels[i + 1]))
        embedding_dim = embedding_dim or widths[-1]
        self.fc1 = nn.Linear(widths[-1], embedding_dim)
        self.fc_audioset = nn.Linear(embedding_dim, classes_num)
        self.embedding_dim, self.classes_num = embedding_dim, classes_num

    def log_mel(self, waveform: Tensor) -> Tensor:
        """(B, S) -> (B, 1, frames, mel_bins) log-mel in dB."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform))

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        x = self.log_mel(waveform)
        x = rearrange(self.bn0(rearrange(x, "b 1 t m -> b m t 1")), "b m t 1 -> b 1 t m")  # batch norm per mel bin
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
        x = x.mean(dim=3)  # over frequency: (B, C, T)
        x = x.amax(dim=2) + x.mean(dim=2)  # max + mean over time
        embedding = F.relu(self.fc1(x))
        return embedding, self.fc_audioset(embedding)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], **front_end) -> "Cnn14":
        """A Cnn14 shaped like ``state`` (widths, embedding and class count from its tensors), weights loaded strictly."""
        widths = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 7))
        model = cls(**{**CNN14_16K, **front_end}, widths=widths, embedding_dim=int(state["fc1.weight"].shape[0]),
                    classes_num=int(state["fc_audioset.weight"].shape[0]))
        model.load_state_dict(state, strict=True)
        return model.eval()


def _read_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of a PANNs ``.pth`` (``{"model": state_dict, ...}`` or a bare state dict)."""
    checkpoint = load_weights_file("panns", path, "a PANNs checkpoint",
                                   "--panns <path of Cnn14_16k_mAP=0.438.pth from zenodo.org/record/3987831>")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "conv_block1.conv1.weight" not in state:
        raise BackendUnavailable("panns", f"{path} holds no Cnn14 state dict (no 'model' entry with conv_block1..6)",
                                 "--panns <the 16 kHz Cnn14 checkpoint Cnn14_16k_mAP=0.438.pth>")
    return state


class PannsBackend(EmbeddingBackend):
    """FD_PANNs embeddings (2048-d for the real weights) and AudioSet logits for KL_PANNs / IS, at 16 kHz.

    Like av-benchmark, every clip is one input (no windowing); a clip shorter than the 32 frames the
    five 2x poolings need is zero-padded to that length.
    """

    has_logits = True

    def __init__(self, checkpoint: str, sample_rate: int = 16000, window_size: int = 512, hop_size: int = 160) -> None:
        super().__init__()
        state = _read_checkpoint(checkpoint)
        try:
            self.model = Cnn14.from_state_dict(state, sample_rate=sample_rate, window_size=window_size, hop_size=hop_size)
        except (RuntimeError, KeyError) as err:
            raise BackendUnavailable("panns", f"{checkpoint} does not match the Cnn14 layout ({str(err).splitlines()[0][:200]})",
                                     "--panns <the 16 kHz Cnn14 checkpoint Cnn14_16k_mAP=0.438.pth>") from None
        self.name = f"panns:{os.path.splitext(os.path.basename(checkpoint))[0]}"
        self.sample_rate, self.dim = sample_rate, self.model.embedding_dim
        self.min_samples = 31 * hop_size  # 32 frames with center=True

    def _forward(self, waveforms: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        embeddings, logits = [], []
        for x in waveforms:  # clips differ in length: one at a time, as av-benchmark's per-file extraction
            signal = torch.as_tensor(x, dtype=torch.float32)
            if signal.numel() < self.min_samples:
                signal = F.pad(signal, (0, self.min_samples - signal.numel()))
            embedding, logit = self.model(signal[None])
            embeddings.append(embedding[0])
            logits.append(logit[0])
        return torch.stack(embeddings), torch.stack(logits)

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        return self._forward(waveforms)[0]

    @torch.no_grad()
    def logits(self, waveforms, sample_rate: int) -> Tensor:
        return self._forward(self.prepare(waveforms, sample_rate))[1]
