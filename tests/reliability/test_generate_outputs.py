"""Item 8: generated audio is scaled (not hard-clipped) and says so; earlier outputs are never
overwritten silently; `avgen generate` creates no lightning_logs/version_N folder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.cli import main
from avgen.cli.generate import WavWriter


def prediction(peak: float, seed: int = 0) -> dict:
    wave = torch.sin(torch.linspace(0, 200, 1600)) * peak
    wave[800:] *= 0.25
    return {"ids": ["clip"], "waveforms": wave[None], "lengths": torch.tensor([1600]), "sample_rate": 16000}


def test_loud_clips_are_scaled_not_clipped_and_reported(tmp_path):
    writer = WavWriter(tmp_path)
    writer.write_on_batch_end(None, None, prediction(1.6), None, None, 0, 0)
    audio, _ = sf.read(tmp_path / "clip.wav")
    assert abs(np.abs(audio).max() - 0.99) < 1e-3 and (np.abs(audio) > 0.999).sum() == 0
    expected = prediction(1.6)["waveforms"][0].numpy() * (0.99 / 1.6)
    assert np.abs(audio - expected).max() < 2e-4  # one gain for the whole clip: its shape is kept
    assert "1 of 1 clips peaked above 0.99 (up to 1.60) and were scaled down" in writer.notes()[0]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    WavWriter(tmp_path).write_on_batch_end(None, None, prediction(0.5), None, None, 0, 0)
    first = (tmp_path / "clip.wav").read_bytes()
    again = WavWriter(tmp_path)
    again.write_on_batch_end(None, None, prediction(0.3), None, None, 0, 0)
    assert (tmp_path / "clip.wav").read_bytes() == first and again.written == [tmp_path / "clip-1.wav"]
    assert "1 files already existed and were kept; the new clips went to clip-1.wav" in again.notes()[0]
    forced = WavWriter(tmp_path, overwrite=True)
    forced.write_on_batch_end(None, None, prediction(0.3), None, None, 0, 0)
    assert forced.written == [tmp_path / "clip.wav"] and (tmp_path / "clip.wav").read_bytes() != first


@pytest.mark.slow
def test_generate_twice_keeps_both_and_creates_no_run_folder(foleygenex_fit, tmp_path, monkeypatch, capsys):
    from cli_support import FOLEYGENEX_TINY

    _, ckpt = foleygenex_fit
    monkeypatch.chdir(tmp_path)
    args = ["generate", "--config", FOLEYGENEX_TINY, f"--ckpt_path={ckpt}", "--output_dir=out",
            "--caption=a bell rings", "--num_steps=2", "--trainer.enable_progress_bar=false"]
    main(args)
    first = {p.name for p in (tmp_path / "out").iterdir()}
    main(args)
    second = {p.name for p in (tmp_path / "out").iterdir()} - first
    assert first and second == {name.replace(".wav", "-1.wav") for name in first}
    assert not (tmp_path / "lightning_logs").exists() and not list(tmp_path.glob("*.json"))
    assert "already existed and were kept" in capsys.readouterr().out
