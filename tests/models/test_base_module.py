"""The shared flow-matching LightningModule (avgen.models.base), exercised through FoleyGenEx at toy size."""

from __future__ import annotations

import copy

import pytest
import torch

from avgen.codecs.mel import MelCodec
from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
from avgen.data.batch import Sample, collate, length_mask
from avgen.flow import sampling_times
from avgen.models.base import CheckpointMismatchError
from avgen.training import LinearWarmupLR
from avgen.models.foleygenex import FoleyGenEx


def tiny_model(**overrides) -> FoleyGenEx:
    # mask_strategy "none": the shared recipe exactly (FoleyGenEx's masking is tested in test_foleygenex_masking.py)
    kwargs = dict(
        hidden_dim=32, num_heads=2, num_joint_blocks=1, num_single_blocks=1, duration=1.0, num_val_sampling_steps=2,
        mask_strategy="none",
    )
    kwargs.update(overrides)
    return FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"),
        CLIPTextEncoder("avgen-tiny-clip", context_length=16),
        SyncEncoder(**tiny_sync_kwargs()),
        **kwargs,
    )


def synthetic_batch(num: int = 3, seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0):
    """Random clips with frames; the last sample is text-only (no video) and one has a shorter audio."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(num):
        n = int(seconds * sample_rate) - (4000 if i == 1 else 0)
        video = i < num - 1
        samples.append(
            Sample(
                id=f"clip{i}",
                sample_rate=sample_rate,
                audio=0.3 * torch.randn(n, generator=g),
                video_semantic=torch.rand(int(8 * seconds), 3, 32, 32, generator=g) if video else None,
                video_sync=torch.rand(int(25 * seconds), 3, 32, 32, generator=g) if video else None,
                caption=["a dog barks", "", "a bell rings"][i % 3],
            )
        )
    return collate(samples)


def perturb(module: torch.nn.Module, std: float = 0.05, seed: int = 1) -> None:
    """Move every weight off its (often zero) initialisation so outputs depend on all inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def toyworld_batch():
    from avgen.data import ToyWorldDataModule

    dm = ToyWorldDataModule(
        batch_size=4, duration=1.0, semantic_size=32, sync_size=32, scenarios=["vta"], train_size=4, seed=3
    )
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_training_on_one_toyworld_batch_halves_the_loss(toyworld_batch):
    torch.manual_seed(0)
    model = tiny_model(video_dropout=0.0, text_dropout=0.0)
    before = torch.stack(model.binned_losses(toyworld_batch)).mean()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.training_step(toyworld_batch, 0)
        loss.backward()
        optimizer.step()
    model.eval()
    after = torch.stack(model.binned_losses(toyworld_batch)).mean()
    assert torch.isfinite(after)
    assert after < 0.5 * before, (before, after)


def test_training_loss_is_masked_mse_against_x1_minus_x0():
    """Reproduce training_step's loss from its pieces with the same random draws (Eq. 3-4)."""
    model = tiny_model(video_dropout=0.0, text_dropout=0.0)
    perturb(model.network)
    batch = synthetic_batch()
    model.randomness.start_step(global_step=5, batch_idx=5)
    loss = model.training_step(batch, 0)

    model.randomness.start_step(global_step=5, batch_idx=5)  # the same step: the same draws, in step order
    x1 = model.codec.encode(batch.audio)
    lengths = model.codec.latent_lengths(batch.audio_lengths)
    mask = torch.arange(x1.shape[1])[None] < lengths[:, None]
    encoded = model.encode_conditions(batch)
    conditions = model.make_conditions(model.network, encoded, batch, latent_length=x1.shape[1], branch="train")
    generator = model.training_generator()
    x0 = torch.randn(x1.shape, generator=generator)
    t = model.time_sampler(x1.shape[0], generator=generator)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    v = model.network.predict_velocity(x_t, t, conditions, latent_mask=mask)
    per_frame = ((v - (x1 - x0)) ** 2).mean(-1)
    expected = (per_frame * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    # The shorter clip's padding frames really are excluded: the unmasked mean differs.
    assert not torch.allclose(per_frame.mean(), expected)


def test_batched_cfg_in_generate_equals_separate_forwards():
    model = tiny_model()
    perturb(model.network)
    model.eval()
    batch = synthetic_batch()
    scale, steps = 3.0, 3
    latents, lengths, num_samples = model.sample_latents(batch, num_steps=steps, cfg_scale=scale, seed=7)

    # Reference: the network called directly, conditional and unconditional forwards separately.
    net = model.network
    encoded = model.encode_conditions(batch)
    num_latents = model.codec.num_latents(num_samples)
    mask = length_mask(model.codec.latent_lengths(lengths), num_latents)
    feats = (encoded.semantic_features, encoded.sync_features, encoded.text_features)
    cond = net.preprocess_conditions(
        *feats, video_present=batch.has_video, text_present=batch.has_caption, latent_length=num_latents
    )
    none = torch.zeros(len(batch), dtype=torch.bool)
    uncond = net.preprocess_conditions(*feats, video_present=none, text_present=none, latent_length=num_latents)
    x = torch.randn((len(batch), num_latents, model.codec.latent_channels), generator=torch.Generator().manual_seed(7))
    times = sampling_times(steps)
    gap = 0.0
    for i in range(steps):
        t = times[i].expand(len(batch))
        v_c = net.predict_velocity(x, t, cond, latent_mask=mask)
        v_u = net.predict_velocity(x, t, uncond, latent_mask=mask)
        gap = max(gap, (v_c - v_u).abs().max().item())
        x = x + (times[i + 1] - times[i]) * (v_u + scale * (v_c - v_u))
    assert gap > 1e-2  # the two branches really differ, so guidance matters
    assert torch.allclose(latents, x, atol=1e-5, rtol=1e-4)


def test_generate_lengths_follow_the_batch_and_crop_padding():
    model = tiny_model()
    perturb(model.network)
    batch = synthetic_batch()
    waveforms, lengths = model.generate(batch, num_steps=2, cfg_scale=2.0, seed=0)
    assert waveforms.shape == batch.audio.shape
    assert torch.equal(lengths, batch.audio_lengths)
    assert torch.isfinite(waveforms).all()
    assert waveforms[1, int(lengths[1]) :].abs().max() == 0  # past its length a sample is silent
    assert waveforms[1, : int(lengths[1])].abs().max() > 0
    # Without audio the length is `duration` seconds.
    no_audio = collate([Sample(id="t", sample_rate=16000, caption="a bell rings")])
    waveforms, lengths = model.generate(no_audio, num_steps=2, seed=0)
    assert waveforms.shape == (1, 16000) and lengths.tolist() == [16000]


def test_same_seed_same_audio_and_validation_noise_is_fixed():
    model = tiny_model()
    perturb(model.network)
    batch = synthetic_batch()
    a, _ = model.generate(batch, num_steps=2, seed=3)
    b, _ = model.generate(batch, num_steps=2, seed=3)
    c, _ = model.generate(batch, num_steps=2, seed=4)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    first = torch.stack(model.binned_losses(batch, batch_idx=0))
    again = torch.stack(model.binned_losses(batch, batch_idx=0))
    assert torch.equal(first, again)


def test_sample_rate_mismatch_names_the_config_key():
    model = tiny_model()
    batch = synthetic_batch(sample_rate=22050)
    with pytest.raises(ValueError, match=r"data\.init_args\.sample_rate=16000"):
        model.training_step(batch, 0)


def test_ema_follows_the_direct_formula_and_is_used_for_inference():
    model = tiny_model(ema_decay=0.9)
    ema = model.ema_network
    assert model.inference_network is ema.module
    start = [p.detach().clone() for p in ema.module.parameters()]
    expected = [p.clone() for p in start]
    for n in range(3):
        perturb(model.network, seed=10 + n)
        decay = min(0.9, (1 + n) / (10 + n))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.network.parameters())]
        ema.update(model.network)
    for got, want in zip(ema.module.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(ema.module.parameters(), start))
    # EMA copies the network only, never the frozen encoders, and is not optimised.
    assert sum(p.numel() for p in ema.parameters()) == sum(p.numel() for p in model.network.parameters())
    assert all(not p.requires_grad for p in ema.parameters())


def test_optimizer_covers_exactly_the_trainable_network():
    model = tiny_model(ema_decay=0.99)
    config = model.configure_optimizers()
    optimized = {id(p) for group in config["optimizer"].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.network.parameters()}
    group = config["optimizer"].param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 1e-6
    assert group["fused"] is True  # avgen.training.fastest_adam (tests/training/test_optimizers.py)
    assert config["lr_scheduler"]["interval"] == "step"
    assert config["lr_scheduler"]["scheduler"].optimizer is config["optimizer"]


def test_linear_warmup_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = LinearWarmupLR(optimizer, warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.5 * k / 4 for k in (1, 2, 3, 4)] + [0.5, 0.5])
    state = scheduler.state_dict()
    torch.save(state, buf := __import__("io").BytesIO())
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["last_epoch"] == 6


def test_state_dict_excludes_frozen_components_and_loads_back():
    model = tiny_model(ema_decay=0.99)
    state = model.state_dict()
    assert set(model.frozen_module_names()) == {"codec", "vision_encoder", "text_encoder", "sync_encoder"}
    assert not any(k.startswith(("vision_encoder.", "text_encoder.", "sync_encoder.", "codec.")) for k in state)
    assert any(k.startswith("network.") for k in state) and any(k.startswith("ema_network.") for k in state)

    perturb(model.network)
    state = copy.deepcopy(model.state_dict())
    fresh = tiny_model(ema_decay=0.99)
    fresh.load_state_dict(state)  # strict: frozen keys may be missing, nothing else
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key

    missing = {k: v for k, v in state.items() if not k.startswith("network.final_layer")}
    with pytest.raises(CheckpointMismatchError, match="lacks"):
        fresh.load_state_dict(missing)
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        fresh.load_state_dict({**state, "network.extra.weight": torch.zeros(1)})
    bigger = tiny_model(hidden_dim=64, ema_decay=0.99)
    with pytest.raises(CheckpointMismatchError, match="other network sizes"):
        bigger.load_state_dict(state)


class OtherPaper(FoleyGenEx):
    """Stands in for another paper's module class."""


def test_checkpoint_of_another_model_class_gives_a_clear_error():
    model = tiny_model()
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["avgen"]["model_class"] == "avgen.models.foleygenex.module.FoleyGenEx"
    other = OtherPaper(
        MelCodec(n_fft=512, hop_length=256, n_mels=16),
        CLIPVisionEncoder("avgen-tiny-clip"),
        CLIPTextEncoder("avgen-tiny-clip", context_length=16),
        SyncEncoder(**tiny_sync_kwargs()),
        hidden_dim=32,
        num_heads=2,
        num_joint_blocks=1,
        num_single_blocks=1,
    )
    with pytest.raises(
        CheckpointMismatchError,
        match=r"trained with avgen\.models\.foleygenex\.module\.FoleyGenEx, config builds .*OtherPaper",
    ):
        other.on_load_checkpoint(checkpoint)
    model.on_load_checkpoint(checkpoint)  # the right class loads silently

