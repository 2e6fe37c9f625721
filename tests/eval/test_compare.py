"""`avgen compare` end to end: two tiny checkpoints of different papers on ToyWorld, resume, bad files."""

import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import linalg


DATA = """\
data:
  class_path: avgen.data.ToyWorldDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    seed: 3
    train_size: 2
    val_size: 2
    test_size: 2
    predict_size: 3
    duration: 1.0
    sample_rate: 16000
    semantic_fps: 8.0
    sync_fps: 25.0
    semantic_size: 32
    sync_size: 32
    scenarios: [vta]
"""


@pytest.fixture(scope="module")
def checkpoints(foleygenex_fit, omnisonic_fit, tmp_path_factory):
    """(FoleyGenEx and OmniSonic last.ckpt of the session's tiny runs (tests/conftest.py), data config)."""
    data = tmp_path_factory.mktemp("compare_data") / "data.yaml"
    data.write_text(DATA)
    return foleygenex_fit[1], omnisonic_fit[1], data


def _fd(x, y):
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        eye = np.eye(len(s1)) * 1e-6
        root = linalg.sqrtm((s1 + eye) @ (s2 + eye))
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root.real))


def _args(checkpoints, out):
    foleygenex, omnisonic, data = checkpoints
    return ["compare", "--checkpoints", str(foleygenex), str(omnisonic), "--data", str(data), "--output_dir", str(out),
            "--options", "all:num_steps=2", "--seed", "5"]


@pytest.mark.slow
def test_compare_two_papers_through_the_command_then_resume(checkpoints, tmp_path, monkeypatch, capsys):
    from avgen.cli import main
    from avgen.cli.compare import compare
    from avgen.eval import MelStatsBackend
    from avgen.models.base import FlowMatchingModule

    out = tmp_path / "cmp"
    main(_args(checkpoints, out))  # `avgen compare ...` (tests/test_cli.py starts the console entries themselves)
    stdout = capsys.readouterr().out
    assert "foleygenex (FoleyGenEx): 3/3 clips" in stdout and "omnisonic (OmniSonic): 3/3 clips" in stdout
    rows = {r["model"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"foleygenex", "omnisonic"}
    # NFE per clip = Euler steps x guidance branches batched per forward: FoleyGenEx CFG has 2 branches,
    # OmniSonic's multi-condition guidance 5 (Eq. 9), with --options all:num_steps=2.
    assert float(rows["foleygenex"]["nfe_per_clip"]) == 4.0
    assert float(rows["omnisonic"]["nfe_per_clip"]) == 10.0
    assert float(rows["foleygenex"]["compute_s_per_audio_s"]) > 0
    # FD over the cached wavs, recomputed independently (numpy cov + scipy sqrtm)
    backend = MelStatsBackend()

    def embed(directory):
        wavs = [torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in sorted(directory.glob("*.wav"))]
        return backend.embed(wavs, 16000).double().numpy()

    ref = embed(out / "reference" / "audio")
    for name, row in rows.items():
        assert float(row["fd_melstats"]) == pytest.approx(_fd(embed(out / "models" / name / "audio"), ref), rel=1e-4)
        assert 0.0 <= float(row["onset_acc"]) <= 1.0 and row["event_class_acc"] != ""
    table = (out / "results.md").read_text()
    assert "fd_melstats ↓" in table and "onset_ap ↑" in table
    assert "`fd_passt`: PaSST" in table and "fix:" in table and "`clap_a`: no CLAP weights given; fix: --clap" in table
    assert (out / "plots" / "spectrograms.png").stat().st_size > 0 and (out / "plots" / "fd_melstats.png").is_file()
    with capsys.disabled():
        print("\n" + table)

    # An interruption before OmniSonic's last clip was written: the rerun generates that clip only
    # (one batch of one model) and embeds only it; everything else comes from the cache.
    import json

    state_path = out / "models" / "omnisonic" / "generation.json"
    state = json.loads(state_path.read_text())
    last_id = sorted(state["clips"])[-1]
    del state["clips"][last_id]
    (out / "models" / "omnisonic" / "audio" / f"{last_id}.wav").unlink()
    state_path.write_text(json.dumps(state))
    generated, embedded = [], []
    generate, embed_resampled = FlowMatchingModule.generate, MelStatsBackend.embed_resampled

    def counted_generate(self, batch, *args, **kwargs):
        generated.append((type(self).__name__, list(batch.ids)))
        return generate(self, batch, *args, **kwargs)

    def counted_embed(self, waveforms):
        embedded.append(len(waveforms))
        return embed_resampled(self, waveforms)

    with monkeypatch.context() as m:
        m.setattr(FlowMatchingModule, "generate", counted_generate)
        m.setattr(MelStatsBackend, "embed_resampled", counted_embed)
        resumed = compare(_args(checkpoints, out)[1:])
    assert len(generated) == 1 and generated[0][0] == "OmniSonic" and last_id in generated[0][1]
    assert embedded == [1]
    rows_again = {r["model"]: r for r in resumed["rows"]}
    assert rows_again["omnisonic"]["clips"] == 3
    assert rows_again["foleygenex"]["fd_melstats"] == pytest.approx(float(rows["foleygenex"]["fd_melstats"]))


def test_compare_reports_samples_a_model_cannot_generate(checkpoints, tmp_path, monkeypatch):
    from avgen.cli.compare import compare
    from avgen.models.omnisonic import OmniSonic

    def cannot(self, batch, *args, **kwargs):
        raise ValueError("OmniSonic cannot generate this task")

    monkeypatch.setattr(OmniSonic, "generate", cannot)
    _, omnisonic, data = checkpoints
    result = compare(["--checkpoints", str(omnisonic), "--data", str(data), "--output_dir", str(tmp_path / "nc"),
                      "--max_batches", "1", "--metrics", "onset_acc", "fd_passt"])
    (row,) = result["rows"]
    assert row["clips"] == 0 and row["failed"] == 2 and np.isnan(row["onset_acc"]) and np.isnan(row["nfe_per_clip"])
    table = (tmp_path / "nc" / "results.md").read_text()
    assert "omnisonic: 2 of 2 samples not generated" in table and "OmniSonic cannot generate this task" in table
    assert "| n/a |" in table  # never a number for what was not generated
    assert set(result["skipped"]) == {"fd_passt"}


def test_compare_refuses_unreadable_foreign_and_wrong_paper_checkpoints(checkpoints, tmp_path):
    from avgen.cli.compare import CompareError, compare

    foleygenex, omnisonic, data = checkpoints
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    wrong = tmp_path / "wrong_paper.ckpt"
    state = torch.load(omnisonic, map_location="cpu", weights_only=True)
    state["avgen"]["model_class"] = "avgen.models.foleygenex.module.FoleyGenEx"
    torch.save(state, wrong)
    for path, words in ((corrupt, "cannot be read"), (foreign, "no 'state_dict'"), (wrong, "cannot rebuild"),
                        (tmp_path / "missing.ckpt", "does not exist")):
        with pytest.raises(CompareError, match=words) as err:
            compare(["--checkpoints", str(path), str(foleygenex), "--data", str(data), "--output_dir", str(tmp_path / "x")])
        assert str(path) in str(err.value)
    with pytest.raises(CompareError, match="unknown"):
        compare(["--checkpoints", str(foleygenex), "--data", str(data), "--output_dir", str(tmp_path / "x"), "--metrics", "nope"])
    with pytest.raises(CompareError, match="no sampling option"):
        compare(["--checkpoints", str(foleygenex), "--data", str(data), "--output_dir", str(tmp_path / "x"),
                 "--options", "0:not_an_option=1"])
