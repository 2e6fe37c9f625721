"""Target video stream (Harmony): ToyWorld rendering in sync with sound, batch schema, manifest decoding,
the mp4+wav writer read back by PyAV, and a tiny Wan video DiT learning ToyWorld video."""

import json

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.codecs import PixelVideoCodec
from avgen.data import ManifestDataset, ToyWorldDataModule, collate, export_toyworld, write_video_with_audio
from avgen.data.toyworld import ToyWorld, envelope
from avgen.flow import flow_matching_loss, interpolate, target_velocity
from avgen.models.harmony import WanVideoNetwork

SR = 8000


@pytest.fixture(scope="module")
def world():
    return ToyWorld(duration=2.0, sample_rate=SR, speech="formant", video_fps=16, video_size=32)


def test_target_video_and_reference_image_follow_the_scene(world):
    s = world.sample(0, scenario="vta", adverbs={"speed": "slow", "distance": "near"}, motion="flash")
    assert s.target_video.shape == (32, 3, 32, 32) and s.video_fps == 16.0
    torch.testing.assert_close(s.reference_image, s.target_video[0])
    # object pixels (anything not background): none before the first event, present from its frame on
    onsets = [e["onset"] for e in s.meta["events"]]
    assert onsets[0] > 0.1
    counts = ((s.target_video - s.target_video[0]).abs().amax(1) > 0.05).flatten(1).sum(1)
    first = int(np.ceil(onsets[0] * 16 - 1e-6))
    assert counts[:first].sum() == 0 and counts[first] > 3
    # the flash: the frame at (or just after) each onset is brighter than the one before it
    brightness = s.target_video.mean(dim=(1, 2, 3))
    for t in onsets[1:]:
        k = int(np.ceil(t * 16 - 1e-6))
        if k < 32:
            assert brightness[k] > brightness[k - 1]


def test_talking_face_mouth_follows_speech_in_target_video():
    w = ToyWorld(duration=2.0, sample_rate=SR, speech="formant", video_fps=12, video_size=64)
    s = w.sample(3, scenario="speech")
    mouth_color = torch.tensor([0.35, 0.05, 0.08])[:, None, None]
    mouth = ((s.target_video - mouth_color).abs().amax(1) < 0.02).flatten(1).sum(1).float()
    times, env = envelope(s.audio.numpy(), SR)
    assert np.corrcoef(mouth.numpy(), np.interp(np.arange(24) / 12, times, env))[0, 1] > 0.6


def test_batch_flags_lengths_and_no_target_video_by_default(world):
    with_video = world.sample(0, scenario="joint_av")
    no_video = world.sample(1, scenario="tta")
    batch = collate([with_video, no_video])
    assert batch.target_video.shape == (2, 32, 3, 32, 32) and batch.target_video_lengths.tolist() == [32, 0]
    assert batch.has_target_video.tolist() == [True, False] and batch.has_reference_image.tolist() == [True, False]
    assert batch.reference_image.shape == (2, 3, 32, 32) and torch.all(batch.reference_image[1] == 0)
    assert batch.video_fps == 16.0 and batch.has_video.tolist() == [True, False]  # old flag unchanged
    assert batch.has_video_caption.tolist() == [True, False]
    sub = batch.select([1])
    assert sub.has_target_video.tolist() == [False] and sub.target_video.shape[0] == 1

    plain = collate([ToyWorld(duration=1.0, sample_rate=SR, speech="formant").sample(0, scenario="joint_av")])
    assert plain.target_video is None and plain.has_target_video.tolist() == [False]
    dm = ToyWorldDataModule(batch_size=2, train_size=2, duration=1.0, sample_rate=SR, speech="formant",
                            scenarios=["joint_av"], video_fps=8, video_size=16, reference_image=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch.target_video.shape == (2, 8, 3, 16, 16) and batch.reference_image is None
    assert dm.video_fps == 8.0 and dm.video_size == 16


def test_manifest_decodes_target_video_at_configured_fps_and_size(tmp_path):
    manifest = export_toyworld(2, tmp_path, seed=0, duration=1.0, sample_rate=SR, speech="formant",
                               scenarios=["joint_av"], size=32, mux_audio=True)
    row = json.loads(manifest.read_text().splitlines()[0])
    assert (tmp_path / row["video"]).is_file() and (tmp_path / row["audio"]).is_file()
    dataset = ManifestDataset(manifest, duration=1.0, sample_rate=SR, video_fps=10, video_size=(16, 24))
    sample = dataset[0]
    assert sample.target_video.shape == (10, 3, 16, 24) and sample.video_fps == 10.0
    torch.testing.assert_close(sample.reference_image, sample.target_video[0])
    square = ManifestDataset(manifest, duration=1.0, sample_rate=SR, video_fps=25, video_size=32)[0]
    world = ToyWorld(duration=1.0, sample_rate=SR, speech="formant", scenarios=["joint_av"], video_fps=25, video_size=32)
    rendered = world.sample(0).target_video
    assert square.target_video.shape == rendered.shape
    assert (square.target_video - rendered).abs().mean() < 0.03  # the same frames through H.264
    assert ManifestDataset(manifest, duration=1.0, sample_rate=SR)[0].target_video is None


def test_mp4_writer_read_back_by_pyav(tmp_path, world):
    s = world.sample(2, scenario="joint_av")
    mp4, wav = write_video_with_audio(tmp_path, s.id, s.target_video, 16.0, s.audio, SR)
    assert mp4.name == f"{s.id}.mp4" and wav.name == f"{s.id}.wav"
    with av.open(str(mp4)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        assert float(vstream.average_rate) == 16.0 and (vstream.width, vstream.height) == (32, 32)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 32
        first = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255
        assert (first - s.target_video[0]).abs().mean() < 0.03
    with av.open(str(mp4)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert container.streams.audio[0].sample_rate == SR
    assert abs(audio.size - s.audio.numel()) <= 2048  # AAC frames of 1024 samples (priming / padding)
    data, rate = sf.read(str(wav))
    assert rate == SR and data.size == s.audio.numel()


def test_tiny_video_dit_learns_toyworld_video():
    """Flow matching on a fixed batch of ToyWorld target video (pixel codec): the loss halves."""
    world = ToyWorld(duration=1.0, sample_rate=SR, speech="formant", scenarios=["joint_av"], video_fps=4, video_size=16)
    batch = collate([world.sample(i) for i in range(2)])
    codec = PixelVideoCodec(patch_size=2)
    x1 = codec.encode(batch.target_video)  # (2, 4, 12, 8, 8)
    torch.manual_seed(0)
    network = WanVideoNetwork(latent_channels=12, dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=16,
                              text_len=8, freq_dim=32)
    text = torch.randn(2, 5, 16)
    x0, t = torch.randn_like(x1), torch.rand(2)
    x_t, target = interpolate(x0, x1, t), target_velocity(x0, x1)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(16):
        loss = flow_matching_loss(network.predict_velocity(x_t, t, network.preprocess_conditions(text)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]
