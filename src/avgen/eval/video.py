"""Video metrics of Harmony (spec §1.8, Harmony Supp. §3.2): CLIP video-text similarity and
reference-image identity similarity, with a pluggable image-text back-end.

* :class:`ClipImageTextBackend`: an ``open_clip`` model by config name and weights (a pretrained tag
  such as ``openai`` or a local ``.pt``/``.safetensors`` file). Frames are resized (bicubic, shorter
  side to the model's image size), centre-cropped and normalised with the model's mean / std, as
  open_clip's own eval transform does; embeddings are L2-normalised.
* :class:`VideoTextSimilarity` (CLIP, higher is better): per video the mean over frames of the
  cosine between frame and prompt embeddings, then the mean over videos (the CLIP-score form VBench
  and Harmony use; Harmony does not name its CLIP model - a config choice here).
* :class:`ReferenceIdentitySimilarity` (ID): "mean feature similarity between a reference image and
  all generated frames" - the same reduction between the reference-image embedding and the frame
  embeddings. Harmony uses DINOv3 features; any image back-end with ``embed_images`` fits.

Both are reductions over (frame embeddings, one condition embedding) pairs, so they accumulate sums
and DDP-synchronise them. ``avgen compare`` scores generated audio only, so these are library
metrics (``avgen.eval``) for a video generator's own evaluation loop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Metric

from avgen.eval.backends import BackendUnavailable

__all__ = ["ClipImageTextBackend", "VideoTextSimilarity", "ReferenceIdentitySimilarity"]


class ClipImageTextBackend(nn.Module):
    """``embed_images(frames (N, 3, H, W) in [0, 1])`` and ``embed_text(list[str])``, L2-normalised."""

    def __init__(self, model_name: str, pretrained: str | None) -> None:
        super().__init__()
        import open_clip

        try:
            self.model = open_clip.create_model(model_name, pretrained=pretrained).eval()
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as err:  # unknown config, missing file, no network for a pretrained tag
            raise BackendUnavailable(
                "clip_video", f"open_clip model {model_name!r} with weights {pretrained!r} cannot be loaded "
                f"({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})",
                "a model name open_clip knows and a local weights file (e.g. ViT-L-14 + its open_clip .bin/.safetensors)") from None
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(self.model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] (or uint8) -> resized (shorter side), centre-cropped, normalised."""
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        h, w = x.shape[-2:]
        scale = self.image_size / min(h, w)
        new_h, new_w = max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (new_h - self.image_size) // 2, (new_w - self.image_size) // 2
        x = x[..., top : top + self.image_size, left : left + self.image_size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed_images(self, frames: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(frames)).float(), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))).float(), dim=-1)


class _FrameConditionSimilarity(Metric):
    """Mean over videos of the mean over frames of cos(frame, condition). ``update(frames (T, D), condition (D,))``."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("similarity_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, frame_embeddings: Tensor, condition_embedding: Tensor) -> None:
        if frame_embeddings.ndim != 2 or condition_embedding.ndim != 1 or frame_embeddings.shape[1] != condition_embedding.shape[0]:
            raise ValueError(f"expected frame embeddings (T, D) and one condition embedding (D,), got "
                             f"{tuple(frame_embeddings.shape)} and {tuple(condition_embedding.shape)}")
        frames = F.normalize(frame_embeddings.double(), dim=-1)
        condition = F.normalize(condition_embedding.double(), dim=-1)
        self.similarity_sum += (frames @ condition).mean().cpu()
        self.num += 1

    def compute(self) -> Tensor:
        if int(self.num) == 0:
            raise ValueError(f"{type(self).__name__}: no video was scored")
        return self.similarity_sum / self.num


class VideoTextSimilarity(_FrameConditionSimilarity):
    """Harmony's CLIP: ``update(frame_embeddings, prompt_embedding)`` per video."""


class ReferenceIdentitySimilarity(_FrameConditionSimilarity):
    """Harmony's ID: ``update(frame_embeddings, reference_image_embedding)`` per video."""
