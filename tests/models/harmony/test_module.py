"""HarmonyModule on the real tiny HarmonyNetwork: the Cross-Task Synergy loss (Main Eq. 3-4), SyncCFG
(Eq. 9-10) and text CFG (Eq. 8), voice-cloning references, and training on a fixed ToyWorld batch.

The tiny network's GLDI and heads are zero-initialised (a fresh model starts as two independent
branches), so the tests that look at cross-modal effects first perturb every weight."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avgen.codecs import MelCodec, PixelVideoCodec
from avgen.conditioning import UMT5TextEncoder
from avgen.data import ToyWorld, collate
from avgen.flow import concat_conditions, flow_matching_loss, interpolate
from avgen.models.harmony.module import HarmonyModule
from avgen.models.harmony.sync_cfg import HarmonyGuidance, guidance_plan
from avgen.models.harmony.tasks import HarmonySampling

pytestmark = pytest.mark.usefixtures("single_thread")


def _module(network: str = "harmony-tiny", **kwargs) -> HarmonyModule:
    video = None if network.startswith("harmony-audio") else PixelVideoCodec(patch_size=2, pool=2)
    options = dict(reference="none", output_video_fps=8.0, output_video_size=(16, 16), reference_duration=(0.2, 0.3))
    return HarmonyModule(MelCodec(n_fft=512, hop_length=256, n_mels=32), UMT5TextEncoder("avgen-tiny-t5", max_length=16),
                         video, network=network, **{**options, **kwargs})


def _perturbed(module: HarmonyModule, scale: float = 0.05) -> HarmonyModule:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.network.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return module.eval()


@pytest.fixture(scope="module")
def batch():
    world = ToyWorld(duration=0.5, video_fps=8.0, video_size=16, semantic_size=16, sync_size=16, speech="formant")
    samples = [world.sample(0, scenario="joint_av"), world.sample(1, scenario="speech"), world.sample(2, scenario="vta")]
    return collate(samples)


@pytest.fixture(scope="module")
def model():
    return _perturbed(_module())


def _inputs(model, batch, seed=0):
    targets, encoded = model.harmony_targets(batch, model.encode_conditions(batch))
    conditions = model.make_conditions(model.network, encoded, batch, latent_length=targets.audio.shape[1],
                                       branch="conditional")
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(len(batch), generator=g) * 0.8 + 0.1
    return targets, conditions, t, torch.randn(targets.audio.shape, generator=g), torch.randn(targets.video.shape, generator=g)


class Recorder(torch.nn.Module):
    """Wraps the network and records the inputs of every forward (what the loss feeds it)."""

    def __init__(self, network):
        super().__init__()
        self.inner, self.calls = network, []
        self.has_video = network.has_video

    def forward(self, audio_x, audio_t, conditions, **kwargs):
        self.calls.append(dict(audio_x=audio_x, audio_t=audio_t, conditions=conditions, **kwargs))
        return self.inner(audio_x, audio_t, conditions, **kwargs)


def _mse(pred, target, mask):
    """Masked MSE written out: mean over the valid frames of the mean over a frame's features."""
    per_frame = (pred - target).pow(2).flatten(2).mean(-1)
    return (per_frame * mask).sum() / mask.sum()


def test_cts_is_three_separate_forwards_combined_by_eq_3(model, batch):
    targets, conditions, t, na, nv = _inputs(model, batch)
    recorder = Recorder(model.network)
    terms = model.cross_task_losses(recorder, targets, conditions, t, na, nv, mode="sum")
    assert len(recorder.calls) == 1 and recorder.calls[0]["audio_x"].shape[0] == 3 * len(batch)  # ONE batched forward

    xa1, xv1 = targets.audio, targets.video
    xa_t, xv_t = interpolate(na, xa1, t), interpolate(nv, xv1, t)
    ua, uv = xa1 - na, xv1 - nv
    ones = torch.ones_like(t)
    run = dict(audio_mask=targets.audio_mask, video_frame_lengths=targets.video_frame_lengths)
    va_j, vv_j = model.network(xa_t, t, conditions, video_x=xv_t, video_t=t, **run)
    _, vv_m = model.network(xa1, ones, conditions, video_x=xv_t, video_t=t, **run)  # audio-driven video
    va_s, _ = model.network(xa_t, t, conditions, video_x=xv1, video_t=ones, **run)  # video-driven audio
    am, vm = targets.audio_loss_mask.float(), targets.video_loss_mask.float()
    joint = _mse(vv_j, uv, vm) + _mse(va_j, ua, am)
    expected = joint + 0.1 * _mse(vv_m, uv, vm) + 0.3 * _mse(va_s, ua, am)
    torch.testing.assert_close(terms["loss"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["loss_joint"], joint, rtol=1e-4, atol=1e-5)
    # the driven terms differ from the joint ones: the clean modality reaches the other branch
    assert abs(float(terms["loss_audio_driven"] - terms["loss_joint_video"])) > 1e-6

    # with both weights 0 the CTS loss is the joint loss
    model.lambda_video, model.lambda_audio = 0.0, 0.0
    try:
        only_joint = model.cross_task_losses(model.network, targets, conditions, t, na, nv, mode="sum")["loss"]
    finally:
        model.lambda_video, model.lambda_audio = 0.1, 0.3
    torch.testing.assert_close(only_joint, joint, rtol=1e-4, atol=1e-5)


class WithFullMasks(Recorder):
    """Puts back the all-valid masks the module leaves out, to compare the masked path with the unmasked one."""

    def __init__(self, network, num_latents: int, num_frames: int):
        super().__init__(network)
        self.num_latents, self.num_frames = num_latents, num_frames

    def forward(self, audio_x, audio_t, conditions, **kwargs):
        rows = audio_x.shape[0]
        kwargs["audio_mask"] = torch.ones(rows, self.num_latents, dtype=torch.bool)
        if kwargs.get("video_x") is not None:
            kwargs["video_frame_lengths"] = torch.full((rows,), self.num_frames)
        return super().forward(audio_x, audio_t, conditions, **kwargs)


def test_nothing_padded_passes_no_masks_and_gives_the_masked_loss(model, batch):
    targets, conditions, t, na, nv = _inputs(model, batch)
    num_latents, num_frames = targets.audio.shape[1], targets.video.shape[1]
    full = dataclasses.replace(targets, audio_mask=torch.ones_like(targets.audio_mask),
                               video_frame_lengths=torch.full_like(targets.video_frame_lengths, num_frames))
    for mode in ("sum", "split"):
        recorder = Recorder(model.network)
        loss = model.cross_task_losses(recorder, full, conditions, t, na, nv, mode=mode, tasks=torch.tensor([0, 1, 2]))
        assert recorder.calls[0]["audio_mask"] is None and recorder.calls[0]["video_frame_lengths"] is None
        masked = model.cross_task_losses(WithFullMasks(model.network, num_latents, num_frames), full, conditions, t,
                                         na, nv, mode=mode, tasks=torch.tensor([0, 1, 2]))
        torch.testing.assert_close(loss["loss"], masked["loss"], rtol=1e-5, atol=1e-6)
    # one padded sample keeps the masks
    recorder = Recorder(model.network)
    padded = dataclasses.replace(full, video_frame_lengths=torch.tensor([num_frames, num_frames - 1, num_frames]))
    model.cross_task_losses(recorder, padded, conditions, t, na, nv, mode="sum")
    assert recorder.calls[0]["audio_mask"] is None
    assert torch.equal(recorder.calls[0]["video_frame_lengths"], padded.video_frame_lengths.repeat(3))


def test_driven_terms_feed_the_driving_modality_clean_at_t_1(model, batch):
    targets, conditions, t, na, nv = _inputs(model, batch)
    recorder = Recorder(model.network)
    model.cross_task_losses(recorder, targets, conditions, t, na, nv, mode="sum")
    call, b = recorder.calls[0], len(batch)
    xa_t, xv_t = interpolate(na, targets.audio, t), interpolate(nv, targets.video, t)
    # rows [joint | audio-driven video | video-driven audio]
    torch.testing.assert_close(call["audio_x"][:b], xa_t)
    torch.testing.assert_close(call["audio_x"][b:2 * b], targets.audio)  # clean audio drives the video
    torch.testing.assert_close(call["audio_x"][2 * b:], xa_t)
    torch.testing.assert_close(call["video_x"][:2 * b], torch.cat([xv_t, xv_t]))
    torch.testing.assert_close(call["video_x"][2 * b:], targets.video)  # clean video drives the audio
    assert call["audio_t"].tolist() == pytest.approx(t.tolist() + [1.0] * b + t.tolist())
    assert call["video_t"].tolist() == pytest.approx(t.tolist() + t.tolist() + [1.0] * b)

    # split mode: one task per sample with the same clean inputs, weights (3, 3 λ_v, 3 λ_a)
    recorder.calls.clear()
    tasks = torch.tensor([0, 1, 2])
    split = model.cross_task_losses(recorder, targets, conditions, t, na, nv, mode="split", tasks=tasks)
    call = recorder.calls[0]
    torch.testing.assert_close(call["audio_x"][1], targets.audio[1])
    torch.testing.assert_close(call["video_x"][2], targets.video[2])
    assert call["audio_t"].tolist() == pytest.approx([t[0].item(), 1.0, t[2].item()])
    assert call["video_t"].tolist() == pytest.approx([t[0].item(), t[1].item(), 1.0])
    va, vv = model.network(call["audio_x"], call["audio_t"], conditions, video_x=call["video_x"], video_t=call["video_t"],
                           audio_mask=targets.audio_mask, video_frame_lengths=targets.video_frame_lengths)
    ua, uv = targets.audio - na, targets.video - nv
    am, vm = targets.audio_loss_mask.float(), targets.video_loss_mask.float()
    per = [_mse(vv[i:i + 1], uv[i:i + 1], vm[i:i + 1]) for i in range(3)], [_mse(va[i:i + 1], ua[i:i + 1], am[i:i + 1]) for i in range(3)]
    expected = (3 * (per[0][0] + per[1][0]) + 3 * 0.1 * per[0][1] + 3 * 0.3 * per[1][2]) / 3
    torch.testing.assert_close(split["loss"], expected, rtol=1e-4, atol=1e-5)


def test_the_loss_never_covers_reference_or_the_given_first_frame(model, batch):
    targets, encoded = model.harmony_targets(batch, model.encode_conditions(batch))
    assert encoded.image_latent is not None and not targets.video_loss_mask[:, 0].any()  # TI2V frame is given
    assert targets.video_loss_mask[:, 1:].all()
    # stage-2 fallback "disjoint": the reference cut from the clip leaves the loss
    module = _module(reference="data", reference_fallback="disjoint")
    module.network.load_state_dict(model.network.state_dict())
    no_data_reference = dataclasses.replace(batch, has_reference_audio=torch.zeros(3, dtype=torch.bool))
    g = torch.Generator().manual_seed(3)
    x1, mask = module.target_latents(no_data_reference)
    reference, reference_mask, excluded = module.reference_inputs(no_data_reference, x1, mask, generator=g)
    for b in range(3):
        n = int(reference_mask[b].sum())
        assert 0.2 * module.latent_rate - 1 <= n <= 0.3 * module.latent_rate + 1
        start = int(excluded[b].float().argmax())
        assert int(excluded[b].sum()) == n
        torch.testing.assert_close(reference[b, :n], x1[b, start:start + n])  # cut from the clip itself


def test_reference_tokens_get_no_loss_but_change_the_output(model, batch):
    targets, encoded = model.harmony_targets(batch, model.encode_conditions(batch))
    g = torch.Generator().manual_seed(5)
    reference = torch.randn(3, 6, targets.audio.shape[-1], generator=g).requires_grad_(True)
    with_reference = dataclasses.replace(encoded, reference_latent=reference, reference_mask=torch.ones(3, 6, dtype=torch.bool))
    conditions = model.make_conditions(model.network, with_reference, batch, latent_length=targets.audio.shape[1],
                                       branch="conditional")
    t = torch.full((3,), 0.5)
    na, nv = torch.randn(targets.audio.shape, generator=g), torch.randn(targets.video.shape, generator=g)
    recorder = Recorder(model.network)
    loss = model.cross_task_losses(recorder, targets, conditions, t, na, nv)["loss"]
    va, _ = model.network(**{k: v for k, v in recorder.calls[0].items() if k not in ("audio_x", "audio_t", "conditions")},
                          audio_x=recorder.calls[0]["audio_x"], audio_t=recorder.calls[0]["audio_t"],
                          conditions=recorder.calls[0]["conditions"])
    assert va.shape[1] == targets.audio.shape[1]  # velocities only for the target: the reference has none to score
    (grad,) = torch.autograd.grad(loss, reference)
    assert grad.abs().sum() > 0  # it reaches the loss through attention only
    # another voice changes the prediction of the target
    other = dataclasses.replace(with_reference, reference_latent=reference.detach() + 1.0)
    other_conditions = model.make_conditions(model.network, other, batch, latent_length=targets.audio.shape[1],
                                             branch="conditional")
    xa_t = interpolate(na, targets.audio, t)
    a1, _ = model.network(xa_t, t, conditions, audio_mask=targets.audio_mask)
    a2, _ = model.network(xa_t, t, other_conditions, audio_mask=targets.audio_mask)
    assert (a1 - a2).abs().max() > 1e-4
    # and a prediction at the reference frames' would-be positions is never read: only T_a outputs exist
    assert a1.shape == targets.audio.shape


def test_sync_cfg_is_one_batched_forward_equal_to_eq_9_10(model, batch):
    targets, encoded = model.harmony_targets(batch, model.encode_conditions(batch))
    plan = guidance_plan("joint", "sync", with_video=True)
    assert [(b.audio, b.video) for b in plan] == [("noisy", "noisy"), ("anchor", "noisy"), ("noisy", "anchor")]
    num_samples = batch.audio.shape[1]
    frames = batch.target_video.shape[1]
    anchors = model._anchors(plan, batch, num_samples, targets.audio.shape[1], frames, (16, 16), None)
    # anchors: the codec latent of silence and the video latent of the reference image held still
    torch.testing.assert_close(anchors["audio"], model.codec.encode(torch.zeros(3, num_samples))[:, :targets.audio.shape[1]])
    static = batch.reference_image[:, None].expand(-1, frames, -1, -1, -1)
    torch.testing.assert_close(anchors["video"], model.video_codec.encode(static))

    conditions = model.make_conditions(model.network, encoded, batch, latent_length=targets.audio.shape[1],
                                       branch="conditional")
    branch_conditions = concat_conditions([conditions] * 3)
    recorder = Recorder(model.network)
    guidance = HarmonyGuidance(plan, video_scale=3.0, audio_scale=2.0)
    velocity_fn = model._velocity_fn(recorder, plan, guidance, branch_conditions, anchors, targets.audio_mask,
                                     targets.video_frame_lengths)
    g = torch.Generator().manual_seed(2)
    xa, xv = torch.randn(targets.audio.shape, generator=g), torch.randn(targets.video.shape, generator=g)
    t = torch.full((3,), 0.3)
    ga, gv = velocity_fn((xa, xv), t)
    assert len(recorder.calls) == 1 and recorder.calls[0]["audio_x"].shape[0] == 9

    ones = torch.ones_like(t)
    run = dict(audio_mask=targets.audio_mask, video_frame_lengths=targets.video_frame_lengths)
    a_j, v_j = model.network(xa, t, conditions, video_x=xv, video_t=t, **run)
    _, v_m = model.network(anchors["audio"], ones, conditions, video_x=xv, video_t=t, **run)  # mute audio
    a_s, _ = model.network(xa, t, conditions, video_x=anchors["video"], video_t=ones, **run)  # static video
    torch.testing.assert_close(gv, v_m + 3.0 * (v_j - v_m), rtol=1e-4, atol=1e-4)  # Eq. 9
    torch.testing.assert_close(ga, a_s + 2.0 * (a_j - a_s), rtol=1e-4, atol=1e-4)  # Eq. 10
    assert (gv - v_j).abs().max() > 1e-4 and (ga - a_j).abs().max() > 1e-4

    # text CFG (Eq. 8, "w/o SyncCFG"): conditional against every prompt null
    text_plan = guidance_plan("joint", "text", with_video=True)
    null = model.make_conditions(model.network, encoded, batch, latent_length=targets.audio.shape[1], branch="unconditional")
    text_fn = model._velocity_fn(model.network, text_plan, HarmonyGuidance(text_plan, 3.0, 2.0),
                                 concat_conditions([conditions, null]), {}, targets.audio_mask, targets.video_frame_lengths)
    ta, tv = text_fn((xa, xv), t)
    a_u, v_u = model.network(xa, t, null, video_x=xv, video_t=t, **run)
    torch.testing.assert_close(tv, v_u + 3.0 * (v_j - v_u), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ta, a_u + 2.0 * (a_j - a_u), rtol=1e-4, atol=1e-4)


def test_tasks_generate_their_modalities_and_keep_the_driving_one(model, batch):
    joint = model.generate_av(batch, HarmonySampling(num_steps=2, seed=0))
    assert joint["video"].shape == batch.target_video.shape and joint["waveforms"].shape == batch.audio.shape
    assert torch.isfinite(joint["waveforms"]).all() and 0 <= float(joint["video"].min()) <= float(joint["video"].max()) <= 1
    codec = model.video_codec
    first = codec.decode(codec.encode(batch.reference_image[:, None]))[:, 0]
    torch.testing.assert_close(joint["video"][:, 0], first, atol=1e-5, rtol=0)  # the TI2V first frame is the image
    a2v = model.generate_av(batch, HarmonySampling(task="a2v", num_steps=2, seed=0))
    torch.testing.assert_close(a2v["waveforms"], batch.audio)  # the driving audio is returned as given
    assert (a2v["video"] - joint["video"]).abs().max() > 1e-4
    v2a = model.generate_av(batch, HarmonySampling(task="v2a", num_steps=2, seed=0))
    torch.testing.assert_close(v2a["video"], batch.target_video)
    audio = model.generate_av(batch, HarmonySampling(task="audio", num_steps=2, seed=0))
    assert "video" not in audio and audio["waveforms"].shape == batch.audio.shape
    voiceless = dataclasses.replace(batch, has_reference_audio=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="clone needs a reference voice"):
        model.generate_av(voiceless, HarmonySampling(task="clone", num_steps=1))
    voiced = batch.select([0])  # joint_av carries a reference voice
    cloned = model.generate_av(voiced, HarmonySampling(task="clone", num_steps=2, seed=0))
    plain = model.generate_av(voiced, HarmonySampling(task="joint", use_reference=False, num_steps=2, seed=0))
    assert (cloned["waveforms"] - plain["waveforms"]).abs().max() > 1e-5


def test_evaluation_step_logs_the_binned_cts_loss_and_returns_generated_audio(model, batch):
    model.num_val_time_bins, model.num_val_sampling_steps = 2, 1
    losses, logs = model._binned_losses(batch, 0)
    assert len(losses) == 2 and {"loss_joint", "loss_audio_driven", "loss_video_driven"} <= set(logs)
    again, _ = model._binned_losses(batch, 0)
    assert [float(a) for a in again] == [float(b) for b in losses]  # seeded noise and reference cuts
    out = model.validation_step(batch, 0)
    assert out["waveforms"].shape == batch.audio.shape and out["sample_rate"] == 16000


def test_audio_only_network_trains_the_audio_loss_with_a_reference(batch):
    module = _perturbed(_module("harmony-audio-tiny", reference="segment"))
    targets, encoded = module.harmony_targets(batch, module.encode_conditions(batch), generator=torch.Generator().manual_seed(0))
    assert targets.video is None and encoded.reference_latent is not None
    conditions = module.make_conditions(module.network, encoded, batch, latent_length=targets.audio.shape[1], branch="conditional")
    t = torch.full((3,), 0.4)
    noise = torch.randn(targets.audio.shape)
    loss = module.cross_task_losses(module.network, targets, conditions, t, noise)["loss"]
    va, _ = module.network(interpolate(noise, targets.audio, t), t, conditions, audio_mask=targets.audio_mask)
    torch.testing.assert_close(loss, flow_matching_loss(va, targets.audio - noise, targets.audio_loss_mask))
    with pytest.raises(ValueError, match="video branch"):
        module.generate_av(batch, HarmonySampling(task="a2v", num_steps=1))


def test_tiny_harmony_loss_halves_on_a_fixed_batch(batch):
    torch.manual_seed(0)
    module = _module().train()
    targets, encoded = module.harmony_targets(batch, module.encode_conditions(batch))
    g = torch.Generator().manual_seed(0)
    t = torch.rand(3, generator=g) * 0.8 + 0.1
    na, nv = torch.randn(targets.audio.shape, generator=g), torch.randn(targets.video.shape, generator=g)
    optimizer = torch.optim.AdamW(module.network.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for _ in range(30):
        conditions = module.make_conditions(module.network, encoded, batch, latent_length=targets.audio.shape[1],
                                            branch="conditional")
        loss = module.cross_task_losses(module.network, targets, conditions, t, na, nv)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::4]
