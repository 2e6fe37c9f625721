"""Harmony's video metrics: CLIP video-text and reference identity similarity against numpy, and the
open_clip back-end's loading path with a tiny CLIP saved locally."""

import json

import numpy as np
import pytest
import torch

from avgen.eval import BackendUnavailable
from avgen.eval.video import ClipImageTextBackend, ReferenceIdentitySimilarity, VideoTextSimilarity

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def _tiny_clip(tmp_path) -> str:
    import open_clip

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "eval-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config_dir)  # a name of its own: never replace the configs the package registers
    torch.manual_seed(0)
    model = open_clip.create_model("eval-test-tiny-clip", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "tiny_clip.pt")
    return str(tmp_path / "tiny_clip.pt")


def _mean_cos(frames: np.ndarray, condition: np.ndarray) -> float:
    frames = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    return float((frames @ (condition / np.linalg.norm(condition))).mean())


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_frame_similarity_metrics_match_numpy():
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(t, 8)) for t in (3, 5, 2)]
    conditions = [rng.normal(size=8) for _ in videos]
    expected = np.mean([_mean_cos(v, c) for v, c in zip(videos, conditions)])
    for metric in (VideoTextSimilarity(), ReferenceIdentitySimilarity()):
        for v, c in zip(videos, conditions):
            metric.update(torch.tensor(v, dtype=torch.float32), torch.tensor(c, dtype=torch.float32))
        assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        VideoTextSimilarity().update(torch.zeros(3, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="no video"):
        ReferenceIdentitySimilarity().compute()


def test_clip_backend_loads_a_local_tiny_clip_and_scores_frames(tmp_path):
    import open_clip

    path = _tiny_clip(tmp_path)
    backend = ClipImageTextBackend("eval-test-tiny-clip", path)
    frames = torch.rand(4, 3, 40, 48)
    image = backend.embed_images(frames)
    text = backend.embed_text(["a dog barks"])
    assert image.shape == (4, 16) and text.shape == (1, 16)
    # independent: the saved weights in a fresh open_clip model, frames prepared by hand
    reference = open_clip.create_model("eval-test-tiny-clip", pretrained=None)
    reference.load_state_dict(torch.load(path, weights_only=True))
    reference.eval()
    resized = torch.nn.functional.interpolate(frames, size=(32, 38), mode="bicubic", align_corners=False, antialias=True)
    crop = resized.clamp(0, 1)[..., :, 3:35]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.encode_image((crop - mean) / std), dim=-1)
        expected_text = torch.nn.functional.normalize(reference.encode_text(open_clip.get_tokenizer("eval-test-tiny-clip")(["a dog barks"])), dim=-1)
    torch.testing.assert_close(image, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, expected_text, atol=1e-5, rtol=1e-5)
    metric = VideoTextSimilarity()
    metric.update(image, text[0])
    assert float(metric.compute()) == pytest.approx(_mean_cos(image.double().numpy(), text[0].double().numpy()), rel=1e-6)
    with pytest.raises(BackendUnavailable, match="missing.pt"):
        ClipImageTextBackend("eval-test-tiny-clip", str(tmp_path / "missing.pt"))
