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
and DDP-synchronise them. ``avgen compare`` scores them on the videos joint models generate
(``--clip_video MODEL:WEIGHTS``; metrics ``clip_video`` and ``identity``, at most 16 evenly spaced
frames per video).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.eval.backends import BackendUnavailable
from avgen.eval.reduction import ScoreMean

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


class _FrameConditionSimilarity(ScoreMean):
    """Mean over videos of the mean over frames of cos(frame, condition). ``update(frames (T, D), condition (D,))``."""

    higher_is_better = True
    nothing_scored = "no video was scored"

    def update(self, frame_embeddings: Tensor, condition_embedding: Tensor) -> None:
        if frame_embeddings.ndim != 2 or condition_embedding.ndim != 1 or frame_embeddings.shape[1] != condition_embedding.shape[0]:
            raise ValueError(f"expected frame embeddings (T, D) and one condition embedding (D,), got "
                             f"{tuple(frame_embeddings.shape)} and {tuple(condition_embedding.shape)}")
        frames = F.normalize(frame_embeddings.double(), dim=-1)
        condition = F.normalize(condition_embedding.double(), dim=-1)
        self.add((frames @ condition).mean())


class VideoTextSimilarity(_FrameConditionSimilarity):
    """Harmony's CLIP: ``update(frame_embeddings, prompt_embedding)`` per video."""


class ReferenceIdentitySimilarity(_FrameConditionSimilarity):
    """Harmony's ID: ``update(frame_embeddings, reference_image_embedding)`` per video."""


# ---------------------------------------------------------------------------------- avgen compare / evaluate
MAX_SCORED_FRAMES = 16  # frames per video, evenly spaced (first and last included): bounded cost for long videos


def _clip_video_backend(value: str | None) -> ClipImageTextBackend:
    if not value or ":" not in value:
        raise BackendUnavailable("clip_video", "no CLIP model given" if not value else f"--clip_video {value!r} has no ':'",
                                 "--clip_video MODEL:WEIGHTS, an open_clip config name and a local weights file "
                                 "(e.g. ViT-L-14:open_clip_pytorch_model.bin)")
    model_name, weights = value.split(":", 1)
    backend = ClipImageTextBackend(model_name, weights)
    backend.name = f"clip_video-{model_name}"
    return backend


def _scored_frames(frames) -> Tensor:
    """(N, 3, H, W) uint8 of at most :data:`MAX_SCORED_FRAMES` evenly spaced frames of (T, H, W, 3) uint8."""
    import numpy as np

    index = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_SCORED_FRAMES)).round().astype(int))
    return torch.from_numpy(np.ascontiguousarray(frames[index])).permute(0, 3, 1, 2)


def _frame_similarity(ctx, metric: _FrameConditionSimilarity, condition_of) -> float:
    scored = 0
    for sample_id in ctx.ids:
        condition = condition_of(sample_id)
        if sample_id not in ctx.generated_videos or condition is None:
            continue
        frames = ctx.cached("generated", f"{ctx.backend.name}-frames", [sample_id],
                            lambda i: ctx.backend.embed_images(_scored_frames(ctx.generated_video(i)[0])).numpy())[sample_id]
        metric.update(torch.as_tensor(frames), condition)
        scored += 1
    return float(metric.compute()) if scored else float("nan")


def clip_video_score(ctx) -> float:
    """CLIP: frames of each generated video against its prompt (the video caption, else the caption)."""
    def prompt(sample_id):
        text = ctx.samples[sample_id].get("video_caption") or ctx.samples[sample_id].get("caption")
        return ctx.backend.embed_text([text])[0] if text else None

    return _frame_similarity(ctx, VideoTextSimilarity(), prompt)


def identity_score(ctx) -> float:
    """ID: frames of each generated video against the first frame of the sample's video (Harmony's reference image)."""
    def reference(sample_id):
        video = ctx.reference_video(sample_id)
        return ctx.backend.embed_images(_scored_frames(video[0][:1]))[0] if video is not None else None

    return _frame_similarity(ctx, ReferenceIdentitySimilarity(), reference)


def _register() -> None:
    from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric

    register_backend(BackendSpec("clip_video", _clip_video_backend,
                                 "open_clip MODEL:WEIGHTS for clip_video / identity (Harmony's CLIP and ID), "
                                 "e.g. ViT-L-14:open_clip_pytorch_model.bin"))
    register_metric(MetricSpec("clip_video", True, "CLIP similarity of the generated video's frames and the video prompt "
                               "(Harmony CLIP; its CLIP model is not named - the flag's)", "clip_video", clip_video_score,
                               needs_generated_video=True))
    register_metric(MetricSpec("identity", True, "image-feature similarity of the generated frames and the sample's first "
                               "frame (Harmony ID; Harmony uses DINOv3, here the --clip_video image encoder)", "clip_video",
                               identity_score, needs_generated_video=True))


_register()
