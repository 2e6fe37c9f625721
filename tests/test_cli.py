"""End to end through the `avgen` command: fit -> test -> generate -> resume, configs, summary, manifests.

The 2-process DDP fit of the tiny FoleyGenEx config shares one launch of the ranks with OmniSonic's:
tests/reliability/test_paper_scale.py::test_two_process_ddp_fits_foleygenex_and_omnisonic_with_a_trainable_speecht5.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.cli import main, run_cli

from cli_support import FOLEYGENEX_FAST as FAST
from cli_support import FOLEYGENEX_TINY as TINY
from cli_support import last_checkpoint


@pytest.fixture(scope="module")
def fitted(foleygenex_fit) -> tuple[Path, Path]:
    return foleygenex_fit  # the session's tiny FoleyGenEx run (tests/conftest.py)


def test_help_lists_every_subcommand(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "generate", "summary", "toyworld"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--output_dir" in out and "--ckpt_path" in out and "--cfg_scale" in out


def test_console_entries_start_the_command(tmp_path):
    """The `avgen` console script and `python -m avgen.cli` reach avgen.cli.main; an unknown command fails.

    The other tests call avgen.cli.main in-process (one console-script run each of `generate` for the
    plug-in paper in tests/test_toy_paper.py and of the DDP fits in tests/reliability/test_paper_scale.py).
    """
    script = Path(sys.executable).with_name("avgen")
    for command in ([str(script)], [sys.executable, "-m", "avgen.cli"]):
        done = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("usage: avgen <command>"), (command, done.stderr)
    done = subprocess.run([str(script), "nope"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "avgen: unknown command 'nope'" in done.stderr


@pytest.mark.slow
def test_fit_writes_a_checkpoint_without_frozen_weights_that_loads_weights_only(fitted):
    root, ckpt = fitted
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 30
    keys = checkpoint["state_dict"].keys()
    assert not any(k.startswith(("vision_encoder.", "text_encoder.", "sync_encoder.", "codec.")) for k in keys)
    assert any(k.startswith("ema_network.") for k in keys)
    assert checkpoint["avgen"]["model_class"] == "avgen.models.foleygenex.module.FoleyGenEx"

    from avgen.models import FoleyGenEx
    from avgen.models.base import load_model

    model = load_model(str(ckpt))  # weights_only=True; the class comes from the checkpoint
    assert type(model) is FoleyGenEx
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key
    # TensorBoard got the losses, oracle metrics and media
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parent.parent), size_guidance={"scalars": 0, "audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/loss_t0", "val/loss_t4", "val/onset_offset"} <= set(tags["scalars"])
    assert tags["audio"] and tags["images"]


@pytest.mark.slow
def test_test_subcommand_evaluates_the_checkpoint_weights(fitted):
    root, ckpt = fitted
    cli = run_cli(["test", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", f"--ckpt_path={ckpt}",
                   "--model.init_args.num_val_generate_batches=0"])
    reported = cli.trainer.callback_metrics["test/loss"]

    # Independently: the checkpoint's (EMA) network on the same test batch, with the same seeded noise.
    from avgen.models.base import load_model

    model = load_model(str(ckpt)).eval()
    cli.datamodule.setup("test")
    batch = next(iter(cli.datamodule.test_dataloader()))
    expected = torch.stack(model.binned_losses(batch, batch_idx=0)).mean()
    assert torch.allclose(reported, expected, rtol=1e-4), (reported, expected)


@pytest.mark.slow
def test_generate_writes_playable_wavs_of_the_clip_length(fitted, tmp_path, capsys):
    root, ckpt = fitted
    out = tmp_path / "wavs"
    main(["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
          "--output_dir", str(out), "--num_steps", "3", "--cfg_scale", "2.0", "--seed", "1"])
    assert str(out.resolve()) in capsys.readouterr().out
    files = sorted(out.glob("*.wav"))
    assert len(files) == 2
    for path in files:
        info = sf.info(str(path))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        audio, _ = sf.read(str(path), dtype="float32")
        assert audio.shape == (16000,)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


@pytest.mark.slow
def test_resume_continues_the_global_step(fitted):
    root, ckpt = fitted
    main(["fit", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--trainer.max_steps=34",
          "--trainer.val_check_interval=100", f"--ckpt_path={ckpt}"])
    resumed = last_checkpoint(root)
    assert resumed != ckpt
    assert torch.load(resumed, map_location="cpu", weights_only=True)["global_step"] == 34


def test_print_config_reparses_to_the_same_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--model.init_args.hidden_dim=48", "--print_config"])
    printed = capsys.readouterr().out
    assert "class_path: avgen.models.FoleyGenEx" in printed and "hidden_dim: 48" in printed
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    assert capsys.readouterr().out == printed


def test_summary_counts_match_a_real_instantiation(capsys):
    main(["summary", "--config", TINY])
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = re.compile(r"^(\S+): ([\d,]+)$")
    rows = {}
    for line in lines[:-1]:
        match = pattern.match(line)
        assert match, line
        rows[match.group(1)] = int(match.group(2).replace(",", ""))
    total = re.fullmatch(r"total parameters: ([\d,]+)", lines[-1])
    assert total, lines[-1]

    model = run_cli(["--config", TINY], run=False).model  # real weights
    assert int(total.group(1).replace(",", "")) == sum(p.numel() for p in model.parameters())
    for name, child in model.named_children():
        assert rows[name] == sum(p.numel() for p in child.parameters()), name
    for name, child in model.network.named_children():
        assert rows[f"network.{name}"] == sum(p.numel() for p in child.parameters()), name


@pytest.mark.slow
def test_manifest_training_from_exported_toyworld(tmp_path):
    data = tmp_path / "toy"
    main(["toyworld", "export", "--n", "4", "--output_dir", str(data), "--duration", "1.0", "--seed", "2"])
    main(["toyworld", "export", "--n", "2", "--output_dir", str(data / "val"), "--duration", "1.0", "--split", "val"])
    manifest, val_manifest = data / "manifest.jsonl", data / "val" / "manifest.jsonl"
    assert manifest.is_file() and len(manifest.read_text().splitlines()) == 4
    main(["fit", "--config", TINY, *[a for a in FAST if not a.startswith("--data.")],
          "--data=avgen.data.ManifestDataModule", f"--data.init_args.train_manifest={manifest}",
          f"--data.init_args.val_manifest={val_manifest}", "--data.init_args.batch_size=2",
          "--data.init_args.duration=1.0", "--data.init_args.semantic_size=32", "--data.init_args.sync_size=32",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=3", "--trainer.val_check_interval=3"])
    checkpoint = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3


@pytest.mark.slow
def test_generate_from_one_video_file_and_caption(fitted, tmp_path):
    root, ckpt = fitted
    main(["toyworld", "export", "--n", "1", "--output_dir", str(tmp_path / "src"), "--duration", "1.0",
          "--split", "test"])
    video = next((tmp_path / "src").glob("*.mp4"))
    out = tmp_path / "wavs"
    main(["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
          "--output_dir", str(out), "--video", str(video), "--caption", "a dog barks", "--num_steps", "2"])
    audio, rate = sf.read(str(out / f"{video.stem}.wav"), dtype="float32")
    assert rate == 16000 and audio.shape == (16000,)  # the configured clip duration (1 s)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


def test_tiny_config_trains_on_balanced_vta_tta_batches_with_adverb_augmentation():
    from avgen.data import AdverbAugmentation, BalancedDataModule, ToyWorldDataModule

    dm = run_cli(["--config", TINY, *FAST], run=False).datamodule
    assert isinstance(dm, BalancedDataModule) and dm.ratio == 0.5
    assert isinstance(dm.first, ToyWorldDataModule) and isinstance(dm.second, ToyWorldDataModule)
    assert isinstance(dm.second.transform, AdverbAugmentation) and dm.first.transform is None
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4  # 8 + 8 samples, 2 + 2 per batch
    for batch in batches:
        assert batch.task == ["vta", "vta", "tta", "tta"]
    assert any("augmentation" in m for b in batches for m in b.meta)  # some TTA captions carry adverbs
