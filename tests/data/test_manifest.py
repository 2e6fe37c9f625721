"""Manifest datamodule and media decoding: export round trip, resampling, and the bad-input policy."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.data import ManifestDataModule, ToyWorld, export_toyworld, read_manifest
from avgen.data.manifest import ManifestDataset, collate_skipping
from avgen.data.media import load_audio, write_mp4

SR = 16000


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld")
    manifest = export_toyworld(4, out, split="val", seed=3, speech="formant", scenarios=["vta", "tta", "joint_av"])
    return manifest


def write_manifest(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_export_round_trip(exported):
    world = ToyWorld(speech="formant", seed=3, scenarios=["vta", "tta", "joint_av"])
    ds = ManifestDataset(exported, split="val", on_error="raise")
    assert len(ds) == 4
    for i in range(4):
        got, ref = ds[i], world.sample(i, "val")
        assert got.id == ref.id and got.task == ref.task and got.meta["events"] == ref.meta["events"]
        assert (got.caption, got.transcript, got.video_caption) == (ref.caption, ref.transcript, ref.video_caption)
        assert torch.allclose(got.audio, ref.audio, atol=1e-4)  # 16-bit PCM
        assert got.audio_length == 2 * SR
        assert (got.reference_audio is None) == (ref.reference_audio is None)
        if ref.video_sync is None:
            assert got.video_sync is None and not got.has_video
            continue
        assert (got.video_sync - ref.video_sync).abs().mean() < 0.03  # lossy codec, same frames
        # 8 fps frame k is the 25 fps frame shown at k/8 s
        shown = torch.floor(torch.arange(16) / 8 * 25 + 1e-6).long()
        assert (got.video_semantic - ref.video_sync[shown]).abs().mean() < 0.03
    dm = ManifestDataModule(val_manifest=str(exported), batch_size=4)
    batch = next(iter(dm.val_dataloader()))
    assert batch.has_video.tolist() == [ref is not None for ref in [world.sample(i, "val").video_sync for i in range(4)]]


def test_resampling_and_mono_downmix(tmp_path):
    t = np.arange(int(1.5 * 22050)) / 22050
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 22050)
    clip = load_audio(tmp_path / "s.wav", SR, duration=2.0)
    assert clip.waveform.shape == (2 * SR,) and clip.valid_length == int(1.5 * SR)
    assert clip.waveform[clip.valid_length :].abs().max() == 0
    x = clip.waveform[1000 : clip.valid_length - 1000].numpy()
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / x.size - 440) < 2
    assert abs(np.abs(x).max() - 0.3) < 0.01  # mean of the two channels


def test_short_video_is_padded_and_recorded_or_skipped(tmp_path):
    world = ToyWorld(speech="formant")
    s = world.sample(0, scenario="vta")
    write_mp4(tmp_path / "v.mp4", s.video_sync[:25], 25)  # 1 s of video for 2 s of audio
    sf.write(tmp_path / "a.wav", s.audio.numpy(), SR)
    m = write_manifest(tmp_path / "m.jsonl", [{"id": "x", "audio": "a.wav", "video": "v.mp4"}])
    with pytest.raises(ValueError, match=r"50% of the clip's frames .*max_video_pad_fraction=0\.25"):
        ManifestDataset(m, on_error="raise")[0]  # half the clip frozen: a wrong sample, not a padded one
    got = ManifestDataset(m, on_error="raise", max_video_pad_fraction=0.5)[0]
    assert got.meta["video_padded_frames"] == {"semantic": 8, "sync": 25}
    assert torch.equal(got.video_sync[25:], got.video_sync[24:25].expand(25, -1, -1, -1))
    skipper = ManifestDataset(m, on_error="skip", short_video="skip", max_skip_fraction=1.0)
    assert skipper[0] is None and skipper.runtime_skips == 1


def test_missing_file_under_both_policies(tmp_path, exported, caplog):
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    for r in rows:
        for k in ("audio", "video", "reference_audio"):
            if k in r:
                r[k] = str(exported.parent / r[k])
    rows[1]["audio"] = str(tmp_path / "gone.wav")
    m = write_manifest(tmp_path / "m.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(m, on_error="skip", max_skip_fraction=0.25)
    assert len(ds) == 3 and len(ds.setup_skips) == 1 and ds.setup_skips[0][0] == 2
    assert "gone.wav" in caplog.text and "skipped 1 of 4" in caplog.text
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2 .*gone\.wav: audio file does not exist\. Fix:"):
        ManifestDataset(m, on_error="raise")


def test_truncated_mp4_under_both_policies(tmp_path, exported):
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    video_row = next(i for i, r in enumerate(rows) if "video" in r)
    for r in rows:
        for k in ("audio", "video", "reference_audio"):
            if k in r:
                r[k] = str(exported.parent / r[k])
    data = Path(rows[video_row]["video"]).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    rows[video_row]["video"] = str(tmp_path / "cut.mp4")
    m = write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError, match=rf"line {video_row + 1} .*cut\.mp4.*truncated.*Fix:"):
        ManifestDataset(m, on_error="raise")
    assert len(ManifestDataset(m, on_error="skip", max_skip_fraction=0.25)) == 3  # caught by the header probe
    lazy = ManifestDataset(m, on_error="skip", probe_media=False, max_skip_fraction=0.25)  # caught while loading instead
    assert len(lazy) == 4
    batch = collate_skipping([lazy[i] for i in range(4)])
    assert len(batch) == 3 and rows[video_row]["id"] not in batch.ids and lazy.runtime_skips == 1
    with pytest.raises(ValueError, match="cut.mp4"):
        ManifestDataset(m, on_error="raise", probe_media=False)[video_row]
    with pytest.raises(ValueError, match="every sample of a batch of 2 failed"):
        collate_skipping([None, None])


def test_rate_checks_and_silence(tmp_path):
    sf.write(tmp_path / "low.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 4000), 4000)
    sf.write(tmp_path / "ok.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 22050), 22050)
    sf.write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    m = write_manifest(tmp_path / "m.jsonl", [
        {"id": "low", "audio": "low.wav"},
        {"id": "declared", "audio": "ok.wav", "sample_rate": 16000},
        {"id": "silent", "audio": "silent.wav"},
        {"id": "good", "audio": "ok.wav", "caption": "noise"},
    ])
    ds = ManifestDataset(m, on_error="skip", skip_silent=True, max_skip_fraction=1.0)
    assert [r.id for r in ds.rows] == ["declared", "silent", "good"]  # 4 kHz rejected from the header
    assert "unsupported sample rate 4000" in ds.setup_skips[0][2]
    assert ds[0] is None and ds[1] is None and ds[2] is not None  # wrong declared rate, silent clip
    assert ds.runtime_skips == 2
    assert ManifestDataset(m, on_error="skip", skip_silent=False, max_skip_fraction=1.0)[1] is not None
    with pytest.raises(ValueError, match="line 2 .*manifest declares 16000"):
        ManifestDataset(m, on_error="raise", probe_media=False)[1]


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (['{"id": "a", "audio": "a.wav"}', '{"id": "b", "audio": '], r"m\.jsonl, line 2: malformed JSON"),
        (['{"id": "a"}'], r"line 1: missing required column 'audio'"),
        (['{"id": "a", "audio": "a.wav"}', "", '{"id": "a", "audio": "b.wav"}'], r"line 3: duplicate id 'a' \(first on line 1\)"),
        (['{"id": "a", "audio": "a.wav", "start": -1}'], r"line 1: 'start' must be a non-negative"),
        (['{"id": "a", "audio": "a.wav", "task": "karaoke"}'], r"line 1: unknown task"),
        (['[1, 2]'], r"line 1: expected a JSON object"),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path, lines, pattern):
    m = write_manifest(tmp_path / "m.jsonl", lines)
    with pytest.raises(ValueError, match=pattern) as info:
        read_manifest(m)
    assert "Fix:" in str(info.value)


def test_datamodule_policies_and_split_filter(tmp_path, exported):
    dm = ManifestDataModule(train_manifest=str(exported), batch_size=2)
    with pytest.raises(ValueError, match="no test_manifest"):
        dm.test_dataloader()
    assert dm.val_dataloader() == []  # no val manifest: validation disabled
    with pytest.raises(ValueError, match=r"no usable rows for split 'train' \(4 rows, 4 of other splits"):
        dm.setup("fit")  # every exported row is a "val" row
    dm = ManifestDataModule(val_manifest=str(exported), batch_size=3)
    dm.setup("validate")
    assert [len(b) for b in dm.val_dataloader()] == [3, 1]
    assert dm.skip_summary() == {"val": {"rows": 4, "setup_skips": 0, "runtime_skips": 0, "padded_videos": 0}}
    with pytest.raises(ValueError, match="on_error"):
        ManifestDataModule(on_error="ignore")
