"""ImageBind back-end: the audio front-end and clip sampling against a transcription of ImageBind's
``data.py`` (+ pytorchvideo's clip sampler), the video protocol against av-benchmark's ``VideoDataset``
/ ``encode_video_with_imagebind`` and ffmpeg's fps filter, each modality's forward against a
functional transcription of the reference forward (``nn.MultiheadAttention``'s own
``F.multi_head_attention_forward``, sequence first) on tiny random weights with the real key names,
the checkpoint round trip, and the IB-score / IB-A metrics against numpy cosines."""

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from avgen.eval import BackendUnavailable
from avgen.eval.imagebind import (
    IMAGEBIND_HUGE, ImageBindBackend, ImageBindModel, PairedCosineSimilarity, audio_clip_fbanks, clip_timepoints, ffmpeg_fps_indices,
    video_clips,
)
from avgen.eval.kaldi import kaldi_fbank

TINY = dict(vision_width=32, vision_depth=2, vision_heads=2, text_width=32, text_depth=2, text_heads=2,
            audio_width=32, audio_depth=2, audio_heads=2, out_dim=24, image_size=28)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (LayerNorms and biases too), so no term of the forward can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.2) + (1.0 if name.endswith("norm_1.weight") else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny ImageBind saved like ``imagebind_huge.pth`` (a bare state dict) with other modalities' keys too."""
    torch.manual_seed(0)
    model = _randomize(ImageBindModel(**TINY))
    state = dict(model.state_dict())
    state.update({"modality_trunks.depth.blocks.0.attn.in_proj_weight": torch.zeros(6, 2),
                  "modality_preprocessors.imu.pos_embed": torch.zeros(1, 3, 2),
                  "modality_postprocessors.thermal.1.log_logit_scale": torch.zeros(())})
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_tiny.pth"
    torch.save(state, path)
    return model, {k: v.clone() for k, v in model.state_dict().items()}, str(path)


# ---------------------------------------------------------------------------------- reference transcriptions
def _pytorchvideo_clip_timepoints(duration, clip_duration=2, clips_per_video=3):
    """ConstantClipsPerVideoSampler (pytorchvideo) called until is_last_clip, as ImageBind's get_clip_timepoints."""
    clip_duration, index, out = Fraction(clip_duration), 0, []
    while True:
        max_start = Fraction(max(duration - clip_duration, 0))
        uniform = Fraction(max_start, clips_per_video)
        start = uniform * index
        index += 1
        last = index >= clips_per_video or uniform * index > max_start
        out.append((start, start + clip_duration))
        if last:
            return out


def _imagebind_audio(waveform: torch.Tensor, sr=16000):
    """data.py::load_and_transform_audio_data for one file (torchaudio's fbank -> avgen's kaldi_fbank)."""
    waveform = waveform.clone()[None]  # (1, S) as torchaudio.load gives
    clips = []
    for start, end in _pytorchvideo_clip_timepoints(waveform.size(1) / sr):
        clip = waveform[:, int(start * sr) : int(end * sr)]
        clip -= clip.mean()  # waveform2melspec: in place, on a view of the file's waveform
        fbank = kaldi_fbank(clip, htk_compat=True, sample_frequency=sr, use_energy=False, window_type="hanning",
                            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10).transpose(0, 1)
        p = 204 - fbank.size(1)
        fbank = F.pad(fbank, (0, p)) if p > 0 else fbank[:, :204]
        clips.append((fbank[None] - (-4.268)) / 9.138)
    return torch.stack(clips)


def _ffmpeg_fps_filter(num_frames, fps, rate, count):
    """libavfilter vf_fps with round=near: two buffered frames; drop the first while the second's
    (output-grid) timestamp is <= the next output timestamp, else emit the first."""
    pts = [math.floor(Fraction(i) / Fraction(fps).limit_denominator(10**6) * Fraction(rate) + Fraction(1, 2))
           for i in range(num_frames)]
    out, buffer, next_pts, i = [], [0], 0, 1
    while len(out) < count:
        if i < num_frames and len(buffer) < 2:
            buffer.append(i)
            i += 1
            continue
        if len(buffer) == 2 and pts[buffer[1]] <= next_pts:
            buffer.pop(0)
            continue
        out.append(buffer[0])  # at end of stream the last frame repeats (av-benchmark copies it)
        next_pts += 1
    return out


def _av_benchmark_video(frames: np.ndarray, fps: float, size: int, count: int):
    """VideoDataset (0.5 fps, Resize(size, bicubic) on uint8, CLIP norm, SpatialCrop(size, 3)) followed by
    encode_video_with_imagebind's 2-frame clips: (crops * clips, 3, 2, size, size)."""
    chunk = torch.from_numpy(frames[_ffmpeg_fps_filter(len(frames), fps, 0.5, count)]).permute(0, 3, 1, 2)  # T C H W
    h, w = chunk.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    x = F.interpolate(chunk.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp(0, 255).round() / 255.0  # torchvision rounds resized uint8 images back to uint8
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = (x - mean) / std
    crops = []
    for spatial_idx in (0, 1, 2):  # uniform_crop
        height, width = x.shape[2], x.shape[3]
        y_offset, x_offset = int(math.ceil((height - size) / 2)), int(math.ceil((width - size) / 2))
        if height > width:
            y_offset = {0: 0, 1: y_offset, 2: height - size}[spatial_idx]
        else:
            x_offset = {0: 0, 1: x_offset, 2: width - size}[spatial_idx]
        crops.append(x[:, :, y_offset : y_offset + size, x_offset : x_offset + size])
    video = torch.stack(crops)[None]  # B NUM_CROPS T C H W
    clips = torch.cat([video[:, :, i : i + 2] for i in range(video.shape[2] - 1)], dim=1)
    return clips.permute(0, 1, 3, 2, 4, 5)[0]  # b n t c h w -> b n c t h w


def _trunk(state, prefix, tokens, heads, mask=None, pre_ln=False):
    """SimpleTransformer: [LayerNorm], 'b l d -> l b d', BlockWithMasking x depth, 'l b d -> b l d'."""
    def ln(x, p, eps=1e-6):
        return F.layer_norm(x, x.shape[-1:], state[f"{p}.weight"], state[f"{p}.bias"], eps)

    x = ln(tokens, f"{prefix}.pre_transformer_layer.0") if pre_ln else tokens
    x = x.transpose(0, 1)
    depth = len({k.split(".")[3] for k in state if k.startswith(f"{prefix}.blocks.")})
    for i in range(depth):
        b = f"{prefix}.blocks.{i}"
        h = ln(x, f"{b}.norm_1")
        attn = F.multi_head_attention_forward(
            h, h, h, h.shape[-1], heads, state[f"{b}.attn.in_proj_weight"], state[f"{b}.attn.in_proj_bias"],
            state.get(f"{b}.attn.bias_k"), state.get(f"{b}.attn.bias_v"), False, 0.0,
            state[f"{b}.attn.out_proj.weight"], state[f"{b}.attn.out_proj.bias"], training=False,
            need_weights=False, attn_mask=mask)[0]
        x = x + attn * state.get(f"{b}.layer_scale_gamma1", 1.0)
        h = ln(x, f"{b}.norm_2")
        mlp = F.linear(F.gelu(F.linear(h, state[f"{b}.mlp.fc1.weight"], state[f"{b}.mlp.fc1.bias"])),
                       state[f"{b}.mlp.fc2.weight"], state[f"{b}.mlp.fc2.bias"])
        x = x + mlp * state.get(f"{b}.layer_scale_gamma2", 1.0)
    return x.transpose(0, 1)


def _head(state, m, x):
    x = F.layer_norm(x, x.shape[-1:], state[f"modality_heads.{m}.0.weight"], state[f"modality_heads.{m}.0.bias"], 1e-6)
    return x[:, 0] @ state[f"modality_heads.{m}.2.weight"].T


def _reference_vision(state, x):
    if x.ndim == 4:  # PadIm2Video(pad_type="repeat", ntimes=2)
        x = x[:, :, None].repeat(1, 1, 2, 1, 1)
    weight = state["modality_preprocessors.vision.rgbt_stem.proj.1.weight"]
    tokens = F.conv3d(x, weight, stride=weight.shape[2:]).flatten(2).transpose(1, 2)
    cls = state["modality_preprocessors.vision.cls_token"].expand(tokens.shape[0], -1, -1)
    tokens = torch.cat([cls, tokens], 1) + state["modality_preprocessors.vision.pos_embedding_helper.pos_embed"]
    out = _head(state, "vision", _trunk(state, "modality_trunks.vision", tokens, 2, pre_ln=True))
    return F.normalize(out, dim=-1)


def _reference_audio(state, fbank):
    p = "modality_preprocessors.audio"
    tokens = F.conv2d(fbank, state[f"{p}.rgbt_stem.proj.weight"], stride=10).flatten(2).transpose(1, 2)
    tokens = F.layer_norm(tokens, tokens.shape[-1:], state[f"{p}.rgbt_stem.norm_layer.weight"],
                          state[f"{p}.rgbt_stem.norm_layer.bias"], 1e-5)
    tokens = torch.cat([state[f"{p}.cls_token"].expand(tokens.shape[0], -1, -1), tokens], 1) + state[
        f"{p}.pos_embedding_helper.pos_embed"]
    out = F.normalize(_head(state, "audio", _trunk(state, "modality_trunks.audio", tokens, 2)), dim=-1)
    return torch.clip(state["modality_postprocessors.audio.1.log_logit_scale"].exp(), max=100) * out


def _reference_text(state, ids):
    p = "modality_preprocessors.text"
    tokens = state[f"{p}.token_embedding.weight"][ids] + state[f"{p}.pos_embed"]
    x = _trunk(state, "modality_trunks.text", tokens, 2, mask=state[f"{p}.mask"])
    x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    x = F.layer_norm(x, x.shape[-1:], state["modality_heads.text.proj.0.weight"], state["modality_heads.text.proj.0.bias"], 1e-6)
    out = F.normalize(x @ state["modality_heads.text.proj.1.weight"].T, dim=-1)
    return torch.clip(state["modality_postprocessors.text.1.log_logit_scale"].exp(), max=100) * out


# ---------------------------------------------------------------------------------- front-ends
def test_audio_clips_and_fbanks_match_imagebind_data_py():
    assert clip_timepoints(8.0) == [(0, 2), (2, 4), (4, 6)]  # pytorchvideo divides by clips_per_video
    rng = np.random.default_rng(0)
    for seconds in (8.0, 3.05, 0.5):  # disjoint clips; overlapping clips (the in-place mean); one short clip
        x = (rng.normal(size=int(16000 * seconds)) * 0.2 + 0.05).astype(np.float32)
        assert clip_timepoints(x.size / 16000) == _pytorchvideo_clip_timepoints(x.size / 16000)
        ours = audio_clip_fbanks(x)
        expected = _imagebind_audio(torch.from_numpy(x))
        assert ours.shape == expected.shape == (3, 1, 128, 204)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # a 2 s clip has 198 frames: the rest is padding, normalised like any value
    torch.testing.assert_close(ours[0, 0, :, -1], torch.full((128,), 4.268 / 9.138))


def test_video_frames_crops_and_clips_match_av_benchmark():
    assert ffmpeg_fps_indices(200, 25.0, 0.5, 4) == [24, 74, 124, 174]
    for n, fps, count in ((200, 25.0, 4), (240, 30000 / 1001, 4), (61, 24.0, 2), (7, 1.0, 4)):
        assert ffmpeg_fps_indices(n, fps, 0.5, count) == _ffmpeg_fps_filter(n, fps, 0.5, count), (n, fps)
    rng = np.random.default_rng(1)
    for shape in ((200, 45, 60, 3), (200, 70, 40, 3), (200, 28, 28, 3)):  # wide, tall, already square
        frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
        ours = video_clips(frames, 25.0, image_size=28)
        expected = _av_benchmark_video(frames, 25.0, 28, count=4)
        assert ours.shape == expected.shape == (9, 3, 2, 28, 28)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # only the first `duration` seconds (av-benchmark: the generated audio's length) of a 10 s video
    long = rng.integers(0, 256, size=(250, 28, 28, 3), dtype=np.uint8)
    torch.testing.assert_close(video_clips(long, 25.0, 28, duration=8.0), _av_benchmark_video(long, 25.0, 28, count=4))
    # shorter than 4 s: two frames over the video (av-benchmark has no clip to embed there)
    assert video_clips(rng.integers(0, 256, size=(25, 28, 28, 3), dtype=np.uint8), 25.0, 28).shape == (3, 3, 2, 28, 28)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        video_clips(np.zeros((4, 28, 28), np.uint8), 25.0, 28)


# ---------------------------------------------------------------------------------- forwards
def test_each_modality_matches_the_reference_forward(tiny):
    model, state, _ = tiny
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        pixels = torch.randn(3, 3, 2, 28, 28, generator=g)
        torch.testing.assert_close(model.encode_vision(pixels), _reference_vision(state, pixels), atol=1e-5, rtol=1e-4)
        image = torch.randn(2, 3, 28, 28, generator=g)  # an image is a 2-frame video of itself
        torch.testing.assert_close(model.encode_vision(image), _reference_vision(state, image), atol=1e-5, rtol=1e-4)
        fbank = torch.randn(2, 1, 128, 204, generator=g)
        torch.testing.assert_close(model.encode_audio(fbank), _reference_audio(state, fbank), atol=1e-4, rtol=1e-4)
        ids = torch.zeros(3, 77, dtype=torch.long)
        for row, length in enumerate((5, 12, 77)):  # <sot> tokens <eot> 0-padding; the longest fills the context
            ids[row, 0], ids[row, 1 : length - 1] = 49406, torch.randint(0, 49000, (length - 2,), generator=g)
            ids[row, length - 1] = 49407
        torch.testing.assert_close(model.encode_text(ids), _reference_text(state, ids), atol=1e-4, rtol=1e-4)
    # DropPath (audio 0 -> 0.1 over the blocks) acts in training only
    model.train()
    assert not torch.allclose(model.encode_audio(fbank), model.encode_audio(fbank))
    model.eval()


def test_layer_scale_variant_matches_the_reference_forward():
    model = _randomize(ImageBindModel(**TINY, layer_scale_type="per_channel"), seed=3)
    state = model.state_dict()
    assert state["modality_trunks.vision.blocks.1.layer_scale_gamma2"].shape == (1, 1, 32)
    pixels = torch.randn(2, 3, 2, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_vision(pixels), _reference_vision(state, pixels), atol=1e-5, rtol=1e-4)


def test_huge_layout_key_names_and_shapes():
    with torch.device("meta"):
        model = ImageBindModel(**IMAGEBIND_HUGE)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] == (1280, 3, 2, 14, 14)
    assert shapes["modality_preprocessors.vision.pos_embedding_helper.pos_embed"] == (1, 257, 1280)
    assert shapes["modality_preprocessors.audio.rgbt_stem.proj.weight"] == (768, 1, 16, 16)
    assert shapes["modality_preprocessors.audio.pos_embedding_helper.pos_embed"] == (1, 229, 768)
    assert shapes["modality_trunks.audio.blocks.11.attn.bias_k"] == (1, 1, 768)
    assert shapes["modality_preprocessors.text.mask"] == (77, 77)
    assert shapes["modality_preprocessors.text.token_embedding.weight"] == (49408, 1024)
    assert shapes["modality_heads.text.proj.1.weight"] == (1024, 1024)
    assert shapes["modality_postprocessors.audio.1.log_logit_scale"] == ()
    assert "modality_trunks.vision.blocks.31.mlp.fc2.weight" in shapes and "modality_trunks.text.blocks.23.norm_2.bias" in shapes
    assert not any("bias_k" in k for k in shapes if ".vision." in k or ".text." in k)


# ---------------------------------------------------------------------------------- checkpoint and back-end
def test_checkpoint_round_trip_and_clear_errors(tiny, tmp_path):
    model, state, path = tiny
    backend = ImageBindBackend(path)
    assert backend.ignored_keys == 3 and backend.dim == 24 and backend.sample_rate == 16000
    for key, value in backend.model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    with pytest.raises(BackendUnavailable, match="no ImageBind checkpoint at .*missing.pth.*--imagebind"):
        ImageBindBackend(str(tmp_path / "missing.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendUnavailable, match="garbage.pth cannot be read"):
        ImageBindBackend(str(tmp_path / "garbage.pth"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(BackendUnavailable, match="other.pth holds no ImageBind state dict"):
        ImageBindBackend(str(tmp_path / "other.pth"))
    cut = dict(state)
    del cut["modality_trunks.audio.blocks.1.attn.bias_v"]
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(BackendUnavailable, match="cut.pth does not match the ImageBind layout"):
        ImageBindBackend(str(tmp_path / "cut.pth"))


def test_tokenizer_is_clip_bpe_with_imagebind_truncation(tiny):
    backend = ImageBindBackend(tiny[2])
    tokens = backend.tokenize(["a dog barks", "rain " * 100])
    tokenizer = backend._tokenizer
    assert tokenizer.vocab_size == 49408 and (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)
    with open(tokenizer_path(), "rb") as f:  # OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz, which ImageBind ships
        assert hashlib.sha256(f.read()).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    for row, text in enumerate(["a dog barks", "rain " * 100]):
        body = [49406] + tokenizer.encode(text)  # SimpleTokenizer.__call__ of ImageBind: tokens[:76] + [eot], 0-padded
        expected = (body[:76] + [49407] + [0] * 77)[:77]
        assert tokens[row].tolist() == expected


def tokenizer_path():
    import importlib.util
    import os

    return os.path.join(list(importlib.util.find_spec("open_clip").submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_backend_embeddings_and_cosine_metrics(tiny):
    model, state, path = tiny
    backend = ImageBindBackend(path, batch_size=4)
    rng = np.random.default_rng(4)
    waves = [rng.normal(size=n).astype(np.float32) * 0.1 for n in (16000 * 8, 16000 * 5)]
    audio = backend.embed_audio([torch.from_numpy(w) for w in waves], 16000)
    with torch.no_grad():
        expected = torch.stack([_reference_audio(state, _imagebind_audio(torch.from_numpy(w))).mean(0) for w in waves])
    torch.testing.assert_close(audio, expected, atol=1e-4, rtol=1e-4)
    stereo = torch.from_numpy(np.stack([waves[1][:16000], -0.5 * waves[1][:16000]]))  # a stereo file is mixed to mono
    torch.testing.assert_close(backend.embed([stereo], 16000), backend.embed([stereo.mean(0)], 16000))
    videos = [(rng.integers(0, 256, size=(200, 30, 40, 3), dtype=np.uint8), 25.0),
              (rng.integers(0, 256, size=(125, 28, 28, 3), dtype=np.uint8), 25.0)]
    video = backend.embed_video(videos)
    with torch.no_grad():
        expected_video = torch.stack([_reference_vision(state, _av_benchmark_video(f, fps, 28, int(0.5 * len(f) / fps))).mean(0)
                                      for f, fps in videos])
    torch.testing.assert_close(video, expected_video, atol=1e-5, rtol=1e-4)
    text = backend.embed_text(["a dog barks", "rain on a roof"])
    torch.testing.assert_close(text, _reference_text(state, backend.tokenize(["a dog barks", "rain on a roof"])),
                               atol=1e-4, rtol=1e-4)

    def cos(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    for a, b in ((video, audio), (audio, text)):
        metric = PairedCosineSimilarity()
        metric.update(a[:1], b[:1])
        metric.update(a[1:], b[1:])
        assert float(metric.compute()) == pytest.approx(cos(a.numpy(), b.numpy()).mean(), abs=1e-6)
    assert backend.embed_text([]).shape == backend.embed_video([]).shape == (0, 24)
    with pytest.raises(ValueError, match="one shape"):
        PairedCosineSimilarity().update(audio, text[:1])


# ---------------------------------------------------------------------------------- avgen evaluate
DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args: {batch_size: 2, num_workers: 0, seed: 4, predict_size: 2, duration: 1.0, sample_rate: 16000,
              semantic_fps: 8.0, sync_fps: 25.0, semantic_size: 32, sync_size: 32, scenarios: [vta]}
"""


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_evaluate_scores_ib_score_and_ib_a_through_the_registry(tiny, tmp_path):
    import json

    import soundfile as sf

    from avgen.cli.compare import _select_metrics, build_datamodule, evaluate, evaluate_parser
    from avgen.cli.generate import safe_name
    from avgen.eval.backends import UNAVAILABLE
    from avgen.eval.registry import METRICS, load_builtin, read_video_frames

    load_builtin()
    assert METRICS["ib_score"].needs_video and METRICS["ib_score"].higher_is_better and METRICS["ib_a"].backend == "imagebind"
    assert "imagebind" not in UNAVAILABLE and "--imagebind" in evaluate_parser().format_help()
    metrics, skipped, _ = _select_metrics(["ib_score", "ib_a"], weights={"imagebind": None})
    assert not metrics and all("--imagebind" in skipped[m] for m in ("ib_score", "ib_a"))
    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    dm = build_datamodule(str(config))
    dm.setup("predict")
    ids = sorted(safe_name(i) for batch in dm.predict_dataloader() for i in batch.ids)
    generated = tmp_path / "gen"
    generated.mkdir()
    rng = np.random.default_rng(5)
    fake = {i: (rng.normal(size=16000) * 0.1).astype(np.float32) for i in ids}
    for i, wav in fake.items():
        sf.write(str(generated / f"{i}.wav"), wav, 16000, subtype="FLOAT")
    row = evaluate(["--generated", str(generated), "--reference", str(config), "--imagebind", tiny[2],
                    "--metrics", "ib_score", "ib_a"])["row"]
    out = generated / "evaluation"
    samples = json.loads((out / "reference" / "samples.json").read_text())

    backend = ImageBindBackend(tiny[2])
    audio = backend.embed([torch.from_numpy(fake[i]) for i in ids], 16000).double().numpy()
    videos = [read_video_frames(out / "reference" / "video" / f"{i}.mp4") for i in ids]
    video = backend.embed_video(videos, [min(len(f) / fps, 1.0) for f, fps in videos]).double().numpy()
    text = backend.embed_text([samples[i]["caption"] for i in ids]).double().numpy()

    def cos(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    assert all(samples[i]["caption"] for i in ids)
    assert row["ib_score"] == pytest.approx(cos(video, audio).mean(), abs=1e-5)
    assert row["ib_a"] == pytest.approx(cos(audio, text).mean(), abs=1e-5)
