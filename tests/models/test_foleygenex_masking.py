"""FoleyGenEx §3.1: span mask, Eq. 3-4, InputEmbedding, multimodal dynamic masking, mask strategies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avgen.codecs.mel import MelCodec
from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
from avgen.data.batch import Sample, collate
from avgen.flow import interpolate
from avgen.models.foleygenex import FoleyGenEx, FoleyGenExNetwork
from avgen.models.foleygenex.masking import semantic_mask_weights, training_generate_mask

TINY_NET = dict(latent_channels=4, semantic_dim=8, sync_dim=6, text_dim=5, text_length=6, hidden_dim=32,
                num_heads=2, num_joint_blocks=2, num_single_blocks=1)


def tiny_model(**overrides) -> FoleyGenEx:
    kwargs = dict(hidden_dim=32, num_heads=2, num_joint_blocks=1, num_single_blocks=1, duration=1.0,
                  video_dropout=0.0, text_dropout=0.0)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"),
        CLIPTextEncoder("avgen-tiny-clip", context_length=16),
        SyncEncoder(**tiny_sync_kwargs()),
        **kwargs,
    )


def perturb(module, std=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def feature_batch(model, num=4, seconds=1.0, seed=0, short=True):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(num):
        n = int(seconds * 16000) - (5000 if (short and i == 1) else 0)
        samples.append(Sample(
            id=f"c{i}", sample_rate=16000, audio=0.3 * torch.randn(n, generator=g),
            semantic_features=torch.randn(int(8 * seconds), model.vision_encoder.output_dim, generator=g),
            sync_features=torch.randn(16, model.sync_encoder.output_dim, generator=g),
            caption=["a dog barks", "a bell rings", "", "a drum"][i % 4],
        ))
    return collate(samples)


# ----------------------------------------------------------------------------- span mask
def test_span_mask_is_one_contiguous_run_of_70_to_100_percent_of_the_valid_frames():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (500,), generator=g)
    valid = torch.arange(200)[None] < lengths[:, None]
    span = training_generate_mask(valid, generator=g)
    assert not (span & ~valid).any()  # inside the valid frames
    counts = span.sum(1)
    frac = counts.double() / lengths
    assert frac.max() <= 1.0 and (counts >= torch.floor(0.7 * lengths)).all()
    assert frac.min() < 0.72 and frac.max() > 0.98  # the whole range is used
    # contiguous: exactly one rising edge per sample
    edges = (span[:, 1:] & ~span[:, :-1]).sum(1) + span[:, 0].long()
    assert (edges == 1).all()


# ----------------------------------------------------------------------------- bilinear semantic mask
def test_bilinear_semantic_mask_is_linear_interpolation_at_clip_frame_times():
    g = torch.Generator().manual_seed(1)
    for length, frames in [(63, 8), (250, 64), (345, 64), (20, 5), (7, 16)]:
        mask = training_generate_mask(torch.ones(6, length, dtype=torch.bool), generator=g)
        weights = semantic_mask_weights(mask, frames)
        positions = np.arange(frames) * length / frames  # CLIP frame i at latent position i T / F
        for b in range(6):
            expected = np.interp(positions, np.arange(length), mask[b].double().numpy())
            np.testing.assert_allclose(weights[b].numpy(), expected, atol=1e-6)
            # it agrees with the audio mask wherever the mask is constant around the frame time
            lo = torch.from_numpy(np.floor(positions).astype(np.int64))
            hi = (lo + 1).clamp(max=length - 1)
            same = mask[b, lo] == mask[b, hi]
            assert torch.equal(weights[b][same], mask[b, lo][same].float())


# ----------------------------------------------------------------------------- Eq. 3-4
def test_training_loss_is_eq_3_4_over_the_span_with_the_injected_context():
    model = tiny_model(cond_drop_prob=0.0)
    perturb(model.network)
    batch = feature_batch(model)
    model.randomness.start_step(global_step=5, batch_idx=5)
    loss = model.training_step(batch, 0)

    model.randomness.start_step(global_step=5, batch_idx=5)  # the same step: the same draws, in step order
    generator = model.training_generator()
    x1 = model.codec.encode(batch.audio)
    lengths = model.codec.latent_lengths(batch.audio_lengths)
    valid = torch.arange(x1.shape[1])[None] < lengths[:, None]
    encoded = model.prepare_targets(model.encode_conditions(batch), batch, x1, valid, generator=generator)
    span = encoded.generate_mask
    assert not (span & ~valid).any() and (span.sum(1) >= torch.floor(0.7 * lengths)).all()
    # the conditional latent is x1 on the context and zero on the span and padding
    torch.testing.assert_close(encoded.cond_latent, x1 * (valid & ~span)[..., None])
    conditions = model.make_conditions(model.network, encoded, batch, latent_length=x1.shape[1], branch="train")
    x0 = torch.randn(x1.shape, generator=generator)
    t = model.time_sampler(x1.shape[0], generator=generator)
    v = model.network.predict_velocity(interpolate(x0, x1, t), t, conditions, latent_mask=valid)
    y_hat, y = v.detach().double().numpy(), (x1 - x0).double().numpy()
    mask = span.numpy()
    # Eq. 3: per-frame MSE over the F features; Eq. 4: sum over masked (b, t) / N
    frame = np.zeros(mask.shape)
    for b in range(mask.shape[0]):
        for i in range(mask.shape[1]):
            frame[b, i] = sum((y_hat[b, i, f] - y[b, i, f]) ** 2 for f in range(y.shape[2])) / y.shape[2]
    expected = (frame * mask).sum() / mask.sum()
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert not math.isclose(frame[valid.numpy()].mean(), expected, rel_tol=1e-3)  # the unmasked mean differs


@pytest.mark.parametrize("per_sample", [True, False])
def test_conditional_latent_is_dropped_with_probability_0_3(per_sample):
    model = tiny_model(cond_drop_per_sample=per_sample)
    x1 = torch.randn(8, 20, 16) + 3.0
    valid = torch.ones(8, 20, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    dropped = []
    for _ in range(300):
        enc = model.prepare_targets(model.encode_conditions(feature_batch(model, 8, short=False))
                                    if not dropped else enc0, None, x1, valid, generator=g)
        enc0 = enc
        context = valid & ~enc.generate_mask
        has_context = context.any(1)
        kept = (enc.cond_latent.abs().sum((1, 2)) > 0)
        dropped.append((~kept & has_context).float())
        if not per_sample:  # one draw per batch: all samples with a context kept, or none
            assert kept[has_context].all() or (~kept[has_context]).all()
    rate = torch.cat(dropped).mean().item()
    assert abs(rate - 0.3) < 0.06, rate


# ----------------------------------------------------------------------------- InputEmbedding
def test_input_embedding_starts_as_identity_so_the_injected_network_equals_mmaudio():
    torch.manual_seed(0)
    plain = FoleyGenExNetwork(**TINY_NET)
    perturb(plain)
    injected = FoleyGenExNetwork(**TINY_NET, conditional_injection=True)
    missing, unexpected = injected.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("input_embedding.") for k in missing) and missing
    g = torch.Generator().manual_seed(3)
    args = dict(x_t=torch.randn(2, 20, 4, generator=g), t=torch.rand(2, generator=g),
                semantic_features=torch.randn(2, 5, 8, generator=g), sync_features=torch.randn(2, 16, 6, generator=g),
                text_features=torch.randn(2, 6, 5, generator=g), video_present=torch.ones(2, dtype=torch.bool),
                text_present=torch.ones(2, dtype=torch.bool))
    cond = torch.randn(2, 20, 4, generator=g)
    torch.testing.assert_close(injected(**args, cond_latent=cond), plain(**args))
    # trained away from the identity, the conditional latent reaches the output
    perturb(injected.input_embedding, std=0.3)
    assert not torch.allclose(injected(**args, cond_latent=cond), injected(**args, cond_latent=torch.zeros_like(cond)))


def test_strategies_switch_injection_and_video_masking():
    counts = {}
    for strategy in ("none", "m1", "m2", "m3", "full"):
        model = tiny_model(mask_strategy=strategy)
        counts[strategy] = sum(p.numel() for p in model.network.parameters())
        assert (model.network.input_embedding is not None) == (strategy in ("m3", "full"))
    assert counts["none"] == counts["m1"] == counts["m2"] < counts["m3"] == counts["full"]
    with pytest.raises(ValueError, match="mask_strategy"):
        tiny_model(mask_strategy="m4")


@pytest.mark.parametrize("strategy", ["m2", "full", "m3"])
def test_multimodal_masking_neutralises_the_context_video(strategy):
    model = tiny_model(mask_strategy=strategy)
    perturb(model.network)
    batch = feature_batch(model, short=False)
    x1 = model.codec.encode(batch.audio)
    valid = torch.ones(x1.shape[:2], dtype=torch.bool)
    encoded = model.prepare_targets(model.encode_conditions(batch), batch, x1, valid,
                                    generator=torch.Generator().manual_seed(4))
    span = encoded.generate_mask
    cond = model.make_conditions(model.network, encoded, batch, latent_length=x1.shape[1], branch="conditional")
    weights = semantic_mask_weights(span, encoded.semantic_features.shape[1])
    changed = dict(vars(encoded))
    # change the video features of the CLIP frames that are fully masked out (weight 0)
    changed["semantic_features"] = encoded.semantic_features + 10 * (weights == 0)[..., None]
    cond2 = model.make_conditions(model.network, type(encoded)(**changed), batch, latent_length=x1.shape[1],
                                  branch="conditional")
    if strategy == "m3":  # audio masking only: the context's video is used as is
        assert not cond.sync[~span].eq(0).all()
        assert not torch.allclose(cond.clip, cond2.clip)
        return
    assert (weights == 0).any()
    assert cond.sync[~span].eq(0).all() and not cond.sync[span].eq(0).all()  # FV0 on the context frames
    torch.testing.assert_close(cond.clip, cond2.clip)


# ----------------------------------------------------------------------------- overfit
def test_fixed_batch_overfit_with_injection_reduces_the_masked_loss():
    model = tiny_model(cond_drop_prob=0.0)
    batch = feature_batch(model, short=False)
    optimizer = torch.optim.AdamW([p for p in model.network.parameters()], lr=5e-3)
    model.train()

    def loss_at(seed):
        torch.manual_seed(seed)  # same span, noise and t every time
        return model.training_step(batch, 0)

    before = loss_at(0).item()
    for _ in range(20):
        optimizer.zero_grad()
        loss_at(0).backward()
        optimizer.step()
    after = loss_at(0).item()
    assert after < 0.5 * before, (before, after)
    # the injection path was trained (it leaves the identity)
    w = model.network.input_embedding.proj.weight
    assert w[:, w.shape[0]:].abs().sum() > 0
