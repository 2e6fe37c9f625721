"""Harmony's generation interface (spec §1.1, §1.7): one checkpoint, five tasks.

=======  ==============================  =================================================================
task     generates                       inputs
=======  ==============================  =================================================================
joint    video + audio                   video prompt, audio caption, transcript, reference image (first
                                         frame), reference audio when the sample has one (Fig. 2b)
a2v      video                           the sample's audio, given clean (Supp §11 "audio-driven video")
v2a      audio                           the sample's target video, given clean (Eq. 3-4's V2A task)
clone    video + audio (audio only for   the joint task with the reference audio required: its latent is
         an audio-only network)          prepended clean to the target (Supp §10, voice cloning)
audio    audio                           text only (TTS / T2A, stages 1-2), reference audio if present
=======  ==============================  =================================================================

Defaults (Supp §2): 40 Euler steps on Wan's shifted grid (shift 5), SyncCFG with s_v = 3 and s_a = 2.
``--guidance text`` is the "w/o SyncCFG" ablation (Eq. 8), ``none`` the conditional prediction.
``avgen generate`` writes ``<id>.mp4`` (the audio muxed in) and ``<id>.wav`` for tasks that make video,
``<id>.wav`` for audio. Driving media for a2v / v2a come from the data (ToyWorld, or ``--manifest``
entries with audio and video); ``--caption`` (audio caption), ``--transcript``, ``--video_prompt`` and
``--reference_audio`` replace the data's texts / reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from avgen.data.batch import AVBatch
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions, Task, with_texts
from avgen.models.harmony.sync_cfg import GUIDANCE_MODES

__all__ = ["TASKS", "HarmonyGeneration", "HarmonySampling"]

TASKS: dict[str, Task] = {
    "joint": Task("joint", "text (+ reference image, + reference audio) to video + audio"),
    "a2v": Task("a2v", "audio-driven video: the data's audio drives the video", needs_video=False,
                refuses=("transcript", "reference_audio")),
    "v2a": Task("v2a", "video-driven audio: the data's target video drives the audio", refuses=("video",)),
    "clone": Task("clone", "voice cloning: joint generation with --reference_audio (or the data's reference)"),
    "audio": Task("audio", "audio only (TTS / text-to-audio), reference audio if present", refuses=("video",)),
}


@dataclass
class HarmonySampling(SamplingOptions):
    """Harmony's sampling options (Supp §2: 40 steps, shift 5, SyncCFG s_v = 3, s_a = 2).

    Attributes:
        task: joint (default), a2v (audio-driven video), v2a (video-driven audio), clone (voice cloning:
            needs a reference audio) or audio (no video).
        guidance: sync (SyncCFG, Eq. 9-10: video against a mute-audio anchor, audio against a static-video
            anchor), text (plain text CFG, Eq. 8: the "w/o SyncCFG" ablation) or none.
        video_scale: s_v, the video guidance scale (default: the model's, 3).
        audio_scale: s_a, the audio guidance scale (default: the model's, 2).
        shift: timestep shift of the sampling grid (default: the model's, 5).
        video_prompt: the video prompt of every sample (default: the data's video captions).
        use_reference: prepend the sample's reference audio when it has one (joint / audio tasks).
    """

    task: str | None = None
    guidance: str | None = None
    video_scale: float | None = None
    audio_scale: float | None = None
    shift: float | None = None
    video_prompt: str | None = None
    use_reference: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown --task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.guidance is not None and self.guidance not in GUIDANCE_MODES:
            raise ValueError(f"unknown --guidance {self.guidance!r}; choose one of {', '.join(GUIDANCE_MODES)}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")


class HarmonyGeneration(GenerationInterface):
    options_class = HarmonySampling
    tasks = TASKS

    def check(self, options: HarmonySampling, inputs: GenerationInputs, *, clip_seconds: float) -> None:  # type: ignore[override]
        super().check(options, inputs, clip_seconds=clip_seconds)
        if options.task in ("a2v", "v2a") and inputs.manifest is None and not inputs.has_datamodule:
            raise ValueError(f"--task {options.task} drives one modality with the data's other one: configure data "
                             "or give --manifest with audio and video entries")
        if options.task == "clone" and inputs.reference_audio is None and not inputs.has_datamodule and inputs.manifest is None:
            raise ValueError("--task clone needs a voice: give --reference_audio PATH")

    def single_sample(self, options: HarmonySampling, inputs: GenerationInputs) -> bool:  # type: ignore[override]
        # Text alone makes one sample for the text tasks; the driven tasks adjust the data's samples.
        if inputs.manifest is not None or options.task in ("a2v", "v2a"):
            return False
        return inputs.video is not None or bool(inputs.texts)

    def loading_duration(self, options: HarmonySampling) -> float | None:  # type: ignore[override]
        return options.duration

    def prepare_batch(self, batch: AVBatch, options: HarmonySampling, inputs: GenerationInputs,  # type: ignore[override]
                      reference: Tensor | None) -> AVBatch:
        batch = super().prepare_batch(batch, options, inputs, reference)
        return with_texts(batch, {"caption": inputs.caption, "transcript": inputs.transcript,
                                  "video_caption": options.video_prompt})
