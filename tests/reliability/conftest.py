"""A corpus of bad inputs built in a temp dir, a probe LightningModule, and a wall-clock guard.

Every file is tiny (0.5 s of 16 kHz audio, 32-pixel video) so the reliability tests stay fast.
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.data.media import write_mp4

SR = 16000


def noise(seconds: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * SR), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def write_manifest(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def frames(seconds: float, fps: float = 25.0, size: int = 32) -> torch.Tensor:
    """A moving bright square (F, 3, size, size), so decoded frames differ from one another."""
    count = int(round(seconds * fps))
    video = torch.zeros(count, 3, size, size)
    for k in range(count):
        x = (2 * k) % (size - 8)
        video[k, :, 8:16, x : x + 8] = 1.0
    return video


@pytest.fixture
def corpus(tmp_path) -> SimpleNamespace:
    """Good and bad media files under ``tmp_path``."""
    d = tmp_path
    sf.write(d / "good.wav", noise(0.5), SR)
    for i in range(4):
        bad = noise(0.5, seed=i)
        bad[100] = np.nan
        sf.write(d / f"nan{i}.wav", bad, SR, subtype="FLOAT")
    sf.write(d / "whole.wav", noise(0.5, seed=9), SR, subtype="PCM_16")
    data = (d / "whole.wav").read_bytes()
    (d / "half.wav").write_bytes(data[: len(data) // 2])  # a half-copied file: header promises twice the samples
    sf.write(d / "stereo.wav", noise(0.5, seed=5, channels=2), SR)
    sf.write(d / "long.wav", noise(1.0, seed=6), SR)
    write_mp4(d / "full.mp4", frames(1.0), 25)  # matches long.wav
    write_mp4(d / "short.mp4", frames(0.2), 25)  # 80 % shorter than long.wav
    write_mp4(d / "nearly.mp4", frames(0.92), 25)  # 8 % shorter than long.wav
    return SimpleNamespace(dir=d, manifest=lambda name, rows: write_manifest(d / name, rows))


class Probe(L.LightningModule):
    """The smallest model that consumes AVBatches: records every batch's ids."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[list[str]] = []

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        self.batches.append(list(batch.ids))
        return ((batch.audio.mean() - self.weight) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(root: Path, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(root))
    options.update(kwargs)
    return L.Trainer(**options)


class Hung(BaseException):
    """Raised by :func:`time_limit`; a BaseException so that no ``except Exception`` swallows it."""


@contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(signum, frame):  # noqa: ANN001
        signal.alarm(1)  # if something swallows it anyway (logging's emit does), fire again
        raise Hung(f"still running after {seconds} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def helpers() -> SimpleNamespace:
    return SimpleNamespace(Probe=Probe, trainer=trainer, time_limit=time_limit, write_manifest=write_manifest,
                           noise=noise, frames=frames, SR=SR)
