"""SyncNet (Chung & Zisserman 2016, "Out of time: automated lip sync in the wild", ACCV workshops):
the lip-sync scores Sync-C / Sync-D (Wav2Lip's LSE-C / LSE-D) that Harmony reports (spec §1.8).

An own implementation of ``joonson/syncnet_python`` (``SyncNetModel.S`` and
``SyncNetInstance.evaluate``) with the parameter names of the public ``syncnet_v2.model`` (a bare
state dict: ``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``; the ``nn.Sequential``
indices of the reference, ReLU and pooling layers included), so that file loads with
``load_state_dict(strict=True)``:

* **audio stream** (paper Fig. 1, left): 13 MFCCs x 20 frames (0.2 s at 100 Hz) -> five 3x3
  convolutions with batch norm and ReLU, max pools (3x3 stride (1, 2) after the second, 3x3 stride 2
  after the fifth), a (5, 4) convolution to 512 channels, then ``netfcaud``: Linear 512 -> 512, batch
  norm, ReLU, Linear 512 -> 1024.
* **lip stream** (Fig. 1, right): 5 stacked frames (0.2 s at 25 fps) of a 224x224 face crop ->
  a (5, 7, 7) Conv3d (stride (1, 2, 2)) that folds the time axis, four more (1, k, k) convolutions
  with max pools, a (1, 6, 6) convolution to 512, then ``netfclip`` like the audio head.
* **front-end**: ``python_speech_features.mfcc`` on the 16 kHz int16 samples of the clip (25 ms
  rectangular windows, 10 ms hop, pre-emphasis 0.97, 512-point FFT power / 512, 26 triangular mel
  filters on floor-rounded FFT bins, natural log, orthonormal DCT-II, 13 coefficients, cepstral
  lifter 22, c0 replaced by the log frame energy), written out in :func:`mfcc`. Frames are the BGR
  pixel values 0..255 (``cv2.imread``), unnormalised.
* **evaluation** (``SyncNetInstance.evaluate``, 25 fps video, 16 kHz audio): ``min(frames,
  floor(samples / 640)) - 5`` windows; window ``i`` takes frames ``i..i+4`` and MFCC frames
  ``4i..4i+19``. ``calc_pdist`` compares video window ``i`` with audio windows ``i - vshift ..
  i + vshift`` (zero embeddings past either end) by ``pairwise_distance`` (Euclidean, eps 1e-6);
  ``vshift`` is 15 (``run_syncnet.py`` and Wav2Lip's ``calculate_scores_*``). The mean over windows
  gives one distance per offset: ``offset = vshift - argmin``, **Sync-D = min**, **Sync-C = median
  - min** (Wav2Lip Sec. 4.1.1, LSE-D / LSE-C), both averaged over clips.

Out of scope: the S3FD face detection and tracking of ``run_pipeline.py``. The back-end scores the
video it is given as one face track: talking-head clips, the whole frame resized to 224x224 (as
Wav2Lip's ``calculate_scores_LRS.py`` does with ``cv2.resize``; ``crop="none"``) or a centre square
crop first (``crop="centre"``). Other differences: frames are not JPEG-encoded in between, and a
video not at 25 fps takes its nearest frames at 25 fps (what ``ffmpeg -r 25`` does to the reference's
input).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.data.media import resample
from avgen.eval.backends import BackendUnavailable, load_weights_file
from avgen.eval.reduction import ScoreMean

__all__ = ["SYNCNET_FIX", "SyncNet", "SyncNetBackend", "SyncProtocol", "SYNCNET", "SyncResult", "mfcc", "mfcc_filterbank",
           "offset_distances", "sync_result", "lip_feature_size", "SyncConfidence", "SyncDistance", "AUDIO_WIDTHS", "LIP_WIDTHS"]

AUDIO_WIDTHS = (64, 192, 384, 256, 256, 512)  # netcnnaud's six convolutions
LIP_WIDTHS = (96, 256, 256, 256, 256, 512)  # netcnnlip's six convolutions
SYNCNET_FIX = ("--syncnet <path of syncnet_v2.model from www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model "
               "(joonson/syncnet_python's download_model.sh)>")


# ------------------------------------------------------------------------------------ front-end
@lru_cache(maxsize=4)
def mfcc_filterbank(num_filters: int = 26, n_fft: int = 512, sample_rate: int = 16000,
                    low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
    """python_speech_features' ``get_filterbanks``: (num_filters, n_fft//2+1) triangles on FFT bins.

    Edges evenly spaced on the HTK mel scale (2595 log10(1 + f / 700)) are floored to bins
    ``floor((n_fft + 1) f / sr)``; filter j rises over [b_j, b_{j+1}) and falls over [b_{j+1}, b_{j+2}).
    """
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(2595 * np.log10(1 + low_hz / 700.0), 2595 * np.log10(1 + high_hz / 700.0), num_filters + 2)
    edges = np.floor((n_fft + 1) * (700 * (10 ** (mels / 2595.0) - 1)) / sample_rate)
    bins = np.arange(n_fft // 2 + 1)[None]
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # coinciding edges: an empty side
        rising = np.where((bins >= left) & (bins < centre), (bins - left) / (centre - left), 0.0)
        falling = np.where((bins >= centre) & (bins < right), (right - bins) / (right - centre), 0.0)
    return rising + falling


def _dct_ortho(n: int, num: int) -> Tensor:
    """(n, num) matrix of the orthonormal DCT-II (scipy ``dct(type=2, norm='ortho')``), first ``num`` outputs."""
    k = torch.arange(num, dtype=torch.float64)
    m = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * m[:, None] + 1) * k[None] / (2 * n)) * math.sqrt(2.0 / n)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def mfcc(signal: Tensor | np.ndarray, sample_rate: int = 16000, win_seconds: float = 0.025, hop_seconds: float = 0.01,
         num_ceps: int = 13, num_filters: int = 26, n_fft: int = 512, preemphasis: float = 0.97, lifter: int = 22,
         append_energy: bool = True) -> Tensor:
    """``python_speech_features.mfcc`` (the defaults SyncNet uses): (frames, num_ceps) float64.

    ``signal`` at the scale the reference sees (int16 sample values for SyncNet). Frames: ceil of
    the signal over the hop, zero-padded at the end; a zero energy or filter output is replaced by
    the float64 eps before the log, as the reference does.
    """
    x = torch.as_tensor(np.asarray(signal, dtype=np.float64) if not isinstance(signal, Tensor) else signal,
                        dtype=torch.float64).reshape(-1)
    if x.numel() == 0:
        raise ValueError("mfcc: empty signal")
    x = torch.cat([x[:1], x[1:] - preemphasis * x[:-1]])
    frame, hop = _round_half_up(win_seconds * sample_rate), _round_half_up(hop_seconds * sample_rate)
    count = 1 if x.numel() <= frame else 1 + math.ceil((x.numel() - frame) / hop)
    x = F.pad(x, (0, (count - 1) * hop + frame - x.numel()))
    frames = x.unfold(0, frame, hop)  # (count, frame), rectangular window
    power = torch.fft.rfft(frames, n=n_fft).abs().square() / n_fft  # frames longer than n_fft are cut, as numpy does
    eps = torch.finfo(torch.float64).eps
    energy = power.sum(-1)
    energy = torch.where(energy == 0, eps, energy)
    filters = torch.from_numpy(mfcc_filterbank(num_filters, n_fft, sample_rate))
    bands = power @ filters.T
    bands = torch.where(bands == 0, eps, bands)
    ceps = bands.log() @ _dct_ortho(num_filters, num_ceps)
    if lifter > 0:
        ceps = ceps * (1 + lifter / 2.0 * torch.sin(math.pi * torch.arange(num_ceps, dtype=torch.float64) / lifter))
    if append_energy:
        ceps[:, 0] = energy.log()
    return ceps


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


# ------------------------------------------------------------------------------------ network
def _conv_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def lip_feature_size(frame_size: int) -> int:
    """Side of netcnnlip's map before its last convolution (6 for 224x224 frames); that convolution spans it."""
    size = _conv_size(frame_size, 7, 2)  # conv (5, 7, 7) stride (1, 2, 2)
    size = _conv_size(size, 3, 2)  # max pool (1, 3, 3) stride (1, 2, 2)
    size = _conv_size(size, 5, 2, 1)  # conv (1, 5, 5) stride (1, 2, 2) padding (0, 1, 1)
    size = _conv_size(size, 3, 2, 1)  # max pool (1, 3, 3) stride (1, 2, 2) padding (0, 1, 1)
    size = _conv_size(size, 3, 2)  # three (1, 3, 3) same-size convs, then max pool (1, 3, 3) stride (1, 2, 2)
    if size < 1:
        raise ValueError(f"SyncNet's lip stream needs frames of at least 51x51, got {frame_size}x{frame_size}")
    return size


class SyncNet(nn.Module):
    """``SyncNetModel.S`` with its parameter names; widths and the frame size are arguments (the public
    model: :data:`AUDIO_WIDTHS`, :data:`LIP_WIDTHS`, hidden 512, embedding 1024, 224x224 frames).

    ``forward_aud(mfcc (N, 1, 13, 20)) -> (N, D)``, ``forward_lip(frames (N, 3, 5, H, W)) -> (N, D)``.
    """

    def __init__(self, audio_widths: tuple[int, ...] = AUDIO_WIDTHS, lip_widths: tuple[int, ...] = LIP_WIDTHS,
                 hidden_dim: int = 512, embedding_dim: int = 1024, frame_size: int = 224) -> None:
        super().__init__()
        if len(audio_widths) != 6 or len(lip_widths) != 6:
            raise ValueError(f"SyncNet has six convolutions per stream, got {audio_widths} and {lip_widths}")
        self.frame_size, self.embedding_dim = frame_size, embedding_dim
        a, v = audio_widths, lip_widths
        # 13 x 20 MFCCs: 3x3 convs keep the size, the pools give 11 x 9 then 5 x 4, which the last conv spans.
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, a[0], 3, padding=1), nn.BatchNorm2d(a[0]), nn.ReLU(), nn.MaxPool2d(1, 1),
            nn.Conv2d(a[0], a[1], 3, padding=1), nn.BatchNorm2d(a[1]), nn.ReLU(), nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(a[1], a[2], 3, padding=1), nn.BatchNorm2d(a[2]), nn.ReLU(),
            nn.Conv2d(a[2], a[3], 3, padding=1), nn.BatchNorm2d(a[3]), nn.ReLU(),
            nn.Conv2d(a[3], a[4], 3, padding=1), nn.BatchNorm2d(a[4]), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(a[4], a[5], (5, 4)), nn.BatchNorm2d(a[5]), nn.ReLU(),
        )
        self.netfcaud = self._head(a[5], hidden_dim, embedding_dim)
        self.netfclip = self._head(v[5], hidden_dim, embedding_dim)
        last = lip_feature_size(frame_size)
        # The first conv's 5-frame kernel folds time: every later layer works on one time step.
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, v[0], (5, 7, 7), (1, 2, 2)), nn.BatchNorm3d(v[0]), nn.ReLU(), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[0], v[1], (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(v[1]), nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(v[1], v[2], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[2]), nn.ReLU(),
            nn.Conv3d(v[2], v[3], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[3]), nn.ReLU(),
            nn.Conv3d(v[3], v[4], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[4]), nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[4], v[5], (1, last, last)), nn.BatchNorm3d(v[5]), nn.ReLU(),
        )

    @staticmethod
    def _head(in_dim: int, hidden_dim: int, embedding_dim: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                             nn.Linear(hidden_dim, embedding_dim))

    def forward_aud(self, mfcc_windows: Tensor) -> Tensor:
        return self.netfcaud(rearrange(self.netcnnaud(mfcc_windows), "n c 1 1 -> n c"))

    def forward_lip(self, frame_windows: Tensor) -> Tensor:
        return self.netfclip(rearrange(self.netcnnlip(frame_windows), "n c 1 1 1 -> n c"))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], frame_size: int | None = None) -> "SyncNet":
        """A SyncNet shaped like ``state`` (widths and embedding size from its tensors), loaded strictly.

        ``frame_size``: the frame side the lip stream takes; by default 224 when the last lip
        convolution fits it (the public model), else the smallest side that fits. The 2017
        checkpoint may predate batch norm's ``num_batches_tracked`` counters (unused in evaluation):
        missing ones are filled with 0, every other key must match.
        """
        conv_indices = (0, 4, 8, 11, 14, 18)
        audio = tuple(int(state[f"netcnnaud.{i}.weight"].shape[0]) for i in conv_indices)
        lip = tuple(int(state[f"netcnnlip.{i}.weight"].shape[0]) for i in conv_indices)
        if frame_size is None:
            last = int(state["netcnnlip.18.weight"].shape[-1])
            frame_size = next((s for s in (224, *range(51, 4096)) if lip_feature_size(s) == last), None)
            if frame_size is None:
                raise KeyError(f"netcnnlip.18.weight spans {last}x{last}: no frame size gives that map")
        model = cls(audio, lip, int(state["netfcaud.0.weight"].shape[0]), int(state["netfcaud.3.weight"].shape[0]),
                    frame_size=frame_size)
        own = model.state_dict()
        state = dict(state)
        for key in own:
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = own[key]
        model.load_state_dict(state, strict=True)
        return model.eval()


# ------------------------------------------------------------------------------------ protocol
@dataclass(frozen=True)
class SyncProtocol:
    """``SyncNetInstance.evaluate``'s grid: 25 fps, 16 kHz, 5-frame windows against 20 MFCC frames, ±15 offsets."""

    fps: float = 25.0
    sample_rate: int = 16000
    window_frames: int = 5
    mfcc_per_frame: int = 4  # 100 Hz MFCCs / 25 fps
    mfcc_window: int = 20
    vshift: int = 15
    batch_size: int = 20

    @property
    def samples_per_frame(self) -> int:
        return round(self.sample_rate / self.fps)  # 640


SYNCNET = SyncProtocol()


def offset_distances(video: Tensor, audio: Tensor, vshift: int = 15) -> Tensor:
    """``calc_pdist``: (N, 2 vshift + 1) distances of video window i to audio window i + k - vshift.

    Audio windows past either end are zero vectors (the reference pads the audio features with
    zeros); the distance is ``pairwise_distance``'s ||v - a + 1e-6||.
    """
    if video.ndim != 2 or video.shape != audio.shape:
        raise ValueError(f"expected video and audio embeddings of one shape (N, D), got {tuple(video.shape)} and {tuple(audio.shape)}")
    padded = F.pad(audio, (0, 0, vshift, vshift))
    candidates = rearrange(padded.unfold(0, 2 * vshift + 1, 1), "n d k -> n k d")  # (N, 2 vshift + 1, D)
    return F.pairwise_distance(video[:, None].expand_as(candidates), candidates)


@dataclass(frozen=True)
class SyncResult:
    """One clip: the offset (video frames; frame i matches audio window i - offset), Sync-D and Sync-C."""

    offset: int
    min_distance: float  # Sync-D / LSE-D
    confidence: float  # Sync-C / LSE-C


def sync_result(distances: Tensor, vshift: int | None = None) -> SyncResult:
    """``evaluate``'s reduction of a clip's (N, 2 vshift + 1) distances: mean over windows, min, median - min."""
    if distances.ndim != 2 or distances.shape[0] == 0 or distances.shape[1] % 2 == 0:
        raise ValueError(f"expected (windows, 2 vshift + 1) distances, got {tuple(distances.shape)}")
    vshift = distances.shape[1] // 2 if vshift is None else vshift
    mean = distances.mean(0)
    min_value, min_index = torch.min(mean, 0)
    return SyncResult(vshift - int(min_index), float(min_value), float(torch.median(mean) - min_value))


class _ClipMean(ScoreMean):
    """Mean over clips of one per-clip SyncNet score; ``update(distances)`` with a clip's (N, 2 vshift + 1) table."""

    nothing_scored = "no clip was scored"
    def clip_score(self, result: SyncResult) -> float:
        raise NotImplementedError

    def update(self, distances: Tensor) -> None:
        self.add(self.clip_score(sync_result(distances.detach().double().cpu())))


class SyncConfidence(_ClipMean):
    """Sync-C (LSE-C): mean over clips of median - min of the offset distances (higher is better)."""

    higher_is_better = True

    def clip_score(self, result: SyncResult) -> float:
        return result.confidence


class SyncDistance(_ClipMean):
    """Sync-D (LSE-D): mean over clips of the smallest mean offset distance (lower is better)."""

    higher_is_better = False

    def clip_score(self, result: SyncResult) -> float:
        return result.min_distance


# ------------------------------------------------------------------------------------ back-end
def _read_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of ``syncnet_v2.model`` (a bare state dict; ``{"state_dict": ...}`` and a
    ``__S__.`` prefix, as ``SyncNetInstance.state_dict()`` writes it, are accepted too)."""
    checkpoint = load_weights_file("syncnet", path, "a SyncNet checkpoint", SYNCNET_FIX)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if isinstance(state, dict):
        state = {k.removeprefix("__S__."): v for k, v in state.items()}
    if not isinstance(state, dict) or "netcnnaud.0.weight" not in state or "netcnnlip.0.weight" not in state:
        raise BackendUnavailable("syncnet", f"{path} holds no SyncNet state dict (no netcnnaud / netcnnlip weights)",
                                 "--syncnet <syncnet_v2.model of joonson/syncnet_python>")
    return state


class SyncNetBackend(nn.Module):
    """Sync-C / Sync-D of (video, audio) pairs with a SyncNet checkpoint.

    ``distances(frames, fps, waveform, rate)`` runs ``evaluate`` on one clip: frames (T, H, W, 3)
    uint8 RGB (converted to the reference's BGR), any fps (nearest frames at 25 fps), audio at any
    rate (resampled to 16 kHz, then quantised to int16 as the reference's ``pcm_s16le`` wav).
    ``crop``: ``"none"`` resizes the whole frame to the model's size, ``"centre"`` takes the centre
    square first. Bilinear resizing as ``cv2.resize`` (half-pixel centres, no antialiasing).
    """

    name = "syncnet"

    def __init__(self, checkpoint: str, crop: str = "none", protocol: SyncProtocol = SYNCNET,
                 frame_size: int | None = None) -> None:
        super().__init__()
        if crop not in ("none", "centre"):
            raise ValueError(f"crop must be 'none' or 'centre', got {crop!r}")
        state = _read_checkpoint(checkpoint)
        try:
            self.model = SyncNet.from_state_dict(state, frame_size)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("syncnet", f"{checkpoint} does not match the SyncNet layout ({str(err).splitlines()[0][:200]})",
                                     "--syncnet <syncnet_v2.model of joonson/syncnet_python>") from None
        self.name = f"syncnet:{os.path.splitext(os.path.basename(checkpoint))[0]}"
        self.crop, self.protocol = crop, protocol

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare_frames(self, frames: np.ndarray | Tensor, fps: float) -> Tensor:
        """(T, H, W, 3) uint8 RGB at ``fps`` -> (3, T', S, S) float BGR 0..255 at the protocol's fps."""
        video = torch.as_tensor(np.asarray(frames))
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"expected video frames (T, H, W, 3), got {tuple(video.shape)}")
        if abs(fps - self.protocol.fps) > 1e-6:  # nearest source frame at each 25 fps time
            count = int(round(video.shape[0] * self.protocol.fps / fps))
            picks = np.minimum(np.floor(np.arange(count) * fps / self.protocol.fps + 0.5).astype(int), video.shape[0] - 1)
            video = video[torch.from_numpy(picks)]
        x = rearrange(video, "t h w c -> t c h w").float()
        if self.crop == "centre":
            h, w = x.shape[-2:]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[..., top : top + side, left : left + side]
        size = self.model.frame_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).round().clamp(0, 255)
        return rearrange(x.flip(1), "t c h w -> c t h w")  # RGB -> BGR

    def prepare_audio(self, waveform: np.ndarray | Tensor, sample_rate: int) -> tuple[Tensor, int]:
        """Mono float in [-1, 1] at any rate -> ((13, frames) MFCCs of the 16 kHz int16 samples, sample count)."""
        x = waveform.detach().cpu().double().numpy() if isinstance(waveform, Tensor) else np.asarray(waveform, np.float64)
        x = resample(x.reshape(-1), int(sample_rate), self.protocol.sample_rate)
        samples = np.clip(np.rint(x * 32768.0), -32768, 32767)  # ffmpeg's float -> pcm_s16le
        return mfcc(samples, self.protocol.sample_rate).T, samples.size

    @torch.no_grad()
    def embeddings(self, frames: Tensor, features: Tensor, num_samples: int) -> tuple[Tensor, Tensor]:
        """(video, audio) window embeddings (N, D) of prepared frames (3, T, S, S) and MFCCs (13, M)."""
        p = self.protocol
        windows = min(frames.shape[1], num_samples // p.samples_per_frame) - p.window_frames
        if windows < 1:
            raise ValueError(f"SyncNet needs more than {p.window_frames} frames of video and audio "
                             f"({(p.window_frames + 1) / p.fps:.2f} s at {p.fps:g} fps), got {frames.shape[1]} frames and "
                             f"{num_samples / p.sample_rate:.2f} s of audio")
        video, audio = [], []
        for start in range(0, windows, p.batch_size):
            idx = range(start, min(windows, start + p.batch_size))
            lips = torch.stack([frames[:, i : i + p.window_frames] for i in idx]).to(self.device)
            ceps = torch.stack([features[None, :, i * p.mfcc_per_frame : i * p.mfcc_per_frame + p.mfcc_window] for i in idx])
            video.append(self.model.forward_lip(lips).float().cpu())
            audio.append(self.model.forward_aud(ceps.float().to(self.device)).float().cpu())
        return torch.cat(video), torch.cat(audio)

    def distances(self, frames: np.ndarray | Tensor, fps: float, waveform: np.ndarray | Tensor, sample_rate: int) -> Tensor:
        """One clip's (windows, 2 vshift + 1) offset distances (``calc_pdist``)."""
        features, num_samples = self.prepare_audio(waveform, sample_rate)
        video, audio = self.embeddings(self.prepare_frames(frames, fps), features, num_samples)
        return offset_distances(video, audio, self.protocol.vshift)

    def score(self, frames, fps: float, waveform, sample_rate: int) -> SyncResult:
        return sync_result(self.distances(frames, fps, waveform, sample_rate), self.protocol.vshift)


# ------------------------------------------------------------------------------------ avgen compare / evaluate
def clip_distances(ctx) -> list[np.ndarray]:
    """Per clip of one model's generated set that has a video, the (windows, 2 vshift + 1) offset
    distances of the generated audio against that video (cached per sample). Clips shorter than six
    frames are left out (logged)."""
    if "syncnet_distances" in ctx.memo:
        return ctx.memo["syncnet_distances"]
    backend: SyncNetBackend = ctx.backend
    too_short: dict[str, str] = {}

    def compute(sample_id: str) -> np.ndarray:
        frames, fps = ctx.video(sample_id)
        waveform, rate = ctx.audio("generated", sample_id)
        try:
            return backend.distances(frames, fps, waveform, rate).double().numpy()
        except ValueError as err:  # too short for one window: an empty table, cached like the others
            too_short[sample_id] = str(err)
            return np.zeros((0, 2 * backend.protocol.vshift + 1))

    with_video = [i for i in ctx.ids if i in ctx.videos]
    tables = ctx.cached("generated", f"{backend.name}-{backend.crop}-offset-distances", with_video, compute)
    if too_short:
        import logging

        logging.getLogger(__name__).warning("SyncNet: %d of %d clips not scored (%s: %s)", len(too_short), len(with_video),
                                            *next(iter(too_short.items())))
    ctx.memo["syncnet_distances"] = [table for table in tables.values() if table.shape[0]]
    return ctx.memo["syncnet_distances"]


def _clip_mean_score(metric_class: type[_ClipMean]):
    def score(ctx) -> float:
        tables = clip_distances(ctx)
        if not tables:
            return float("nan")
        metric = metric_class()
        for table in tables:
            metric.update(torch.from_numpy(table))
        return float(metric.compute())

    return score


def _build_backend(value: str | None) -> SyncNetBackend:
    if not value:
        raise BackendUnavailable("syncnet", "no SyncNet weights given", SYNCNET_FIX)
    return SyncNetBackend(value)


def _register() -> None:
    from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric

    register_backend(BackendSpec("syncnet", _build_backend, "SyncNet checkpoint (syncnet_v2.model of joonson/syncnet_python) "
                                 "for sync_c / sync_d on the video that goes with the audio (face-cropped talking heads)"))
    register_metric(MetricSpec("sync_c", True, "SyncNet confidence of the audio against the talking face (Sync-C / LSE-C: "
                               "median - min of the mean distance over offsets of +-15 frames)", "syncnet",
                               _clip_mean_score(SyncConfidence), needs_video=True))
    register_metric(MetricSpec("sync_d", False, "SyncNet distance of the audio to the talking face at the best offset "
                               "(Sync-D / LSE-D)", "syncnet", _clip_mean_score(SyncDistance), needs_video=True))


_register()
