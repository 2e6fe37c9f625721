"""AudioGen-Omni LightningModule and configs: variable-length loss, training on a fixed batch, tasks,
paper size and recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from avgen.data import collate
from avgen.data.toyworld import ToyWorld
from avgen.flow import flow_matching_loss, interpolate, target_velocity
from avgen.flow.loss import frame_losses

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "audiogen_omni"


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread (tests/conftest.py)

@pytest.fixture(scope="module")
def model():
    from avgen.cli import run_cli

    cli = run_cli(["--config", str(CONFIGS / "tiny.yaml"), "--trainer.logger=false"], run=False)
    torch.manual_seed(0)
    with torch.no_grad():  # leave the zero init so that conditions reach the output
        for name, p in cli.model.network.named_parameters():
            if "adaLN" in name or name.startswith("final_layer") or name.startswith("null"):
                p.normal_(0, 0.02)
    return cli.model.eval()


@pytest.fixture(scope="module")
def world():
    return ToyWorld(duration=2.0, min_duration=1.0, speech="formant", semantic_size=32, sync_size=32)


def _batch(world, indices, scenario="song"):
    return collate([world.sample(i, scenario=scenario) for i in indices])


def _per_sample_losses(model, batch, seed=0):
    x1, latent_mask = model.target_latents(batch)
    encoded = model.encode_conditions(batch)
    cond = model.make_conditions(model.network, encoded, batch, latent_length=x1.shape[1], branch="conditional")
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.full((x1.shape[0],), 0.6)
    with torch.no_grad():
        v = model.predict_velocity(model.network, interpolate(x0, x1, t), t, cond, latent_mask)
    losses = frame_losses(v, target_velocity(x0, x1))
    return [float(losses[b][latent_mask[b]].mean()) for b in range(len(batch))], latent_mask.sum(1).tolist(), x0


def test_variable_length_batch_gives_each_sample_its_own_unpadded_loss(model, world):
    indices = [0, 3]
    batch = _batch(world, indices)
    assert batch.audio_lengths[0] != batch.audio_lengths[1]  # different durations, one padded batch
    losses, lengths, x0 = _per_sample_losses(model, batch)
    for b, i in enumerate(indices):
        alone = collate([world.sample(i, scenario="song")])
        x1, mask = model.target_latents(alone)
        assert x1.shape[1] == lengths[b] and bool(mask.all())  # unpadded
        encoded = model.encode_conditions(alone)
        cond = model.make_conditions(model.network, encoded, alone, latent_length=x1.shape[1], branch="conditional")
        t = torch.full((1,), 0.6)
        x0b = x0[b : b + 1, : lengths[b]]
        with torch.no_grad():
            v = model.predict_velocity(model.network, interpolate(x0b, x1, t), t, cond, mask)
        assert float(flow_matching_loss(v, target_velocity(x0b, x1), mask)) == pytest.approx(losses[b], rel=1e-4)


def test_conditions_follow_presence_flags_and_dropout(model, world):
    batch = _batch(world, [1, 2], scenario="speech")
    encoded = model.encode_conditions(batch)
    assert encoded.lyrics_present.all()  # the transcript feeds the unified LT stream
    tokens = (encoded.lyrics_ids != -1).sum(1)
    assert tokens.tolist() == [len(model.tokenizer.encode(t)) for t in batch.transcript]
    assert encoded.seconds_total.tolist() == pytest.approx(batch.seconds_total.tolist())
    n = int(encoded.latent_lengths.max())
    cond = model.make_conditions(model.network, encoded, batch, latent_length=n, branch="conditional")
    uncond = model.make_conditions(model.network, encoded, batch, latent_length=n, branch="unconditional")
    assert not torch.allclose(cond.lyrics, uncond.lyrics) and not torch.allclose(cond.clip, uncond.clip)
    model.video_dropout = model.caption_dropout = model.lyrics_dropout = 1.0
    try:
        dropped = model.make_conditions(model.network, encoded, batch, latent_length=n, branch="train")
    finally:
        model.video_dropout = model.caption_dropout = model.lyrics_dropout = 0.1
    torch.testing.assert_close(dropped.pooled, uncond.pooled)  # all three dropped = the CFG null branch
    with pytest.raises(ValueError, match="unknown condition branch"):
        model.make_conditions(model.network, encoded, batch, latent_length=n, branch="nope")


def test_tasks_keep_only_their_conditions_and_name_missing_inputs(model, world):
    batch = _batch(world, [1], scenario="speech")
    v2song = model.apply_task(batch, "v2song", lyrics="la la")
    assert v2song.has_video.all() and v2song.has_lyrics.all() and not v2song.has_transcript.any()
    assert v2song.lyrics == ["la la"]
    t2a = model.apply_task(batch, "t2a", caption="a drum thumps")
    assert not t2a.has_video.any() and not t2a.has_lyrics.any() and not t2a.has_transcript.any()
    tts = model.apply_task(batch, "tts", caption="a low voice speaks")
    assert tts.has_transcript.all() and not tts.has_video.any()
    no_video = _batch(world, [1], scenario="tta")
    with pytest.raises(ValueError, match="needs video.*t2a"):
        model.apply_task(no_video, "v2a")
    instrumental = model.apply_task(batch, "t2song", caption="a song", lyrics="")
    assert not instrumental.has_lyrics.any()  # empty lyrics: instrumental music (the paper's demo)
    with pytest.raises(ValueError, match="--transcript"):
        model.apply_task(_batch(world, [1], scenario="song"), "v2s")
    with pytest.raises(ValueError, match="unknown AudioGen-Omni task"):
        model.apply_task(batch, "v2x")
    waves, lengths = model.generate_task(batch, "t2song", caption="a voice sings", lyrics="la la",
                                         duration=1.5, num_steps=2, seed=0)
    assert waves.shape == (1, 24000) and lengths.tolist() == [24000] and torch.isfinite(waves).all()
    with pytest.raises(ValueError, match="outside"):
        model.generate_task(batch, "t2a", caption="x", duration=5.0, num_steps=1)


def test_lyrics_that_do_not_fit_the_clip_are_a_clear_error(model, world):
    batch = _batch(world, [1], scenario="song")
    long = model.apply_task(batch, "v2song", lyrics=" ".join(["hello"] * 80))
    with pytest.raises(ValueError, match=r"toyworld_train.*needs \d+ tokens.*latent frames.*--duration"):
        model.encode_conditions(long)


def test_tiny_model_loss_halves_on_a_fixed_batch(world):
    from avgen.cli import run_cli

    model = run_cli(["--config", str(CONFIGS / "tiny.yaml"), "--trainer.logger=false"], run=False).model
    short = ToyWorld(duration=1.0, min_duration=0.6, speech="formant", semantic_size=32, sync_size=32)
    batch = collate([short.sample(i, scenario=s) for i, s in ((0, "song"), (1, "speech"), (2, "vta"))])
    x1, latent_mask = model.target_latents(batch)
    encoded = model.encode_conditions(batch)
    g = torch.Generator().manual_seed(0)
    x0, t = torch.randn(x1.shape, generator=g), torch.rand(x1.shape[0], generator=g)
    optimizer = torch.optim.AdamW(model.network.parameters(), lr=3e-3, weight_decay=1e-3)
    losses = []
    for _ in range(16):
        cond = model.make_conditions(model.network, encoded, batch, latent_length=x1.shape[1], branch="conditional")
        v = model.predict_velocity(model.network, interpolate(x0, x1, t), t, cond, latent_mask)
        loss = flow_matching_loss(v, target_velocity(x0, x1), latent_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses[::4]


def test_paper_config_is_table_1_size(capsys):
    from avgen.cli import main

    main(["summary", "--config", str(CONFIGS / "paper.yaml")])
    out = capsys.readouterr().out
    counts = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"^(\S+): ([\d,]+)$", out, re.M)}
    assert abs(counts["network"] / 1.553e9 - 1) < 0.02, counts["network"]  # spec §3: 1.553B (Table 1: 1.55B)
    assert abs(counts["network.lyrics_encoder"] / 14.6e6 - 1) < 0.01  # §1.4.3: 14.6M
    assert 105e6 < counts["text_encoder"] < 115e6  # flan-t5-base encoder, frozen


def test_paper_config_recipe():
    cfg = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    model = cfg["model"]["init_args"]
    from avgen.models import network_preset

    assert model["network"] == "audiogen-omni"
    preset = network_preset("audiogen-omni").kwargs
    assert (preset["hidden_dim"], preset["num_heads"], preset["num_joint_blocks"], preset["num_single_blocks"]) == (1024, 16, 8, 16)
    assert (preset["lyrics_dim"], preset["lyrics_max_positions"], preset["lyrics_blocks"]) == (768, 4000, 4)
    assert model["cfg_scale"] == 4.5 and model["num_sampling_steps"] == 25 and model["max_duration"] == 10.0
    opt, sched = model["optimizer"]["init_args"], model["lr_scheduler"]
    assert opt["lr"] == 1e-5 and opt["weight_decay"] == 1e-3
    assert sched["class_path"].endswith("InverseLR") and sched["init_args"]["warmup"] == 0.99
    assert cfg["data"]["init_args"]["batch_size"] * cfg["trainer"]["devices"] == 128
    assert model["text_encoder"]["init_args"]["model_name"] == "google/flan-t5-base"
    assert model["vision_encoder"]["init_args"]["model_name"] == "ViT-bigG-14-quickgelu"
    assert model["codec"]["init_args"]["mode"] == "44k" and model["lyrics_vocab_size"] == 6681


def test_t_start_moves_the_first_euler_step(model, world):
    from avgen.models.audiogen_omni import AudioGenOmniSampling

    batch = _batch(world, [1], scenario="song")
    seen = []
    original = type(model).predict_velocity

    def record(self, network, x_t, t, conditions, latent_mask=None):
        seen.append(round(float(t[0]), 6))
        return original(self, network, x_t, t, conditions, latent_mask)

    model.predict_velocity = record.__get__(model)
    try:
        model.generate(batch, AudioGenOmniSampling(num_steps=4, cfg_scale=1.0, seed=0))
        plain, seen[:] = list(seen), []
        model.generate(batch, AudioGenOmniSampling(num_steps=4, cfg_scale=1.0, seed=0, t_start=0.05))
    finally:
        del model.predict_velocity
    assert plain == [0.0, 0.25, 0.5, 0.75]
    assert seen == pytest.approx([0.05, 0.2875, 0.525, 0.7625])
    with pytest.raises(ValueError, match="t_start"):
        AudioGenOmniSampling(t_start=1.0)


def test_precomputed_features_give_the_encoders_conditions(model, world):
    """Variable-length clips through `avgen precompute` records: the same T5 states, CLIP / Synchformer
    features on every valid frame, lyrics ids, latent lengths, timing and targets as from the media."""
    from avgen.cli.precompute import encode_clips
    from avgen.data.shards import record_to_sample

    samples = [world.sample(i, scenario="song") for i in (1, 2, 3)]
    media = collate(samples)
    shards = collate([record_to_sample(r) for r in encode_clips(model, samples)])
    assert shards.audio is None and shards.caption_mask is not None
    from unittest import mock

    with torch.no_grad():
        a, (xa, ma) = model.encode_conditions(media), model.target_latents(media)
        with mock.patch.object(model.text_encoder, "forward", side_effect=AssertionError("T5 ran")), \
             mock.patch.object(model.vision_encoder, "forward", side_effect=AssertionError("CLIP ran")), \
             mock.patch.object(model.sync_encoder, "forward", side_effect=AssertionError("Synchformer ran")), \
             mock.patch.object(model.codec, "encode", side_effect=AssertionError("codec encoder ran")):
            b, (xb, mb) = model.encode_conditions(shards), model.target_latents(shards)
    assert torch.equal(ma, mb) and len(set(ma.sum(1).tolist())) > 1  # lengths really vary
    torch.testing.assert_close(xb * mb[..., None], xa * ma[..., None])
    for name in ("lyrics_ids", "latent_lengths", "seconds_total", "sync_lengths", "semantic_mask", "caption_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(b.caption_features * b.caption_mask[..., None],
                               a.caption_features * a.caption_mask[..., None], rtol=1e-5, atol=1e-5)
    sem = a.semantic_mask
    torch.testing.assert_close(b.semantic_features[sem], a.semantic_features[sem], rtol=1e-5, atol=1e-5)
    for i, n in enumerate(a.sync_lengths.tolist()):
        torch.testing.assert_close(b.sync_features[i, :n], a.sync_features[i, :n], rtol=1e-5, atol=1e-5)
