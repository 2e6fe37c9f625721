"""Datamodules built from other datamodules (balanced VTA:TTA batches, UniHAGen mixtures).

They expose the :class:`~avgen.data.spec.MediaSpec` of their primary source as ``media`` (and its
fields as attributes), so the CLI and models read it as from any datamodule, and forward
``predict_duration`` (the CLI's ``--total_duration``) to every source.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from avgen.data.spec import MediaSpec

MEDIA_OPTIONS: tuple[str, ...] = MediaSpec.fields()


def media_option(datamodule: L.LightningDataModule, name: str) -> Any:
    """A media option of ``datamodule``: from its ``media`` spec, else its attribute or saved hyper-parameter."""
    spec = MediaSpec.of(datamodule)
    if spec is not None:
        return getattr(spec, name)
    value = getattr(datamodule, name, None)
    return getattr(datamodule, "hparams", {}).get(name) if value is None else value


class CompositeDataModule(L.LightningDataModule):
    """Base of datamodules that draw from other datamodules (subclasses name their sources)."""

    def primary_source(self) -> L.LightningDataModule:
        """The datamodule whose media options this one reports."""
        raise NotImplementedError

    def sources(self) -> list[L.LightningDataModule]:
        """Every source datamodule."""
        raise NotImplementedError

    def media_option(self, name: str) -> Any:
        return media_option(self.primary_source(), name)

    @property
    def media(self) -> MediaSpec | None:
        return MediaSpec.of(self.primary_source())

    sample_rate = property(lambda self: self.media_option("sample_rate"))
    duration = property(lambda self: self.media_option("duration"))
    semantic_fps = property(lambda self: self.media_option("semantic_fps"))
    sync_fps = property(lambda self: self.media_option("sync_fps"))
    semantic_size = property(lambda self: self.media_option("semantic_size"))
    sync_size = property(lambda self: self.media_option("sync_size"))
    video_fps = property(lambda self: self.media_option("video_fps"))
    video_size = property(lambda self: self.media_option("video_size"))

    def check_same_media(self, names: dict[str, L.LightningDataModule]) -> None:
        """Raise if two sources disagree on a media option (their samples end up in one batch)."""
        (first_name, first), *others = names.items()
        for option in MEDIA_OPTIONS:
            a = media_option(first, option)
            for other_name, other in others:
                b = media_option(other, option)
                if a is not None and b is not None and a != b:
                    raise ValueError(
                        f"{type(self).__name__}: {first_name} has {option}={a} but {other_name} has {option}={b}; "
                        f"their samples share batches, so set the same {option} on data.init_args.{first_name} "
                        f"and data.init_args.{other_name}"
                    )

    @property
    def predict_duration(self) -> float | None:
        return getattr(self.primary_source(), "predict_duration", None)

    @predict_duration.setter
    def predict_duration(self, seconds: float | None) -> None:
        """Forwarded to every source (the CLI's ``--total_duration`` for Foley extension)."""
        for dm in self.sources():
            if not hasattr(dm, "predict_duration"):
                raise ValueError(f"{type(dm).__name__} cannot generate clips of another duration "
                                 "(no predict_duration); use ToyWorldDataModule or ManifestDataModule")
            dm.predict_duration = seconds
