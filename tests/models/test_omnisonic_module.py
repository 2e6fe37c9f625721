"""OmniSonic LightningModule: Eq. 9 guidance (batched == separate forwards), presets, dropout, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avgen.codecs import MelCodec
from avgen.conditioning import CLIPVisionEncoder
from avgen.conditioning.speech import SpeechTranscriptEncoder
from avgen.conditioning.t5 import T5TextEncoder
from avgen.data import ToyWorldDataModule
from avgen.flow import sampling_times
from avgen.models.omnisonic import OmniSonicSampling
from avgen.models.omnisonic import CFG_PRESETS, CONDITIONS, GUIDANCE_BRANCHES, OmniSonic


def build(**kwargs) -> OmniSonic:
    torch.manual_seed(0)
    model = OmniSonic(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        T5TextEncoder("avgen-tiny-t5", max_length=40),
        SpeechTranscriptEncoder("avgen-tiny-speecht5", durator_dropout=0.0),
        CLIPVisionEncoder("avgen-tiny-clip"),
        hidden_dim=32, depth=2, num_heads=4, gate_hidden_dim=16, duration=1.0, **kwargs,
    )
    return model


def randomise(model: OmniSonic) -> OmniSonic:
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def batch():
    dm = ToyWorldDataModule(batch_size=6, train_size=6, duration=1.0, semantic_size=32, sync_size=32,
                            scenarios=["omnisonic_s1", "omnisonic_s2", "omnisonic_s3"], seed=3)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def conditions_for(model, encoded, flags):
    """Network conditions with explicit presence flags (not through make_conditions)."""
    return model.network.preprocess_conditions(
        encoded.onscreen, encoded.offscreen, encoded.speech, encoded.visual,
        onscreen_present=flags["onscreen"], offscreen_present=flags["offscreen"],
        speech_present=flags["speech"], visual_present=flags["visual"],
        visual_to_onscreen=encoded.visual_to_onscreen,
    )


def test_batched_five_branch_cfg_equals_eq9_with_separate_forwards(batch):
    model = randomise(build()).eval()
    scales = {"onscreen": 1.5, "offscreen": 0.7, "speech": 3.0}
    seed, steps = 11, 2
    calls = []
    original = model.network.predict_velocity
    model.network.predict_velocity = lambda x, *a, **k: calls.append(x.shape[0]) or original(x, *a, **k)
    latents, _, num_samples = model.sample_latents(batch, num_steps=steps, seed=seed, cfg_scales=scales)
    model.network.predict_velocity = original
    assert calls == [5 * len(batch)] * steps  # ONE forward per step, five branches batched

    # Direct transcription of Eq. 9: five separate forwards per step, explicit Euler.
    encoded = model.encode_conditions(batch)
    p = encoded.present
    none = torch.zeros_like(p["onscreen"])
    branch_flags = {
        "all": p,
        **{c: {**{k: none for k in CONDITIONS}, c: p[c], "visual": p["visual"]} for c in CONDITIONS},
        "none": {**{k: none for k in CONDITIONS}, "visual": p["visual"]},  # video kept (Eq. 9)
    }
    conditions = {name: conditions_for(model, encoded, flags) for name, flags in branch_flags.items()}
    num_latents = model.codec.num_latents(num_samples)
    x = torch.randn((len(batch), num_latents, model.codec.latent_channels), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(len(batch), num_latents, dtype=torch.bool)
    times = sampling_times(steps)
    for i in range(steps):
        t = torch.full((len(batch),), float(times[i]))
        v = {name: model.predict_velocity(model.network, x, t, c, mask) for name, c in conditions.items()}
        guided = v["all"] + sum(scales[c] * (v[c] - v["none"]) for c in CONDITIONS)
        x = x + (times[i + 1] - times[i]) * guided
    torch.testing.assert_close(latents, x, rtol=1e-4, atol=1e-4)


def test_cfg_presets_are_a5_values_and_auto_follows_the_scenario(batch):
    assert CFG_PRESETS["s1"] == {"onscreen": 5.0, "speech": 2.5, "offscreen": 0.5}
    assert CFG_PRESETS["s2"] == {"speech": 7.5, "offscreen": 2.5, "onscreen": 0.5}
    assert CFG_PRESETS["s3"] == {"onscreen": 5.0, "offscreen": 2.5, "speech": 2.5}
    model = build()
    expected = [{"omnisonic_s1": "s1", "omnisonic_s2": "s2", "omnisonic_s3": "s3"}[t] for t in batch.task]
    assert model.sample_presets(batch) == expected
    # without a scenario name, the texts a sample carries decide
    anonymous = dataclasses.replace(batch, task=[""] * len(batch))
    assert model.sample_presets(anonymous) == expected
    assert model.sample_presets(batch, "s2") == ["s2"] * len(batch)
    guidance, branches = model.guidance(OmniSonicSampling(cfg_scales=[5.0, 0.5, 2.5]), batch)
    assert branches == list(GUIDANCE_BRANCHES) and guidance.scales == [5.0, 0.5, 2.5]
    guidance, branches = model.guidance(OmniSonicSampling(cfg_scale=1.0), batch)
    assert branches == ["all"]
    with pytest.raises(ValueError, match="cfg_preset"):
        model.sample_presets(batch, "s9")


def test_mixed_scenario_batch_uses_each_samples_preset(batch):
    """A batch of S1/S2/S3 samples with auto presets: each sample gets its own preset's scales, in ONE
    batched forward per step; it equals the whole batch sampled with that preset (same noise)."""
    model = randomise(build()).eval()
    network = model.inference_network
    batch_sizes = []
    original = network.predict_velocity

    def counting(x_t, *args, **kwargs):
        batch_sizes.append(x_t.shape[0])
        return original(x_t, *args, **kwargs)

    network.predict_velocity = counting
    try:
        latents, _, _ = model.sample_latents(batch, num_steps=2, seed=4)
    finally:
        del network.predict_velocity
    presets = model.sample_presets(batch)
    assert len(set(presets)) > 1, "the fixture must mix scenarios"
    assert batch_sizes == [5 * len(batch)] * 2  # ONE forward of all five branches per Euler step
    latents, _, _ = model.sample_latents(batch, num_steps=1, seed=4)
    for name in dict.fromkeys(presets):
        index = [i for i, p in enumerate(presets) if p == name]
        uniform, _, _ = model.sample_latents(batch, num_steps=1, seed=4, cfg_scales=CFG_PRESETS[name])
        torch.testing.assert_close(latents[index], uniform[index], rtol=1e-5, atol=1e-5)


def test_condition_dropout_is_independent_per_condition_with_p(batch):
    model = build(condition_dropout=0.1)
    encoded = model.encode_conditions(batch)
    n = 4000
    i = next(i for i, task in enumerate(batch.task) if task != "omnisonic_s2")  # S2 has no on-screen caption
    big = dataclasses.replace(
        encoded,
        onscreen=tuple(x[i : i + 1].expand(n, *x.shape[1:]) for x in encoded.onscreen),
        offscreen=tuple(x[i : i + 1].expand(n, *x.shape[1:]) for x in encoded.offscreen),
        speech=tuple(x[i : i + 1].expand(n, *x.shape[1:]) for x in encoded.speech),
        visual=encoded.visual[i : i + 1].expand(n, -1, -1),
        present={k: torch.ones(n, dtype=torch.bool) for k in encoded.present},
        visual_to_onscreen=torch.ones(n, dtype=torch.bool),
    )
    torch.manual_seed(1)
    c = model.make_conditions(model.network, big, batch, latent_length=10, branch="train")
    null = model.network
    dropped = {
        "onscreen": (c.onscreen[:, 0] == null.null_onscreen).all(-1) & ~c.onscreen_mask[:, 1],
        "offscreen": (c.offscreen[:, 0] == null.null_offscreen).all(-1) & ~c.offscreen_mask[:, 1],
        "speech": (c.speech[:, 0] == null.null_speech).all(-1) & ~c.speech_mask[:, 1],
        "visual": (c.visual == null.null_visual).all(-1).all(-1),
    }
    rates = {k: v.float().mean().item() for k, v in dropped.items()}
    for name, rate in rates.items():
        assert 0.08 < rate < 0.12, (name, rate)
    both = (dropped["onscreen"] & dropped["speech"]).float().mean().item()
    assert 0.005 < both < 0.017  # independent: about 0.1 * 0.1
    assert c.visual_to_onscreen.all()  # routing never follows the dropout
    # conditional branch keeps everything
    c = model.make_conditions(model.network, big, batch, latent_length=10, branch="conditional")
    assert c.onscreen_mask[:, 1].all() and not (c.visual == null.null_visual).all(-1).all(-1).any()


def test_gradients_reach_speech_encoder_and_durator_not_frozen_encoders(batch):
    model = randomise(build())
    model.train()
    loss = model.training_step(batch, 0)
    loss.backward()
    durator = model.speech_encoder.durator
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in durator.duration_predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in durator.upsampler.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.speech_encoder.text_encoder.parameters())
    assert all(p.grad is None for p in model.env_text_encoder.parameters())
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert set(model.frozen_module_names()) >= {"env_text_encoder", "vision_encoder", "codec"}
    assert "speech_encoder" not in model.frozen_module_names()
    _, logs = model.velocity_and_logs(model.network, *training_inputs(model, batch))
    assert set(logs) == {"gate_onscreen", "gate_offscreen", "gate_speech"}
    assert abs(sum(float(v) for v in logs.values()) - 1.0) < 1e-5


def training_inputs(model, batch):
    """(x_t, t, conditions, latent_mask) of a conditional forward on the batch's own latents."""
    x1, latent_mask = model.target_latents(batch)
    conditions = model.make_conditions(model.network, model.encode_conditions(batch), batch,
                                       latent_length=x1.shape[1], branch="conditional")
    return 0.5 * x1, torch.full((len(batch),), 0.5), conditions, latent_mask


def test_fixed_batch_overfit_reduces_the_loss(batch):
    batch = batch.select([0, 1, 2])
    model = build(condition_dropout=0.0)
    model.train()
    before = torch.stack(model.binned_losses(batch)).mean().item()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-2)
    for step in range(25):
        optimizer.zero_grad()
        model.training_step(batch, step).backward()
        optimizer.step()
    model.eval()
    after = torch.stack(model.binned_losses(batch)).mean().item()
    assert after < 0.8 * before, (before, after)


def test_gate_logits_override_is_per_call_and_restored(batch):
    model = randomise(build()).eval()
    base, _, _ = model.sample_latents(batch, num_steps=1, seed=2, cfg_scale=1.0)
    muted, _, _ = model.sample_latents(batch, num_steps=1, seed=2, cfg_scale=1.0,
                                       gate_logits_override={"speech": -30.0})
    assert not hasattr(model.network, "gate_logits_override")  # a per-call option, never network state
    encoded = model.encode_conditions(batch)
    conditions = model.make_conditions(model.network, encoded, batch, latent_length=base.shape[1], branch="all",
                                       options=OmniSonicSampling(gate_logits_override={"speech": -30.0}))
    _, gates = model.network.predict_velocity(model.to_map(base), torch.rand(len(batch)), conditions,
                                              return_gate_weights=True)
    assert (gates[..., 2] < 1e-6).all()
    assert not torch.allclose(base, muted)
    again, _, _ = model.sample_latents(batch, num_steps=1, seed=2, cfg_scale=1.0)
    torch.testing.assert_close(base, again)


@torch.no_grad()
def _branch_velocities(model, batch, branches):
    """Velocities of the named Eq. 9 branches at one fixed (x, t), through make_conditions."""
    encoded = model.encode_conditions(batch)
    num_latents = model.codec.num_latents(batch.audio.shape[1])
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(len(batch), num_latents, model.codec.latent_channels, generator=gen)
    t = torch.full((len(batch),), 0.4)
    mask = torch.ones(len(batch), num_latents, dtype=torch.bool)
    out = {}
    for branch in branches:
        c = model.make_conditions(model.network, encoded, batch, latent_length=num_latents, branch=branch)
        out[branch] = model.predict_velocity(model.network, x, t, c, mask)
    return encoded, out


def test_empty_caption_is_encoded_so_s1_offscreen_and_s2_onscreen_terms_are_nonzero(batch):
    """A.5 sets lambda_off = 0.5 in S1 and lambda_on = 0.5 in S2, whose captions are "" (Fig. 2). Under the
    paper's reading (default) the Eq. 9 terms V(x, T5(""), c_v) - V(x, null, c_v) act; under
    empty_caption="null" they are exactly zero."""
    first = {task: batch.task.index(task) for task in ("omnisonic_s1", "omnisonic_s2")}
    batch = batch.select([first["omnisonic_s1"], first["omnisonic_s2"]])  # one S1, one S2 sample
    s1, s2 = [0], [1]
    assert not batch.has_offscreen_caption[s1].any() and not batch.has_caption[s2].any()
    branches = ("all", "offscreen_only", "onscreen_only", "none")
    torch.manual_seed(7)
    paper = randomise(build()).eval()
    assert paper.empty_caption == "encode"
    encoded, v = _branch_velocities(paper, batch, branches)
    assert encoded.present["onscreen"].all() and encoded.present["offscreen"].all()
    assert torch.equal(encoded.present["speech"], batch.has_transcript)
    assert torch.equal(encoded.visual_to_onscreen, batch.has_caption)  # routing still follows the text
    off_term = (v["offscreen_only"] - v["none"])[s1]
    on_term = (v["onscreen_only"] - v["none"])[s2]
    assert off_term.abs().max() > 1e-3 and on_term.abs().max() > 1e-3

    legacy = build(empty_caption="null").eval()
    legacy.load_state_dict(paper.state_dict())  # same weights, the other reading
    encoded, v_legacy = _branch_velocities(legacy, batch, branches)
    assert torch.equal(encoded.present["onscreen"], batch.has_caption)
    assert torch.equal(encoded.present["offscreen"], batch.has_offscreen_caption)
    assert torch.equal((v_legacy["offscreen_only"] - v_legacy["none"])[s1], torch.zeros_like(off_term))
    assert torch.equal((v_legacy["onscreen_only"] - v_legacy["none"])[s2], torch.zeros_like(on_term))
    torch.testing.assert_close(v_legacy["none"], v["none"])  # the null branch does not depend on the reading
    assert not torch.allclose(v["all"][s2], v_legacy["all"][s2])  # the conditional branch does


def test_empty_caption_encodes_the_empty_string_and_dropout_still_nulls_it(batch):
    model = build(condition_dropout=1.0)
    s2 = [i for i, task in enumerate(batch.task) if task == "omnisonic_s2"]
    encoded = model.encode_conditions(batch)
    states, mask = model.env_text_encoder([""])
    c = model.make_conditions(model.network, encoded, batch, latent_length=4, branch="all")
    for i in s2:  # FLAN-T5("") is the on-screen condition, not the null token
        valid = int(mask[0].sum())
        torch.testing.assert_close(c.onscreen[i, :valid], states[0, :valid])
        assert torch.equal(c.onscreen_mask[i, : mask.shape[1]], mask[0])
    dropped = model.make_conditions(model.network, encoded, batch, latent_length=4, branch="train")
    null = model.network.null_onscreen.expand_as(dropped.onscreen[:, 0])
    assert torch.equal(dropped.onscreen[:, 0], null) and not dropped.onscreen_mask[:, 1:].any()
    with pytest.raises(ValueError, match="empty_caption"):
        build(empty_caption="drop")


def test_qk_norm_switch_reaches_every_attention():
    from avgen.nn.attention import RMSNorm

    with_norm, without = build(), build(qk_norm=False)
    norms = lambda m: sum(isinstance(x, RMSNorm) for x in m.network.modules())  # noqa: E731
    assert norms(with_norm) == 2 * 4 * 2  # q and k of 1 self- + 3 cross-attentions, 2 blocks
    assert norms(without) == 0


def test_precomputed_features_give_the_encoders_conditions():
    """From `avgen precompute` records (FLAN-T5 of both captions, CLIP frames, codec posterior) OmniSonic
    encodes the same conditions and targets as from the media; the trainable speech encoder still runs."""
    from avgen.cli.precompute import encode_clips
    from avgen.data import collate
    from avgen.data.shards import record_to_sample

    model = build().eval()
    dm = ToyWorldDataModule(batch_size=4, train_size=4, duration=1.0, semantic_size=32, sync_size=32,
                            scenarios=["omnisonic_s1", "omnisonic_s2", "omnisonic_s3"], seed=3)
    dm.setup("fit")
    samples = [dm.train_dataloader().dataset[i] for i in range(4)]
    media = collate(samples)
    shards = collate([record_to_sample(r) for r in encode_clips(model, samples)])
    assert shards.audio is None and shards.caption_features is not None and shards.semantic_features is not None
    from unittest import mock

    with torch.no_grad():
        a, (xa, ma) = model.encode_conditions(media), model.target_latents(media)
        with mock.patch.object(model.codec, "encode", side_effect=AssertionError("codec encoder ran")), \
             mock.patch.object(model.env_text_encoder, "forward", side_effect=AssertionError("FLAN-T5 ran")), \
             mock.patch.object(model.vision_encoder, "forward", side_effect=AssertionError("CLIP ran")):
            b, (xb, mb) = model.encode_conditions(shards), model.target_latents(shards)
    torch.testing.assert_close(xb, xa)
    assert torch.equal(mb, ma)
    for name in ("onscreen", "offscreen", "speech"):
        (sa, ka), (sb, kb) = getattr(a, name), getattr(b, name)
        assert torch.equal(ka, kb)
        torch.testing.assert_close(sb * kb[..., None], sa * ka[..., None], rtol=1e-5, atol=1e-5)
    video = media.has_video
    torch.testing.assert_close(b.visual[video], a.visual[video], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a.present[k], b.present[k]) for k in a.present)
