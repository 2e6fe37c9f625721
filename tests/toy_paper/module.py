"""ToyPaper: the LightningModule and the generation interface of the test-only paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.data.batch import AVBatch
from avgen.models import FlowMatchingModule, GenerationInterface, SamplingOptions, create_network

from toy_paper import network as _network  # noqa: F401  (registers the toy-* presets)


@dataclass
class ToySampling(SamplingOptions):
    """The toy paper's sampling options.

    Attributes:
        noise_scale: standard deviation of the initial noise x0 (1 is the flow's prior).
    """

    noise_scale: float = 1.0


class ToyGeneration(GenerationInterface):
    options_class = ToySampling


class ToyPaper(FlowMatchingModule):
    """Flow matching of codec latents conditioned on the mean colour of the video (CFG on the video)."""

    generation = ToyGeneration()

    def __init__(self, codec: AudioCodec, *, network: str = "toy-s", hidden_dim: int | None = None,
                 video_dropout: float = 0.1, **kwargs: Any):
        sizes = {} if hidden_dim is None else {"hidden_dim": hidden_dim}
        super().__init__(create_network(network, latent_channels=codec.latent_channels, **sizes), codec, **kwargs)
        self.video_dropout = video_dropout

    def encode_conditions(self, batch: AVBatch) -> dict[str, Tensor]:
        if batch.video_semantic is None:
            colour = torch.zeros(len(batch), 3, device=self.device)
        else:
            colour = batch.video_semantic.mean(dim=(1, 3, 4))  # (B, F, 3, H, W) -> (B, 3)
        return {"colour": colour, "present": batch.has_video.to(colour.device)}

    def make_conditions(self, network: nn.Module, encoded: dict[str, Tensor], batch: AVBatch, *,
                        latent_length: int, branch: str, options: SamplingOptions | None = None) -> Any:
        present = encoded["present"]
        if branch == "train":
            present = present & (self.training_rand(present) >= self.video_dropout)
        elif branch == "unconditional":
            present = torch.zeros_like(present)
        return network.preprocess_conditions(encoded["colour"], video_present=present)

    def initial_noise(self, shape: tuple[int, ...], generator: torch.Generator | None, options: SamplingOptions) -> Tensor:
        return super().initial_noise(shape, generator, options) * getattr(options, "noise_scale", 1.0)
