"""AudioGen-Omni's generation interface (arXiv 2508.00733, Abstract, §3.3; spec §1.1): one checkpoint,
the task only chooses which conditions a sample keeps ("permitting arbitrary subsets of conditioning
inputs during inference without retraining", §3.3).

=========  =====  ========  ===========  ============================================
task       video  caption   text stream  paper
=========  =====  ========  ===========  ============================================
v2a        yes    kept      none         video-to-audio (Table 1), optionally captioned
v2s        yes    kept      transcript   video-to-speech (Tables 2-3)
v2song     yes    kept      lyrics       video-to-song
t2a        no     required  none         text-to-audio
tts        no     kept      transcript   text-to-speech (the caption describes the speaker)
t2song     no     kept      lyrics       text-to-song / music (empty lyrics: instrumental)
=========  =====  ========  ===========  ============================================

"kept" keeps the caption where the sample has one; combinations (video + caption + lyrics ...) are the
rows with a caption. ``avgen generate --task T`` with ``--caption`` / ``--transcript`` / ``--lyrics``
(one sample, or replacing the texts of the data's samples for the video tasks) and ``--duration``
(seconds, up to the model's ``max_duration``; the data is loaded at that length).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from avgen.data.batch import AVBatch
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions, Task, with_texts

__all__ = ["TASKS", "TASK_CONDITIONS", "AudioGenOmniGeneration", "AudioGenOmniSampling", "TaskConditions"]


@dataclass(frozen=True)
class TaskConditions:
    """Which conditions a task keeps. ``text``: ``"none"``, ``"transcript"`` or ``"lyrics"``."""

    video: bool
    caption_required: bool
    text: str


TASK_CONDITIONS: dict[str, TaskConditions] = {
    "v2a": TaskConditions(video=True, caption_required=False, text="none"),
    "v2s": TaskConditions(video=True, caption_required=False, text="transcript"),
    "v2song": TaskConditions(video=True, caption_required=False, text="lyrics"),
    "t2a": TaskConditions(video=False, caption_required=True, text="none"),
    "tts": TaskConditions(video=False, caption_required=False, text="transcript"),
    "t2song": TaskConditions(video=False, caption_required=False, text="lyrics"),
}

TASKS: dict[str, Task] = {
    "v2a": Task("v2a", "video (+ optional caption) to audio", needs_video=True, refuses=("transcript", "lyrics")),
    "v2s": Task("v2s", "video to speech: --transcript (+ optional caption)", needs_video=True, refuses=("lyrics",)),
    "v2song": Task("v2song", "video to song: --lyrics (+ optional caption)", needs_video=True, refuses=("transcript",)),
    "t2a": Task("t2a", "text to audio: --caption", refuses=("video", "transcript", "lyrics")),
    "tts": Task("tts", "text to speech: --transcript, --caption describes the speaker", refuses=("video", "lyrics")),
    "t2song": Task("t2song", "text to song / music: --caption + --lyrics (empty: instrumental)",
                   refuses=("video", "transcript")),
}


@dataclass
class AudioGenOmniSampling(SamplingOptions):
    """AudioGen-Omni's sampling options (§4: 25 Euler steps, CFG 4.5).

    Attributes:
        task: None (plain generation: every condition the data gives) or one of v2a, v2s (video +
            transcript), v2song (video + lyrics), t2a (caption), tts (caption + transcript), t2song
            (caption + lyrics); a task keeps only its conditions.
        t_start: flow time the Euler integration starts from (noise placed at t_start, the grid
            t_start..1 over num_steps). §3.4.2 "At inference time, we set t = 0.05" is ambiguous (spec
            §1.7); the default 0 is MMAudio's grid, 0.05 tries that reading.
    """

    task: str | None = None
    t_start: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown --task {self.task!r}; choose one of {', '.join(TASKS)}")
        if not 0.0 <= self.t_start < 1.0:
            raise ValueError(f"t_start must be in [0, 1), got {self.t_start}")


class AudioGenOmniGeneration(GenerationInterface):
    options_class = AudioGenOmniSampling
    tasks = TASKS

    def check(self, options: AudioGenOmniSampling, inputs: GenerationInputs, *, clip_seconds: float) -> None:  # type: ignore[override]
        super().check(options, inputs, clip_seconds=clip_seconds)
        if options.task is None:
            return
        spec = TASK_CONDITIONS[options.task]
        single = self.single_sample(options, inputs)
        if single and spec.text == "transcript" and inputs.transcript is None:
            raise ValueError(f"--task {options.task} speaks a transcript: give --transcript TEXT")
        if single and spec.caption_required and not inputs.caption:
            raise ValueError(f"--task {options.task} needs a caption: give --caption TEXT")
        if single and not spec.video and inputs.caption is None and inputs.transcript is None and inputs.lyrics is None:
            raise ValueError(f"--task {options.task} generates from text: give --caption / --transcript / --lyrics")

    def single_sample(self, options: AudioGenOmniSampling, inputs: GenerationInputs) -> bool:  # type: ignore[override]
        # Without --video, texts are one text-only sample for the text tasks (and plain generation);
        # for the video tasks they replace the texts of the data's samples.
        if inputs.manifest is not None:
            return False
        text_task = options.task is None or not TASK_CONDITIONS[options.task].video
        return inputs.video is not None or (bool(inputs.texts) and text_task)

    def loading_duration(self, options: AudioGenOmniSampling) -> float | None:  # type: ignore[override]
        return options.duration  # the video (and the output) cover the requested length

    def prepare_batch(self, batch: AVBatch, options: AudioGenOmniSampling, inputs: GenerationInputs,  # type: ignore[override]
                      reference: Tensor | None) -> AVBatch:
        return with_texts(batch, {"caption": inputs.caption, "transcript": inputs.transcript, "lyrics": inputs.lyrics})
