"""FoleyGenEx's LightningModule: condition encoding, presence flags, CFG condition dropout."""

from __future__ import annotations

import pytest
import torch

from avgen.codecs.mel import MelCodec
from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
from avgen.data.batch import Sample, collate
from avgen.models.foleygenex import FoleyGenEx


@pytest.fixture(scope="module")
def model() -> FoleyGenEx:
    torch.manual_seed(0)
    m = FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"),
        CLIPTextEncoder("avgen-tiny-clip", context_length=16),
        SyncEncoder(**tiny_sync_kwargs()),
        hidden_dim=32,
        num_heads=2,
        num_joint_blocks=1,
        num_single_blocks=1,
        duration=1.0,
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # null tokens start at zero; move them so "null" and "present" differ
        for p in m.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.eval()


def frames_batch(num: int, *, video: list[bool], captions: list[str], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return collate(
        [
            Sample(
                id=f"s{i}",
                sample_rate=16000,
                audio=0.1 * torch.randn(16000, generator=g),
                video_semantic=torch.rand(8, 3, 32, 32, generator=g) if video[i] else None,
                video_sync=torch.rand(25, 3, 32, 32, generator=g) if video[i] else None,
                caption=captions[i],
            )
            for i in range(num)
        ]
    )


def test_network_dims_follow_the_encoders_and_codec(model):
    net = model.network
    assert net.latent_channels == model.codec.latent_channels == 16
    assert net.semantic_dim == model.vision_encoder.output_dim
    assert net.sync_dim == model.sync_encoder.output_dim
    assert net.text_dim == model.text_encoder.output_dim and net.text_length == 16


def test_precomputed_features_give_the_same_conditions_as_frames(model):
    batch = frames_batch(2, video=[True, True], captions=["a dog barks", "a bell rings"])
    encoded = model.encode_conditions(batch)
    features = collate(
        [
            Sample(
                id=f"s{i}",
                sample_rate=16000,
                audio=batch.audio[i],
                semantic_features=model.vision_encoder(batch.video_semantic[i : i + 1])[0],
                sync_features=model.sync_encoder(batch.video_sync[i : i + 1])[0],
                caption=batch.caption[i],
            )
            for i in range(2)
        ]
    )
    again = model.encode_conditions(features)
    assert torch.allclose(encoded.semantic_features, again.semantic_features, atol=1e-6)
    assert torch.allclose(encoded.sync_features, again.sync_features, atol=1e-6)
    assert torch.equal(encoded.text_features, again.text_features)


def test_absent_video_and_caption_get_the_null_tokens(model):
    batch = frames_batch(3, video=[True, False, True], captions=["a dog barks", "a bell rings", ""])
    encoded = model.encode_conditions(batch)
    kw = dict(latent_length=63)
    cond = model.make_conditions(model.network, encoded, batch, branch="conditional", **kw)
    null = model.make_conditions(model.network, encoded, batch, branch="unconditional", **kw)
    same = lambda a, b: torch.allclose(a, b, atol=1e-6)  # noqa: E731
    assert not same(cond.clip[0], null.clip[0]) and not same(cond.sync[0], null.sync[0])
    assert same(cond.clip[1], null.clip[1]) and same(cond.sync[1], null.sync[1])  # TTA sample: no video
    assert not same(cond.text[1], null.text[1])
    assert same(cond.text[2], null.text[2])  # empty caption -> null text


def test_a_batch_without_any_video_trains_and_generates(model):
    batch = collate(
        [Sample(id=f"t{i}", sample_rate=16000, audio=0.1 * torch.randn(16000), caption="a bell rings") for i in range(2)]
    )
    encoded = model.encode_conditions(batch)
    # placeholders sized like the features of a real 1 s clip (8 CLIP frames, 25 sync frames)
    real_sync = model.sync_encoder(torch.rand(1, 25, 3, 32, 32))
    assert encoded.semantic_features.shape[1] == 8
    assert encoded.sync_features.shape[1:] == real_sync.shape[1:]
    cond = model.make_conditions(model.network, encoded, batch, latent_length=63, branch="conditional")
    null = model.make_conditions(model.network, encoded, batch, latent_length=63, branch="unconditional")
    assert torch.allclose(cond.clip, null.clip) and not torch.allclose(cond.text, null.text)
    assert torch.isfinite(model.training_step(batch, 0))
    waveforms, _ = model.generate(batch, num_steps=2, seed=0)
    assert torch.isfinite(waveforms).all()


def test_one_missing_video_stream_is_a_clear_error(model):
    batch = collate(
        [Sample(id="half", sample_rate=16000, audio=torch.zeros(16000), video_semantic=torch.rand(8, 3, 32, 32))]
    )
    with pytest.raises(ValueError, match=r"sync \(Synchformer, 25 fps\)"):
        model.encode_conditions(batch)


def test_condition_dropout_is_per_sample_independent_and_drops_clip_with_sync(model):
    n = 400
    g = torch.Generator().manual_seed(2)
    batch = collate(
        [
            Sample(
                id=f"s{i}",
                sample_rate=16000,
                audio=torch.zeros(1600),
                semantic_features=torch.randn(2, model.vision_encoder.output_dim, generator=g),
                sync_features=torch.randn(8, model.sync_encoder.output_dim, generator=g),
                caption="a dog barks",
            )
            for i in range(n)
        ]
    )
    encoded = model.encode_conditions(batch)
    kw = dict(latent_length=7)
    cond = model.make_conditions(model.network, encoded, batch, branch="conditional", **kw)
    null = model.make_conditions(model.network, encoded, batch, branch="unconditional", **kw)
    model.video_dropout, model.text_dropout = 0.5, 0.3
    try:
        torch.manual_seed(0)
        train = model.make_conditions(model.network, encoded, batch, branch="train", **kw)
    finally:
        model.video_dropout, model.text_dropout = 0.1, 0.1

    def dropped(field: str):
        got, on, off = getattr(train, field), getattr(cond, field), getattr(null, field)
        is_off = (got - off).flatten(1).abs().amax(1) < 1e-6
        is_on = (got - on).flatten(1).abs().amax(1) < 1e-6
        assert torch.all(is_on ^ is_off), field  # every sample is exactly one of the two
        return is_off

    clip, sync, text = dropped("clip"), dropped("sync"), dropped("text")
    assert torch.equal(clip, sync)  # MMAudio drops the two video streams together
    assert abs(clip.float().mean().item() - 0.5) < 0.1
    assert abs(text.float().mean().item() - 0.3) < 0.1
    both = (clip & text).float().mean().item()
    assert abs(both - 0.5 * 0.3) < 0.06  # independent draws for video and text
