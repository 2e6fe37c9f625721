"""`avgen evaluate`: a folder of generated files from any system scored against a datamodule's samples."""

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.eval.reference_data import reference_audio

DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args: {batch_size: 2, num_workers: 0, seed: 4, predict_size: 3, duration: 1.0, sample_rate: 16000,
              semantic_fps: 8.0, sync_fps: 25.0, semantic_size: 32, sync_size: 32, scenarios: [vta]}
"""


def test_evaluate_scores_a_folder_of_wavs_and_mp4s(tmp_path):
    from avgen.cli.compare import CompareError, evaluate
    from avgen.data.media import write_mp4

    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    truth = reference_audio(config)
    ids = sorted(truth)
    # "generated" = the ground truth itself: FD ~ 0 and perfect onset scores; one sample as an mp4 (AAC)
    same = tmp_path / "same"
    same.mkdir()
    for sample_id in ids[:2]:
        sf.write(str(same / f"{sample_id}.wav"), truth[sample_id], 16000, subtype="FLOAT")
    write_mp4(same / f"{ids[2]}.mp4", torch.zeros(25, 3, 32, 32), 25.0, audio=truth[ids[2]], sample_rate=16000)
    (same / "unrelated.wav").write_bytes(b"")  # matches no sample: reported, not read
    result = evaluate(["--generated", str(same), "--reference", str(config), "--metrics", "fd_melstats", "onset_acc",
                       "onset_ap", "onset_offset", "fd_passt"])
    row = result["row"]
    assert row["clips"] == 3 and row["failed"] == 0
    assert row["onset_acc"] == 1.0 and row["onset_ap"] == pytest.approx(1.0)
    assert abs(row["fd_melstats"]) < 1.0  # AAC coding of one clip moves it a little
    assert "unrelated" in result["not_comparable"][0] and "fd_passt" in result["skipped"]
    results = (same / "evaluation" / "results.md").read_text()
    assert "fd_melstats ↓" in results and "Skipped metrics" in results

    # the ground truth 0.3 s late (beyond the 0.1 s onset tolerance), one file missing: worse sync, the
    # missing sample named
    late = tmp_path / "late"
    late.mkdir()
    for sample_id in ids[:2]:
        x = truth[sample_id]
        sf.write(str(late / f"{sample_id}.wav"), np.concatenate([np.zeros(4800, np.float32), x])[: x.size], 16000)
    (late / f"{ids[2]}.mp4").write_bytes(b"not a video")  # unreadable: that sample is skipped and named, not a crash
    other = evaluate(["--generated", str(late), "--reference", str(config), "--metrics", "fd_melstats", "onset_ap"])
    assert other["row"]["clips"] == 2 and other["row"]["fd_melstats"] > row["fd_melstats"]
    assert other["row"]["onset_ap"] < 0.5
    assert ids[2] in other["not_comparable"][0] and "cannot be read" in other["not_comparable"][0]
    with pytest.raises(CompareError, match="not a folder"):
        evaluate(["--generated", str(tmp_path / "none"), "--reference", str(config)])


def test_a_cache_of_other_data_is_cleared(tmp_path):
    import json

    from avgen.cli.compare import evaluate

    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    generated = tmp_path / "gen"
    generated.mkdir()
    first = evaluate(["--generated", str(generated), "--reference", str(config), "--metrics", "onset_acc"])
    second = evaluate(["--generated", str(generated), "--reference", str(config), "--metrics", "onset_acc",
                       "--data_override", "init_args.seed=5", "--data_override", "init_args.predict_size=2"])
    samples = json.loads((generated / "evaluation" / "reference" / "samples.json").read_text())
    assert len(second["ids"]) == 2 and sorted(samples) == sorted(second["ids"]) != sorted(first["ids"])
    assert second["row"]["clips"] == 0 and "2 of 2 samples have no readable file" in second["not_comparable"][0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_evaluate_with_a_local_clap_scores_clap_a_and_clap_t(tmp_path):
    import importlib.util
    from pathlib import Path

    from avgen.cli.compare import build_datamodule, evaluate
    from avgen.cli.generate import safe_name
    from avgen.eval import get_backend

    spec = importlib.util.spec_from_file_location("_metrics_tests", Path(__file__).with_name("test_metrics.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers._tiny_clap(tmp_path)
    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    dm = build_datamodule(str(config))
    dm.setup("predict")
    generated = tmp_path / "gen"
    generated.mkdir()
    captions, audio = {}, {}
    for batch in dm.predict_dataloader():
        for i, sample_id in enumerate(batch.ids):
            audio[safe_name(sample_id)] = batch.audio[i, : int(batch.audio_lengths[i])]
            captions[safe_name(sample_id)] = batch.caption[i]
            sf.write(str(generated / f"{safe_name(sample_id)}.wav"), audio[safe_name(sample_id)].numpy(), 16000,
                     subtype="FLOAT")
    result = evaluate(["--generated", str(generated), "--reference", str(config), "--clap", str(tmp_path / "clap"),
                       "--metrics", "clap_a", "clap_t"])
    # the generated files are the ground truth: CLAP_A is 1; CLAP_T is the mean caption-audio cosine
    assert result["row"]["clap_a"] == pytest.approx(1.0, abs=1e-5)
    backend = get_backend("clap", str(tmp_path / "clap"))
    ids = sorted(audio)
    expected = (backend.embed([audio[i] for i in ids], 16000) * backend.embed_text([captions[i] for i in ids])).sum(-1).mean()
    assert result["row"]["clap_t"] == pytest.approx(float(expected), abs=1e-5)
