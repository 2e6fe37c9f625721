"""The ``avgen`` command.

* ``avgen fit|validate|test|predict --config configs/<paper>/<name>.yaml [--a.b=c]``: LightningCLI in
  subclass mode for model and data, so any model runs on any datamodule (design §2).
* ``avgen generate --config C --ckpt_path K --output_dir D [inputs]``: one ``<id>.wav`` per sample;
  ``--task {tta,vta,tc-vta,ac-vta,fe,edit}`` selects a FoleyGenEx task (§3.2) with its inputs
  (``--reference_audio``, ``--edit_start/--edit_end``, ``--total_duration``).
* ``avgen summary --config C``: parameter counts per submodule, built on the meta device.
* ``avgen toyworld export --n N --output_dir D``: ToyWorld as real files (mp4 + wav + manifest).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from torch.utils.data import DataLoader

import avgen.codecs  # noqa: F401  (short class names in configs resolve only for imported classes)
import avgen.conditioning  # noqa: F401
import avgen.data  # noqa: F401
import avgen.models  # noqa: F401
from avgen.conditioning.tiny import register_tiny_models
from avgen.models.base import FlowMatchingModule

__all__ = ["main", "run_cli", "AvgenCLI", "AvgenTrainer", "WavWriter", "TaskOptions", "model_summary", "TASKS"]

# FoleyGenEx tasks (§3.2, Fig. 3 and 7) and the inputs each one needs besides the datamodule's sample.
TASKS: tuple[str, ...] = ("tta", "vta", "tc-vta", "ac-vta", "fe", "edit")
VIDEO_TASKS = ("vta", "tc-vta", "ac-vta", "fe", "edit")
REFERENCE_TASKS = ("ac-vta", "fe", "edit")  # tasks that take --reference_audio (edit: the audio to edit)

_LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "generate")
_COMMANDS = {
    "fit": "Train a model: avgen fit --config configs/<paper>/<name>.yaml [--a.b=c ...]",
    "validate": "Run the validation loop (loss per t bin, oracle metrics) of a config or checkpoint",
    "test": "Run the test loop of a config, usually with --ckpt_path",
    "predict": "Run Trainer.predict over the datamodule's predict split",
    "generate": "Write one <id>.wav per sample from a checkpoint (datamodule predict split, a manifest or one video)",
    "summary": "Print parameter counts per submodule without allocating weights (meta device)",
    "toyworld": "ToyWorld data tools: `avgen toyworld export` writes mp4 + wav + manifest files",
}


def _usage() -> str:
    width = max(len(c) for c in _COMMANDS)
    lines = [
        "usage: avgen <command> [options]",
        "",
        "avgen: train, evaluate and sample video-to-audio / audio-video generation models",
        "(OmniSonic, AudioGen-Omni, FoleyGenEx, Harmony) with PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {text}" for name, text in _COMMANDS.items()),
        "",
        "Run `avgen <command> --help` for the options of a command, e.g.",
        "  avgen fit --config configs/foleygenex/tiny.yaml --trainer.max_steps=100",
        "  avgen fit --config configs/foleygenex/tiny.yaml --print_config",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- generate
class WavWriter(BasePredictionWriter):
    """Writes each predicted sample to ``<output_dir>/<id>.wav`` (16-bit PCM, cropped to its length)."""

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.written: list[Path] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        import soundfile as sf

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for sample_id, waveform, length in zip(prediction["ids"], prediction["waveforms"], prediction["lengths"]):
            path = self.output_dir / f"{_safe_name(sample_id)}.wav"
            audio = waveform[: int(length)].float().clamp(-1, 1).cpu().numpy()
            sf.write(str(path), audio, int(prediction["sample_rate"]), subtype="PCM_16")
            self.written.append(path)


def _safe_name(sample_id: str) -> str:
    # Ids may carry a relative path (manifests); keep the file inside output_dir.
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(sample_id)).strip(".") or "sample"


class AvgenTrainer(L.Trainer):
    """Lightning's Trainer plus ``generate`` (an ``avgen`` subcommand)."""

    def generate(
        self,
        model: FlowMatchingModule,
        datamodule: Optional[L.LightningDataModule] = None,
        ckpt_path: Optional[str] = None,
        output_dir: str = "generated",
        manifest: Optional[str] = None,
        video: Optional[str] = None,
        caption: Optional[str] = None,
        transcript: Optional[str] = None,
        offscreen_caption: Optional[str] = None,
        num_steps: Optional[int] = None,
        cfg_scale: Optional[float] = None,
        seed: Optional[int] = 0,
        cfg_preset: Optional[str] = None,
        cfg_scales: Optional[list[float]] = None,
        task: Optional[str] = None,
        reference_audio: Optional[str] = None,
        edit_start: Optional[float] = None,
        edit_end: Optional[float] = None,
        total_duration: Optional[float] = None,
    ) -> list[Path]:
        """Write one <id>.wav per sample from a checkpoint (datamodule predict split, a manifest or one video).

        Args:
            ckpt_path: the trained checkpoint (its weights; its hyper-parameters override the config).
            output_dir: directory for the ``<id>.wav`` files (created).
            manifest: generate for every row of this manifest instead of the datamodule's predict split.
            video: generate for this one video file (with optional ``caption`` / ``transcript``).
            caption: text condition for ``--video`` (or alone, for text-to-audio).
            transcript: speech transcript for ``--video`` (models that use one).
            offscreen_caption: off-screen environmental sound caption for ``--video`` (OmniSonic).
            num_steps: Euler steps (default: the model's ``num_sampling_steps``).
            cfg_scale: classifier-free guidance scale (default: the model's ``cfg_scale``; 1 disables).
            seed: noise seed; batch i uses seed + i. None draws fresh noise.
            cfg_preset: OmniSonic: the multi-condition guidance scales of a UniHAGen scenario
                (s1, s2, s3; default: chosen per sample from its task / conditions).
            cfg_scales: OmniSonic: explicit scales (on-screen, off-screen, speech) of Eq. 9.
            task: a FoleyGenEx task, one of tta, vta, tc-vta (text-controlled: video semantics
                zeroed; ``caption``, else each sample's contradicting caption), ac-vta (audio-controlled:
                reference audio), fe (Foley extension of a reference segment), edit (regenerate
                a time window). Without it the model's plain ``generate`` runs.
            reference_audio: audio file (loaded at the model's rate): the reference of ac-vta, the
                segment fe continues, the audio edit regenerates a window of; default: each sample's
                reference audio (fe: else the start of its own audio; edit: its own audio).
            edit_start: start of the window to regenerate (seconds, --task edit); default: each
                sample's ``meta["edit_window"]`` (ToyWorld provides one).
            edit_end: end of the window to regenerate (seconds, --task edit).
            total_duration: seconds of audio to generate by chained Foley extension (--task fe); the
                data is loaded with video covering this duration.
        """
        if ckpt_path is None:
            raise ValueError("avgen generate needs --ckpt_path <checkpoint>; train one with `avgen fit` first")
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
        if manifest is not None and (video is not None or caption is not None or offscreen_caption is not None):
            raise ValueError("give either --manifest or --video/--caption/--offscreen_caption, not both")
        explicit_text = caption is not None or offscreen_caption is not None or transcript is not None
        single = manifest is None and (video is not None or (explicit_text and task in (None, "tta")))
        callbacks: list[Callback] = [WavWriter(output_dir)]
        writer = callbacks[0]
        options: dict[str, Any] = {"num_steps": num_steps, "cfg_scale": cfg_scale, "seed": seed}
        # Multi-condition guidance options (OmniSonic); a model that has none rejects them by name.
        options.update({k: v for k, v in (("cfg_preset", cfg_preset), ("cfg_scales", cfg_scales)) if v is not None})
        if task is None:
            for flag, value in (("--reference_audio", reference_audio), ("--edit_start", edit_start),
                                ("--edit_end", edit_end), ("--total_duration", total_duration)):
                if value is not None:
                    raise ValueError(f"{flag} belongs to a task: add --task ({', '.join(TASKS)})")
            model.predict_options = options
        else:
            _check_task_flags(model, task, video, caption, manifest, single, reference_audio, edit_start, edit_end,
                              total_duration, datamodule)
            reference = None
            if reference_audio is not None:
                from avgen.data.media import load_audio

                reference = load_audio(reference_audio, model.codec.sample_rate, None, 0.0).waveform
            edit_window = None if edit_start is None else (float(edit_start), float(edit_end))
            callbacks.append(TaskOptions({**options, "task": task, "edit_window": edit_window,
                                          "total_duration": total_duration}, reference, caption, reference_audio))
            if total_duration is not None and not single and manifest is None:
                datamodule.predict_duration = float(total_duration)  # video covering the extension
        self.callbacks.extend(callbacks)
        try:
            if manifest is not None:
                loader = _manifest_loader(manifest, datamodule, total_duration)
                self.predict(model, dataloaders=loader, ckpt_path=ckpt_path, return_predictions=False)
            elif single:
                loader = _single_sample_loader(video, caption, transcript, datamodule, model, total_duration,
                                               offscreen_caption=offscreen_caption)
                self.predict(model, dataloaders=loader, ckpt_path=ckpt_path, return_predictions=False)
            else:
                if datamodule is None:
                    raise ValueError("no datamodule configured: give --manifest, --video or --caption")
                self.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
        finally:
            for callback in callbacks:
                self.callbacks.remove(callback)
        if self.is_global_zero:
            print(f"avgen generate: wrote {len(writer.written)} wav files to {Path(output_dir).resolve()}")
        return writer.written


class TaskOptions(Callback):
    """Sets ``model.predict_options`` for each predict batch of a ``--task`` run.

    The keys the task-aware ``predict_step`` reads: ``task``, ``num_steps``, ``cfg_scale``, ``seed``,
    ``reference_audio`` ((B, S) tensor or None: then each sample's own), ``reference_lengths`` ((B,) or
    None), ``caption`` (list of B strings or None: then the samples' captions, or for tc-vta their
    ``meta["contradicting_caption"]``), ``edit_window`` ((start, end) seconds or None: then each
    sample's ``meta["edit_window"]``), ``total_duration`` (seconds or None).
    """

    def __init__(self, options: dict[str, Any], reference: Optional[torch.Tensor], caption: Optional[str],
                 reference_path: Optional[str] = None) -> None:
        self.options, self.reference, self.caption, self.reference_path = options, reference, caption, reference_path

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        task, size = self.options["task"], len(batch)
        reference = lengths = None
        if self.reference is not None:
            reference = self.reference.to(pl_module.device)[None].expand(size, -1).contiguous()
            lengths = torch.full((size,), self.reference.shape[0], dtype=torch.long, device=pl_module.device)
        elif task == "ac-vta" and not bool(batch.has_reference_audio.all()):
            lacking = [i for i, has in zip(batch.ids, batch.has_reference_audio.tolist()) if not has]
            raise ValueError(
                f"--task ac-vta needs reference audio, but samples {lacking[:4]} carry none; give "
                "--reference_audio PATH (an audio file), or use data whose samples have reference audio "
                "(ToyWorld: always_reference: true; manifests: a 'reference_audio' column)"
            )
        elif task in ("fe", "edit") and not bool((batch.has_reference_audio | batch.has_audio).all()
                                                  if task == "fe" else batch.has_audio.all()):
            what = "a segment to continue" if task == "fe" else "the audio to edit"
            raise ValueError(f"--task {task} needs {what}, but samples {batch.ids[:4]} carry no audio; give "
                             "--reference_audio PATH (an audio file)")
        if task == "edit" and self.options["edit_window"] is None:
            lacking = [i for i, m in zip(batch.ids, batch.meta) if not m.get("edit_window")]
            if lacking:
                raise ValueError(f"--task edit needs a window, but samples {lacking[:4]} have no meta['edit_window']; "
                                 "give --edit_start S --edit_end S (seconds)")
        pl_module.predict_options = {
            **self.options,
            "reference_audio": reference,
            "reference_lengths": lengths,
            "caption": None if self.caption is None else [self.caption] * size,
        }


def _check_task_flags(
    model: FlowMatchingModule,
    task: str,
    video: Optional[str],
    caption: Optional[str],
    manifest: Optional[str],
    single: bool,
    reference_audio: Optional[str],
    edit_start: Optional[float],
    edit_end: Optional[float],
    total_duration: Optional[float],
    datamodule: Optional[L.LightningDataModule],
) -> None:
    """Clear errors for flags that do not fit the task (before any checkpoint is loaded)."""
    if task not in TASKS:
        raise ValueError(f"unknown --task {task!r}; choose one of {', '.join(TASKS)}")
    if not hasattr(model, "generate_task"):
        raise ValueError(f"--task needs a model with task generation (FoleyGenEx); {type(model).__name__} has none. "
                         "Drop --task to use the model's own generation")
    if task == "tta" and video is not None:
        raise ValueError("--task tta generates from text only: drop --video (or use --task vta)")
    if task == "tta" and caption is None and manifest is None and datamodule is None:
        raise ValueError("--task tta needs a caption: give --caption TEXT")
    if task in VIDEO_TASKS and manifest is None and video is None and datamodule is None:
        raise ValueError(f"--task {task} needs video: give --video PATH, --manifest PATH or configure data")
    if reference_audio is not None:
        if task not in REFERENCE_TASKS:
            raise ValueError(f"--reference_audio is used by --task {' / '.join(REFERENCE_TASKS)}, not {task}")
        if not Path(reference_audio).is_file():
            raise FileNotFoundError(f"--reference_audio {reference_audio} does not exist; give an audio file")
    elif task in REFERENCE_TASKS and single:
        what = {"ac-vta": "reference audio", "fe": "a segment to continue", "edit": "the audio to edit"}[task]
        raise ValueError(f"--task {task} with --video needs {what}: give --reference_audio PATH (an audio file)")
    if (edit_start is None) != (edit_end is None):
        raise ValueError("give both --edit_start and --edit_end (seconds), or neither to use each sample's window")
    if edit_start is not None:
        if task != "edit":
            raise ValueError(f"--edit_start/--edit_end belong to --task edit, not --task {task}")
        if edit_start < 0 or edit_start >= edit_end:
            raise ValueError(f"--edit_start {edit_start} must be >= 0 and < --edit_end {edit_end}")
        clip = float(_media_options(datamodule).get("duration", model.duration))
        if reference_audio is None and edit_end > clip + 1e-6:
            raise ValueError(f"--edit_end {edit_end} is past the end of the {clip:g} s clip; choose a window inside it")
    if total_duration is not None:
        if task != "fe":
            raise ValueError(f"--total_duration belongs to --task fe (chained Foley extension), not --task {task}")
        clip = float(_media_options(datamodule).get("duration", model.duration))
        if not total_duration > clip:
            raise ValueError(f"--total_duration {total_duration} must exceed the {clip:g} s training window "
                             "(shorter clips need no extension: use --task vta)")
        if not single and manifest is None and datamodule is not None and not hasattr(datamodule, "predict_duration"):
            raise ValueError(f"{type(datamodule).__name__} cannot load clips of --total_duration; use "
                             "ToyWorldDataModule / ManifestDataModule / BalancedDataModule, --manifest or --video")


def _media_options(datamodule: Optional[L.LightningDataModule]) -> dict[str, Any]:
    """The shared media options (internal contract) of the configured datamodule, where it has them."""
    if datamodule is None:
        return {}
    from avgen.data.composite import MEDIA_OPTIONS, media_option

    values = {name: media_option(datamodule, name) for name in MEDIA_OPTIONS}
    return {name: value for name, value in values.items() if value is not None}


def _manifest_loader(
    manifest: str, datamodule: Optional[L.LightningDataModule], total_duration: Optional[float] = None
):
    from avgen.data import ManifestDataModule

    options = _media_options(datamodule)
    if total_duration is not None:
        options["duration"] = float(total_duration)
    batch_size = getattr(datamodule, "batch_size", None) or getattr(datamodule, "hparams", {}).get("batch_size", 1)
    dm = ManifestDataModule(predict_manifest=manifest, batch_size=batch_size, num_workers=0, **options)
    dm.setup("predict")
    return dm.predict_dataloader()


def _single_sample_loader(
    video: Optional[str],
    caption: Optional[str],
    transcript: Optional[str],
    datamodule: Optional[L.LightningDataModule],
    model: FlowMatchingModule,
    total_duration: Optional[float] = None,
    *,
    offscreen_caption: Optional[str] = None,
) -> DataLoader:
    """A loader of one sample from explicit inputs: the video's two frame streams and the texts.

    With ``total_duration`` (chained Foley extension) the video covers that many seconds, while the
    model's ``duration`` stays the training window.
    """
    from avgen.data.batch import Sample, collate

    options = _media_options(datamodule)
    sample_rate = int(options.get("sample_rate", model.codec.sample_rate))
    window = float(options.get("duration", model.duration))
    duration = window if total_duration is None else float(total_duration)
    streams: dict[str, Any] = {}
    sample_id = "sample"
    if video is not None:
        from avgen.data.media import load_video

        sample_id = Path(video).stem
        clip = load_video(
            video,
            fps=[float(options.get("semantic_fps", 8.0)), float(options.get("sync_fps", 25.0))],
            sizes=[int(options.get("semantic_size", 224)), int(options.get("sync_size", 224))],
            duration=duration,
        )
        streams = {"video_semantic": clip.streams[0], "video_sync": clip.streams[1]}
    sample = Sample(
        id=sample_id,
        sample_rate=sample_rate,
        caption=caption,
        offscreen_caption=offscreen_caption,
        transcript=transcript,
        seconds_total=duration,
        **streams,
    )
    # No audio: generate() produces `duration` seconds; keep the model's duration in step with the data.
    model.duration = window
    return DataLoader([sample], batch_size=1, collate_fn=collate)


# ---------------------------------------------------------------------------------- LightningCLI
class AvgenCLI(LightningCLI):
    """LightningCLI with the ``generate`` subcommand."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule"}}


def run_cli(args: ArgsType = None, *, run: bool = True) -> AvgenCLI:
    """Build (and with ``run`` execute) the LightningCLI of ``avgen fit|validate|test|predict|generate``.

    ``run=False`` only parses ``args`` (no subcommand) and instantiates model, data and trainer,
    for notebooks and tests: ``run_cli(["--config", "configs/foleygenex/tiny.yaml"], run=False).model``.
    """
    register_tiny_models()
    return AvgenCLI(
        FlowMatchingModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=AvgenTrainer,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model owns its optimizer/scheduler callables
        args=args,
        run=run,
    )


# ---------------------------------------------------------------------------------- summary
def model_summary(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(name, parameters) per top-level submodule, then per submodule of ``model.network``."""
    rows = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    network = getattr(model, "network", None)
    if isinstance(network, torch.nn.Module):
        rows += [
            (f"network.{name}", sum(p.numel() for p in child.parameters()))
            for name, child in network.named_children()
        ]
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        rows.append(("(own parameters)", direct))
    return rows


def _meta_or_cpu_instantiator(class_type: type, *args: Any, **kwargs: Any) -> Any:
    """Build on the meta device; a component whose constructor computes with real tensors (e.g. a
    mel filterbank's ``.item()``) is built on the CPU instead, and named, so the counts stay exact."""
    try:
        return class_type(*args, **kwargs)
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
        print(f"note: {class_type.__name__} cannot be built on the meta device; built on the CPU", file=sys.stderr)
        with torch.device("cpu"):
            return class_type(*args, **kwargs)


def _summary(argv: list[str]) -> None:
    parser = LightningArgumentParser(
        prog="avgen summary",
        description="Print parameter counts per submodule of the configured model, built on the meta "
        "device (no weights allocated), then the total.",
    )
    parser.add_argument("-c", "--config", action="config", help="the model config (configs/<paper>/<name>.yaml)")
    parser.add_lightning_class_args(FlowMatchingModule, "model", subclass_mode=True)
    # The other sections of a full config are accepted and ignored.
    for key in ("trainer", "data", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{key}", type=Optional[Union[dict, bool, str]], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=True, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt_path", type=Optional[str], default=None, help=argparse.SUPPRESS)
    parser.add_instantiator(_meta_or_cpu_instantiator, torch.nn.Module, subclasses=True)
    config = parser.parse_args(argv)
    with torch.device("meta"):
        model = parser.instantiate_classes(config).model
    rows = model_summary(model)
    for name, count in rows:
        print(f"{name}: {count:,}")
    print(f"total parameters: {sum(p.numel() for p in model.parameters()):,}")


# ---------------------------------------------------------------------------------- toyworld
def _toyworld(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="avgen toyworld", description="ToyWorld, the procedural audio-visual world avgen trains on by default."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    export = sub.add_parser(
        "export",
        help="write N samples as real files (mp4 video, wav audio) plus a manifest",
        description="Write N ToyWorld samples as real media files (mp4 + wav) and a manifest that "
        "ManifestDataModule reads, exercising the real-media path.",
    )
    export.add_argument("--n", type=int, required=True, help="number of samples")
    export.add_argument("--output_dir", required=True, help="directory for media files and the manifest")
    export.add_argument("--split", default="train", help="ToyWorld split (train/val/test/predict)")
    export.add_argument("--seed", type=int, default=0, help="world seed (samples are deterministic per seed)")
    export.add_argument("--duration", type=float, help="clip length in seconds (default 2.0)")
    export.add_argument("--sample_rate", type=int, help="audio sample rate in Hz (default 16000)")
    export.add_argument("--size", type=int, help="video frame side in pixels (default 64); the mp4 is 25 fps")
    export.add_argument("--scenarios", nargs="+", help="scenarios to draw from, e.g. vta tta omnisonic_s1 joint_av")
    export.add_argument("--speech", choices=["auto", "espeak", "formant"], help="speech synthesizer (default auto)")
    ns = parser.parse_args(argv)
    from avgen.data import export_toyworld

    media = {
        k: getattr(ns, k)
        for k in ("duration", "sample_rate", "size", "scenarios", "speech")
        if getattr(ns, k) is not None
    }
    manifest = export_toyworld(ns.n, ns.output_dir, split=ns.split, seed=ns.seed, **media)
    print(f"avgen toyworld export: wrote {ns.n} samples to {Path(ns.output_dir).resolve()} (manifest {manifest})")


# ---------------------------------------------------------------------------------- entry point
def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``avgen`` console script; ``args`` replaces ``sys.argv[1:]`` (tests)."""
    argv = list(sys.argv[1:] if args is None else args)
    register_tiny_models()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    command = argv[0]
    if command == "summary":
        _summary(argv[1:])
    elif command == "toyworld":
        _toyworld(argv[1:])
    elif command in _LIGHTNING_COMMANDS:
        # args=None lets LightningCLI read sys.argv itself (the DDP launcher re-executes it).
        run_cli(None if args is None else argv)
    else:
        print(_usage(), file=sys.stderr)
        raise SystemExit(f"avgen: unknown command {command!r}; choose one of {', '.join(_COMMANDS)}")


if __name__ == "__main__":
    main()
