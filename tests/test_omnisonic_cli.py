"""OmniSonic end to end through `avgen`: fit -> test -> generate (S1, S2, S3), gate logging, stage 2 init, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from avgen.cli import main, run_cli

from cli_support import OMNISONIC_FAST as FAST
from cli_support import OMNISONIC_TINY as TINY
from cli_support import REPO

CONFIGS = REPO / "configs" / "omnisonic"


@pytest.fixture(scope="module")
def fitted(omnisonic_fit) -> tuple[Path, Path]:
    return omnisonic_fit  # the session's tiny OmniSonic run (tests/conftest.py): 6 steps, validated at 3 and 6


@pytest.mark.slow
def test_fit_logs_gates_and_checkpoints_trainable_speech_encoder(fitted):
    root, ckpt = fitted
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    keys = checkpoint["state_dict"].keys()
    assert checkpoint["avgen"]["model_class"] == "avgen.models.omnisonic.module.OmniSonic"
    assert any(k.startswith("speech_encoder.durator.") for k in keys)  # trainable: kept
    assert not any(k.startswith(("env_text_encoder.", "vision_encoder.", "codec.")) for k in keys)  # frozen: rebuilt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parent.parent), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for stage in ("train", "val"):
        assert {f"{stage}/gate_onscreen", f"{stage}/gate_offscreen", f"{stage}/gate_speech"} <= tags
    gates = [events.Scalars(f"val/gate_{c}")[-1].value for c in ("onscreen", "offscreen", "speech")]
    assert abs(sum(gates) - 1.0) < 1e-4


@pytest.mark.slow
def test_test_subcommand_reports_loss_and_gates(fitted):
    root, ckpt = fitted
    cli = run_cli(["test", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", f"--ckpt_path={ckpt}",
                   "--model.init_args.num_val_generate_batches=0"])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["test/loss"])
    assert abs(sum(float(metrics[f"test/gate_{c}"]) for c in ("onscreen", "offscreen", "speech")) - 1) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["omnisonic_s1", "omnisonic_s2", "omnisonic_s3"])
def test_generate_each_scenario_writes_wavs(fitted, tmp_path, scenario):
    root, ckpt = fitted
    out = tmp_path / scenario
    main(["generate", "--config", TINY, *FAST, f"--data.init_args.scenarios=[{scenario}]",
          f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt), "--output_dir", str(out),
          "--num_steps", "2", "--seed", "1"])
    files = sorted(out.glob("*.wav"))
    assert len(files) == 1
    audio, rate = sf.read(str(files[0]))
    assert rate == 16000 and len(audio) == 16000 and abs(audio).max() > 0


@pytest.mark.slow
def test_generate_from_explicit_video_and_three_texts(fitted, tmp_path):
    """`avgen generate --video --caption "" --offscreen_caption --transcript --cfg_preset`: scenario 2 by hand."""
    root, ckpt = fitted
    main(["toyworld", "export", "--n", "1", "--output_dir", str(tmp_path / "src"), "--duration", "1.0",
          "--scenarios", "omnisonic_s2", "--speech", "formant"])
    video = next((tmp_path / "src").glob("*.mp4"))
    common = ["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
              "--video", str(video), "--caption", "", "--offscreen_caption", "a bell rings off screen",
              "--transcript", "red blue yes", "--num_steps", "2", "--seed", "3"]
    outputs = {}
    for preset in ("s2", "s1"):
        out = tmp_path / preset
        main([*common, "--output_dir", str(out), "--cfg_preset", preset])
        (wav,) = out.glob("*.wav")
        audio, rate = sf.read(str(wav))
        assert rate == 16000 and len(audio) == 16000 and abs(audio).max() > 0
        outputs[preset] = audio
    # The preset's scales reach the sampler: another scenario's scales give other audio.
    assert abs(outputs["s2"] - outputs["s1"]).max() > 1e-4
    with pytest.raises(ValueError, match="cfg_preset"):
        main([*common, "--output_dir", str(tmp_path / "bad"), "--cfg_preset", "s9"])


@pytest.mark.slow
def test_stage2_init_checkpoint_loads_stage1_weights(fitted):
    root, ckpt = fitted
    cli = run_cli(["--config", TINY, *FAST, f"--model.init_args.init_checkpoint={ckpt}"], run=False)
    model = cli.model
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    key = "network.blocks.0.cross.attn.speech.kv.weight"
    assert not torch.equal(model.state_dict()[key], state[key])
    model.setup("fit")
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


@pytest.mark.parametrize("name", ["paper.yaml", "stage1.yaml", "stage2.yaml"])
def test_paper_configs_build_at_paper_size_on_meta(name, capsys):
    main(["summary", "--config", str(CONFIGS / name)])
    out = capsys.readouterr().out
    network = int(next(line for line in out.splitlines() if line.startswith("network:")).split(":")[1].replace(",", ""))
    assert 1.0e9 < network < 1.2e9  # TriAttn-DiT: hidden 1152, 28 blocks, three cross-attentions each
    blocks = next(line for line in out.splitlines() if line.startswith("network.blocks:"))
    assert blocks
