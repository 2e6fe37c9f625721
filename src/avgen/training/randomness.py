"""Randomness of a training step as a pure function of (seed, global step, batch index, rank).

A resumed run (``avgen fit --ckpt_path last``) reproduces the uninterrupted run only if every random
draw after the checkpoint is the one the uninterrupted run made. Saving and restoring generator
states would work only for checkpoints written between steps and would miss draws made by code we do
not own; instead every training step starts from generators seeded by where it is in the run:

* :meth:`StepRandomness.generator` gives the step's own ``torch.Generator`` on a device. Every draw a
  paper makes in its training step (noise x0, time t, condition dropout, span masks, reference cuts,
  mixing) takes it: ``torch.rand(shape, generator=self.training_generator(device), device=device)``
  in a :class:`~avgen.models.base.FlowMatchingModule` (DEVELOPERS.md, "Randomness");
* :meth:`StepRandomness.start_step` also re-seeds torch's global RNG (CPU and CUDA) from the same
  key, a separate stream, for the draws no paper code makes explicitly: ``nn.Dropout`` and
  layer-drop inside third-party encoders, a VAE codec's posterior sample.

The key includes the batch index, so the micro-batches of one optimizer step under gradient
accumulation draw differently, and the rank, so data-parallel ranks draw independent noise. The base
seed is the run's ``seed_everything`` seed (Lightning's ``PL_GLOBAL_SEED``; 0 without one): the same
config gives the same training noise, and so two identical runs stay bit-identical.
"""

from __future__ import annotations

import os

import torch

from avgen.seeding import mixed_seed

__all__ = ["StepRandomness", "step_seed"]

MODULE_STREAM, GLOBAL_STREAM = 0, 1


def step_seed(seed: int, global_step: int, batch_idx: int, rank: int, stream: int = MODULE_STREAM) -> int:
    """A well-mixed seed of the step's key."""
    return mixed_seed(seed, global_step, batch_idx, rank, stream)


def run_seed() -> int:
    """The seed of this run: ``seed_everything``'s (Lightning's ``PL_GLOBAL_SEED``), else 0."""
    try:
        return int(os.environ.get("PL_GLOBAL_SEED", 0))
    except ValueError:
        return 0


class StepRandomness:
    """The generators of one training step, one per device, seeded lazily from the step's key.

    Args:
        seed: the base seed; None reads the run's seed (:func:`run_seed`) at every :meth:`start_step`.
        reseed_global: also re-seed torch's global RNG at every step (for draws not routed through
            :meth:`generator`).
    """

    def __init__(self, seed: int | None = None, reseed_global: bool = True) -> None:
        self.seed = seed
        self.reseed_global = bool(reseed_global)
        self.key: tuple[int, int, int, int] = (run_seed() if seed is None else int(seed), 0, 0, 0)
        self._generators: dict[tuple[str, int | None], torch.Generator] = {}

    def start_step(self, global_step: int, batch_idx: int, rank: int = 0) -> None:
        """Start a training step: forget the previous step's generators; re-seed the global RNG."""
        seed = run_seed() if self.seed is None else int(self.seed)
        self.key = (seed, int(global_step), int(batch_idx), int(rank))
        self._generators.clear()
        if self.reseed_global:
            torch.manual_seed(step_seed(*self.key, stream=GLOBAL_STREAM))  # CPU and every CUDA device

    def generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """The step's generator on ``device`` (default CPU); successive draws continue its sequence.

        Outside a trainer (a test calling ``training_step`` directly) the key stays at step 0 and the
        generator keeps advancing, so repeated steps still draw fresh values.
        """
        device = torch.device("cpu" if device is None else device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        slot = (device.type, device.index)
        generator = self._generators.get(slot)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(step_seed(*self.key, stream=MODULE_STREAM))
            self._generators[slot] = generator
        return generator
