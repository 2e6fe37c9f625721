"""The flow-matching LightningModule every paper shares.

Plain ``nn.Module``s (the paper's network, its condition encoders, the audio codec) are built or
injected by the paper's subclass; this module holds the training recipe around them:

* training: x1 = codec latents, x0 ~ N(0, I), t ~ ``TimeSampler`` (MMAudio: logit-normal),
  x_t = (1 - t) x0 + t x1, loss = masked MSE against v = x1 - x0 (design §2; FoleyGenEx Eq. 2-4);
* validation / test: the loss at fixed t bins with seeded noise (MMAudio logs the loss binned by
  t) and, for the first batches, generated audio scored by ToyWorld's weight-free oracles;
* generation: condition encoders run once, all CFG branches are concatenated once and evaluated
  in ONE batched forward per Euler step (design §2 "Guidance");
* an EMA of the trainable network only (frozen encoders are never copied);
* checkpoints without frozen components (they are rebuilt from their config), loadable with
  ``weights_only=True``, with a clear error for a checkpoint of another model class.

A subclass implements :meth:`encode_conditions` and :meth:`make_conditions` and passes its
network to ``__init__``; everything else is shared.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric

from avgen.codecs.base import AudioCodec
from avgen.data.batch import AVBatch, length_mask
from avgen.flow import (
    ClassifierFreeGuidance,
    Guidance,
    NoGuidance,
    TimeSampler,
    concat_conditions,
    euler_sample,
    flow_matching_loss,
    guided_velocity_fn,
    interpolate,
    sampling_times,
    target_velocity,
)

__all__ = [
    "FlowMatchingModule",
    "EMANetwork",
    "LinearWarmupLR",
    "WarmupStepLR",
    "CheckpointMismatchError",
    "load_model",
]


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model the config builds (other paper, other sizes)."""


class LinearWarmupLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from lr/warmup_steps to lr over ``warmup_steps`` steps, then constant (MMAudio)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 1000, last_epoch: int = -1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self._factor, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)

    def state_dict(self) -> dict[str, Any]:
        # The bound method is rebuilt in __init__; keep the saved state primitive for weights_only loads.
        state = super().state_dict()
        state["lr_lambdas"] = [None]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = {k: v for k, v in state_dict.items() if k != "lr_lambdas"}
        self.__dict__.update(state_dict)


class WarmupStepLR(LinearWarmupLR):
    """Linear warm-up over ``warmup_steps``, then x ``gamma`` at each milestone step (MMAudio's "step" schedule).

    MMAudio (config ``linear_warmup_steps: 1000``, ``lr_schedule: step``, ``lr_schedule_steps:
    [240000, 270000]``, ``lr_schedule_gamma: 0.1``): factor(step) = warm-up(step) * gamma^(number of
    milestones <= step).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 1000,
        milestones: list[int] = (240_000, 270_000),  # type: ignore[assignment]
        gamma: float = 0.1,
        last_epoch: int = -1,
    ):
        milestones = sorted(int(m) for m in milestones)
        if any(m < 0 for m in milestones) or gamma <= 0:
            raise ValueError(f"milestones must be >= 0 and gamma > 0, got {milestones}, {gamma}")
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(optimizer, warmup_steps=warmup_steps, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        decays = sum(step >= m for m in self.milestones)
        return super()._factor(step) * self.gamma**decays


class EMANetwork(nn.Module):
    """Exponential moving average of a network's parameters (buffers are copied).

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so short runs
    are not dominated by the random initialisation.
    """

    def __init__(self, network: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(network)
        self.module.requires_grad_(False)
        self.module.eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates.item())
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in network.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("EMA network and network have different parameter lists")
        # lerp(ema, p, 1 - decay) = decay * ema + (1 - decay) * p
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params)], 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), network.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def train(self, mode: bool = True) -> "EMANetwork":
        # The average is only ever evaluated, never trained.
        return super().train(False)


def _primitive(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_primitive(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _primitive(v) for k, v in value.items())
    return False


def _class_name(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


class FlowMatchingModule(L.LightningModule):
    """Shared flow-matching recipe. Subclasses build ``network`` and their condition encoders.

    Args:
        network: the paper's backbone; must be trainable (its parameters are optimised and averaged).
        codec: the audio codec; x1 = ``codec.encode(audio)``. Frozen codecs are not checkpointed.
        optimizer: a callable ``params -> Optimizer``; default AdamW(lr 1e-4, betas (0.9, 0.95),
            weight decay 1e-6) as MMAudio.
        lr_scheduler: a callable ``optimizer -> scheduler`` stepped every optimizer step; default
            :class:`LinearWarmupLR` with 1000 warm-up steps (MMAudio).
        ema_decay: EMA decay of the network parameters; ``None`` disables EMA. When enabled, the
            EMA network is used for validation, test, prediction and ``generate``.
        time_sampling, time_mean, time_std, time_shift: the training ``TimeSampler``.
        num_sampling_steps, cfg_scale, sampling_shift: Euler steps, CFG scale (1 disables guidance)
            and the timestep shift of ``sampling_times``.
        duration: seconds to generate when a batch carries no audio to take the length from.
        num_val_time_bins: fixed t bins of the validation loss (t = (k + 0.5) / bins).
        num_val_generate_batches: validation/test batches that also generate audio and compute the
            oracle metrics; 0 disables generation during validation.
        num_val_sampling_steps: Euler steps of validation generation (default num_sampling_steps).
        num_val_log_samples: generated samples per epoch logged to TensorBoard (audio + mel figure).
        val_seed: seed of the validation noise (same noise every epoch, comparable curves).
    """

    def __init__(
        self,
        network: nn.Module,
        codec: AudioCodec,
        *,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = None,
        time_sampling: str = "logit_normal",
        time_mean: float = 0.0,
        time_std: float = 1.0,
        time_shift: float = 1.0,
        num_sampling_steps: int = 25,
        cfg_scale: float = 4.5,
        sampling_shift: float = 1.0,
        duration: float = 8.0,
        num_val_time_bins: int = 5,
        num_val_generate_batches: int = 1,
        num_val_sampling_steps: int | None = None,
        num_val_log_samples: int = 2,
        val_seed: int = 0,
    ):
        super().__init__()
        with warnings.catch_warnings():
            # Module-valued arguments are dropped right below; Lightning's advice to ignore them is moot.
            warnings.filterwarnings("ignore", message=r"Attribute '.*' is an instance of `nn.Module`")
            self.save_hyperparameters()
        # Direct instantiation (tests, notebooks) records module objects as hparams; under the CLI
        # they are config dicts. Keep only primitives so checkpoints load with weights_only=True.
        for key in [k for k, v in self.hparams.items() if not _primitive(v)]:
            del self._hparams[key]
            self._hparams_initial.pop(key, None)

        self.network = network
        self.codec = codec
        self.ema_network = EMANetwork(network, ema_decay) if ema_decay is not None else None
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.time_sampler = TimeSampler(time_sampling, mean=time_mean, std=time_std, shift=time_shift)
        self.num_sampling_steps = num_sampling_steps
        self.cfg_scale = cfg_scale
        self.sampling_shift = sampling_shift
        self.duration = duration
        self.num_val_time_bins = num_val_time_bins
        self.num_val_generate_batches = num_val_generate_batches
        self.num_val_sampling_steps = num_val_sampling_steps
        self.num_val_log_samples = num_val_log_samples
        self.val_seed = val_seed
        # Options of predict_step, set by ``avgen generate`` (None -> the defaults above).
        self.predict_options: dict[str, Any] = {}
        # Oracle metrics, averaged over the epoch and synchronised across ranks by torchmetrics.
        self.oracle_metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MeanMetric(nan_strategy="ignore")
                for stage in ("val", "test")
                for name in ("onset_offset", "class_accuracy")
            }
        )
        self._checked_sample_rate = False
        # Frozen components are dropped from every state_dict (and so from checkpoints).
        self.register_state_dict_post_hook(_drop_frozen_state)

    # ------------------------------------------------------------------ subclass hooks
    def encode_conditions(self, batch: AVBatch) -> Any:
        """Run the (frozen) condition encoders once per batch; returns what ``make_conditions`` needs."""
        raise NotImplementedError

    def make_conditions(
        self, network: nn.Module, encoded: Any, batch: AVBatch, *, latent_length: int, branch: str
    ) -> Any:
        """Network conditions for one branch.

        branch: ``"train"`` (presence flags with per-sample condition dropout for CFG),
        ``"conditional"`` (presence flags as they are) or ``"unconditional"`` (all null tokens).
        Subclasses with more guidance branches name their own and list them in :meth:`guidance`.
        """
        raise NotImplementedError

    def predict_velocity(
        self, network: nn.Module, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None
    ) -> Tensor:
        return network.predict_velocity(x_t, t, conditions, latent_mask=latent_mask)

    def guidance(self, cfg_scale: float) -> tuple[Guidance, list[str]]:
        """The guidance rule and its branch names in branch order (standard CFG by default)."""
        if cfg_scale == 1.0:
            return NoGuidance(), ["conditional"]
        return ClassifierFreeGuidance(cfg_scale), ["conditional", "unconditional"]

    def prepare_targets(
        self,
        encoded: Any,
        batch: AVBatch,
        x1: Tensor,
        latent_mask: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Any:
        """Derive target-dependent conditions once per training / evaluation step; returns ``encoded``.

        Called after :meth:`encode_conditions` with the target latents x1 (B, T, C) and their valid
        frames (B, T). FoleyGenEx draws its span mask and masked conditional latent here; random
        draws use ``generator`` when given (seeded in evaluation, so the validation loss is
        reproducible). The default returns ``encoded`` unchanged.
        """
        return encoded

    def loss_frame_mask(self, batch: AVBatch, latents: Tensor, encoded: Any = None) -> Tensor | None:
        """An extra (B, T) bool mask of frames that enter the loss (FoleyGenEx's span mask), or None.

        ``encoded`` is what :meth:`prepare_targets` returned for this step.
        """
        return None

    # ------------------------------------------------------------------ helpers
    @property
    def inference_network(self) -> nn.Module:
        """The EMA network when EMA is enabled, else the trained network."""
        return self.ema_network.module if self.ema_network is not None else self.network

    def frozen_module_names(self) -> list[str]:
        """Top-level submodules with no trainable parameter: rebuilt from config, not checkpointed."""
        names = []
        for name, child in self.named_children():
            if name in ("network", "ema_network", "oracle_metrics"):
                continue
            if not any(p.requires_grad for p in child.parameters()):
                names.append(name)
        return names

    def _check_sample_rate(self, batch: AVBatch) -> None:
        if self._checked_sample_rate:
            return
        if batch.sample_rate != self.codec.sample_rate:
            raise ValueError(
                f"the data gives audio at {batch.sample_rate} Hz but the codec "
                f"{type(self.codec).__name__} works at {self.codec.sample_rate} Hz (batch ids {batch.ids[:4]}); "
                f"set data.init_args.sample_rate={self.codec.sample_rate} or change "
                f"model.init_args.codec.init_args.sample_rate"
            )
        self._checked_sample_rate = True

    @torch.no_grad()
    def _encode_audio(self, audio: Tensor) -> Tensor:
        # Codecs run in fp32 even under bf16-mixed: STFTs and vocoders are precision-sensitive.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return self.codec.encode(audio.float())

    @torch.no_grad()
    def _decode_latents(self, latents: Tensor) -> Tensor:
        with torch.autocast(device_type=latents.device.type, enabled=False):
            return self.codec.decode(latents.float())

    def target_latents(self, batch: AVBatch) -> tuple[Tensor, Tensor]:
        """x1 (B, T, C) and its valid-frame mask (B, T) from precomputed latents or the waveform."""
        self._check_sample_rate(batch)
        if batch.latents is not None:
            latents, lengths = batch.latents, batch.latent_lengths
        elif batch.audio is not None:
            latents = self._encode_audio(batch.audio)
            lengths = self.codec.latent_lengths(batch.audio_lengths).clamp(max=latents.shape[1])
        else:
            raise ValueError(
                f"batch {batch.ids[:4]} carries neither audio nor latents; training and validation need the "
                "target audio (use `predict`/`generate` for condition-only inputs)"
            )
        if latents.shape[-1] != self.codec.latent_channels:
            raise ValueError(
                f"batch {batch.ids[:4]}: latents have {latents.shape[-1]} channels but the codec "
                f"{type(self.codec).__name__} has {self.codec.latent_channels}; recompute the cached latents "
                "with this config's codec"
            )
        # A sample without target audio contributes no frames to the loss.
        lengths = torch.where(batch.has_audio.to(lengths.device), lengths, torch.zeros_like(lengths))
        return latents, length_mask(lengths, latents.shape[1])

    # ------------------------------------------------------------------ training
    def training_step(self, batch: AVBatch, batch_idx: int) -> Tensor:
        x1, latent_mask = self.target_latents(batch)
        batch_size, num_latents, _ = x1.shape
        encoded = self.prepare_targets(self.encode_conditions(batch), batch, x1, latent_mask)
        conditions = self.make_conditions(self.network, encoded, batch, latent_length=num_latents, branch="train")
        x0 = torch.randn_like(x1)
        t = self.time_sampler(batch_size, device=x1.device)
        x_t = interpolate(x0, x1, t)
        v = self.predict_velocity(self.network, x_t, t, conditions, latent_mask)
        frame_mask = self._loss_mask(batch, x1, latent_mask, encoded)
        loss = flow_matching_loss(v.float(), target_velocity(x0, x1).float(), frame_mask)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        if self._trainer is not None and self._trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
        return loss

    def _loss_mask(self, batch: AVBatch, latents: Tensor, latent_mask: Tensor, encoded: Any = None) -> Tensor:
        extra = self.loss_frame_mask(batch, latents, encoded)
        return latent_mask if extra is None else latent_mask & extra

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().optimizer_step(*args, **kwargs)
        # After every real optimizer step (not every micro-batch under gradient accumulation).
        if self.ema_network is not None:
            self.ema_network.update(self.network)
        return out

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(params)
        else:
            optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
        else:
            scheduler = LinearWarmupLR(optimizer, warmup_steps=1000)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ validation / test
    def validation_step(self, batch: AVBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: AVBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_oracle_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_oracle_metrics("test")

    @torch.no_grad()
    def binned_losses(self, batch: AVBatch, batch_idx: int = 0) -> list[Tensor]:
        """Flow-matching loss at t = (k + 0.5) / bins for each bin k, with noise seeded by batch_idx."""
        network = self.inference_network
        x1, latent_mask = self.target_latents(batch)
        batch_size, num_latents, _ = x1.shape
        # A separate seeded generator for the target-dependent draws keeps the noise sequence unchanged.
        mask_generator = torch.Generator().manual_seed(self.val_seed + 7919 * (batch_idx + 1))
        encoded = self.prepare_targets(self.encode_conditions(batch), batch, x1, latent_mask, generator=mask_generator)
        conditions = self.make_conditions(network, encoded, batch, latent_length=num_latents, branch="conditional")
        generator = torch.Generator().manual_seed(self.val_seed + batch_idx)
        frame_mask = self._loss_mask(batch, x1, latent_mask, encoded)
        losses = []
        for k in range(self.num_val_time_bins):
            # Fresh seeded noise per bin on the CPU generator: identical across devices and epochs.
            x0 = torch.randn(x1.shape, generator=generator).to(x1)
            t = torch.full((batch_size,), (k + 0.5) / self.num_val_time_bins, device=x1.device)
            v = self.predict_velocity(network, interpolate(x0, x1, t), t, conditions, latent_mask)
            losses.append(flow_matching_loss(v.float(), target_velocity(x0, x1).float(), frame_mask))
        return losses

    def _evaluation_step(self, batch: AVBatch, batch_idx: int, stage: str) -> None:
        losses = self.binned_losses(batch, batch_idx)
        batch_size = len(batch)
        for k, loss in enumerate(losses):
            self.log(f"{stage}/loss_t{k}", loss, batch_size=batch_size, sync_dist=True)
        self.log(f"{stage}/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=batch_size, sync_dist=True)
        if batch_idx >= self.num_val_generate_batches:
            return
        waveforms, lengths = self.generate(
            batch, num_steps=self.num_val_sampling_steps, seed=self.val_seed + batch_idx
        )
        self._update_oracle_metrics(batch, waveforms, lengths, stage)
        if batch_idx == 0:
            self._log_media(batch, waveforms, lengths, stage)

    def _update_oracle_metrics(self, batch: AVBatch, waveforms: Tensor, lengths: Tensor, stage: str) -> None:
        metas = batch.meta
        if not metas or not all(isinstance(m, dict) and "events" in m for m in metas):
            return
        from avgen.eval.oracle import event_class_accuracy, onset_offset

        clips = [w[: int(n)].float().cpu().numpy() for w, n in zip(waveforms, lengths)]
        sample_rate = self.codec.sample_rate
        offsets = []
        for clip, meta in zip(clips, metas):
            # Only on-screen events have a visual onset to be synchronised with (the DeSync proxy).
            onsets = [e["onset"] for e in meta["events"] if e.get("onscreen", True)]
            if onsets:
                offsets.append(float(onset_offset(clip, sample_rate, onsets)))
        if offsets:
            self.oracle_metrics[f"{stage}_onset_offset"].update(torch.tensor(offsets, dtype=torch.float32))
        accuracy = float(event_class_accuracy(clips, sample_rate, metas))  # nan when no sample has a class
        if math.isfinite(accuracy):
            scored = sum(int(m.get("class", -1)) >= 0 for m in metas)
            self.oracle_metrics[f"{stage}_class_accuracy"].update(
                torch.tensor(accuracy, dtype=torch.float32), weight=max(scored, 1)
            )

    def _log_oracle_metrics(self, stage: str) -> None:
        if self.num_val_generate_batches <= 0:
            return
        for name in ("onset_offset", "class_accuracy"):
            metric = self.oracle_metrics[f"{stage}_{name}"]
            # compute() synchronises across ranks, so every rank calls it, updated or not (no hang
            # when one rank's samples had nothing to score); the synced value is the same everywhere.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*compute.*before.*update.*")
                value = metric.compute()
            if torch.isfinite(value):
                self.log(f"{stage}/{name}", value, sync_dist=True)  # already equal on all ranks
            metric.reset()

    def _log_media(self, batch: AVBatch, waveforms: Tensor, lengths: Tensor, stage: str) -> None:
        if not isinstance(self.logger, TensorBoardLogger) or self.global_rank != 0 or self.num_val_log_samples <= 0:
            return
        writer = self.logger.experiment
        sample_rate = self.codec.sample_rate
        for i in range(min(self.num_val_log_samples, len(batch))):
            sample_id = batch.ids[i]
            generated = waveforms[i, : int(lengths[i])].float().cpu().clamp(-1, 1)
            writer.add_audio(f"{stage}/audio/{sample_id}", generated, self.global_step, sample_rate=sample_rate)
            reference = None
            if batch.audio is not None and bool(batch.has_audio[i]):
                reference = batch.audio[i, : int(batch.audio_lengths[i])].float().cpu()
            writer.add_figure(
                f"{stage}/mel/{sample_id}",
                _spectrogram_figure(generated, reference, sample_rate, title=sample_id),
                self.global_step,
            )

    # ------------------------------------------------------------------ generation
    def _output_lengths(self, batch: AVBatch) -> tuple[int, Tensor]:
        default = int(round(self.duration * self.codec.sample_rate))
        device = self.device
        if batch.audio is not None:
            num_samples = batch.audio.shape[1]
            lengths = torch.where(
                batch.has_audio, batch.audio_lengths, torch.full_like(batch.audio_lengths, num_samples)
            )
            return num_samples, lengths.to(device)
        return default, torch.full((len(batch),), default, dtype=torch.long, device=device)

    @torch.no_grad()
    def sample_latents(
        self,
        batch: AVBatch,
        *,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor, int]:
        """Solve the flow ODE from noise: (latents (B, T, C), waveform lengths (B,), waveform samples S).

        Encoders run once; the guidance branches' conditions are built and concatenated once and
        evaluated in ONE batched forward per Euler step over ``sampling_times(num_steps, sampling_shift)``.
        The noise comes from a CPU generator seeded with ``seed``, so it is the same on every device.
        """
        self._check_sample_rate(batch)
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        num_samples, lengths = self._output_lengths(batch)
        num_latents = self.codec.num_latents(num_samples)
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=num_latents), num_latents)

        encoded = self.encode_conditions(batch)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        shape = (len(batch), num_latents, self.codec.latent_channels)
        x0 = torch.randn(shape, generator=generator).to(self.device)
        times = sampling_times(num_steps, self.sampling_shift).to(self.device)
        latents = self.solve_flow(
            batch, encoded, x0, times, latent_mask=latent_mask, cfg_scale=cfg_scale, progress=progress
        )
        return latents, lengths, num_samples

    @torch.no_grad()
    def solve_flow(
        self,
        batch: AVBatch,
        encoded: Any,
        x: Tensor,
        times: Tensor,
        *,
        latent_mask: Tensor | None,
        cfg_scale: float,
        progress: bool = False,
    ) -> Tensor:
        """Integrate the guided flow ODE from x at times[0] along ``times`` (B, T, C) -> (B, T, C).

        The guidance branches' conditions are built from ``encoded`` and concatenated once; ONE
        batched forward per Euler step. A decreasing grid integrates backwards (latent inversion:
        data at t = 1 -> noise at t = 0).
        """
        network = self.inference_network
        num_latents = x.shape[1]
        guidance, branches = self.guidance(cfg_scale)
        branch_conditions = concat_conditions(
            [
                self.make_conditions(network, encoded, batch, latent_length=num_latents, branch=branch)
                for branch in branches
            ]
        )

        def predict(x: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None) -> Tensor:
            return self.predict_velocity(network, x, t, conditions, latent_mask)

        kwargs = {} if latent_mask is None else {"latent_mask": latent_mask}
        velocity_fn = guided_velocity_fn(predict, branch_conditions, guidance, **kwargs)
        return euler_sample(velocity_fn, x, times.to(x.device), progress=progress)

    @torch.no_grad()
    def generate(
        self,
        batch: AVBatch,
        *,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Sample audio for a batch: (waveforms (B, S), lengths (B,)); samples past a length are zero.

        The length is the batch's audio length when it carries audio, else ``duration`` seconds.
        See :meth:`sample_latents` for the sampler; the codec decodes the latents.
        """
        latents, lengths, num_samples = self.sample_latents(
            batch, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, progress=progress
        )
        waveforms = self._decode_latents(latents)[:, :num_samples]
        if waveforms.shape[1] < num_samples:
            waveforms = nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        waveforms = waveforms * length_mask(lengths, num_samples).to(waveforms.dtype)
        return waveforms, lengths

    def predict_step(self, batch: AVBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        options = dict(self.predict_options)
        seed = options.pop("seed", None)
        waveforms, lengths = self.generate(
            batch, seed=None if seed is None else seed + batch_idx, **options
        )
        return {"ids": list(batch.ids), "waveforms": waveforms, "lengths": lengths, "sample_rate": self.codec.sample_rate}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["avgen"] = {"model_class": _class_name(self), "frozen_modules": self.frozen_module_names()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("avgen")
        if info is not None and info.get("model_class") != _class_name(self):
            raise CheckpointMismatchError(
                f"checkpoint was trained with {info.get('model_class')}, config builds {_class_name(self)}; "
                "use the config (model class_path) the checkpoint was trained with"
            )

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights; frozen components may be absent (they are rebuilt from the config).

        With ``strict``, any other missing or unexpected key raises :class:`CheckpointMismatchError`
        naming the keys, instead of torch's generic message.
        """
        frozen = tuple(f"{name}." for name in self.frozen_module_names())
        own_keys = set(nn.Module.state_dict(self).keys()) | set(self._frozen_state_keys())
        unexpected = sorted(k for k in state_dict if k not in own_keys)
        if strict and unexpected:
            raise CheckpointMismatchError(
                f"checkpoint does not fit {_class_name(self)}: {len(unexpected)} unexpected keys "
                f"(e.g. {unexpected[:5]}); was it trained with another model class or other sizes?"
            )
        try:
            result = super().load_state_dict(state_dict, strict=False, assign=assign)
        except RuntimeError as err:  # size mismatches
            raise CheckpointMismatchError(
                f"checkpoint does not fit {_class_name(self)} (other network sizes?): {err}"
            ) from err
        missing = [k for k in result.missing_keys if not k.startswith(frozen)]
        if strict and missing:
            raise CheckpointMismatchError(
                f"checkpoint lacks {len(missing)} weights of {_class_name(self)} (e.g. {missing[:5]}); was it "
                "trained with another model class, or without EMA while this config enables it?"
            )
        return result

    def _frozen_state_keys(self) -> list[str]:
        keys = []
        for name in self.frozen_module_names():
            keys.extend(f"{name}.{k}" for k in nn.Module.state_dict(getattr(self, name)).keys())
        return keys


def _drop_frozen_state(module: FlowMatchingModule, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: remove the frozen components' tensors."""
    for name in module.frozen_module_names():
        drop = f"{prefix}{name}."
        for key in [k for k in state_dict if k.startswith(drop)]:
            del state_dict[key]


def _spectrogram_figure(generated: Tensor, reference: Tensor | None, sample_rate: int, title: str):
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


def load_model(checkpoint_path: str, map_location: Any = "cpu", **kwargs: Any) -> FlowMatchingModule:
    """Rebuild the model a checkpoint was trained with (any paper) and load its weights.

    The class comes from the checkpoint's hyper-parameters (``_class_path``, written by the ``avgen``
    CLI); frozen encoders and codecs are rebuilt from their config. Loads with ``weights_only=True``.
    ``FlowMatchingModule.load_from_checkpoint`` cannot do this itself: Lightning filters the saved
    arguments by the *base* class signature, dropping the paper's own.
    """
    import importlib

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    class_path = hparams.get("_class_path") or checkpoint.get("avgen", {}).get("model_class")
    if not class_path:
        raise ValueError(
            f"checkpoint {checkpoint_path} records no model class (not written by `avgen fit`?); "
            "load it with <PaperClass>.load_from_checkpoint(path, **init_args) instead"
        )
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name.startswith("avgen."):
        raise ValueError(f"checkpoint {checkpoint_path} names model class {class_path!r}, which is not an avgen model")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, FlowMatchingModule)):
        raise ValueError(f"checkpoint {checkpoint_path}: {class_path!r} is not a FlowMatchingModule subclass")
    return cls.load_from_checkpoint(checkpoint_path, map_location=map_location, weights_only=True, **kwargs)
