"""Lightning callbacks any model gets from its config: ToyWorld oracle scores and TensorBoard media.

Both read what a model's ``validation_step`` / ``test_step`` returns for the batches it generated
audio for (see :meth:`avgen.models.base.FlowMatchingModule.validation_step`)::

    {"waveforms": (B, S) tensor, "lengths": (B,) tensor, "sample_rate": int}

so a new paper gets them by returning that dict, and a config picks them in ``trainer.callbacks``::

    - class_path: avgen.training.OracleMetrics        # val/onset_offset, val/class_accuracy
    - class_path: avgen.training.GeneratedMediaLogger  # audio + spectrogram images in TensorBoard
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric

__all__ = ["OracleMetrics", "GeneratedMediaLogger", "generated_outputs", "spectrogram_figure"]

STAGES = ("val", "test")


def generated_outputs(outputs: Any) -> tuple[Tensor, Tensor, int] | None:
    """(waveforms, lengths, sample_rate) from a validation/test step's return value, or None."""
    if isinstance(outputs, dict) and "waveforms" in outputs and "lengths" in outputs:
        return outputs["waveforms"], outputs["lengths"], int(outputs["sample_rate"])
    return None


class OracleMetrics(L.Callback):
    """ToyWorld's weight-free oracle scores of generated audio (``avgen.eval.oracle``).

    ``<stage>/onset_offset``: mean distance (s) between generated onsets and the true on-screen event
    onsets (a DeSync proxy); ``<stage>/class_accuracy``: the oracle classifier's accuracy on the
    generated clips. Samples whose ``meta`` carries no ground truth (real data) are not scored.
    Averaged over the epoch and synchronised across ranks (torchmetrics).
    """

    def __init__(self) -> None:
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric(nan_strategy="ignore")
             for stage in STAGES for name in ("onset_offset", "class_accuracy")}
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.metrics.to(pl_module.device)

    def _update(self, outputs: Any, batch: Any, stage: str) -> None:
        generated = generated_outputs(outputs)
        metas = getattr(batch, "meta", None)
        if generated is None or not metas or not all(isinstance(m, dict) and "events" in m for m in metas):
            return
        from avgen.eval.oracle import event_class_accuracy, onset_offset

        waveforms, lengths, sample_rate = generated
        clips = [w[: int(n)].float().cpu().numpy() for w, n in zip(waveforms, lengths)]
        offsets = []
        for clip, meta in zip(clips, metas):
            # Only on-screen events have a visual onset to be synchronised with (the DeSync proxy).
            onsets = [e["onset"] for e in meta["events"] if e.get("onscreen", True)]
            if onsets:
                offsets.append(float(onset_offset(clip, sample_rate, onsets)))
        device = self.metrics[f"{stage}_onset_offset"].device
        if offsets:
            self.metrics[f"{stage}_onset_offset"].update(torch.tensor(offsets, dtype=torch.float32, device=device))
        accuracy = float(event_class_accuracy(clips, sample_rate, metas))  # nan when no sample has a class
        if math.isfinite(accuracy):
            scored = sum(int(m.get("class", -1)) >= 0 for m in metas)
            self.metrics[f"{stage}_class_accuracy"].update(
                torch.tensor(accuracy, dtype=torch.float32, device=device), weight=max(scored, 1)
            )

    def _log(self, pl_module: L.LightningModule, stage: str) -> None:
        for name in ("onset_offset", "class_accuracy"):
            metric = self.metrics[f"{stage}_{name}"]
            # compute() synchronises across ranks, so every rank calls it, updated or not (no hang
            # when one rank's samples had nothing to score); the synced value is the same everywhere.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*compute.*before.*update.*")
                value = metric.compute()
            if torch.isfinite(value):
                pl_module.log(f"{stage}/{name}", value, sync_dist=True)
            metric.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch, "test")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "test")


class GeneratedMediaLogger(L.Callback):
    """Writes the first generated clips of each validation/test epoch to TensorBoard.

    For each of the first ``num_samples`` samples of the first generating batch: the audio and a
    figure with its log spectrogram next to the reference's (when the batch carries audio).
    """

    def __init__(self, num_samples: int = 2) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = num_samples

    def _write(self, trainer: L.Trainer, outputs: Any, batch: Any, batch_idx: int, stage: str) -> None:
        generated = generated_outputs(outputs)
        logger = trainer.logger
        if generated is None or batch_idx != 0 or not isinstance(logger, TensorBoardLogger):
            return
        if trainer.global_rank != 0 or self.num_samples == 0:
            return
        waveforms, lengths, sample_rate = generated
        writer, step = logger.experiment, trainer.global_step
        for i in range(min(self.num_samples, len(batch))):
            sample_id = batch.ids[i]
            clip = waveforms[i, : int(lengths[i])].float().cpu().clamp(-1, 1)
            writer.add_audio(f"{stage}/audio/{sample_id}", clip, step, sample_rate=sample_rate)
            reference = None
            if batch.audio is not None and bool(batch.has_audio[i]):
                reference = batch.audio[i, : int(batch.audio_lengths[i])].float().cpu()
            writer.add_figure(f"{stage}/mel/{sample_id}", spectrogram_figure(clip, reference, sample_rate, sample_id), step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs, batch, batch_idx, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs, batch, batch_idx, "test")


def spectrogram_figure(generated: Tensor, reference: Tensor | None, sample_rate: int, title: str):
    """A matplotlib figure with the log-magnitude spectrogram of the generated (and reference) clip."""
    from matplotlib.figure import Figure

    clips = [("generated", generated)] + ([("reference", reference)] if reference is not None else [])
    figure = Figure(figsize=(5 * len(clips), 3))
    for i, (name, clip) in enumerate(clips):
        axis = figure.add_subplot(1, len(clips), i + 1)
        n_fft, hop = 512, 128
        if clip.numel() < n_fft:
            clip = nn.functional.pad(clip, (0, n_fft - clip.numel()))
        spec = torch.stft(clip, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
        axis.imshow(
            (spec + 1e-5).log10().numpy(),
            origin="lower",
            aspect="auto",
            extent=(0.0, clip.numel() / sample_rate, 0.0, sample_rate / 2000),
        )
        axis.set_title(f"{title} ({name})")
        axis.set_xlabel("seconds")
        axis.set_ylabel("kHz")
    figure.tight_layout()
    return figure
