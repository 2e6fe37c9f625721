"""FoleyGenEx's six tasks of §3.2 (Fig. 3, Fig. 7): their options, checks and implementation.

:class:`FoleyGenExTasks` implements the tasks on top of the model's conditions and the shared ODE
solver (the LightningModule inherits it); :class:`FoleyGenExSampling` is their options dataclass.

``avgen generate --task {tta,vta,tc-vta,ac-vta,fe,edit}`` builds its flags from
:class:`FoleyGenExSampling`; :class:`FoleyGenExGeneration` refuses flags that do not fit the task
(before any checkpoint is loaded) and puts the run's explicit inputs into the batches: ``--caption``
replaces each sample's caption (and the TC-VTA / edit target caption), ``--reference_audio`` is the
reference of AC-VTA and FE, or the audio that ``edit`` regenerates a window of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from avgen.conditioning.sync import SYNC_SEGMENT_TOKENS
from avgen.data.batch import AVBatch, length_mask
from avgen.flow import sampling_times
from avgen.models.foleygenex.masking import time_window_mask
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions, Task

if TYPE_CHECKING:
    from avgen.models.foleygenex.module import FoleyGenExEncoded

__all__ = ["TASKS", "FoleyGenExSampling", "FoleyGenExGeneration", "FoleyGenExTasks"]

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


class FoleyGenExTasks:
    """The six tasks of §3.2, mixed into :class:`~avgen.models.foleygenex.FoleyGenEx` (which provides the
    encoders, the codec, ``encode_conditions`` and the shared ``solve_flow`` / ``decode``)."""

    # ------------------------------------------------------------------ inference tasks (§3.2)
    def _encode_text(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        features = self.text_encoder(list(captions))
        present = torch.tensor([bool(c) for c in captions], dtype=torch.bool, device=features.device)
        return features, present

    def _reference(self, batch: AVBatch, audio: Tensor | None, lengths: Tensor | None, task: str,
                   fallback_to_own_audio: bool = False) -> tuple[Tensor, Tensor]:
        """Reference waveforms (B, S) and lengths (B,): the argument, the batch's, or (FE) the own audio."""
        if audio is not None:
            audio = audio.to(self.device).float()
            if audio.dim() != 2 or audio.shape[0] != len(batch):
                raise ValueError(f"reference_audio must be (B={len(batch)}, S), got {tuple(audio.shape)}")
            if lengths is None:
                lengths = torch.full((len(batch),), audio.shape[1], dtype=torch.long)
            return audio, lengths.to(self.device).long()
        has = batch.has_reference_audio if batch.reference_audio is not None else torch.zeros(len(batch), dtype=torch.bool)
        if bool(has.all()):
            return batch.reference_audio.to(self.device).float(), batch.reference_audio_lengths.to(self.device).long()
        if fallback_to_own_audio and batch.audio is not None and bool(batch.has_audio.all()):
            # Foley extension of the clip itself: its first quarter-window is the reference.
            seconds = self.duration / 4
            n = min(batch.audio.shape[1], max(1, round(seconds * self.codec.sample_rate)))
            audio = batch.audio[:, :n].to(self.device).float()
            if bool(has.any()):
                own = audio.clone()
                ref = batch.reference_audio[:, :n].to(self.device).float()
                if ref.shape[1] < n:
                    ref = nn.functional.pad(ref, (0, n - ref.shape[1]))
                audio = torch.where(has.to(self.device)[:, None], ref, own)
            return audio, torch.full((len(batch),), n, dtype=torch.long, device=self.device)
        missing = [batch.ids[i] for i in range(len(batch)) if not bool(has[i])]
        raise ValueError(
            f"task {task!r} needs reference audio but samples {missing[:5]} carry none; pass reference_audio "
            "(`avgen generate --reference_audio FILE`) or use data with a reference_audio column"
        )

    def _reference_latents(self, reference: Tensor, lengths: Tensor, window: int) -> Tensor:
        """Encode references and crop them to one common length R (the shortest one), (B, R, C)."""
        latents = self._encode_audio(reference)
        num = int(self.codec.latent_lengths(lengths).clamp(max=latents.shape[1]).min().item())
        if num < 1:
            raise ValueError("a reference audio is empty; pass at least one latent frame of reference")
        if num >= window:
            raise ValueError(
                f"the reference covers {num} latent frames but the window holds {window}; use a reference shorter "
                f"than the training window ({self.duration} s)"
            )
        return latents[:, :num]

    def _sync_segments(self, sync: Tensor, start_segment: int, count: int) -> Tensor:
        """Segments [start, start + count) of a sync stream (B, S*8, D), the last one repeated past the end."""
        segments = sync.unflatten(1, (-1, SYNC_SEGMENT_TOKENS))  # (B, S, 8, D)
        index = torch.arange(start_segment, start_segment + count, device=sync.device).clamp(max=segments.shape[1] - 1)
        return segments[:, index].flatten(1, 2)

    def _num_sync_segments(self, seconds: float) -> int:
        """Synchformer segments of a clip of ``seconds`` (at least one: shorter clips get one segment)."""
        try:
            tokens = self.sync_encoder.num_tokens(round(seconds * self.sync_fps))
        except ValueError:  # shorter than one 16-frame window
            return 1
        return max(1, tokens // SYNC_SEGMENT_TOKENS)

    def _video_window(self, encoded: FoleyGenExEncoded, start: float, seconds: float) -> tuple[Tensor, Tensor]:
        """CLIP frames and sync segments of the video window [start, start + seconds) (time-sliced features)."""
        semantic = encoded.semantic_features
        first = min(round(start * self.semantic_fps), semantic.shape[1] - 1)
        count = max(1, round(seconds * self.semantic_fps))
        index = torch.arange(first, first + count, device=semantic.device).clamp(max=semantic.shape[1] - 1)
        sync = self._sync_segments(
            encoded.sync_features, round(start * self.sync_fps / SYNC_SEGMENT_TOKENS), self._num_sync_segments(seconds)
        )
        return semantic[:, index], sync

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator).to(self.device)

    def _initial_noise(self, shape: tuple[int, ...], cond_latent: Tensor, generator: torch.Generator | None) -> Tensor:
        """x0 ~ N(0, I), plus the conditional latent when ``noise_summation`` (Fig. 7)."""
        x0 = self._noise(shape, generator)
        return x0 + cond_latent if self.noise_summation else x0

    def _task_caption(self, batch: AVBatch, caption: list[str] | None, contradicting: bool) -> list[str]:
        if caption is not None:
            if len(caption) != len(batch):
                raise ValueError(f"caption must hold one string per sample ({len(batch)}), got {len(caption)}")
            return list(caption)
        if not contradicting:
            return list(batch.caption)
        metas = batch.meta or [{} for _ in range(len(batch))]
        return [
            str(m.get("contradicting_caption")) if isinstance(m, dict) and m.get("contradicting_caption") else c
            for m, c in zip(metas, batch.caption)
        ]

    def _require_video(self, encoded: FoleyGenExEncoded, batch: AVBatch, task: str) -> None:
        if not bool(encoded.video_present.any()):
            raise ValueError(
                f"task {task!r} needs video but no sample of {batch.ids[:4]} carries any; use task 'tta' for text only"
            )

    @torch.no_grad()
    def generate(
        self, batch: AVBatch, options: SamplingOptions | None = None, *, progress: bool = False, **fields: Any
    ) -> tuple[Tensor, Tensor]:
        """Waveforms (B, S) and lengths (B,) for ``options`` (:class:`FoleyGenExSampling`): its task, or
        plain generation when ``options.task`` is None (the shared recipe)."""
        options = self.sampling_options(options, **fields)
        task = getattr(options, "task", None)
        if task is None:
            return super().generate(batch, options, progress=progress)
        return self.generate_task(
            batch, task, num_steps=options.num_steps, cfg_scale=options.cfg_scale, seed=options.seed,
            edit_window=options.edit_window, total_duration=options.total_duration, progress=progress,
        )

    @torch.no_grad()
    def generate_task(
        self,
        batch: AVBatch,
        task: str = "vta",
        *,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        reference_audio: Tensor | None = None,
        reference_lengths: Tensor | None = None,
        caption: list[str] | None = None,
        edit_window: tuple[float, float] | None = None,
        total_duration: float | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One of the six tasks of §3.2 / Fig. 3 for a batch -> (waveforms (B, S), lengths (B,)).

        * ``tta``: text only, the video streams are the null tokens.
        * ``vta``: video (+ the batch's caption, which should agree with it).
        * ``tc-vta``: CLIP semantics all-zero (FV0), sync kept, any text (``caption``, else each
          sample's ``meta["contradicting_caption"]``, else its caption).
        * ``ac-vta``: the reference latent is injected and summed with the noise (Fig. 7) in front of
          the target; a surrogate reference video (the target's sync segments cropped / repeated to
          the reference length) is prepended to the target's sync features; CLIP semantics FV0,
          text FT0 (the null text: the "no text" input the network was trained with). Output:
          the target part.
        * ``fe``: continue the reference (the argument, the batch's reference audio, or the first
          quarter window of the clip's own audio) along the batch's video; the output spans
          ``total_duration`` (default: the training window) and starts with the reference. Past the
          window, windows are chained in the latent domain (:meth:`extend_latents`).
        * ``edit``: regenerate ``edit_window`` (seconds; else ``meta["edit_window"]``, else the middle
          third) of the existing audio (``reference_audio`` or the batch's audio) by latent
          inversion; the rest of the latent is kept exactly (:meth:`edit_latents`).
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        self._check_sample_rate(batch)
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        sample_rate = self.codec.sample_rate
        opts = dict(num_steps=num_steps, cfg_scale=cfg_scale, generator=generator, progress=progress)

        if task == "fe":
            latents, num_samples = self.extend_latents(
                batch, reference_audio, reference_lengths, total_duration=total_duration, **opts
            )
            lengths = torch.full((len(batch),), num_samples, dtype=torch.long, device=self.device)
            return self.decode(latents, num_samples, lengths), lengths
        if task == "edit":
            latents, lengths, num_samples = self.edit_latents(
                batch, reference_audio, reference_lengths, caption=caption, edit_window=edit_window, **opts
            )
            return self.decode(latents, num_samples, lengths), lengths

        if total_duration is not None:
            num_samples = round(total_duration * sample_rate)
            lengths = torch.full((len(batch),), num_samples, dtype=torch.long, device=self.device)
        else:
            num_samples, lengths = self._output_lengths(batch)
        num_latents = self.codec.num_latents(num_samples)
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=num_latents), num_latents)
        encoded = self.encode_conditions(batch)

        if task == "ac-vta":
            latents = self._ac_vta_latents(batch, encoded, reference_audio, reference_lengths, latent_mask, **opts)
            return self.decode(latents, num_samples, lengths), lengths

        if task == "tta":
            encoded = replace(encoded, video_present=torch.zeros_like(encoded.video_present))
        else:
            self._require_video(encoded, batch, task)
        if task == "tc-vta":
            text, present = self._encode_text(self._task_caption(batch, caption, contradicting=True))
            encoded = replace(encoded, semantic_features=torch.zeros_like(encoded.semantic_features),
                              text_features=text, text_present=present)
        elif caption is not None:
            text, present = self._encode_text(self._task_caption(batch, caption, contradicting=False))
            encoded = replace(encoded, text_features=text, text_present=present)
        x0 = self._noise((len(batch), num_latents, self.codec.latent_channels), generator)
        times = sampling_times(num_steps, self.sampling_shift)
        latents = self.solve_flow(batch, encoded, x0, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                  progress=progress)
        return self.decode(latents, num_samples, lengths), lengths

    def _ac_vta_latents(self, batch, encoded, reference_audio, reference_lengths, target_mask, *, num_steps,
                        cfg_scale, generator, progress) -> Tensor:
        """Fig. 7: [reference | target] timeline; returns the target's latents (B, T, C)."""
        self._require_video(encoded, batch, "ac-vta")
        num_target = target_mask.shape[1]
        reference, ref_lengths = self._reference(batch, reference_audio, reference_lengths, "ac-vta")
        ref_latents = self._reference_latents(reference, ref_lengths, window=10**9)
        batch_size, num_ref, channels = ref_latents.shape
        total = num_ref + num_target
        ref_seconds = num_ref / self.codec.latent_rate
        cond_latent = torch.zeros(batch_size, total, channels, device=self.device)
        cond_latent[:, :num_ref] = ref_latents
        generate = torch.cat([torch.zeros(batch_size, num_ref, dtype=torch.bool, device=self.device), target_mask], 1)
        latent_mask = torch.cat([torch.ones_like(generate[:, :num_ref]), target_mask], 1)
        # Surrogate reference video: the target's sync segments cropped / repeated to the reference length.
        target_segments = encoded.sync_features.shape[1] // SYNC_SEGMENT_TOKENS
        segments = torch.arange(self._num_sync_segments(ref_seconds)) % target_segments
        surrogate = encoded.sync_features.unflatten(1, (-1, SYNC_SEGMENT_TOKENS))[:, segments.to(self.device)]
        sync = torch.cat([surrogate.flatten(1, 2), encoded.sync_features], dim=1)  # [FRS | FS]
        num_frames = max(1, round(ref_seconds * self.semantic_fps)) + encoded.semantic_features.shape[1]
        semantic = encoded.semantic_features.new_zeros(batch_size, num_frames, encoded.semantic_features.shape[2])
        task_encoded = replace(
            encoded, semantic_features=semantic, sync_features=sync,  # FV0 and [FRS | FS]
            text_present=torch.zeros_like(encoded.text_present),  # FT0
            generate_mask=generate, cond_latent=cond_latent,
        )
        x0 = self._initial_noise((batch_size, total, channels), cond_latent, generator)
        times = sampling_times(num_steps, self.sampling_shift)
        latents = self.solve_flow(batch, task_encoded, x0, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                  progress=progress)
        return latents[:, num_ref:]

    @torch.no_grad()
    def extend_latents(
        self,
        batch: AVBatch,
        reference_audio: Tensor | None = None,
        reference_lengths: Tensor | None = None,
        *,
        total_duration: float | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, int]:
        """Foley extension (§3.2 FE), chained past the training window -> (latents (B, N, C), samples S).

        Window 1 covers [0, W) with the reference latent injected on its first R frames and summed
        with the noise; window k + 1 starts ``extension_context`` seconds (default R) before the end
        of what exists and injects that tail as its context. Every window sees the time slice of
        the batch's video under it (context video masked as in training). Frames already generated
        are never rewritten, so consecutive windows join inside one latent sequence, decoded once:
        no waveform crossfade.
        """
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        sample_rate, rate = self.codec.sample_rate, self.codec.latent_rate
        window_seconds = self.duration
        total_seconds = window_seconds if total_duration is None else float(total_duration)
        num_samples = round(total_seconds * sample_rate)
        total = self.codec.num_latents(num_samples)
        window = self.codec.num_latents(round(window_seconds * sample_rate))
        encoded = self.encode_conditions(batch)
        have_video = bool(encoded.video_present.any())
        if have_video:
            video_seconds = encoded.semantic_features.shape[1] / self.semantic_fps
            if video_seconds + 1.0 / self.semantic_fps < total_seconds:
                raise ValueError(
                    f"samples {batch.ids[:4]}: the video covers {video_seconds:.2f} s but Foley extension to "
                    f"total_duration={total_seconds:.2f} s needs video over the whole span; pass a longer video "
                    "(e.g. a larger data.init_args.duration for prediction) or a shorter total_duration"
                )
        reference, ref_lengths = self._reference(batch, reference_audio, reference_lengths, "fe",
                                                 fallback_to_own_audio=True)
        ref_latents = self._reference_latents(reference, ref_lengths, window=window)
        batch_size, num_ref, channels = ref_latents.shape
        if num_ref >= total:
            raise ValueError(f"the reference ({num_ref} frames) already covers total_duration ({total} frames)")
        context = num_ref if self.extension_context is None else max(1, round(self.extension_context * rate))
        if context >= window:
            raise ValueError(f"extension_context ({context} frames) must be shorter than the window ({window})")
        out = torch.zeros(batch_size, total, channels, device=self.device)
        out[:, :num_ref] = ref_latents
        filled, first = num_ref, True
        times = sampling_times(num_steps, self.sampling_shift)
        while filled < total:
            ctx = num_ref if first else min(context, filled)
            start = filled - ctx
            end = min(start + window, total)
            length = end - start
            cond_latent = torch.zeros(batch_size, length, channels, device=self.device)
            cond_latent[:, :ctx] = out[:, start:filled]
            generate = torch.zeros(batch_size, length, dtype=torch.bool, device=self.device)
            generate[:, ctx:] = True
            semantic, sync = self._video_window(encoded, start / rate, length / rate)
            window_encoded = replace(encoded, semantic_features=semantic, sync_features=sync,
                                     generate_mask=generate, cond_latent=cond_latent)
            x0 = self._initial_noise((batch_size, length, channels), cond_latent, generator)
            latents = self.solve_flow(batch, window_encoded, x0, times, latent_mask=None, options=SamplingOptions(cfg_scale=cfg_scale),
                                      progress=progress)
            out[:, filled:end] = latents[:, ctx:]
            filled, first = end, False
        return out, num_samples

    @torch.no_grad()
    def edit_latents(
        self,
        batch: AVBatch,
        audio: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        *,
        caption: list[str] | None = None,
        edit_window: tuple[float, float] | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor, int]:
        """Editing by latent inversion (§3.2 "Editing") -> (latents (B, T, C), lengths (B,), samples S).

        1. x1 = the codec latent of the existing audio (``audio``, else the batch's audio).
        2. Inversion: integrate the ODE backwards, t = 1 -> 0 on the same Euler grid, with the
           conditional velocity (CFG off, as in DDIM / rectified-flow inversion) under the source
           conditions (the sample's video and caption, the untouched region injected as context,
           the window as the generated span): x1 -> z.
        3. Regeneration from z under the target conditions: the new caption (``caption``, else
           ``meta["contradicting_caption"]``, else the source caption) with the video semantics
           zeroed as in TC-VTA when the caption changes, CFG at ``cfg_scale``.
        4. Splice in the latent domain: the window comes from the regeneration, every other frame
           is x1 itself (bit-exact), so there is no waveform seam.
        """
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        if audio is not None:
            audio = audio.to(self.device).float()
            lengths = (torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long) if audio_lengths is None
                       else audio_lengths).to(self.device).long()
        elif batch.audio is not None and bool(batch.has_audio.all()):
            audio, lengths = batch.audio.to(self.device).float(), batch.audio_lengths.to(self.device).long()
        else:
            raise ValueError(
                f"task 'edit' needs the audio to edit but samples {batch.ids[:4]} carry none; pass reference_audio "
                "(`avgen generate --reference_audio FILE`)"
            )
        x1 = self._encode_audio(audio)
        num_samples = audio.shape[1]
        latent_mask = length_mask(self.codec.latent_lengths(lengths).clamp(max=x1.shape[1]), x1.shape[1])
        seconds = lengths.double() / self.codec.sample_rate
        if edit_window is not None:
            start = torch.full_like(seconds, float(edit_window[0]))
            end = torch.full_like(seconds, float(edit_window[1]))
        else:
            metas = batch.meta or [{} for _ in range(len(batch))]
            windows = [m.get("edit_window") if isinstance(m, dict) else None for m in metas]
            start = torch.stack([torch.tensor(float(w[0])) if w else s / 3 for w, s in zip(windows, seconds.cpu())])
            end = torch.stack([torch.tensor(float(w[1])) if w else 2 * s / 3 for w, s in zip(windows, seconds.cpu())])
        edit = time_window_mask(x1.shape[1], self.codec.latent_rate, start.to(self.device), end.to(self.device))
        edit = edit & latent_mask
        if not bool(edit.any(dim=1).all()):
            raise ValueError(f"the edit window {edit_window} selects no latent frame of some of {batch.ids[:4]}")

        encoded = self.encode_conditions(batch)
        cond_latent = x1 * (latent_mask & ~edit).unsqueeze(-1).to(x1.dtype)
        source = replace(encoded, generate_mask=edit, cond_latent=cond_latent)
        captions = self._task_caption(batch, caption, contradicting=True)
        target = source
        if captions != list(batch.caption):
            text, present = self._encode_text(captions)
            target = replace(source, semantic_features=torch.zeros_like(encoded.semantic_features),
                             text_features=text, text_present=present)
        times = sampling_times(num_steps, self.sampling_shift)
        noise = self.solve_flow(batch, source, x1, times.flip(0), latent_mask=latent_mask, options=SamplingOptions(cfg_scale=1.0),
                                progress=progress)
        regenerated = self.solve_flow(batch, target, noise, times, latent_mask=latent_mask, options=SamplingOptions(cfg_scale=cfg_scale),
                                      progress=progress)
        return torch.where(edit.unsqueeze(-1), regenerated, x1), lengths, num_samples
