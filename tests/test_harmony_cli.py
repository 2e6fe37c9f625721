"""Harmony end to end: the tiny config fits in-process (shared session fixture ``harmony_fit``), one
console-script ``avgen generate`` writes ``<id>.mp4`` (audio muxed in) and ``<id>.wav``; ``avgen compare`` scores the
generated videos (CLIP / ID); the paper config's
parameter count and FSDP strategy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from cli_support import HARMONY_FAST, HARMONY_TINY

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_checkpoint_holds_the_network_and_drops_frozen_components(harmony_fit):
    _, ckpt = harmony_fit
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    keys = checkpoint["state_dict"].keys()
    assert checkpoint["avgen"]["model_class"] == "avgen.models.harmony.module.HarmonyModule"
    assert any(k.startswith("network.video.") for k in keys) and any(k.startswith("network.gldi.") for k in keys)
    assert not any(k.startswith(("text_encoder.", "codec.", "video_codec.")) for k in keys)


def test_console_generate_writes_an_mp4_with_sound_and_a_wav(harmony_fit, tmp_path):
    root, ckpt = harmony_fit
    out = tmp_path / "joint"
    script = Path(sys.executable).with_name("avgen")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "avgen.cli"]
    result = subprocess.run(
        [*command, "generate", "--config", HARMONY_TINY, *HARMONY_FAST, f"--trainer.default_root_dir={root}",
         "--ckpt_path", str(ckpt), "--output_dir", str(out), "--num_steps", "2", "--seed", "0", "--guidance", "sync"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 mp4 files" in result.stdout
    mp4s, wavs = sorted(out.glob("*.mp4")), sorted(out.glob("*.wav"))
    assert len(mp4s) == 2 and [p.stem for p in mp4s] == [p.stem for p in wavs]
    for mp4, wav in zip(mp4s, wavs):
        audio, rate = sf.read(str(wav), dtype="float32")
        assert rate == 16000 and len(audio) == 8000 and np.isfinite(audio).all()
        with av.open(str(mp4)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        with av.open(str(mp4)) as container:
            assert container.streams.audio[0].rate == 16000
            sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert len(frames) == 4 and frames[0].shape[:2] == (16, 16)  # 0.5 s at 8 fps
        assert sound.size >= 8000 and np.abs(sound).max() > 0


def test_paper_config_counts_the_spec_parameters_and_shards_with_fsdp(capsys):
    from avgen.cli import main
    from avgen.models.harmony.fsdp import HarmonyFSDPStrategy

    main(["summary", "--config", str(REPO / "configs" / "harmony" / "paper.yaml")])
    lines = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    network = int(lines["network"].replace(",", ""))
    assert abs(network - 12.8e9) / 12.8e9 < 0.02  # spec §3: 5.0B video + 4.4B audio + 3.4B GLDI
    assert abs(int(lines["network.video"].replace(",", "")) - 4_999_787_712) == 0  # Wan2.2-TI2V-5B exactly
    strategy = HarmonyFSDPStrategy()
    assert strategy.checkpoint_blocks and strategy.kwargs["use_orig_params"]
    # the units are the outermost declared blocks: a two-stream audio block is wrapped, the Wan blocks inside it not
    from avgen.models import create_network
    from avgen.models.harmony import DualStreamWanBlock, GLDILayer, WanBlock
    from avgen.training.fsdp import block_wrap_policy_for

    network = create_network("harmony-tiny", device="meta", audio_mmdit="dual")
    policy = block_wrap_policy_for(network)
    wrapped = list(policy._run_policy(network, set(), {}))  # torch's own policy traversal
    assert {type(m) for m in wrapped} == {WanBlock, DualStreamWanBlock, GLDILayer}
    inner = {id(b) for d in network.modules() if isinstance(d, DualStreamWanBlock) for b in d.modules() if b is not d}
    assert inner and not inner & {id(m) for m in wrapped}
    assert sum(isinstance(m, GLDILayer) for m in wrapped) == len(network.gldi)


def test_compare_scores_the_generated_video(harmony_fit, tmp_path):
    """`avgen compare` on a joint model: its own videos are cached as mp4 and Harmony's CLIP / ID are scored on them
    (checked against the same back-end applied to the cached frames, numpy cosines)."""
    import json

    import open_clip

    from avgen.cli.compare import compare
    from avgen.eval.registry import read_video_frames
    from avgen.eval.video import MAX_SCORED_FRAMES, ClipImageTextBackend

    _, ckpt = harmony_fit
    config_dir = tmp_path / "clip"
    config_dir.mkdir()
    tiny = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (config_dir / "harmony-test-clip.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("harmony-test-clip", pretrained=None).state_dict(), tmp_path / "clip.pt")

    out = tmp_path / "cmp"
    overrides = ["init_args.duration=0.5", "init_args.predict_size=2", "init_args.batch_size=2"]
    result = compare(["--checkpoints", str(ckpt), "--data", HARMONY_TINY, *sum((["--data_override", o] for o in overrides), []),
                      "--output_dir", str(out), "--names", "harmony", "--options", "all:num_steps=2", "--metrics", "clip_video", "identity",
                      "--clip_video", f"harmony-test-clip:{tmp_path / 'clip.pt'}"])
    row = result["rows"][0]
    videos = sorted((out / "models" / "harmony" / "video").glob("*.mp4"))
    assert len(videos) == 2 and row["clips"] == 2, result["not_comparable"]
    backend = ClipImageTextBackend("harmony-test-clip", str(tmp_path / "clip.pt"))
    samples = json.loads((out / "reference" / "samples.json").read_text())
    clip, identity = [], []
    for video in videos:
        frames = read_video_frames(video)[0]
        assert len(frames) <= MAX_SCORED_FRAMES
        emb = backend.embed_images(torch.from_numpy(frames).permute(0, 3, 1, 2)).double().numpy()
        prompt = samples[video.stem]["video_caption"] or samples[video.stem]["caption"]
        if prompt:  # a speech sample has no prompt: not in the CLIP mean
            clip.append((emb @ backend.embed_text([prompt])[0].double().numpy()).mean())
        first = read_video_frames(out / "reference" / "video" / video.name)[0][:1]
        image = backend.embed_images(torch.from_numpy(first).permute(0, 3, 1, 2))[0].double().numpy()
        identity.append((emb @ image).mean())
    assert clip and row["clip_video"] == pytest.approx(float(np.mean(clip)), abs=1e-5)
    assert row["identity"] == pytest.approx(float(np.mean(identity)), abs=1e-5)
