"""The flow-matching LightningModule every paper shares: the recipe, and nothing else.

Plain ``nn.Module``s (the paper's network, its condition encoders, the audio codec) are built or
injected by the paper's subclass; this module holds the flow-matching recipe around them:

* training: x1 = codec latents, x0 ~ N(0, I), t ~ ``TimeSampler`` (MMAudio: logit-normal),
  x_t = (1 - t) x0 + t x1, loss = masked MSE against v = x1 - x0 (design §2; FoleyGenEx Eq. 2-4);
  every draw from :meth:`training_generator`, seeded per step, so a resumed run is exact;
* validation / test: the loss at fixed t bins with seeded noise (MMAudio logs the loss binned by
  t) and, for the first batches, generated audio, returned from the step so that callbacks
  (``avgen.training.OracleMetrics``, ``GeneratedMediaLogger``) score and log it;
* generation: condition encoders run once, all CFG branches are concatenated once and evaluated
  in ONE batched forward per Euler step (design §2 "Guidance"), with the options of the call
  (:class:`~avgen.models.generation.SamplingOptions`) passed as an argument all the way down;
* checkpoints without frozen components (they are rebuilt from their config), loadable with
  ``weights_only=True``, with a clear error for a checkpoint of another model class
  (:mod:`avgen.checkpoints`).

EMA and learning-rate schedules live in :mod:`avgen.training`. A subclass implements
:meth:`encode_conditions` and :meth:`make_conditions`, passes its network to ``__init__`` and names
its generation interface (``generation = <Paper>Generation()``, ``models/<paper>/tasks.py``).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from avgen.checkpoints import CheckpointMismatchError, check_checkpoint_class, initialise_from_checkpoint, load_model
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
from avgen.models.generation import GenerationInterface, GenerationRequest, SamplingOptions, resolve_options
from avgen.training import EMANetwork, LinearWarmupLR, fastest_adam
from avgen.training.randomness import StepRandomness

__all__ = ["FlowMatchingModule", "CheckpointMismatchError", "load_model"]


def _primitive(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_primitive(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _primitive(v) for k, v in value.items())
    return False


def unless_all_valid(mask: Tensor | None) -> Tensor | None:
    """None when every frame is valid: the network then takes its unmasked paths (plain attention,
    no zeroing before convolutions), which compute the same numbers with fewer ops."""
    return None if mask is None or bool(mask.all()) else mask


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
        num_val_generate_batches: validation/test batches that also generate audio (returned from
            the step for the callbacks that score and log it); 0 disables generation during validation.
        num_val_sampling_steps: Euler steps of validation generation (default num_sampling_steps).
        val_seed: seed of the validation noise (same noise every epoch, comparable curves).
        init_checkpoint: an ``avgen fit`` checkpoint of the same model class whose weights start a new
            ``fit`` (e.g. a previous training stage); not a resume: ``--ckpt_path`` restores the whole
            training state and wins.
        compile: ``torch.compile`` the network's declared blocks (``block_classes``,
            :func:`avgen.nn.blocks.compile_blocks`) in :meth:`configure_model`, automatic dynamic shapes;
            training and evaluation call the compiled blocks (EMA network included); sampling compiles
            the whole per-step velocity function once (:meth:`step_function`).
        compile_backend: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` checks the
            traced graph without generating code).
    """

    # The paper's generation interface (options dataclass, tasks, checks): models/<paper>/tasks.py.
    generation: ClassVar[GenerationInterface] = GenerationInterface()

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
        val_seed: int = 0,
        init_checkpoint: str | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
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
        self.val_seed = val_seed
        self.init_checkpoint = init_checkpoint
        self.compile_network = compile
        self.compile_backend = compile_backend
        self._checked_sample_rate = False
        # Every training draw comes from generators seeded by (seed, step, batch, rank): exact resume.
        self.randomness = StepRandomness()
        # Frozen components are dropped from every state_dict (and so from checkpoints).
        self.register_state_dict_post_hook(_drop_frozen_state)

    # ------------------------------------------------------------------ subclass hooks
    def encode_conditions(self, batch: AVBatch) -> Any:
        """Run the (frozen) condition encoders once per batch; returns what ``make_conditions`` needs."""
        raise NotImplementedError

    def make_conditions(
        self,
        network: nn.Module,
        encoded: Any,
        batch: AVBatch,
        *,
        latent_length: int,
        branch: str,
        options: SamplingOptions | None = None,
    ) -> Any:
        """Network conditions for one branch.

        branch: ``"train"`` (presence flags with per-sample condition dropout for CFG, drawn from
        :meth:`training_generator`),
        ``"conditional"`` (presence flags as they are) or ``"unconditional"`` (all null tokens).
        Subclasses with more guidance branches name their own and list them in :meth:`guidance`.
        ``options``: the sampling call's options when generating (None in training / evaluation), for
        conditions an option changes (OmniSonic's gate override).
        """
        raise NotImplementedError

    def predict_velocity(
        self, network: nn.Module, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None
    ) -> Tensor:
        return network.predict_velocity(x_t, t, conditions, latent_mask=latent_mask)

    def velocity_and_logs(
        self, network: nn.Module, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The velocity and scalars worth logging that the network computed on the way (training / evaluation).

        The default logs nothing; OmniSonic returns its mean MoE gate weight per condition. The
        network returns what it computed; nothing is read back from attributes.
        """
        return self.predict_velocity(network, x_t, t, conditions, latent_mask), {}

    def guidance(self, options: SamplingOptions, batch: AVBatch) -> tuple[Guidance, list[str]]:
        """The guidance rule for one generation call and its branch names in branch order.

        Standard CFG at ``options.cfg_scale`` (default: the model's ``cfg_scale``; 1 disables it).
        """
        scale = self.cfg_scale if options.cfg_scale is None else options.cfg_scale
        if scale == 1.0:
            return NoGuidance(), ["conditional"]
        return ClassifierFreeGuidance(scale), ["conditional", "unconditional"]

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
        draws use ``generator`` (the step's :meth:`training_generator` in training, a seeded one in
        evaluation, so both are reproducible). The default returns ``encoded`` unchanged.
        """
        return encoded

    def loss_frame_mask(self, batch: AVBatch, latents: Tensor, encoded: Any = None) -> Tensor | None:
        """An extra (B, T) bool mask of frames that enter the loss (FoleyGenEx's span mask), or None.

        ``encoded`` is what :meth:`prepare_targets` returned for this step.
        """
        return None

    def precompute_features(self, batch: AVBatch) -> dict[str, Tensor]:
        """What the frozen condition encoders give for ``batch``, keyed by :class:`~avgen.data.batch.Sample`
        field (``avgen precompute`` stores it in shards; :meth:`encode_conditions` then skips the encoder).

        Only features computed from what the batch carries (no placeholders); every tensor is (B, ...).
        The codec posterior is added by the caller. Default: nothing (every encoder runs online).
        """
        return {}

    def precomputed(self, batch: AVBatch, name: str, width: int) -> Tensor | None:
        """``batch.<name>`` (precomputed features, last dim ``width``) on the model's device, or None."""
        value = getattr(batch, name, None)
        if value is None:
            return None
        if value.shape[-1] != width:
            raise ValueError(
                f"batch {batch.ids[:4]}: precomputed {name} are {value.shape[-1]}-d but this model's encoder gives "
                f"{width}-d; the shards were made with another config: rerun `avgen precompute` with this config"
            )
        return value.to(self.device)

    def clip_seconds(self, batch: AVBatch) -> float:
        """Seconds of the batch's clips: from its audio, else its (precomputed) latents, else ``duration``."""
        if batch.audio is not None:
            return batch.audio.shape[1] / batch.sample_rate
        latents = batch.latents if batch.latents is not None else batch.posterior_mean
        if latents is not None:
            return latents.shape[1] * self.codec.hop_length / batch.sample_rate
        return self.duration

    # ------------------------------------------------------------------ helpers
    @property
    def inference_network(self) -> nn.Module:
        """The EMA network when EMA is enabled, else the trained network."""
        return self.ema_network.module if self.ema_network is not None else self.network

    def frozen_module_names(self) -> list[str]:
        """Top-level submodules with no trainable parameter: rebuilt from config, not checkpointed."""
        names = []
        for name, child in self.named_children():
            if name in ("network", "ema_network"):
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
        elif batch.posterior_mean is not None:  # precomputed shards: draw x1 from the stored posterior
            with torch.autocast(device_type=batch.posterior_mean.device.type, enabled=False):
                latents = self.codec.latents_from_posterior(batch.posterior_mean.float(), batch.posterior_std.float())
            lengths = batch.latent_lengths
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
        # Contiguous: randn_like(x1) follows x1's memory layout, and a codec's transposed view would make
        # the noise depend on where the latents came from (waveform now or precomputed shards).
        return latents.contiguous(), length_mask(lengths, latents.shape[1])

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this step's randomness from (seed, global step, batch index, rank) (avgen.training.randomness)."""
        self.randomness.start_step(self.global_step, batch_idx, self.global_rank)

    def training_generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """The generator every random draw of a training step takes (noise, t, condition dropout, masks).

        Seeded at every train batch start from (seed, global step, batch index, rank), so a resumed run
        draws what the uninterrupted run drew. Use the device of the tensor the draw is for.
        """
        return self.randomness.generator(device)

    def training_rand(self, like: Tensor) -> Tensor:
        """U[0, 1) draws shaped like ``like``, on its device, from :meth:`training_generator` (condition dropout)."""
        return torch.rand(like.shape, generator=self.training_generator(like.device), device=like.device)

    def training_step(self, batch: AVBatch, batch_idx: int) -> Tensor:
        x1, latent_mask = self.target_latents(batch)
        batch_size, num_latents, _ = x1.shape
        generator = self.training_generator(x1.device)
        encoded = self.prepare_targets(self.encode_conditions(batch), batch, x1, latent_mask, generator=generator)
        conditions = self.make_conditions(self.network, encoded, batch, latent_length=num_latents, branch="train")
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = self.time_sampler(batch_size, device=x1.device, generator=generator)
        x_t = interpolate(x0, x1, t)
        v, logs = self.velocity_and_logs(self.network, x_t, t, conditions, unless_all_valid(latent_mask))
        frame_mask = self._loss_mask(batch, x1, latent_mask, encoded)
        loss = flow_matching_loss(v.float(), target_velocity(x0, x1).float(), frame_mask)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
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
        optimizer = fastest_adam(optimizer)  # the fused Adam(W) kernel: the same update in one pass
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
        else:
            scheduler = LinearWarmupLR(optimizer, warmup_steps=1000)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ validation / test
    def validation_step(self, batch: AVBatch, batch_idx: int) -> dict[str, Any] | None:
        return self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: AVBatch, batch_idx: int) -> dict[str, Any] | None:
        return self._evaluation_step(batch, batch_idx, "test")

    @torch.no_grad()
    def binned_losses(self, batch: AVBatch, batch_idx: int = 0) -> list[Tensor]:
        """Flow-matching loss at t = (k + 0.5) / bins for each bin k, with noise seeded by batch_idx."""
        return self._binned_losses(batch, batch_idx)[0]

    @torch.no_grad()
    def _binned_losses(self, batch: AVBatch, batch_idx: int) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The binned losses and the logs of the conditional forward at the last bin."""
        network = self.inference_network
        x1, latent_mask = self.target_latents(batch)
        batch_size, num_latents, _ = x1.shape
        # A separate seeded generator for the target-dependent draws keeps the noise sequence unchanged.
        mask_generator = torch.Generator().manual_seed(self.val_seed + 7919 * (batch_idx + 1))
        encoded = self.prepare_targets(self.encode_conditions(batch), batch, x1, latent_mask, generator=mask_generator)
        conditions = self.make_conditions(network, encoded, batch, latent_length=num_latents, branch="conditional")
        generator = torch.Generator().manual_seed(self.val_seed + batch_idx)
        frame_mask = self._loss_mask(batch, x1, latent_mask, encoded)
        network_mask = unless_all_valid(latent_mask)
        losses, logs = [], {}
        for k in range(self.num_val_time_bins):
            # Fresh seeded noise per bin on the CPU generator: identical across devices and epochs.
            x0 = torch.randn(x1.shape, generator=generator).to(x1)
            t = torch.full((batch_size,), (k + 0.5) / self.num_val_time_bins, device=x1.device)
            v, logs = self.velocity_and_logs(network, interpolate(x0, x1, t), t, conditions, network_mask)
            losses.append(flow_matching_loss(v.float(), target_velocity(x0, x1).float(), frame_mask))
        return losses, logs

    def _evaluation_step(self, batch: AVBatch, batch_idx: int, stage: str) -> dict[str, Any] | None:
        losses, logs = self._binned_losses(batch, batch_idx)
        batch_size = len(batch)
        for k, loss in enumerate(losses):
            self.log(f"{stage}/loss_t{k}", loss, batch_size=batch_size, sync_dist=True)
        self.log(f"{stage}/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=batch_size, sync_dist=True)
        for name, value in logs.items():
            self.log(f"{stage}/{name}", value, batch_size=batch_size, sync_dist=True)
        if batch_idx >= self.num_val_generate_batches:
            return None
        options = SamplingOptions(num_steps=self.num_val_sampling_steps, seed=self.val_seed + batch_idx)
        waveforms, lengths = self.generate(batch, options)
        # Scored and logged by callbacks (avgen.training.OracleMetrics, GeneratedMediaLogger).
        return {"waveforms": waveforms, "lengths": lengths, "sample_rate": self.codec.sample_rate}

    # ------------------------------------------------------------------ generation
    def sampling_options(self, options: SamplingOptions | None = None, **fields: Any) -> SamplingOptions:
        """The options of one call: ``options`` (default: the paper's defaults) with ``fields`` replaced."""
        return resolve_options(self.generation.options_class, options, fields)

    def _output_lengths(self, batch: AVBatch, duration: float | None = None) -> tuple[int, Tensor]:
        seconds = self.duration if duration is None else duration
        default = int(round(seconds * self.codec.sample_rate))
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
        self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False, **fields: Any
    ) -> tuple[Tensor, Tensor, int]:
        """Solve the flow ODE from noise: (latents (B, T, C), waveform lengths (B,), waveform samples S).

        Encoders run once; the guidance branches' conditions are built and concatenated once and
        evaluated in ONE batched forward per Euler step over ``sampling_times(num_steps, sampling_shift)``.
        The noise comes from a CPU generator seeded with ``options.seed``, so it is the same on every device.
        """
        options = self.sampling_options(options, **fields)
        self._check_sample_rate(batch)
        num_steps = self.num_sampling_steps if options.num_steps is None else options.num_steps
        num_samples, lengths = self._output_lengths(batch, options.duration)
        num_latents = self.codec.num_latents(num_samples)
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=num_latents), num_latents)

        encoded = self.encode_conditions(batch)
        generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
        x0 = self.initial_noise((len(batch), num_latents, self.codec.latent_channels), generator, options)
        times = sampling_times(num_steps, self.sampling_shift).to(self.device)
        latents = self.solve_flow(batch, encoded, x0, times, options=options, latent_mask=unless_all_valid(latent_mask),
                                  progress=progress)
        return latents, lengths, num_samples

    def initial_noise(self, shape: tuple[int, ...], generator: torch.Generator | None, options: SamplingOptions) -> Tensor:
        """x0 ~ N(0, I) of the ODE, drawn on the CPU generator (the same noise on every device)."""
        return torch.randn(shape, generator=generator).to(self.device)

    @torch.no_grad()
    def solve_flow(
        self,
        batch: AVBatch,
        encoded: Any,
        x: Tensor,
        times: Tensor,
        *,
        options: SamplingOptions,
        latent_mask: Tensor | None,
        progress: bool = False,
    ) -> Tensor:
        """Integrate the guided flow ODE from x at times[0] along ``times`` (B, T, C) -> (B, T, C).

        The guidance of ``options`` (:meth:`guidance`) names its branches; their conditions are built
        from ``encoded`` and concatenated once; ONE batched forward per Euler step. A decreasing grid
        integrates backwards (latent inversion: data at t = 1 -> noise at t = 0).
        """
        network = self.inference_network
        num_latents = x.shape[1]
        guidance, branches = self.guidance(options, batch)
        branch_conditions = concat_conditions(
            [
                self.make_conditions(network, encoded, batch, latent_length=num_latents, branch=branch, options=options)
                for branch in branches
            ]
        )

        def predict(x: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None) -> Tensor:
            return self.predict_velocity(network, x, t, conditions, latent_mask)

        kwargs = {} if latent_mask is None else {"latent_mask": latent_mask}
        velocity_fn = self.step_function(guided_velocity_fn(predict, branch_conditions, guidance, **kwargs))
        return euler_sample(velocity_fn, x, times.to(x.device), progress=progress)

    def step_function(self, velocity_fn: Any) -> Any:
        """The per-step function ``velocity_fn(x, t)`` an ODE solve calls: compiled whole with ``compile``.

        With ``compile: true`` the whole guided step (CFG repeat, the network's ``predict_velocity``
        with its glue between the blocks, the guidance combine) is ONE ``torch.compile`` graph,
        traced once at the first Euler step and reused by every later step and sample of the same
        shape (the condition dataclass is read inside the graph, no break; the blocks' own compiled
        wrappers are inlined). torch's automatic dynamic shapes: another length recompiles once,
        symbolically; another network or guidance setting (CFG scale) traces again, within torch's
        recompile limit (``torch._dynamo.config.recompile_limit``; past it the step runs eagerly).
        Training keeps the per-block compile of :meth:`configure_model`. A subclass with its own
        solver wraps its velocity function with this too.
        """
        if not self.compile_network:
            return velocity_fn
        return torch.compile(velocity_fn, backend=self.compile_backend)

    def decode(self, latents: Tensor, num_samples: int, lengths: Tensor) -> Tensor:
        """Latents (B, T, C) -> waveforms (B, S) of ``num_samples``, zero past each sample's length."""
        waveforms = self._decode_latents(latents)[:, :num_samples]
        if waveforms.shape[1] < num_samples:
            waveforms = nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        return waveforms * length_mask(lengths, num_samples).to(waveforms.dtype)

    @torch.no_grad()
    def generate(
        self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False, **fields: Any
    ) -> tuple[Tensor, Tensor]:
        """Sample audio for a batch: (waveforms (B, S), lengths (B,)); samples past a length are zero.

        ``options``: the paper's :class:`~avgen.models.generation.SamplingOptions` (default: its
        defaults); keyword ``fields`` replace single options (``model.generate(batch, num_steps=8)``).
        The length is the batch's audio length when it carries audio, else ``options.duration``
        (default: the model's ``duration``) seconds.
        """
        latents, lengths, num_samples = self.sample_latents(batch, options, progress=progress, **fields)
        return self.decode(latents, num_samples, lengths), lengths

    def predict_step(self, batch: AVBatch | GenerationRequest, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``avgen generate`` / ``avgen predict``: a :class:`GenerationRequest` carries its options; a bare
        batch uses the paper's defaults. Batch i gets seed + i."""
        if isinstance(batch, GenerationRequest):
            batch, options = batch.batch, batch.options
        else:
            options = self.sampling_options()
        waveforms, lengths = self.generate(batch, options.for_batch(batch_idx))
        return {"ids": list(batch.ids), "waveforms": waveforms, "lengths": lengths, "sample_rate": self.codec.sample_rate}

    # ------------------------------------------------------------------ compile
    def configure_model(self) -> None:
        """``compile``: torch.compile the declared blocks of the network and the EMA network, once
        (Lightning calls this hook in every fit / validate / predict; compiling is idempotent)."""
        if not self.compile_network:
            return
        from avgen.nn.blocks import compile_blocks

        for network in (self.network, None if self.ema_network is None else self.ema_network.module):
            if network is not None:
                compile_blocks(network, backend=self.compile_backend)

    # ------------------------------------------------------------------ initialisation from another run
    def setup(self, stage: str) -> None:
        """A new ``fit`` with ``init_checkpoint`` starts from its weights (before any ``--ckpt_path`` resume restore)."""
        if stage != "fit" or not self.init_checkpoint or getattr(self, "_initialised_from", None):
            return
        initialise_from_checkpoint(self, self.init_checkpoint)
        self._initialised_from = self.init_checkpoint

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["avgen"] = {"model_class": _class_name(self), "frozen_modules": self.frozen_module_names()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_class(checkpoint, _class_name(self))

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
