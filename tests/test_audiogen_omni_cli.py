"""AudioGen-Omni end to end through the ``avgen`` entry (``avgen.cli.main``) on the tiny config: one short
fit shared by every test (session fixture), then generation for each task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "audiogen_omni" / "tiny.yaml")
SR = 16000
FAST = [
    "--data.init_args.batch_size=4",
    "--data.init_args.train_size=8",
    "--data.init_args.val_size=4",
    "--data.init_args.predict_size=2",
    "--data.init_args.duration=1.0",
    "--data.init_args.min_duration=0.6",
    "--data.init_args.scenarios=[song]",
    "--model.init_args.duration=1.0",
    "--model.init_args.max_duration=1.0",
    "--model.init_args.num_val_sampling_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audiogen_omni_fit")
    main(["fit", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--trainer.max_steps=4",
          "--trainer.limit_val_batches=0"])
    ckpt = sorted(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]
    return root, ckpt


def _wavs(out: Path) -> dict[str, np.ndarray]:
    waves = {}
    for path in sorted(out.glob("*.wav")):
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == SR
        waves[path.stem] = audio
    return waves


def _sane(audio: np.ndarray) -> None:
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


def test_checkpoint_keeps_the_trainable_lt_encoder_and_drops_frozen_encoders(trained):
    _, ckpt = trained
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    keys = checkpoint["state_dict"].keys()
    assert checkpoint["avgen"]["model_class"] == "avgen.models.audiogen_omni.module.AudioGenOmni"
    assert any(k.startswith("network.lyrics_encoder.") for k in keys)
    assert any(k.startswith("ema_network.module.lyrics_encoder.") for k in keys)
    assert not any(k.startswith(("text_encoder.", "vision_encoder.", "sync_encoder.", "codec.")) for k in keys)
    assert checkpoint["lr_schedulers"][0]["warmup"] == 0.9  # InverseLR state, loaded with weights_only


def test_generate_variable_length_songs_from_the_predict_split(trained, tmp_path):
    root, ckpt = trained
    out = tmp_path / "songs"
    main(["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
          "--output_dir", str(out), "--num_steps", "2", "--seed", "0"])
    from avgen.data.toyworld import ToyWorld

    world = ToyWorld(duration=1.0, min_duration=0.6)
    waves = _wavs(out)
    assert len(waves) == 2
    for i, (name, audio) in enumerate(sorted(waves.items())):
        assert audio.shape == (round(world.clip_duration(i, "predict") * SR),), name  # each clip its own length
        _sane(audio)


def test_text_to_audio_from_a_caption(trained, tmp_path):
    root, ckpt = trained
    out = tmp_path / "t2a"
    main(["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
          "--output_dir", str(out), "--num_steps", "2", "--caption", "a drum thumps loudly"])
    waves = _wavs(out)
    assert list(waves) == ["sample"] and waves["sample"].shape == (SR,)
    _sane(waves["sample"])


@pytest.mark.parametrize(
    "task, args, count",
    [
        ("v2a", [], 2),
        ("t2a", ["--caption", "a bell rings quietly"], 1),
        ("v2s", ["--transcript", "red ball"], 2),
        ("v2song", ["--lyrics", "la la yo"], 2),
        ("tts", ["--caption", "a low voice speaks", "--transcript", "hello look up"], 1),
        ("t2song", ["--caption", "a high voice sings a melody", "--lyrics", "la la"], 1),
    ],
)
def test_each_task_generates_from_the_console_entry(trained, tmp_path, task, args, count):
    root, ckpt = trained
    out = tmp_path / task
    main(["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
          "--output_dir", str(out), "--num_steps", "2", "--seed", "0", "--task", task, "--duration", "0.8", *args])
    waves = _wavs(out)
    assert len(waves) == count
    for audio in waves.values():
        assert audio.shape == (round(0.8 * SR),)  # --duration sets every output's length
        _sane(audio)


def test_task_flags_that_do_not_fit_are_refused_before_loading(trained, tmp_path, monkeypatch):
    from avgen.cli.lightning import AvgenCLI

    root, ckpt = trained
    base = ["generate", "--config", TINY, *FAST, f"--trainer.default_root_dir={root}", "--ckpt_path", str(ckpt),
            "--output_dir", str(tmp_path)]
    with monkeypatch.context() as patch:  # refused before the model is built
        patch.setattr(AvgenCLI, "instantiate_classes", lambda self: pytest.fail("the model was built"))
        with pytest.raises(ValueError, match="--task t2a does not take --lyrics"):
            main([*base, "--task", "t2a", "--caption", "x", "--lyrics", "la"])
        with pytest.raises(ValueError, match="--task tts speaks a transcript"):
            main([*base, "--task", "tts", "--caption", "a voice"])
    # the model's own range: refused by the built model, before any sampling
    with pytest.raises(ValueError, match="outside"):
        main([*base, "--task", "t2a", "--caption", "a drum", "--duration", "3"])
