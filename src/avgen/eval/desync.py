"""DeSync: the audio-visual offset a Synchformer predicts for generated audio (MMAudio Table 1; av-benchmark).

The protocol part, which needs no weights (MMAudio's av-benchmark, ``evaluate.py`` with Synchformer
``24-01-04T16-39-21`` trained on AudioSet):

* video at 25 fps cut into segments of 16 frames with stride 8; audio at 16 kHz cut into segments
  of 10,240 samples (0.64 s) with hop 5,120 - the same 0.64 s / 0.32 s grid;
* the offset head compares 14 consecutive segments: (13 * 8 + 16) / 25 = 4.8 s. It runs on the
  **first** and the **last** 14 segments of each clip (two 4.8-s crops; for a clip of exactly 4.8 s
  they coincide);
* it classifies the offset into 21 classes ``linspace(-2, 2, 21)`` (0.2-s steps); the predicted
  offset is the class of the largest logit, and DeSync is the mean |offset| over both crops of all
  clips (lower is better; the generated audio should be at offset 0).

:class:`DeSync` is the DDP-synchronised reduction over offset logits. The network (MotionFormer video
branch, AST audio branch, the 3-layer global transformer with the 21-class offset head) and the
``desync`` metric are :mod:`avgen.eval.synchformer` (``--synchformer <checkpoint>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SynchformerGrid", "SYNCHFORMER", "offset_classes", "segment_starts", "crop_starts", "predicted_offsets", "DeSync"]


@dataclass(frozen=True)
class SynchformerGrid:
    """The segment grid of the offset classifier (av-benchmark's values by default)."""

    fps: float = 25.0
    sample_rate: int = 16000
    segment_frames: int = 16
    frame_stride: int = 8
    segment_samples: int = 10240
    sample_stride: int = 5120
    num_segments: int = 14
    max_offset: float = 2.0
    num_classes: int = 21

    @property
    def crop_seconds(self) -> float:
        """Seconds one comparison covers: ((S - 1) * stride + segment) / fps (4.8 s)."""
        return ((self.num_segments - 1) * self.frame_stride + self.segment_frames) / self.fps

    @property
    def crop_frames(self) -> int:
        return (self.num_segments - 1) * self.frame_stride + self.segment_frames

    @property
    def crop_samples(self) -> int:
        return (self.num_segments - 1) * self.sample_stride + self.segment_samples


SYNCHFORMER = SynchformerGrid()


def offset_classes(grid: SynchformerGrid = SYNCHFORMER) -> Tensor:
    """The offsets (seconds) of the classifier's classes: linspace(-2, 2, 21)."""
    classes = torch.linspace(-grid.max_offset, grid.max_offset, grid.num_classes, dtype=torch.float64)
    return torch.round(classes * 1e9) / 1e9  # the middle class is exactly 0, not -1e-16


def segment_starts(length: int, segment: int, stride: int) -> list[int]:
    """Starts of the full segments of ``segment`` items with ``stride`` in ``length`` items."""
    if length < segment:
        return []
    return list(range(0, length - segment + 1, stride))


def crop_starts(num_frames: int, grid: SynchformerGrid = SYNCHFORMER) -> list[tuple[int, int]]:
    """(first video frame, first audio sample) of the first and the last crop of ``num_segments`` segments.

    The crops are placed on the clip's video segment grid: the first covers segments 0..13, the last
    the final 14 full segments; the audio crop starts at the same time. A clip shorter than one crop
    (4.8 s at 25 fps) raises, naming the length it needs.
    """
    starts = segment_starts(num_frames, grid.segment_frames, grid.frame_stride)
    if len(starts) < grid.num_segments:
        raise ValueError(f"DeSync needs clips of at least {grid.crop_seconds:.2f} s ({grid.crop_frames} frames at "
                         f"{grid.fps:g} fps), got {num_frames} frames")
    first, last = starts[0], starts[len(starts) - grid.num_segments]
    to_samples = grid.sample_rate / grid.fps
    return [(first, round(first * to_samples)), (last, round(last * to_samples))]


def predicted_offsets(logits: Tensor, grid: SynchformerGrid = SYNCHFORMER) -> Tensor:
    """(N, 21) offset logits -> (N,) offsets in seconds (the class of the largest logit)."""
    if logits.ndim != 2 or logits.shape[1] != grid.num_classes:
        raise ValueError(f"expected offset logits (N, {grid.num_classes}), got {tuple(logits.shape)}")
    return offset_classes(grid).to(logits.device)[logits.argmax(dim=1)]


class DeSync(Metric):
    """Mean |predicted offset| (seconds) over all crops; ``update(logits)`` with (N, 21) offset logits."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, grid: SynchformerGrid = SYNCHFORMER, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid = grid
        self.add_state("abs_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor) -> None:
        offsets = predicted_offsets(logits.detach(), self.grid)
        self.abs_sum += offsets.abs().sum().cpu()
        self.num += offsets.numel()

    def compute(self) -> Tensor:
        if int(self.num) == 0:
            raise ValueError("DeSync: no crops were scored")
        return self.abs_sum / self.num
