"""What a paper declares for ``avgen generate``: its sampling options, its tasks and their checks.

The contract (see ``docs/internal_contracts.md`` and the worked example in ``tests/toy_paper/``):

* **Sampling options are arguments.** Every generation call takes a :class:`SamplingOptions`
  dataclass (steps, guidance scale, seed, duration); a paper subclasses it with its own fields
  (OmniSonic's per-condition scales, FoleyGenEx's task). ``avgen generate`` turns the fields into
  flags (with the field docs as help text), and the options travel with each batch
  (:class:`GenerationRequest`) into ``predict_step`` -> ``generate`` -> the guidance and the ODE
  solver. Nothing is parked on the LightningModule or the network.
* **Each paper declares its interface** in ``models/<paper>/tasks.py``: a :class:`GenerationInterface`
  subclass naming the options class, the tasks (:class:`Task`) with the inputs each one needs or
  refuses, checks that run before any checkpoint is loaded, and how explicit inputs (``--caption``,
  ``--reference_audio`` ...) enter the batches. The LightningModule points at it with its class
  attribute ``generation``; ``cli/generate.py`` holds no paper names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from avgen.data.batch import AVBatch

__all__ = ["SamplingOptions", "GenerationInputs", "GenerationRequest", "Task", "GenerationInterface", "resolve_options",
           "with_texts"]


@dataclass
class SamplingOptions:
    """Options of one generation call, shared by every paper.

    Attributes:
        num_steps: Euler steps of the flow ODE (default: the model's ``num_sampling_steps``).
        cfg_scale: classifier-free guidance scale (default: the model's ``cfg_scale``; 1 disables guidance).
        seed: noise seed; batch i of a run uses seed + i (None draws fresh noise).
        duration: seconds to generate for inputs that carry no audio to take the length from
            (default: the model's ``duration``).
    """

    num_steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")

    def for_batch(self, batch_idx: int) -> "SamplingOptions":
        """The options of batch ``batch_idx`` of a run: its own seed, so batches get different noise."""
        return self if self.seed is None else dataclasses.replace(self, seed=self.seed + batch_idx)


def resolve_options(options_class: type[SamplingOptions], options: SamplingOptions | None, fields: dict[str, Any]) -> SamplingOptions:
    """``options`` (or the class defaults) with ``fields`` replaced; unknown names raise, naming the valid ones."""
    names = {f.name for f in dataclasses.fields(options_class)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"unknown sampling options {unknown}; {options_class.__name__} has {sorted(names)}")
    if options is None:
        return options_class(**fields)
    if not isinstance(options, options_class):
        # A base SamplingOptions given to a paper with more options: keep its shared fields.
        shared = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in names}
        return options_class(**{**shared, **fields})
    return dataclasses.replace(options, **fields) if fields else options


@dataclass(frozen=True)
class GenerationInputs:
    """What the user gave ``avgen generate`` besides the options (paths and texts; None = not given)."""

    manifest: str | None = None
    video: str | None = None
    caption: str | None = None
    offscreen_caption: str | None = None
    transcript: str | None = None
    lyrics: str | None = None
    reference_audio: str | None = None
    has_datamodule: bool = True

    @property
    def texts(self) -> dict[str, str]:
        return {k: v for k in ("caption", "offscreen_caption", "transcript", "lyrics") if (v := getattr(self, k)) is not None}

    def given(self, name: str) -> bool:
        return getattr(self, name) is not None


def with_texts(batch: AVBatch, texts: dict[str, str | None]) -> AVBatch:
    """``batch`` with every sample's text field ``name`` (caption, transcript, lyrics, video_caption) set to
    ``texts[name]`` and its presence flag to whether it is non-empty; ``None`` leaves a field as it is."""
    size = len(batch)
    changes: dict[str, Any] = {}
    for name, text in texts.items():
        if text is not None:
            changes[name] = [text] * size
            changes[f"has_{name}"] = torch.full((size,), bool(text), dtype=torch.bool)
    return dataclasses.replace(batch, **changes) if changes else batch


@dataclass
class GenerationRequest:
    """One batch to generate and the options to generate it with (what ``predict_step`` receives)."""

    batch: AVBatch
    options: SamplingOptions

    def to(self, device: torch.device | str) -> "GenerationRequest":
        return GenerationRequest(self.batch.to(device), self.options)

    def __len__(self) -> int:
        return len(self.batch)


@dataclass(frozen=True)
class Task:
    """A generation task of a paper.

    Attributes:
        name: the ``--task`` value.
        description: one line for ``--help``.
        needs_video: the task conditions on video (refused without ``--video``, a manifest or data).
        refuses: explicit inputs (``GenerationInputs`` field names) that do not fit the task.
        options: paper option fields that only this task uses (others refuse them by flag name).
    """

    name: str
    description: str
    needs_video: bool = False
    refuses: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


class GenerationInterface:
    """A paper's generation interface. Subclass it in ``models/<paper>/tasks.py``.

    The base class serves a paper with no tasks: plain generation from the data's samples, a
    manifest, or one sample built from ``--video`` / the texts.
    """

    options_class: ClassVar[type[SamplingOptions]] = SamplingOptions
    tasks: ClassVar[dict[str, Task]] = {}

    def task_of(self, options: SamplingOptions) -> Task | None:
        name = getattr(options, "task", None)
        if name is None or not self.tasks:
            return None
        if name not in self.tasks:
            raise ValueError(f"unknown --task {name!r}; choose one of {', '.join(self.tasks)}")
        return self.tasks[name]

    def check(self, options: SamplingOptions, inputs: GenerationInputs, *, clip_seconds: float) -> None:
        """Refuse flags that do not fit, before any checkpoint is loaded. ``clip_seconds``: the data's clip length."""
        if inputs.manifest is not None and (inputs.video is not None or inputs.texts):
            raise ValueError("give either --manifest or --video/--caption/..., not both")
        task = self.task_of(options)
        if task is None:
            return
        for name in task.refuses:
            if inputs.given(name):
                raise ValueError(f"--task {task.name} does not take --{name}")
        for field in sorted({f for t in self.tasks.values() for f in t.options} - set(task.options)):
            if getattr(options, field, None) is not None:
                owners = [t.name for t in self.tasks.values() if field in t.options]
                raise ValueError(f"--{field} belongs to --task {' / '.join(owners)}, not --task {task.name}")
        if task.needs_video and inputs.video is None and inputs.manifest is None and not inputs.has_datamodule:
            raise ValueError(f"--task {task.name} needs video: give --video PATH, --manifest PATH or configure data")

    def single_sample(self, options: SamplingOptions, inputs: GenerationInputs) -> bool:
        """Whether the explicit inputs form one sample (True) or adjust the data's samples (False)."""
        return inputs.manifest is None and (inputs.video is not None or bool(inputs.texts))

    def loading_duration(self, options: SamplingOptions) -> float | None:
        """Seconds of media to load per sample when it differs from the data's clip length (None: the same)."""
        return None

    def prepare_batch(self, batch: AVBatch, options: SamplingOptions, inputs: GenerationInputs,
                      reference: Tensor | None) -> AVBatch:
        """Apply the run's explicit inputs to a batch of the data. ``reference``: the loaded ``--reference_audio`` (S,).

        The default gives every sample the reference audio (voice cloning, timbre references).
        """
        if reference is None:
            return batch
        size = len(batch)
        return dataclasses.replace(
            batch,
            reference_audio=reference[None].expand(size, -1).contiguous(),
            reference_audio_lengths=torch.full((size,), reference.shape[0], dtype=torch.long),
            has_reference_audio=torch.ones(size, dtype=torch.bool),
        )
