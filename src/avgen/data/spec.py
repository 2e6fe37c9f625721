"""MediaSpec: the one declaration of how a model sees media (clip length, rates, frame sizes).

Datamodules, ToyWorld, manifest datasets, exports and the CLI's single-sample loader all read media
options from a :class:`MediaSpec` instead of each re-declaring the list: a datamodule exposes its
spec as ``datamodule.media`` (composite datamodules report their primary source's), and
``MediaSpec.of(datamodule)`` reads it from any datamodule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["MediaSpec"]


@dataclass(frozen=True)
class MediaSpec:
    """How a model sees media.

    Attributes:
        duration: clip length in seconds.
        sample_rate: audio sample rate (Hz) the codec works at.
        semantic_fps: frame rate of the semantic (CLIP) video stream (MMAudio: 8).
        sync_fps: frame rate of the synchronisation (Synchformer) stream (25).
        semantic_size: square frame side of the semantic stream, pixels.
        sync_size: square frame side of the sync stream, pixels.
        video_fps: frame rate of the target video a joint audio-video model generates (None: no
            target video).
        video_size: frame side (or [H, W]) of the target video, pixels.
    """

    duration: float = 2.0
    sample_rate: int = 16000
    semantic_fps: float = 8.0
    sync_fps: float = 25.0
    semantic_size: int = 64
    sync_size: int = 64
    video_fps: float | None = None
    video_size: int | tuple[int, int] = 32

    def __post_init__(self) -> None:
        if self.video_fps is not None and not float(self.video_fps) > 0:
            raise ValueError(f"MediaSpec.video_fps must be > 0 or None (no target video), got {self.video_fps}")
        if isinstance(self.video_size, list):
            object.__setattr__(self, "video_size", tuple(int(v) for v in self.video_size))
        for name in ("duration", "semantic_fps", "sync_fps"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"MediaSpec.{name} must be > 0, got {getattr(self, name)}")
        for name in ("sample_rate", "semantic_size", "sync_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MediaSpec.{name} must be a positive integer, got {getattr(self, name)}")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "MediaSpec":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, datamodule: Any) -> "MediaSpec | None":
        """The spec of a datamodule (its ``media``), or None when it declares none."""
        media = getattr(datamodule, "media", None)
        return media if isinstance(media, cls) else None
