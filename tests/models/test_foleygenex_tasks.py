"""FoleyGenEx's six tasks (§3.2, Fig. 3, Fig. 7) at module level on a tiny network, and MMAudio import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avgen.data.batch import Sample, collate
from avgen.models.foleygenex import TASKS, FoleyGenExNetwork
from avgen.models.foleygenex.mmaudio_checkpoint import load_mmaudio_checkpoint, mmaudio_to_avgen_key

from .test_foleygenex_masking import perturb, tiny_model

SHAPES = json.loads((Path(__file__).resolve().parent / "data" / "mmaudio_state_dict_shapes.json").read_text())
SR = 16000


@pytest.fixture(scope="module")
def model():
    m = tiny_model()
    perturb(m.network, std=0.2)
    return m.eval()


def task_batch(model, seconds=1.0, num=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return collate([
        Sample(
            id=f"s{i}", sample_rate=SR, audio=0.3 * torch.randn(int(seconds * SR), generator=g),
            reference_audio=0.3 * torch.randn(int(0.25 * SR) + 100 * i, generator=g),
            semantic_features=torch.randn(round(8 * seconds), model.vision_encoder.output_dim, generator=g),
            sync_features=torch.randn(model.sync_encoder.num_tokens(round(25 * seconds)),
                                      model.sync_encoder.output_dim, generator=g),
            caption=["a dog barks", "a bell rings"][i % 2],
            meta={"contradicting_caption": "a lion roars", "edit_window": [0.3, 0.6]},
        )
        for i in range(num)
    ])


def sane(waveforms, lengths, expected_samples):
    assert waveforms.shape == (lengths.shape[0], expected_samples)
    assert torch.isfinite(waveforms).all()
    assert (lengths == expected_samples).all()
    assert (waveforms.pow(2).mean(1).sqrt() > 1e-4).all()  # not silent


@pytest.mark.parametrize("task", TASKS)
def test_every_task_gives_finite_right_length_non_silent_audio(model, task):
    batch = task_batch(model)
    waveforms, lengths = model.generate_task(batch, task, num_steps=2, seed=0)
    sane(waveforms, lengths, SR)


def test_tasks_use_their_conditions(model):
    batch = task_batch(model)
    out = {t: model.generate_task(batch, t, num_steps=2, seed=0)[0] for t in ("tta", "vta", "tc-vta")}
    assert not torch.allclose(out["tta"], out["vta"]) and not torch.allclose(out["vta"], out["tc-vta"])
    # TC-VTA ignores the CLIP semantics (FV0)
    changed = task_batch(model)
    changed.semantic_features = changed.semantic_features + 3.0
    torch.testing.assert_close(model.generate_task(changed, "tc-vta", num_steps=2, seed=0)[0], out["tc-vta"])
    # the caption argument overrides the batch and the contradicting caption
    other = model.generate_task(batch, "tc-vta", num_steps=2, seed=0, caption=["a train", "a car"])[0]
    assert not torch.allclose(other, out["tc-vta"])


def test_fe_chains_to_three_training_windows_and_keeps_the_reference(model):
    batch = task_batch(model, seconds=3.0)
    waveforms, lengths = model.generate_task(batch, "fe", num_steps=2, seed=0, total_duration=3.0)
    sane(waveforms, lengths, 3 * SR)
    latents, _ = model.extend_latents(batch, total_duration=3.0, num_steps=2, generator=torch.Generator().manual_seed(0))
    ref = model.codec.encode(batch.reference_audio)[:, : int(model.codec.latent_lengths(batch.reference_audio_lengths).min())]
    torch.testing.assert_close(latents[:, : ref.shape[1]], ref)  # the reference opens the sequence unchanged
    window = model.codec.num_latents(SR)
    assert latents.shape[1] == model.codec.num_latents(3 * SR) > 2 * window
    # every latent frame was generated (no gap left at zero between windows)
    assert (latents.abs().sum(-1) > 0).all()
    # a video shorter than total_duration is a clear error
    with pytest.raises(ValueError, match="total_duration"):
        model.generate_task(task_batch(model, seconds=1.0), "fe", num_steps=2, total_duration=3.0)


def test_edit_leaves_the_untouched_latent_exactly_unchanged(model):
    batch = task_batch(model)
    latents, lengths, num_samples = model.edit_latents(batch, num_steps=3, generator=torch.Generator().manual_seed(0))
    x1 = model.codec.encode(batch.audio)
    times = torch.arange(x1.shape[1]) / model.codec.latent_rate
    window = (times >= 0.3) & (times < 0.6)  # meta["edit_window"]
    assert torch.equal(latents[:, ~window], x1[:, ~window])  # bit-exact outside the window
    assert not torch.allclose(latents[:, window], x1[:, window], atol=1e-3)  # the window was regenerated
    # an explicit window overrides the metadata
    latents2, _, _ = model.edit_latents(batch, edit_window=(0.0, 0.2), num_steps=3,
                                        generator=torch.Generator().manual_seed(0))
    keep = times >= 0.2
    assert torch.equal(latents2[:, keep], x1[:, keep])


def test_ac_vta_noise_summation_on_and_off_differ(model):
    batch = task_batch(model)
    on, _ = model.generate_task(batch, "ac-vta", num_steps=2, seed=0)
    model.noise_summation = False
    try:
        off, _ = model.generate_task(batch, "ac-vta", num_steps=2, seed=0)
    finally:
        model.noise_summation = True
    assert not torch.allclose(on, off)
    # the reference audio argument overrides the batch's
    ref = 0.3 * torch.randn(2, SR // 2, generator=torch.Generator().manual_seed(9))
    other, _ = model.generate_task(batch, "ac-vta", num_steps=2, seed=0, reference_audio=ref)
    assert not torch.allclose(on, other)


def test_predict_step_reads_the_task_options(model):
    from avgen.models import GenerationRequest
    from avgen.models.foleygenex import FoleyGenExSampling

    batch = task_batch(model)
    out = model.predict_step(GenerationRequest(batch, FoleyGenExSampling(task="tta", num_steps=2, seed=3)), 0)
    assert not hasattr(model, "predict_options")  # options travel with the batch, nothing is parked on the model
    expected, _ = model.generate_task(batch, "tta", num_steps=2, seed=3)
    torch.testing.assert_close(out["waveforms"], expected)
    with pytest.raises(ValueError, match="unknown task"):
        model.generate_task(batch, "t2v")


def test_missing_reference_is_a_clear_error(model):
    batch = collate([Sample(id="noref", sample_rate=SR, audio=torch.randn(SR) * 0.1,
                            semantic_features=torch.randn(8, model.vision_encoder.output_dim),
                            sync_features=torch.randn(16, model.sync_encoder.output_dim), caption="x")])
    with pytest.raises(ValueError, match=r"noref.*reference_audio"):
        model.generate_task(batch, "ac-vta", num_steps=1)


# ----------------------------------------------------------------------------- MMAudio checkpoints
def _network(name, injection, device="cpu"):
    cfg = {"small_16k": (20, 7, 4, 8), "large_44k": (40, 14, 7, 14)}[name]
    with torch.device(device):
        return FoleyGenExNetwork(latent_channels=cfg[0], semantic_dim=1024, sync_dim=768, text_dim=1024, text_length=77,
                                 hidden_dim=64 * cfg[1], num_heads=cfg[1], num_joint_blocks=cfg[2],
                                 num_single_blocks=cfg[3], conditional_injection=injection)


@pytest.mark.parametrize("name", ["small_16k", "large_44k"])
@pytest.mark.parametrize("injection", [False, True])
def test_mmaudio_shaped_state_dict_uses_every_backbone_key(name, injection):
    shapes = SHAPES[name]
    net = _network(name, injection, device="meta")  # key/shape mapping at full size, no memory
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    report = load_mmaudio_checkpoint(net, state)
    assert report.ok and not report.unexpected and not report.missing
    assert len(report.loaded) == len(shapes) - 2  # all but latent_mean / latent_std
    assert set(report.loaded) == set(net.state_dict()) - set(report.fresh)
    assert (report.fresh != []) == injection and all(k.startswith("input_embedding.") for k in report.fresh)


def test_mmaudio_values_land_in_the_mapped_tensors_and_stats_are_returned():
    shapes = SHAPES["small_16k"]
    net = _network("small_16k", injection=True)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
    fresh_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("input_embedding.")}
    report = load_mmaudio_checkpoint(net, state)
    own = net.state_dict()
    for key, value in state.items():
        if key in ("latent_mean", "latent_std"):
            torch.testing.assert_close(getattr(report, key), value.reshape(-1))
        elif key.endswith((".attn.qkv.weight", ".attn.qkv.bias")):  # MMAudio's (h d j) rows -> avgen's (j h d)
            rows = value.unflatten(0, (-1, 3))  # (D, 3, ...): channel c's q, k, v
            assert torch.equal(own[mmaudio_to_avgen_key(key)], torch.cat([rows[:, j] for j in range(3)])), key
        else:
            assert torch.equal(own[mmaudio_to_avgen_key(key)], value), key
    torch.testing.assert_close(own["null_text"], state["empty_string_feat"])  # CLIP("") -> null text
    for key, value in fresh_before.items():
        assert torch.equal(own[key], value)  # new FoleyGenEx parts keep their fresh init


def test_mmaudio_unmatched_keys_are_reported_and_raise():
    shapes = SHAPES["small_16k"]
    net = _network("small_16k", injection=False, device="meta")
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    extra = dict(state, **{"some_new.weight": torch.empty(3, device="meta")})
    with pytest.raises(ValueError, match="1 unexpected"):
        load_mmaudio_checkpoint(net, extra)
    partial = {k: v for k, v in state.items() if not k.startswith("fused_blocks.0.")}
    report = load_mmaudio_checkpoint(net, partial, strict=False)
    assert report.missing and all(k.startswith("single_blocks.0.") for k in report.missing)
    wrong = _network("large_44k", injection=False, device="meta")
    with pytest.raises(ValueError, match="mismatched"):
        load_mmaudio_checkpoint(wrong, state)
