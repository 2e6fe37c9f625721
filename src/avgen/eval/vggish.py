"""VGGish (Hershey et al. 2017, "CNN Architectures for Large-Scale Audio Classification", Sec. 3 and
the AudioSet release's ``vggish`` model): the embedding behind FD_VGGish (MMAudio's av-benchmark,
"FD_VGG") and the Frechet Audio Distance (Kilgour et al. 2019, "FAD", Sec. 3).

An own implementation with the parameter names of the public PyTorch port's checkpoint
(harritaylor/torchvggish ``vggish-10086976.pth``), so that file loads with
``load_state_dict(strict=True)``:

* front-end (Google's ``vggish_input`` / ``mel_features``, computed here in float64): 16 kHz mono,
  25 ms frames (400 samples) every 10 ms (160), no centring or padding, a periodic Hann window,
  the magnitude of a 512-point real FFT, 64 HTK-mel triangles between 125 and 7500 Hz (the DC bin
  weighted zero), ``log(mel + 0.01)``, then non-overlapping examples of 96 frames (0.96 s). A clip
  shorter than one example (0.975 s) is zero-padded to one (the reference code fails on it).
* ``features``: VGG configuration A cut to four stages - 3x3 convolutions (with bias) of widths
  64 | 128 | 256, 256 | 512, 512, each followed by ReLU, a 2x2 max pooling after each stage
  (``features.0/3/6/8/11/13``); a 96 x 64 example becomes 512 x 6 x 4.
* ``embeddings``: flattened in (time, frequency, channel) order as TensorFlow's NHWC layout, then
  Linear 12288 -> 4096, ReLU, Linear 4096 -> 4096, ReLU, Linear 4096 -> 128
  (``embeddings.0/2/4``). torchvggish ends with one more ReLU; Google's current ``vggish_slim``
  has none (``activation_fn=None``), av-benchmark removes it ("to match audioldm_eval") and the
  ``frechet_audio_distance`` package removes it by default (``use_activation=False``), so here it
  is off by default (``final_relu=True`` restores the port's output).
* optional post-processing (``pca_params``): the AudioSet release's PCA whitening and 8-bit
  quantisation, ``round((clip(P (e - mu), -2, 2) + 2) * 255 / 4)``, with ``pca_eigen_vectors``
  and ``pca_means`` from ``vggish_pca_params-970ea276.pth`` (or Google's ``vggish_pca_params.npz``).
  Neither metric below uses it: av-benchmark builds ``VGGish(postprocess=False)`` and the FAD
  package defaults to ``use_pca=False``.

Metrics (registered for ``avgen compare`` / ``avgen evaluate`` by :func:`register`):

* ``fd_vggish`` - av-benchmark's FD_VGG: every clip is DC-removed (``EmbeddingBackend.prepare``),
  resampled to 16 kHz, cut into 0.96 s examples, and *all examples of all clips are pooled as
  samples* of the two Gaussians (frames, not clips), the Frechet distance of
  :mod:`avgen.eval.frechet`.
* ``fad`` - Kilgour et al.'s FAD as the widely used ``frechet_audio_distance`` package computes it
  (``FrechetAudioDistance(model_name="vggish", use_pca=False, use_activation=False)``): the same
  per-example VGGish embeddings pooled over the set (not per clip), *without* DC removal (the
  package feeds the file's samples as read). It differs from ``fd_vggish`` only there (and,
  outside avgen, in the resampler: the package and torchvggish use resampy, avgen a polyphase
  filter); on DC-free audio the two numbers are equal. Google's original FAD code
  (google-research ``frechet_audio_distance``) differs further and is not reproduced: it divides
  each clip by ``max(0.1, max(x))``, cuts it into 1 s windows every 0.5 s (``model_step_size``
  8000) and embeds the first 0.96 s example of each window, with the TensorFlow VGGish.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.data.media import resample
from avgen.eval.backends import BackendUnavailable, EmbeddingBackend
from avgen.eval.registry import BackendSpec, MetricSpec, ScoreContext, register_backend, register_metric

__all__ = ["VGGish", "VGGishBackend", "vggish_mel_matrix", "vggish_examples", "VGGISH_FRONT_END", "VGGISH_WIDTHS"]

# vggish_params.py: the front-end constants.
VGGISH_FRONT_END = dict(sample_rate=16000, window_length=400, hop_length=160, fft_length=512, mel_bands=64,
                        mel_min_hz=125.0, mel_max_hz=7500.0, log_offset=0.01, example_frames=96, example_hop=96)
VGGISH_WIDTHS = (64, 128, 256, 256, 512, 512)  # conv widths; 2x2 max pooling after the 1st, 2nd, 4th and 6th
_POOL_AFTER = (0, 1, 3, 5)
_FIX = "--vggish <path of vggish-10086976.pth from https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth>"


def _hertz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def vggish_mel_matrix(sample_rate: int = 16000, fft_length: int = 512, mel_bands: int = 64,
                      mel_min_hz: float = 125.0, mel_max_hz: float = 7500.0) -> np.ndarray:
    """(fft_length//2+1, mel_bands) HTK triangles, linear in mel, unnormalised, zero weight on DC
    (``mel_features.spectrogram_to_mel_matrix``)."""
    if not 0.0 <= mel_min_hz < mel_max_hz <= sample_rate / 2:
        raise ValueError(f"mel range {mel_min_hz}-{mel_max_hz} Hz must lie within 0-{sample_rate / 2} Hz")
    bins_mel = _hertz_to_mel(np.linspace(0.0, sample_rate / 2, fft_length // 2 + 1))
    edges = np.linspace(_hertz_to_mel(mel_min_hz), _hertz_to_mel(mel_max_hz), mel_bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0  # HTK leaves out the DC bin
    return weights


def _log_mel(signal: Tensor, window_length: int, hop_length: int, fft_length: int, mel: Tensor, log_offset: float) -> Tensor:
    """(S,) float64 -> (frames, bands): framed without padding, periodic Hann, |rfft|, mel, log(+offset)."""
    frames = signal.unfold(0, window_length, hop_length)
    window = torch.hann_window(window_length, periodic=True, dtype=signal.dtype)
    magnitude = torch.fft.rfft(frames * window, n=fft_length).abs()  # the frame zero-padded at its end
    return torch.log(magnitude @ mel + log_offset)


def vggish_examples(signal: np.ndarray | Tensor, mel: Tensor | None = None, **front_end) -> Tensor:
    """One 16 kHz clip -> (examples, 96, 64) float64 log-mel patches (``vggish_input.waveform_to_examples``
    without its resampling); a clip shorter than one example is zero-padded to one."""
    p = {**VGGISH_FRONT_END, **front_end}
    x = torch.as_tensor(np.asarray(signal, np.float64) if not isinstance(signal, Tensor) else signal, dtype=torch.float64)
    min_samples = p["window_length"] + (p["example_frames"] - 1) * p["hop_length"]
    if x.numel() < min_samples:
        x = F.pad(x, (0, min_samples - x.numel()))
    if mel is None:
        mel = torch.from_numpy(vggish_mel_matrix(p["sample_rate"], p["fft_length"], p["mel_bands"], p["mel_min_hz"], p["mel_max_hz"]))
    log_mel = _log_mel(x, p["window_length"], p["hop_length"], p["fft_length"], mel.to(torch.float64), p["log_offset"])
    return rearrange(log_mel.unfold(0, p["example_frames"], p["example_hop"]), "n m t -> n t m")


class VGGish(nn.Module):
    """VGGish with torchvggish's parameter names: (N, 96, 64) log-mel examples -> (N, embedding_dim).

    Args:
        widths: the six convolution widths (the real network: 64, 128, 256, 256, 512, 512).
        hidden: width of the two 4096-d fully connected layers.
        embedding_dim: 128 for the real network.
        final_relu: apply torchvggish's ReLU after the last layer (off: Google's / av-benchmark's output).
        example_shape: (frames, bands) of one example; the flattened size follows from it.
    """

    def __init__(self, widths: Sequence[int] = VGGISH_WIDTHS, hidden: int = 4096, embedding_dim: int = 128,
                 final_relu: bool = False, example_shape: tuple[int, int] = (96, 64)) -> None:
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"VGGish has six convolutions, got widths {tuple(widths)}")
        layers: list[nn.Module] = []
        channels = 1
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            if i in _POOL_AFTER:
                layers.append(nn.MaxPool2d(2, 2))
            channels = width
        self.features = nn.Sequential(*layers)  # indices 0, 3, 6, 8, 11, 13 hold the convolutions
        pooled = (example_shape[0] // 16) * (example_shape[1] // 16) * channels
        self.embeddings = nn.Sequential(nn.Linear(pooled, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, embedding_dim))
        self.final_relu, self.embedding_dim, self.example_shape = final_relu, embedding_dim, tuple(example_shape)

    def forward(self, examples: Tensor) -> Tensor:
        x = self.features(examples[:, None])  # (N, C, T/16, F/16)
        x = self.embeddings(rearrange(x, "n c t f -> n (t f c)"))  # TensorFlow's NHWC flattening order
        return F.relu(x) if self.final_relu else x

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], final_relu: bool = False) -> "VGGish":
        """A VGGish shaped like ``state`` (widths and sizes from its tensors), loaded strictly."""
        conv_keys = [k for k in state if k.startswith("features.") and k.endswith(".weight")]
        conv_keys.sort(key=lambda k: int(k.split(".")[1]))
        widths = tuple(int(state[k].shape[0]) for k in conv_keys)
        model = cls(widths, hidden=int(state["embeddings.0.weight"].shape[0]),
                    embedding_dim=int(state["embeddings.4.weight"].shape[0]), final_relu=final_relu)
        model.load_state_dict(state, strict=True)
        return model.eval()


def _torch_load(path: str, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that needs pickled code
        raise BackendUnavailable("vggish", f"{path} cannot be read as {what} ({str(err).splitlines()[0][:200]})",
                                 _FIX) from None


def _read_checkpoint(path: str) -> dict[str, Tensor]:
    if not path or not os.path.isfile(path):
        raise BackendUnavailable("vggish", f"no VGGish checkpoint at {path!r}", _FIX)
    state = _torch_load(path, "a VGGish checkpoint")
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or "features.0.weight" not in state or "embeddings.4.weight" not in state:
        raise BackendUnavailable("vggish", f"{path} holds no VGGish state dict (no features.* / embeddings.* tensors)", _FIX)
    return {k: v for k, v in state.items() if not k.startswith("pproc.")}  # a full torchvggish model's PCA buffers


def _load_tensors_or_arrays(path: str) -> dict:
    """``torch.load`` without pickled code, allowing the numpy arrays a converted parameter file may hold."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        multiarray = getattr(np, "_core", None) or np.core
        allowed = [np.ndarray, np.dtype, multiarray.multiarray._reconstruct,
                   *(type(np.dtype(t)) for t in (np.float16, np.float32, np.float64))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def _read_pca(path: str) -> tuple[Tensor, Tensor]:
    """``pca_eigen_vectors`` (128, 128) and ``pca_means`` (128,) from the .pth port or Google's .npz."""
    fix = "pca_params=<vggish_pca_params-970ea276.pth (torchvggish) or vggish_pca_params.npz (Google)>"
    if not os.path.isfile(path):
        raise BackendUnavailable("vggish", f"no VGGish PCA parameters at {path!r}", fix)
    try:
        if path.endswith(".npz"):
            with np.load(path) as data:
                params = {k: data[k] for k in data.files}
        else:
            params = _load_tensors_or_arrays(path)
        matrix = torch.as_tensor(np.asarray(params["pca_eigen_vectors"]), dtype=torch.float64)
        means = torch.as_tensor(np.asarray(params["pca_means"]), dtype=torch.float64).reshape(-1)
    except Exception as err:
        raise BackendUnavailable("vggish", f"{path} holds no VGGish PCA parameters ({str(err).splitlines()[0][:200]})", fix) from None
    if matrix.ndim != 2 or matrix.shape[1] != means.numel():
        raise BackendUnavailable("vggish", f"{path}: PCA matrix {tuple(matrix.shape)} does not fit means {tuple(means.shape)}", fix)
    return matrix, means


def pca_postprocess(embeddings: Tensor, matrix: Tensor, means: Tensor, clip: float = 2.0) -> Tensor:
    """The AudioSet release's PCA whitening + 8-bit quantisation (``vggish_postprocess.Postprocessor``), as floats 0..255."""
    whitened = (embeddings.double() - means) @ matrix.T
    return torch.round((whitened.clamp(-clip, clip) + clip) * (255.0 / (2 * clip)))


class VGGishBackend(EmbeddingBackend):
    """VGGish embeddings at 16 kHz: :meth:`frames` gives one 128-d embedding per 0.96 s example (what
    FD_VGGish and FAD pool); :meth:`embed` their per-clip mean (a clip-level summary, used by no paper metric).

    Args:
        checkpoint: torchvggish's ``vggish-10086976.pth`` (or a state dict with its key names).
        pca_params: optional PCA file; when given, embeddings are post-processed as the AudioSet release.
        final_relu: keep torchvggish's last ReLU (default off, as av-benchmark and the FAD package).
    """

    def __init__(self, checkpoint: str, pca_params: str | None = None, final_relu: bool = False, batch_size: int = 64) -> None:
        super().__init__()
        state = _read_checkpoint(checkpoint)
        try:
            self.model = VGGish.from_state_dict(state, final_relu=final_relu)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("vggish", f"{checkpoint} does not match the VGGish layout ({str(err).splitlines()[0][:200]})",
                                     _FIX) from None
        self.pca = _read_pca(pca_params) if pca_params else None
        suffix = ("-pca" if self.pca else "") + ("-relu" if final_relu else "")
        self.name = f"vggish:{os.path.splitext(os.path.basename(checkpoint))[0]}{suffix}"
        self.sample_rate, self.dim, self.batch_size = VGGISH_FRONT_END["sample_rate"], self.model.embedding_dim, batch_size
        p = VGGISH_FRONT_END
        # the front-end runs on the CPU in float64 (a plain tensor: it stays there when the network moves)
        self.mel = torch.from_numpy(vggish_mel_matrix(p["sample_rate"], p["fft_length"], p["mel_bands"], p["mel_min_hz"], p["mel_max_hz"]))

    def embed_examples(self, examples: Tensor) -> Tensor:
        """(N, 96, 64) log-mel examples -> (N, 128) float64 embeddings (post-processed if PCA was given)."""
        device = self.model.embeddings[0].weight.device
        outputs = [self.model(chunk.to(device, torch.float32)).cpu() for chunk in examples.split(self.batch_size)]
        out = torch.cat(outputs).double() if outputs else examples.new_zeros(0, self.dim)
        return pca_postprocess(out, *self.pca) if self.pca is not None else out

    @torch.no_grad()
    def frames(self, waveforms: Tensor | list[Tensor], sample_rate: int, remove_dc: bool = True) -> list[np.ndarray]:
        """Per clip, its (examples, 128) embeddings. ``remove_dc=False``: the samples as given (FAD package)."""
        if remove_dc:
            clips = self.prepare(waveforms, sample_rate)
        else:
            clips = [resample(w.detach().cpu().double().numpy() if isinstance(w, Tensor) else np.asarray(w, np.float64),
                              int(sample_rate), self.sample_rate) for w in waveforms]
        return [self.embed_examples(vggish_examples(x, mel=self.mel)).numpy() for x in clips]

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        return torch.stack([self.embed_examples(vggish_examples(x, mel=self.mel)).mean(0) for x in waveforms]).float()


def vggish_frechet(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Frechet distance of all examples of the generated clips to all examples of the reference clips
    (NaN when either side has fewer than two examples)."""
    from avgen.eval.frechet import FrechetDistance

    gen = [v for v in generated.values() if len(v)]
    ref = [v for v in reference.values() if len(v)]
    if sum(len(v) for v in gen) < 2 or sum(len(v) for v in ref) < 2:
        return float("nan")
    metric = FrechetDistance(gen[0].shape[1])
    for clip in ref:
        metric.update(torch.as_tensor(clip, dtype=torch.float64), real=True)
    for clip in gen:
        metric.update(torch.as_tensor(clip, dtype=torch.float64))
    return float(metric.compute())


# ---------------------------------------------------------------------------------- avgen compare / evaluate
def _set_frames(ctx: ScoreContext, which: str, ids: list[str], remove_dc: bool) -> dict[str, np.ndarray]:
    """{id: (examples, 128)} of one side, cached per back-end (DC-removed and raw frames apart)."""
    from tqdm import tqdm

    backend = ctx.backend
    key = f"{backend.name}-frames" + ("" if remove_dc else "-with-dc")
    with tqdm(desc=f"{backend.name} {which}", unit="clip", leave=False, disable=None) as bar:  # clips not yet cached

        def compute(sample_id: str) -> np.ndarray:
            wav, rate = ctx.audio(which, sample_id)
            bar.update()
            return backend.frames([wav], rate, remove_dc=remove_dc)[0]

        return ctx.cached(which, key, ids, compute)


def fd_vggish_score(ctx: ScoreContext) -> float:
    """av-benchmark's FD_VGG: all 0.96 s examples of the generated set against all of the reference set."""
    return vggish_frechet(_set_frames(ctx, "generated", ctx.ids, True), _set_frames(ctx, "reference", list(ctx.reference), True))


def fad_score(ctx: ScoreContext) -> float:
    """Kilgour et al.'s FAD as the frechet_audio_distance package computes it (no DC removal)."""
    return vggish_frechet(_set_frames(ctx, "generated", ctx.ids, False), _set_frames(ctx, "reference", list(ctx.reference), False))


def _build_backend(value: str | None) -> VGGishBackend:
    if not value:
        raise BackendUnavailable("vggish", "no VGGish weights given", _FIX)
    return VGGishBackend(value)


register_backend(BackendSpec("vggish", _build_backend, "VGGish weights (torchvggish vggish-10086976.pth) for fd_vggish / fad"))
register_metric(MetricSpec("fd_vggish", False, "Frechet distance of VGGish 0.96 s example embeddings, all examples pooled, "
                           "to the reference set (MMAudio FD_VGG)", "vggish", fd_vggish_score))
register_metric(MetricSpec("fad", False, "Frechet Audio Distance: VGGish example embeddings pooled, no DC removal "
                           "(frechet_audio_distance package)", "vggish", fad_score))
