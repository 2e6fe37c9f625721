"""CLIP vision/text encoders: every `pretrained` path, against open_clip's own model outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants as hf_constants
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.push_to_hf_hub import save_config_for_hf
from safetensors.torch import save_file

from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, register_tiny_models

TINY = "avgen-tiny-clip"
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A tiny CLIP with seed-123 weights (not the encoders' default seed 0), saved three ways."""
    register_tiny_models()
    root = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(123)
    model = open_clip.create_model(TINY).eval()
    state = model.state_dict()

    weights_file = root / "weights.pt"
    torch.save(state, weights_file)

    local_dir = root / "local"
    local_dir.mkdir()
    save_config_for_hf(model, local_dir / "open_clip_config.json", model_config=open_clip.get_model_config(TINY))
    save_file({k: v.contiguous() for k, v in state.items()}, str(local_dir / "open_clip_model.safetensors"))

    # A Hugging Face cache entry laid out as hf_hub_download leaves it after a download.
    hub_cache = root / "hub"
    repo = hub_cache / "models--avgen--tiny-clip"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    shutil.copytree(local_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    return dict(model=model, file=str(weights_file), dir=str(local_dir), hub_cache=str(hub_cache))


@pytest.fixture
def offline_hub(saved, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", saved["hub_cache"])
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


SOURCES = {
    "file": lambda s: (TINY, s["file"]),
    "dir": lambda s: (TINY, s["dir"]),
    "local-dir-name": lambda s: (f"local-dir:{s['dir']}", None),
    "hf-hub": lambda s: (TINY, "hf-hub:avgen/tiny-clip"),
}


def reference_image_features(model, frames: torch.Tensor) -> torch.Tensor:
    """open_clip's encode_image on OpenAI-normalised 32x32 frames (no resize needed)."""
    b, f = frames.shape[:2]
    x = (frames.flatten(0, 1) - OPENAI_MEAN) / OPENAI_STD
    with torch.no_grad():
        return model.encode_image(x, normalize=True).view(b, f, -1)


@pytest.mark.parametrize("source", list(SOURCES))
def test_vision_loads_every_pretrained_path(saved, offline_hub, source):
    name, pretrained = SOURCES[source](saved)
    enc = CLIPVisionEncoder(name, pretrained=pretrained, chunk_size=3)
    frames = torch.rand(2, 4, 3, 32, 32)
    torch.testing.assert_close(enc(frames), reference_image_features(saved["model"], frames), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", list(SOURCES))
def test_text_loads_every_pretrained_path(saved, offline_hub, source):
    name, pretrained = SOURCES[source](saved)
    enc = CLIPTextEncoder(name, pretrained=pretrained)
    model = saved["model"]
    texts = ["a dog barks loudly", "rain on a tin roof", ""]
    states = enc(texts)  # (B, 77, W)
    tokens = open_clip.get_tokenizer(TINY)(texts)
    assert states.shape == (3, 77, enc.output_dim)
    # Pooling our per-token ln_final states at the EOT token and projecting must give open_clip's
    # own text embedding (per-token L2 normalisation commutes with the final normalisation).
    eot = tokens.argmax(dim=-1)
    pooled = states[torch.arange(3), eot] @ model.text_projection
    with torch.no_grad():
        expected = model.encode_text(tokens, normalize=True)
    torch.testing.assert_close(F.normalize(pooled, dim=-1), expected, rtol=1e-5, atol=1e-5)


def test_vision_features_unit_norm_and_frame_dependent():
    enc = CLIPVisionEncoder(TINY)
    frames = torch.rand(2, 5, 3, 32, 32)
    out = enc(frames)
    assert out.shape == (2, 5, 32) and enc.output_dim == 32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 5))
    # different frames give different features (pairwise cosine clearly below 1)
    cos = torch.einsum("fd,gd->fg", out[0], out[0])
    off_diag = cos[~torch.eye(5, dtype=torch.bool)]
    assert off_diag.max() < 0.999
    # and each frame is encoded independently of its neighbours and of the chunking
    one = CLIPVisionEncoder(TINY, chunk_size=1)(frames[:, 2:3])
    torch.testing.assert_close(one, out[:, 2:3], rtol=1e-5, atol=1e-6)


def test_vision_resizes_any_frame_size_without_crop():
    enc = CLIPVisionEncoder(TINY)
    # A constant-colour frame stays the same constant image after any resize, so all sizes agree;
    # a crop-free resize also keeps a left/right split image's halves (unlike a centre crop of a wide frame).
    colour = torch.tensor([0.2, 0.6, 0.9]).view(1, 1, 3, 1, 1)
    small = enc(colour.expand(1, 1, 3, 32, 32).clone())
    for h, w in [(17, 45), (64, 64), (100, 30)]:
        torch.testing.assert_close(enc(colour.expand(1, 1, 3, h, w).clone()), small, rtol=1e-4, atol=1e-5)
    # A 32x128 frame with white columns 16..63 squeezes (no crop, no aspect ratio) to white columns
    # 4..15 of 32; a centre crop would keep columns 48..79 instead.
    wide = torch.zeros(1, 1, 3, 32, 128)
    wide[..., 16:64] = 1.0
    squeezed = torch.zeros(1, 1, 3, 32, 32)
    squeezed[..., 4:16] = 1.0
    got = enc(wide)
    to_squeezed = (got - enc(squeezed)).abs().max()
    to_cropped = (got - enc(wide[..., 48:80].clone())).abs().max()
    assert to_squeezed < to_cropped / 4


def test_text_states_depend_on_text():
    enc = CLIPTextEncoder(TINY)
    a, b = enc(["a dog barks"]), enc(["a cat meows"])
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(1, 77))
    assert not torch.allclose(a, b)
    # causal text transformer: the start-of-text state is identical, later tokens differ
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-3


def test_text_shorter_context_truncates_exactly():
    full = CLIPTextEncoder(TINY)(["a short caption"])
    short = CLIPTextEncoder(TINY, context_length=16)(["a short caption"])
    assert short.shape == (1, 16, 32)
    torch.testing.assert_close(short, full[:, :16], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="context_length"):
        CLIPTextEncoder(TINY, context_length=100)


@pytest.mark.parametrize("cls", [CLIPVisionEncoder, CLIPTextEncoder])
def test_init_seed_determinism_and_global_rng_untouched(cls):
    state = torch.random.get_rng_state()
    a, b, c = cls(TINY, init_seed=5), cls(TINY, init_seed=5), cls(TINY, init_seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("cls", [CLIPVisionEncoder, CLIPTextEncoder])
def test_meta_build_allocates_nothing_and_counts_the_same(cls):
    cpu = cls(TINY)
    with torch.device("meta"):
        meta = cls(TINY)
    tensors = list(meta.parameters()) + list(meta.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in cpu.parameters())


def test_meta_build_of_hub_name_uses_model_name_config_without_download(monkeypatch):
    # No cache and offline: only the model_name config can make this work.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with torch.device("meta"):
        enc = CLIPVisionEncoder(TINY, pretrained="hf-hub:nobody/not-cached", image_size=64)
    assert enc.image_size == (64, 64)


def test_frozen_stays_eval_and_gradient_free():
    enc = CLIPVisionEncoder(TINY)
    parent = torch.nn.Sequential(enc, torch.nn.Linear(32, 2))
    parent.train()
    assert not enc.training and parent[1].training
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(torch.rand(1, 2, 3, 32, 32)).requires_grad
    trainable = CLIPTextEncoder(TINY, frozen=False)
    assert trainable.training and trainable(["hi"]).requires_grad


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        CLIPVisionEncoder(TINY, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        CLIPVisionEncoder(TINY, pretrained=str(tmp_path))
    enc = CLIPVisionEncoder(TINY)
    with pytest.raises(ValueError, match=r"\(B, F, 3, H, W\)"):
        enc(torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match="255"):
        enc(torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="list of strings"):
        CLIPTextEncoder(TINY)("not a list")
