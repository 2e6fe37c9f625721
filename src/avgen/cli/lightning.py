"""LightningCLI for ``avgen fit|validate|test|predict|generate`` (subclass mode for model and data)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import avgen.codecs  # noqa: F401  (short class names in configs resolve only for imported classes)
import avgen.conditioning  # noqa: F401
import avgen.data  # noqa: F401
import avgen.models  # noqa: F401
import avgen.training  # noqa: F401
from avgen.checkpoints import check_checkpoint_class, read_training_checkpoint
from avgen.cli.generate import generation_interface_for, model_class_from_args, run_generate
from avgen.conditioning.tiny import register_tiny_models
from avgen.models.base import FlowMatchingModule
from avgen.models.generation import GenerationInputs, GenerationInterface, SamplingOptions

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
        """
        inputs = GenerationInputs(manifest=manifest, video=video, caption=caption, offscreen_caption=offscreen_caption,
                                  transcript=transcript, lyrics=lyrics, reference_audio=reference_audio)
        options = options if options is not None else type(model).generation.options_class()
        return run_generate(self, model, datamodule, ckpt_path, output_dir, inputs, options)


class AvgenCLI(LightningCLI):
    """LightningCLI with the ``generate`` subcommand, whose options come from the configured paper."""

    def __init__(self, *args: Any, generation: GenerationInterface | None = None, **kwargs: Any) -> None:
        self.generation = generation or GenerationInterface()
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule", "options"}}

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
            config = self.config_init[subcommand]
            options_class = self.generation.options_class
            kwargs["options"] = options_class(**{f.name: config.get(f.name, f.default)
                                                 for f in dataclasses.fields(options_class)})
        return kwargs

    def _parse_ckpt_path(self) -> None:
        """Refuse another paper's checkpoint before its hyper-parameters replace the config's model."""
        if not self.config.get("subcommand"):
            return
        subcommand = self.config.subcommand
        ckpt_path = self.config[subcommand].get("ckpt_path")
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


def run_cli(args: ArgsType = None, *, run: bool = True) -> AvgenCLI:
    """Build (and with ``run`` execute) the LightningCLI of ``avgen fit|validate|test|predict|generate``."""
    register_tiny_models()
    argv = list(sys.argv[1:] if args is None else args)
    generation = generation_interface_for(model_class_from_args(argv))
    return AvgenCLI(
        FlowMatchingModule,
        L.LightningDataModule,
        generation=generation,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=AvgenTrainer,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model owns its optimizer/scheduler callables
        args=args,
        run=run,
    )
