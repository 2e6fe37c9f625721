"""Speaker similarity (SECS) with the GE2E speaker encoder of Resemblyzer.

AudioGen-Omni (Table 3, "SECS (GE2E)") and FoleyGenEx (style similarity) compare the voice of
generated speech with the ground-truth voice by the cosine similarity of speaker embeddings from
the public GE2E encoder (Wan et al. 2018, "Generalized End-to-End Loss for Speaker Verification",
Sec. 2: LSTM over 40-band mel frames, the last frame's hidden state projected and L2-normalised;
the d-vector of an utterance is the normalised average of sliding-window d-vectors, Sec. 3.3).
The weights are Resemblyzer's ``pretrained.pt`` (shipped in its PyPI wheel; a dict whose
``"model_state"`` holds the state dict). This module is an own implementation with the same key
names, so that file loads with ``load_state_dict(strict=True)``:

* :class:`SpeakerEncoder`: ``lstm`` (3 layers, 40 -> 256), ``linear`` (256 -> 256), ReLU, L2 norm
  of the last layer's final hidden state; ``similarity_weight`` / ``similarity_bias`` are GE2E's
  training-time similarity scale and offset (Eq. 5 of the paper), stored in the checkpoint and unused
  for embeddings.
* front-end, Resemblyzer's ``audio.py`` constants (:data:`GE2E`): :func:`preprocess_wav` (16 kHz,
  :func:`normalize_volume` to -30 dBFS, increase only; :func:`trim_long_silences`: 30-ms VAD
  windows, moving average of 8 windows, rounded, dilated by 7 windows) and :func:`mel_spectrogram`
  (librosa ``feature.melspectrogram`` defaults with n_fft 400, hop 160, 40 bands: a centred STFT
  with a periodic Hann window, power 2, Slaney mel filters with Slaney normalisation, *not* logged).
* :func:`partial_slices` / :func:`embed_utterance`: windows of 160 frames every
  round(16000 / 1.3 / 160) = 77 frames, the last kept when it covers at least 75 % of its samples,
  partial embeddings averaged and re-normalised (``VoiceEncoder.embed_utterance`` defaults).

Differences to Resemblyzer (documented, not hidden):

* Voice activity: ``vad="webrtcvad"`` (WebRTC's VAD, mode 3, as Resemblyzer) when the ``webrtcvad``
  C extension is importable; otherwise ``"energy"``: the same windows, smoothing and dilation, but a
  window counts as voiced when its RMS level is within ``energy_range_db`` (30 dB) of the loudest
  window instead of by WebRTC's GMM speech model (so long quiet non-speech noise is kept where
  WebRTC would cut it); ``"none"`` skips trimming. The mode in use is part of the back-end's name,
  so cached embeddings of different modes never mix.
* Resampling uses avgen's polyphase resampler (Resemblyzer: ``librosa.resample``, soxr) and the
  evaluation contract removes the DC offset first (:meth:`EmbeddingBackend.prepare`).
* The STFT pads with zeros (``pad_mode="constant"``, librosa >= 0.10); librosa < 0.10 padded by
  reflection (``pad_mode="reflect"`` reproduces that).
* A silent clip is left unscaled (Resemblyzer multiplies it by an infinite gain: NaN), and an
  all-zero embedding stays zero instead of NaN.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from scipy.ndimage import binary_dilation
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.codecs.mel import mel_filterbank
from avgen.eval.backends import BackendUnavailable, EmbeddingBackend, installed_package_file, load_weights_file
from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric
from avgen.eval.reduction import ScoreMean

__all__ = ["GE2E", "SpeakerEncoder", "ResemblyzerBackend", "SpeakerSimilarity", "preprocess_wav", "normalize_volume",
           "trim_long_silences", "mel_spectrogram", "partial_slices", "embed_utterance", "installed_resemblyzer_weights"]

# Resemblyzer's hparams.py
GE2E = dict(sample_rate=16000, window_ms=25, step_ms=10, n_mels=40, partial_frames=160, vad_window_ms=30,
            vad_moving_average_width=8, vad_max_silence_length=6, target_dbfs=-30.0, rate=1.3, min_coverage=0.75)
INT16_MAX = 2**15 - 1
VAD_MODES = ("webrtcvad", "energy", "none")
FIX = ("--resemblyzer <path of resemblyzer's pretrained.pt> (it ships in the resemblyzer wheel: "
       "`pip download --no-deps resemblyzer` and unzip), or `--resemblyzer installed` for the file of an installed "
       "resemblyzer (`pip install --no-deps resemblyzer`)")


# ---------------------------------------------------------------------------------- network
class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder with Resemblyzer's parameter names: mel frames (B, T, n_mels) -> (B, E), unit norm."""

    def __init__(self, n_mels: int = 40, hidden_size: int = 256, embedding_size: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, embedding_size)
        # GE2E's learnable similarity scale w and offset b (Wan et al. 2018, Eq. 5; initial values 10 and -5)
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))
        self.n_mels, self.embedding_size = n_mels, embedding_size

    def forward(self, mels: Tensor) -> Tensor:
        _, (hidden, _) = self.lstm(mels)  # hidden: (layers, B, hidden) at the last frame
        embedding = F.relu(self.linear(hidden[-1]))
        return embedding / embedding.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "SpeakerEncoder":
        """An encoder shaped like ``state`` (mel bands, width, depth, embedding size from its tensors), loaded strictly."""
        num_layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        model = cls(n_mels=int(state["lstm.weight_ih_l0"].shape[1]), hidden_size=int(state["lstm.weight_hh_l0"].shape[1]),
                    embedding_size=int(state["linear.weight"].shape[0]), num_layers=num_layers)
        model.load_state_dict(state, strict=True)
        return model.eval()


# ---------------------------------------------------------------------------------- front-end
def normalize_volume(wav: np.ndarray, target_dbfs: float = GE2E["target_dbfs"], increase_only: bool = True) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS (on the int16 scale); with ``increase_only`` a louder clip is left as it is."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2)) if wav.size else 0.0
    if rms == 0:
        return wav  # silence: no finite gain reaches the target
    change_db = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    if change_db < 0 and increase_only:
        return wav
    return wav * 10 ** (change_db / 20)


def _moving_average(flags: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with zeros outside (Resemblyzer's padding: (width-1)//2 before, width//2 after)."""
    padded = np.concatenate([np.zeros((width - 1) // 2), flags.astype(np.float64), np.zeros(width // 2)])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def voice_flags(windows: np.ndarray, vad: str, sample_rate: int, energy_range_db: float = 30.0) -> np.ndarray:
    """One voiced/unvoiced decision per row of ``windows`` (n, samples per window)."""
    if vad == "webrtcvad":
        import webrtcvad

        detector = webrtcvad.Vad(3)
        pcm = np.round(windows * INT16_MAX).astype(np.int16)
        return np.array([detector.is_speech(row.tobytes(), sample_rate) for row in pcm], dtype=bool)
    if vad == "energy":
        level = 10 * np.log10(np.maximum(np.mean(windows**2, axis=1), 1e-20))
        return level >= level.max() - energy_range_db
    raise ValueError(f"vad must be one of {VAD_MODES}, got {vad!r}")


def trim_long_silences(wav: np.ndarray, vad: str = "energy", sample_rate: int = GE2E["sample_rate"],
                       energy_range_db: float = 30.0) -> np.ndarray:
    """Drop unvoiced stretches longer than ``vad_max_silence_length`` windows (Resemblyzer's ``trim_long_silences``)."""
    if vad == "none":
        return wav
    window = GE2E["vad_window_ms"] * sample_rate // 1000
    wav = wav[: len(wav) - len(wav) % window]
    if not len(wav):
        return wav
    flags = voice_flags(rearrange(wav, "(n w) -> n w", w=window), vad, sample_rate, energy_range_db)
    mask = np.round(_moving_average(flags, GE2E["vad_moving_average_width"])).astype(bool)
    mask = binary_dilation(mask, np.ones(GE2E["vad_max_silence_length"] + 1))
    return wav[np.repeat(mask, window)]


def default_vad() -> str:
    """``webrtcvad`` when its C extension is importable (Resemblyzer's choice), else ``energy``."""
    return "webrtcvad" if importlib.util.find_spec("webrtcvad") is not None else "energy"


def preprocess_wav(wav: np.ndarray, vad: str = "energy", energy_range_db: float = 30.0) -> np.ndarray:
    """A 16 kHz waveform -> volume-normalised (increase only) with long silences trimmed."""
    return trim_long_silences(normalize_volume(np.asarray(wav, np.float64)), vad, energy_range_db=energy_range_db)


@lru_cache(maxsize=4)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    return mel_filterbank(sample_rate, n_fft, n_mels).double()


def mel_spectrogram(wav: np.ndarray, sample_rate: int = GE2E["sample_rate"], n_mels: int = GE2E["n_mels"],
                    pad_mode: str = "constant") -> np.ndarray:
    """librosa ``feature.melspectrogram`` with Resemblyzer's n_fft (25 ms) and hop (10 ms): (frames, n_mels) float32.

    Centred frames (n_fft // 2 padding each side), periodic Hann window of n_fft, power 2, Slaney mel
    filters with Slaney area normalisation from 0 Hz to Nyquist; 1 + len // hop frames.
    """
    n_fft, hop = sample_rate * GE2E["window_ms"] // 1000, sample_rate * GE2E["step_ms"] // 1000
    signal = torch.as_tensor(np.asarray(wav, np.float64))
    signal = F.pad(signal[None, None], (n_fft // 2, n_fft // 2), mode=pad_mode)[0, 0]
    spec = torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                      return_complex=True).abs() ** 2  # (freq, frames)
    mel = _mel_filters(sample_rate, n_fft, n_mels) @ spec
    return mel.T.float().numpy()


def partial_slices(n_samples: int, rate: float = GE2E["rate"], min_coverage: float = GE2E["min_coverage"],
                   sample_rate: int = GE2E["sample_rate"], partial_frames: int = GE2E["partial_frames"]) -> list[tuple[int, int]]:
    """Mel-frame ranges [start, stop) of the partial utterances (``VoiceEncoder.compute_partial_slices``).

    Windows of ``partial_frames`` frames start every round(sample_rate / rate / hop) frames until they
    span the ``ceil((n_samples + 1) / hop)`` frames; the last is dropped when less than
    ``min_coverage`` of its samples are audio (unless it is the only one). The waveform range of a
    slice is the frame range times the hop (the caller pads the audio with zeros to the last stop).
    """
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    hop = sample_rate * GE2E["step_ms"] // 1000
    n_frames = int(np.ceil((n_samples + 1) / hop))
    frame_step = int(np.round(sample_rate / rate / hop))
    if not 0 < frame_step <= partial_frames:
        raise ValueError(f"rate {rate} gives a window step of {frame_step} frames; it must be in 1..{partial_frames} "
                         f"(rate >= {sample_rate / (hop * partial_frames):.3f})")
    starts = range(0, max(1, n_frames - partial_frames + frame_step + 1), frame_step)
    slices = [(start, start + partial_frames) for start in starts]
    last_start, last_stop = slices[-1][0] * hop, slices[-1][1] * hop
    if len(slices) > 1 and (n_samples - last_start) / (last_stop - last_start) < min_coverage:
        slices = slices[:-1]
    return slices


@torch.no_grad()
def embed_utterance(encoder: SpeakerEncoder, wav: np.ndarray, rate: float = GE2E["rate"],
                    min_coverage: float = GE2E["min_coverage"], pad_mode: str = "constant") -> np.ndarray:
    """The utterance d-vector of a preprocessed 16 kHz waveform: the re-normalised mean of its partial embeddings."""
    hop = GE2E["sample_rate"] * GE2E["step_ms"] // 1000
    slices = partial_slices(len(wav), rate, min_coverage)
    wav = np.pad(wav, (0, max(0, slices[-1][1] * hop - len(wav))))
    mel = mel_spectrogram(wav, n_mels=encoder.n_mels, pad_mode=pad_mode)
    partials = torch.from_numpy(np.stack([mel[start:stop] for start, stop in slices]))
    device = next(encoder.parameters()).device
    mean = encoder(partials.to(device)).double().cpu().numpy().mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


# ---------------------------------------------------------------------------------- back-end
def installed_resemblyzer_weights() -> Path | None:
    """``pretrained.pt`` inside an installed resemblyzer package, found without importing it (its ``__init__`` needs
    librosa and webrtcvad)."""
    path = installed_package_file("resemblyzer", "pretrained.pt")
    return Path(path) if path else None


def _read_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of Resemblyzer's ``pretrained.pt`` (``{"step", "model_state", "optimizer_state"}``) or a bare one."""
    checkpoint = load_weights_file("resemblyzer", path, "a GE2E speaker-encoder checkpoint", FIX)
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "lstm.weight_ih_l0" not in state:
        raise BackendUnavailable("resemblyzer", f"{path} holds no GE2E encoder state (no 'model_state' with lstm.* "
                                 "and linear.*)", FIX)
    return state


class ResemblyzerBackend(EmbeddingBackend):
    """SECS embeddings (256-d, unit norm): Resemblyzer's preprocessing and ``embed_utterance`` on each clip at 16 kHz."""

    sample_rate = GE2E["sample_rate"]

    def __init__(self, checkpoint: str | os.PathLike | None = None, vad: str | None = None, energy_range_db: float = 30.0,
                 pad_mode: str = "constant", rate: float = GE2E["rate"], min_coverage: float = GE2E["min_coverage"]) -> None:
        super().__init__()
        if checkpoint is None:
            checkpoint = installed_resemblyzer_weights()
            if checkpoint is None:
                raise BackendUnavailable("resemblyzer", "no path given and no installed resemblyzer package ships "
                                         "pretrained.pt", FIX)
        checkpoint = os.fspath(checkpoint)
        vad = default_vad() if vad is None else vad
        if vad not in VAD_MODES:
            raise ValueError(f"vad must be one of {VAD_MODES}, got {vad!r}")
        if vad == "webrtcvad" and importlib.util.find_spec("webrtcvad") is None:
            raise BackendUnavailable("resemblyzer", "vad='webrtcvad' but the webrtcvad package is not installed",
                                     "pip install webrtcvad-wheels (or webrtcvad), or use vad='energy'")
        state = _read_checkpoint(checkpoint)
        try:
            self.encoder = SpeakerEncoder.from_state_dict(state)
        except (RuntimeError, KeyError) as err:
            raise BackendUnavailable("resemblyzer", f"{checkpoint} does not match the GE2E encoder layout "
                                     f"({str(err).splitlines()[0][:200]})", FIX) from None
        self.vad, self.energy_range_db, self.pad_mode = vad, energy_range_db, pad_mode
        self.rate, self.min_coverage = rate, min_coverage
        self.dim = self.encoder.embedding_size
        stem = os.path.splitext(os.path.basename(checkpoint))[0]
        self.name = f"resemblyzer:{stem}:vad-{vad}"  # the cache key: another VAD gives other embeddings

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        embeddings = []
        for x in waveforms:  # one utterance at a time (its partial windows are one batch), as Resemblyzer
            wav = preprocess_wav(x, self.vad, self.energy_range_db)
            embeddings.append(embed_utterance(self.encoder, wav, self.rate, self.min_coverage, self.pad_mode))
        return torch.from_numpy(np.stack(embeddings)).float()


# ---------------------------------------------------------------------------------- metric
class SpeakerSimilarity(ScoreMean):
    """SECS: mean cosine similarity of paired speaker embeddings. ``update(generated (B, D), target (B, D))``."""

    higher_is_better = True
    nothing_scored = "no pairs were given"

    def update(self, generated: Tensor, target: Tensor) -> None:
        generated, target = torch.as_tensor(generated).double(), torch.as_tensor(target).double()
        if generated.shape != target.shape or generated.ndim != 2:
            raise ValueError(f"SECS needs paired (B, D) embeddings, got {tuple(generated.shape)} and {tuple(target.shape)}")
        self.add(F.cosine_similarity(generated, target, dim=1, eps=1e-12))


def speech_pairs(ids: Sequence[str], samples: dict[str, dict]) -> list[str]:
    """The ids that are speech: a transcript, or the ``speech`` task."""
    return [i for i in ids if samples[i].get("transcript") or samples[i].get("task") == "speech"]


def score_secs(context) -> float:
    """``secs`` of one model in ``avgen compare`` / ``evaluate``: SECS over the paired speech samples (NaN if none)."""
    ids = speech_pairs(context.paired, context.samples)
    if not ids:
        return float("nan")
    generated, reference = context.embeddings("generated", ids), context.embeddings("reference", ids)
    metric = SpeakerSimilarity()
    metric.update(torch.as_tensor(np.stack([generated[i] for i in ids])), torch.as_tensor(np.stack([reference[i] for i in ids])))
    return float(metric.compute())


def build_resemblyzer(value: str | None) -> ResemblyzerBackend:
    """The ``--resemblyzer`` flag: a ``pretrained.pt`` path, or ``installed``: the file of an installed resemblyzer."""
    if not value:
        raise BackendUnavailable("resemblyzer", "no GE2E speaker-encoder weights given", FIX)
    return ResemblyzerBackend(None if value == "installed" else value)


register_backend(BackendSpec("resemblyzer", build_resemblyzer, "GE2E speaker-encoder weights for secs: resemblyzer's "
                             "pretrained.pt, or `installed` for the file of an installed resemblyzer package"))
register_metric(MetricSpec("secs", True, "speaker similarity: GE2E (Resemblyzer) cosine of generated and ground-truth "
                           "speech, mean over pairs (AudioGen-Omni SECS)", "resemblyzer", score_secs))
