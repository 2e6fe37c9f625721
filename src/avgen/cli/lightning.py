"""LightningCLI for ``avgen fit|validate|test|predict|generate`` (subclass mode for model and data)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import avgen.codecs  # noqa: F401  (short class names in configs resolve only for imported classes)
import avgen.conditioning  # noqa: F401
import avgen.data  # noqa: F401
import avgen.models  # noqa: F401
import avgen.training  # noqa: F401
from avgen.checkpoints import check_checkpoint_class, read_training_checkpoint
from avgen.cli.generate import generation_interface_for, model_class_from_args, run_generate
from avgen.conditioning.tiny import register_tiny_models
from avgen.data.spec import MediaSpec
from avgen.models.base import FlowMatchingModule
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions
from avgen.training.checkpointing import find_last_checkpoint
from avgen.training.progress import LogProgress, is_terminal

__all__ = ["AvgenCLI", "AvgenTrainer", "run_cli"]


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
        offscreen_caption: Optional[str] = None,
        transcript: Optional[str] = None,
        lyrics: Optional[str] = None,
        reference_audio: Optional[str] = None,
        options: Optional[SamplingOptions] = None,
        overwrite: bool = False,
    ) -> list[Path]:
        """Write one <id>.wav per sample from a checkpoint (datamodule predict split, a manifest or one video).

        Args:
            ckpt_path: the trained checkpoint (its weights; its hyper-parameters override the config).
            output_dir: directory for the ``<id>.wav`` files (created).
            manifest: generate for every row of this manifest instead of the datamodule's predict split.
            video: generate for this one video file (with the texts below).
            caption: the (on-screen) sound caption of ``--video``, or alone for text-to-audio; with the
                data's samples, a task may use it instead of theirs.
            offscreen_caption: off-screen environmental sound caption (models that use one).
            transcript: speech transcript (models that use one).
            lyrics: song lyrics (models that use them).
            reference_audio: an audio file (loaded at the model's rate) that the paper's tasks use as
                their reference (timbre, voice, the segment to continue, the audio to edit).
            options: the paper's sampling options (the flags listed under its options dataclass).
            overwrite: replace existing ``<id>.wav`` files (default: keep them, write ``<id>-1.wav``).
        """
        inputs = GenerationInputs(manifest=manifest, video=video, caption=caption, offscreen_caption=offscreen_caption,
                                  transcript=transcript, lyrics=lyrics, reference_audio=reference_audio)
        options = options if options is not None else type(model).generation.options_class()
        return run_generate(self, model, datamodule, ckpt_path, output_dir, inputs, options, overwrite=overwrite)


class AvgenCLI(LightningCLI):
    """LightningCLI with the ``generate`` subcommand, whose options come from the configured paper."""

    def __init__(self, *args: Any, generation: GenerationInterface | None = None, subcommand: str | None = None,
                 **kwargs: Any) -> None:
        self.generation = generation or GenerationInterface()
        if subcommand in self.subcommands():
            # Only the parser of the subcommand that runs: each one inspects the Trainer, model and data
            # classes, which takes longer than parsing the config.
            only = {subcommand: self.subcommands()[subcommand]}
            self.subcommands = lambda: only  # type: ignore[method-assign]
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule", "options"}}

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        if trainer_config.get("enable_progress_bar") in (None, True) and not is_terminal():
            # Output to a file or pipe: a redrawn progress bar shows nothing there until the end.
            kwargs.setdefault("enable_progress_bar", False)
            steps = int(trainer_config.get("log_every_n_steps") or 50)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), LogProgress(every_n_steps=steps)]
        if self.subcommand != "generate":
            return self._with_callbacks(super().instantiate_trainer, kwargs)
        # Generation writes wav files, it is not a run: no logger and no saved config, hence no
        # lightning_logs/version_N folder per call.
        kwargs.setdefault("logger", False)
        saved, self.save_config_callback = self.save_config_callback, None
        try:
            return self._with_callbacks(super().instantiate_trainer, kwargs)
        finally:
            self.save_config_callback = saved

    @staticmethod
    def _with_callbacks(instantiate: Any, kwargs: dict[str, Any]) -> L.Trainer:
        """Instantiate the trainer, appending ``kwargs["callbacks"]`` to the configured ones."""
        extra = kwargs.pop("callbacks", [])
        trainer = instantiate(**kwargs)
        trainer.callbacks.extend(extra)
        return trainer

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "generate":
            options_class = self.generation.options_class
            # The paper's options dataclass as top-level flags (--num_steps, --task, --cfg_preset ...).
            parser.add_class_arguments(options_class, None, as_group=True)
            parser.set_defaults({"seed": 0})
        return parser

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand == "generate":
            kwargs["options"] = self._generation_options(self.config_init[subcommand])
        return kwargs

    def _dump_config(self) -> None:
        """Lightning's dump of the config (stored as the model's and data's hyper-parameters), without
        validating again the config it has just parsed: validation takes 80 % of the dump, which is a
        third of building a tiny model."""
        if hasattr(self, "config_dump"):
            return
        dump = self.parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml", skip_check=True)
        self.config_dump = yaml.safe_load(dump)
        if "subcommand" in self.config:
            self.config_dump = self.config_dump[self.config.subcommand]

    def _generation_options(self, config: Any) -> Any:
        """The paper's options dataclass from the parsed ``generate`` flags."""
        options_class = self.generation.options_class
        return options_class(**{f.name: config.get(f.name, f.default) for f in dataclasses.fields(options_class)})

    def _check_generate_flags(self) -> None:
        """Refuse ``generate`` flags that do not fit the paper's tasks before the model is built.

        Building a model (its text, vision and speech encoders) takes seconds on the tiny configs and
        minutes at paper size; the paper's checks need only the flags and the data's clip length, which
        the datamodule (cheap to build) declares. ``run_generate`` checks again with the built model.
        """
        config = self.config["generate"]
        options = self._generation_options(config)
        inputs = GenerationInputs(**{name: config.get(name) for name in GENERATE_INPUTS},
                                  has_datamodule=config.get("data") is not None)
        media = self._configured_media()
        if media is not None:  # else only the model knows the clip length: run_generate checks
            self.generation.check(options, inputs, clip_seconds=media.duration)

    def _configured_media(self) -> Optional[MediaSpec]:
        """The media spec of the configured datamodule, built alone (None: no datamodule, or it declares none)."""
        data = self.config["generate"].get("data")
        if data is None:
            return None
        # Only the data key: the parser instantiates what the namespace holds, not the model.
        only_data = Namespace(subcommand="generate", generate=Namespace(data=data.clone()))
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes  # jsonargparse < 4.49
        return MediaSpec.of(instantiate(only_data, instantiate_groups=False).generate.data)

    def _checkpoint_roots(self, subcommand: str) -> list[str]:
        """Where earlier runs of this config wrote checkpoints: ``<default_root_dir>/lightning_logs``
        and every ``ModelCheckpoint`` ``dirpath`` of the config."""
        trainer = self.config[subcommand].get("trainer") or {}
        root = Path(trainer.get("default_root_dir") or ".")
        return [str(root / "lightning_logs"), *_dirpaths(trainer.get("callbacks"))]

    def _parse_ckpt_path(self) -> None:
        """Refuse ``generate`` flags that do not fit, then another paper's checkpoint, before its
        hyper-parameters replace the config's model (LightningCLI calls this right after parsing)."""
        if not self.config.get("subcommand"):
            return
        subcommand = self.config.subcommand
        if subcommand == "generate":
            self._check_generate_flags()  # before the checkpoint is read and the model is built
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path == "last":  # the newest last.ckpt of earlier runs (Lightning looks in the new, empty run)
            ckpt_path = str(find_last_checkpoint(self._checkpoint_roots(subcommand)))
            sys.stderr.write(f"--ckpt_path last: resuming from {ckpt_path}\n")
            self.config[subcommand].ckpt_path = ckpt_path
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = read_training_checkpoint(ckpt_path)
        model_config = self.config[subcommand].get("model")
        class_path = getattr(model_config, "class_path", None) if model_config is not None else None
        if class_path:
            check_checkpoint_class(checkpoint, class_path, ckpt_path)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing the hyper-parameters saved in {ckpt_path} failed (see above)\n")
            raise


# The explicit inputs of ``avgen generate`` (AvgenTrainer.generate's arguments, GenerationInputs' fields).
GENERATE_INPUTS = ("manifest", "video", "caption", "offscreen_caption", "transcript", "lyrics", "reference_audio")


def _dirpaths(callbacks: Any) -> list[str]:
    """``dirpath`` of every ModelCheckpoint among configured trainer callbacks."""
    found = []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []:
        class_path = str(getattr(callback, "class_path", "") or "")
        init_args = getattr(callback, "init_args", None)
        dirpath = init_args.get("dirpath") if init_args is not None else getattr(callback, "dirpath", None)
        if ("ModelCheckpoint" in class_path or isinstance(callback, L.Callback)) and dirpath:
            found.append(str(dirpath))
    return found


def run_cli(args: ArgsType = None, *, run: bool = True) -> AvgenCLI:
    """Build (and with ``run`` execute) the LightningCLI of ``avgen fit|validate|test|predict|generate``."""
    register_tiny_models()
    argv = list(sys.argv[1:] if args is None else args)
    generation = generation_interface_for(model_class_from_args(argv))
    return AvgenCLI(
        FlowMatchingModule,
        L.LightningDataModule,
        generation=generation,
        subcommand=argv[0] if argv and run else None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=AvgenTrainer,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model owns its optimizer/scheduler callables
        args=args,
        run=run,
    )
