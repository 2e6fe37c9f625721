"""FoleyGenEx's generation interface: the six tasks of §3.2 (Fig. 3, Fig. 7), their options and checks.

``avgen generate --task {tta,vta,tc-vta,ac-vta,fe,edit}`` builds its flags from
:class:`FoleyGenExSampling`; :class:`FoleyGenExGeneration` refuses flags that do not fit the task
(before any checkpoint is loaded) and puts the run's explicit inputs into the batches: ``--caption``
replaces each sample's caption (and the TC-VTA / edit target caption), ``--reference_audio`` is the
reference of AC-VTA and FE, or the audio that ``edit`` regenerates a window of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from avgen.data.batch import AVBatch
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions, Task

__all__ = ["TASKS", "FoleyGenExSampling", "FoleyGenExGeneration"]

TASKS: dict[str, Task] = {
    "tta": Task("tta", "text to audio: the video streams are the null tokens", refuses=("video",)),
    "vta": Task("vta", "video (+ a caption that agrees with it) to audio", needs_video=True),
    "tc-vta": Task("tc-vta", "text-controlled: CLIP semantics zeroed, sync kept, the caption decides", needs_video=True),
    "ac-vta": Task("ac-vta", "audio-controlled: timbre from a reference clip, timing from the video", needs_video=True),
    "fe": Task("fe", "Foley extension of a reference segment along the video, chained past the window",
               needs_video=True, options=("total_duration",)),
    "edit": Task("edit", "regenerate a time window of existing audio by latent inversion", needs_video=True,
                 options=("edit_start", "edit_end")),
}
# Tasks that take --reference_audio (edit: the audio to edit).
REFERENCE_TASKS = ("ac-vta", "fe", "edit")


@dataclass
class FoleyGenExSampling(SamplingOptions):
    """FoleyGenEx's sampling options.

    Attributes:
        task: None (plain generation: video and caption as the data gives them) or one of tta, vta, tc-vta (text-controlled: video semantics zeroed; --caption, else each
            sample's contradicting caption), ac-vta (audio-controlled: reference audio), fe (Foley
            extension of a reference segment), edit (regenerate a time window).
        edit_start: start of the window to regenerate (seconds, --task edit); default: each sample's
            meta["edit_window"] (ToyWorld provides one).
        edit_end: end of the window to regenerate (seconds, --task edit).
        total_duration: seconds of audio to generate by chained Foley extension (--task fe); the data is
            loaded with video covering this duration.
    """

    task: str | None = None
    edit_start: float | None = None
    edit_end: float | None = None
    total_duration: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown --task {self.task!r}; choose one of {', '.join(TASKS)}")

    @property
    def edit_window(self) -> tuple[float, float] | None:
        return None if self.edit_start is None else (float(self.edit_start), float(self.edit_end))


class FoleyGenExGeneration(GenerationInterface):
    options_class = FoleyGenExSampling
    tasks = TASKS

    def check(self, options: FoleyGenExSampling, inputs: GenerationInputs, *, clip_seconds: float) -> None:  # type: ignore[override]
        task, single = options.task, self.single_sample(options, inputs)
        if task is None:
            for flag, value in (("reference_audio", inputs.reference_audio), ("edit_start", options.edit_start),
                                ("edit_end", options.edit_end), ("total_duration", options.total_duration)):
                if value is not None:
                    raise ValueError(f"--{flag} belongs to a task: add --task ({', '.join(TASKS)})")
            return super().check(options, inputs, clip_seconds=clip_seconds)
        if task == "tta" and inputs.video is not None:
            raise ValueError("--task tta generates from text only: drop --video (or use --task vta)")
        super().check(options, inputs, clip_seconds=clip_seconds)
        if task == "tta" and inputs.caption is None and inputs.manifest is None and not inputs.has_datamodule:
            raise ValueError("--task tta needs a caption: give --caption TEXT")
        if inputs.reference_audio is not None and task not in REFERENCE_TASKS:
            raise ValueError(f"--reference_audio is used by --task {' / '.join(REFERENCE_TASKS)}, not {task}")
        if inputs.reference_audio is None and task in REFERENCE_TASKS and single:
            what = {"ac-vta": "reference audio", "fe": "a segment to continue", "edit": "the audio to edit"}[task]
            raise ValueError(f"--task {task} with --video needs {what}: give --reference_audio PATH (an audio file)")
        if (options.edit_start is None) != (options.edit_end is None):
            raise ValueError("give both --edit_start and --edit_end (seconds), or neither to use each sample's window")
        if options.edit_start is not None:
            if options.edit_start < 0 or options.edit_start >= options.edit_end:
                raise ValueError(f"--edit_start {options.edit_start} must be >= 0 and < --edit_end {options.edit_end}")
            if inputs.reference_audio is None and options.edit_end > clip_seconds + 1e-6:
                raise ValueError(f"--edit_end {options.edit_end} is past the end of the {clip_seconds:g} s clip; "
                                 "choose a window inside it")
        if options.total_duration is not None and not options.total_duration > clip_seconds:
            raise ValueError(f"--total_duration {options.total_duration} must exceed the {clip_seconds:g} s training "
                             "window (shorter clips need no extension: use --task vta)")

    def single_sample(self, options: FoleyGenExSampling, inputs: GenerationInputs) -> bool:  # type: ignore[override]
        # Without --video, a caption is one text-only sample for tta; for the video tasks it replaces
        # the captions of the data's samples.
        if inputs.manifest is not None:
            return False
        return inputs.video is not None or (bool(inputs.texts) and options.task in (None, "tta"))

    def loading_duration(self, options: FoleyGenExSampling) -> float | None:  # type: ignore[override]
        return options.total_duration  # video covering the whole extension

    def prepare_batch(self, batch: AVBatch, options: FoleyGenExSampling, inputs: GenerationInputs,  # type: ignore[override]
                      reference: Tensor | None) -> AVBatch:
        size = len(batch)
        if inputs.caption is not None and not self.single_sample(options, inputs):
            metas = [{**m, "contradicting_caption": inputs.caption} for m in (batch.meta or [{}] * size)]
            batch = dataclasses.replace(batch, caption=[inputs.caption] * size, meta=metas,
                                        has_caption=torch.full((size,), bool(inputs.caption)))
        if reference is None:
            self._check_references(batch, options.task)
            return batch
        if options.task == "edit":  # the audio to edit replaces the samples' own audio
            return dataclasses.replace(
                batch, audio=reference[None].expand(size, -1).contiguous(),
                audio_lengths=torch.full((size,), reference.shape[0], dtype=torch.long),
                has_audio=torch.ones(size, dtype=torch.bool),
            )
        return super().prepare_batch(batch, options, inputs, reference)

    @staticmethod
    def _check_references(batch: AVBatch, task: str | None) -> None:
        """The data's samples must carry what a reference task uses when no --reference_audio is given."""
        if task == "ac-vta" and not bool(batch.has_reference_audio.all()):
            lacking = [i for i, has in zip(batch.ids, batch.has_reference_audio.tolist()) if not has]
            raise ValueError(
                f"--task ac-vta needs reference audio, but samples {lacking[:4]} carry none; give "
                "--reference_audio PATH (an audio file), or use data whose samples have reference audio "
                "(ToyWorld: always_reference: true; manifests: a 'reference_audio' column)"
            )
        if task == "fe" and not bool((batch.has_reference_audio | batch.has_audio).all()):
            raise ValueError(f"--task fe needs a segment to continue, but samples {batch.ids[:4]} carry no audio; "
                             "give --reference_audio PATH (an audio file)")
        if task == "edit" and not bool(batch.has_audio.all()):
            raise ValueError(f"--task edit needs the audio to edit, but samples {batch.ids[:4]} carry no audio; "
                             "give --reference_audio PATH (an audio file)")
