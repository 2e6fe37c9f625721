"""``avgen generate``: one ``<id>.wav`` per sample from a checkpoint (and ``<id>.mp4`` with the audio muxed
in for models that generate video), with the paper's own options.

The configured model class names its generation interface (``<Paper>.generation``, declared in
``models/<paper>/tasks.py``): its options dataclass becomes the command's flags (field docs as help),
its checks refuse flags that do not fit before any checkpoint is loaded, and it decides how explicit
inputs (``--video``, ``--caption``, ``--reference_audio`` ...) make or adjust the samples. Each batch
reaches ``predict_step`` as a :class:`~avgen.models.generation.GenerationRequest` carrying the options.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from avgen.data.batch import AVBatch, Sample, collate
from avgen.data.spec import MediaSpec
from avgen.models.generation import GenerationInputs, GenerationInterface, GenerationRequest, SamplingOptions

__all__ = ["WavWriter", "generation_interface_for", "run_generate", "model_class_from_args"]


class WavWriter(BasePredictionWriter):
    """Writes each predicted sample to ``<output_dir>/<id>.wav`` (16-bit PCM, cropped to its length).

    A prediction that carries ``video`` (B, F, 3, H, W) in [0, 1] (with ``video_lengths`` and
    ``video_fps``) also gets ``<id>.mp4`` beside its wav, holding the frames and the same audio (AAC).

    A clip whose peak exceeds ``peak`` is scaled down as a whole to that peak (instead of being
    hard-clipped at full scale, which distorts it); how many were scaled is reported. An existing
    file is never replaced silently: without ``overwrite`` the clip goes to ``<id>-1.wav`` (``-2`` ...)
    and the renamed files are reported.
    """

    def __init__(self, output_dir: str | Path, overwrite: bool = False, peak: float = 0.99):
        super().__init__(write_interval="batch")
        if not 0.0 < peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1], got {peak}")
        self.output_dir, self.overwrite, self.peak = Path(output_dir), bool(overwrite), float(peak)
        self.written: list[Path] = []
        self.scaled: list[tuple[str, float]] = []  # (id, original peak)
        self.renamed: list[Path] = []
        self.videos: list[Path] = []  # <id>.mp4 of predictions that carry video

    def _path(self, sample_id: str) -> Path:
        name = safe_name(sample_id)
        path = self.output_dir / f"{name}.wav"
        if (self.overwrite and path not in self.written) or not path.exists():
            return path
        n = 1
        while (self.output_dir / f"{name}-{n}.wav").exists():
            n += 1
        self.renamed.append(self.output_dir / f"{name}-{n}.wav")
        return self.renamed[-1]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        import soundfile as sf

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for sample_id, waveform, length in zip(prediction["ids"], prediction["waveforms"], prediction["lengths"]):
            audio = waveform[: int(length)].float().cpu()
            top = float(audio.abs().max()) if audio.numel() else 0.0
            if top > self.peak:
                audio = audio * (self.peak / top)
                self.scaled.append((str(sample_id), top))
            path = self._path(sample_id)
            sf.write(str(path), audio.clamp(-1, 1).numpy(), int(prediction["sample_rate"]), subtype="PCM_16")
            self.written.append(path)
        # Joint audio-video models (Harmony) also return frames: <id>.mp4 beside <id>.wav, the audio muxed in.
        if prediction.get("video") is not None:
            from avgen.data.media import write_mp4

            lengths = prediction.get("video_lengths")
            for i, (wav, frames) in enumerate(zip(self.written[-len(prediction["ids"]):], prediction["video"])):
                count = int(lengths[i]) if lengths is not None else frames.shape[0]
                audio, rate = sf.read(str(wav), dtype="float32")
                self.videos.append(write_mp4(wav.with_suffix(".mp4"), frames[:count], float(prediction["video_fps"]),
                                             audio=audio, sample_rate=rate))

    def notes(self) -> list[str]:
        """What was changed while writing, for the command's summary."""
        lines = []
        if self.scaled:
            worst = max(p for _, p in self.scaled)
            lines.append(f"{len(self.scaled)} of {len(self.written)} clips peaked above {self.peak:g} (up to "
                         f"{worst:.2f}) and were scaled down to peak {self.peak:g} instead of clipping, e.g. "
                         + ", ".join(i for i, _ in self.scaled[:3]))
        if self.renamed:
            lines.append(f"{len(self.renamed)} files already existed and were kept; the new clips went to "
                         + ", ".join(p.name for p in self.renamed[:3]) + " (pass --overwrite to replace them)")
        return lines


def safe_name(sample_id: str) -> str:
    # Ids may carry a relative path (manifests); keep the file inside output_dir.
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(sample_id)).strip(".") or "sample"


# ---------------------------------------------------------------------------------- the paper's interface
def _class_path_from_config(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("class_path")
    return None


def model_class_from_args(argv: list[str]) -> str | None:
    """The model class path a command line configures (``--config`` files, then ``--model`` flags; last wins)."""
    class_path = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if not eq and i + 1 < len(argv) and key in ("--config", "-c", "--model", "--model.class_path"):
            value, i = argv[i + 1], i + 1
        if key in ("--config", "-c") and value:
            try:
                config = yaml.safe_load(Path(value).read_text()) or {}
            except (OSError, yaml.YAMLError):
                config = {}
            found = _class_path_from_config(config.get("model")) if isinstance(config, dict) else None
            class_path = found or class_path
        elif key in ("--model", "--model.class_path") and value:
            class_path = value
        i += 1
    return class_path


def generation_interface_for(class_path: str | None) -> GenerationInterface:
    """The generation interface of a model class path (short names search avgen's models); the base one if unknown."""
    from avgen.models.base import FlowMatchingModule

    if not class_path:
        return GenerationInterface()
    cls = None
    module_name, _, name = class_path.rpartition(".")
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
    else:
        import avgen.models  # noqa: F401  (registers the built-in papers)

        def subclasses(base: type) -> list[type]:
            return [base] + [c for s in base.__subclasses__() for c in subclasses(s)]

        cls = next((c for c in subclasses(FlowMatchingModule) if c.__name__ == name), None)
    if isinstance(cls, type) and issubclass(cls, FlowMatchingModule):
        return cls.generation
    return GenerationInterface()


# ---------------------------------------------------------------------------------- data
def _media(datamodule: Optional[L.LightningDataModule], model) -> MediaSpec:
    """The media spec of the configured datamodule (any datamodule with ``media``), else the model's rate/length."""
    spec = MediaSpec.of(datamodule) if datamodule is not None else None
    if spec is None:
        from avgen.data.composite import MEDIA_OPTIONS, media_option

        found = {} if datamodule is None else {n: media_option(datamodule, n) for n in MEDIA_OPTIONS}
        found = {n: v for n, v in found.items() if v is not None}
        spec = MediaSpec(**{"sample_rate": model.codec.sample_rate, "duration": model.duration, **found})
    return spec


def _requests(loader: DataLoader, prepare: Callable[[AVBatch], AVBatch], options: SamplingOptions) -> DataLoader:
    """The same loader, its batches adjusted by ``prepare`` and wrapped with the run's options."""
    collate_fn = loader.collate_fn or collate

    def to_request(samples: list) -> GenerationRequest:
        return GenerationRequest(prepare(collate_fn(samples)), options)

    return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=to_request,
                      num_workers=loader.num_workers)


def _manifest_loader(manifest: str, datamodule: Optional[L.LightningDataModule], media: MediaSpec) -> DataLoader:
    from avgen.data import ManifestDataModule

    batch_size = getattr(datamodule, "batch_size", None) or getattr(datamodule, "hparams", {}).get("batch_size", 1)
    dm = ManifestDataModule(predict_manifest=manifest, batch_size=batch_size, num_workers=0, **media.as_dict())
    dm.setup("predict")
    return dm.predict_dataloader()


def _single_sample_loader(inputs: GenerationInputs, media: MediaSpec, seconds: float) -> DataLoader:
    """A loader of one sample from explicit inputs: the video's frame streams and the texts."""
    streams: dict[str, Any] = {}
    sample_id = "sample"
    if inputs.video is not None:
        from avgen.data.media import load_video

        sample_id = Path(inputs.video).stem
        clip = load_video(
            inputs.video,
            fps=[media.semantic_fps, media.sync_fps],
            sizes=[media.semantic_size, media.sync_size],
            duration=seconds,
        )
        streams = {"video_semantic": clip.streams[0], "video_sync": clip.streams[1]}
    sample = Sample(id=sample_id, sample_rate=media.sample_rate, seconds_total=seconds, **inputs.texts, **streams)
    return DataLoader([sample], batch_size=1, collate_fn=collate)


def run_generate(
    trainer: L.Trainer,
    model,
    datamodule: Optional[L.LightningDataModule],
    ckpt_path: Optional[str],
    output_dir: str,
    inputs: GenerationInputs,
    options: SamplingOptions,
    overwrite: bool = False,
) -> list[Path]:
    """Check the request against the paper's interface, build the loader, predict, write the wavs."""
    if ckpt_path is None:
        raise ValueError("avgen generate needs --ckpt_path <checkpoint>; train one with `avgen fit` first")
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
    interface = type(model).generation
    if not isinstance(options, interface.options_class):
        raise TypeError(f"{type(model).__name__} takes {interface.options_class.__name__}, got {type(options).__name__}")
    inputs = dataclasses.replace(inputs, has_datamodule=datamodule is not None)
    media = _media(datamodule, model)
    interface.check(options, inputs, clip_seconds=media.duration)
    reference = None
    if inputs.reference_audio is not None:
        if not Path(inputs.reference_audio).is_file():
            raise FileNotFoundError(f"--reference_audio {inputs.reference_audio} does not exist; give an audio file")
        from avgen.data.media import load_audio

        reference = load_audio(inputs.reference_audio, model.codec.sample_rate, None, 0.0).waveform
    seconds = interface.loading_duration(options)
    if seconds is not None:
        media = media.replace(duration=float(seconds))

    def prepare(batch: AVBatch) -> AVBatch:
        return interface.prepare_batch(batch, options, inputs, reference)

    if inputs.manifest is not None:
        loader = _manifest_loader(inputs.manifest, datamodule, media)
    elif interface.single_sample(options, inputs):
        loader = _single_sample_loader(inputs, media, media.duration)
        if options.duration is None and seconds is None:  # no audio to take the length from: the data's clip length
            options = dataclasses.replace(options, duration=media.duration)
    else:
        if datamodule is None:
            raise ValueError("no datamodule configured: give --manifest, --video or --caption")
        if seconds is not None:
            if not hasattr(datamodule, "predict_duration"):
                raise ValueError(f"{type(datamodule).__name__} cannot load clips of {seconds:g} s; use "
                                 "ToyWorldDataModule / ManifestDataModule / BalancedDataModule, --manifest or --video")
            datamodule.predict_duration = float(seconds)
        datamodule.setup("predict")
        loader = datamodule.predict_dataloader()
    writer = WavWriter(output_dir, overwrite=overwrite)
    trainer.callbacks.append(writer)
    try:
        trainer.predict(model, dataloaders=_requests(loader, prepare, options), ckpt_path=ckpt_path,
                        return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
    if trainer.is_global_zero:
        videos = f" and {len(writer.videos)} mp4 files (audio muxed in)" if writer.videos else ""
        print(f"avgen generate: wrote {len(writer.written)} wav files{videos} to {Path(output_dir).resolve()}")
        for note in writer.notes():
            print(f"avgen generate: {note}")
    return writer.written
