"""Item 1: a batch whose every sample fails never reaches the model; a bad row counts once; too many
bad rows stop the run naming them."""

from __future__ import annotations

import json
import logging

import pytest

from avgen.data import ManifestDataModule
from avgen.data.report import DataReportCallback


def test_fit_on_an_all_bad_split_stops_naming_the_rows(corpus, helpers, tmp_path):
    m = corpus.manifest("bad.jsonl", [{"id": f"nan{i}", "audio": f"nan{i}.wav"} for i in range(4)])
    dm = ManifestDataModule(train_manifest=str(m), batch_size=4, duration=0.5)  # default max_skip_fraction 0.1
    expected = (r"1 of 4 rows could not be used, more than max_skip_fraction=0\.1 allows; "
                r"first bad: line \d \(id 'nan\d'\): .*NaN.*raise max_skip_fraction")
    with helpers.time_limit(60), pytest.raises(ValueError, match=expected):
        helpers.trainer(tmp_path, max_steps=5).fit(helpers.Probe(), dm)  # used to loop on empty batches
    dm = ManifestDataModule(train_manifest=str(m), batch_size=4, duration=0.5, max_skip_fraction=1.0)
    with helpers.time_limit(60), pytest.raises(ValueError, match=r"none of the 4 rows could be loaded.*id 'nan\d'.*NaN"):
        helpers.trainer(tmp_path, max_steps=5).fit(helpers.Probe(), dm)


def test_evaluation_batches_are_never_empty(corpus, helpers):
    """What `avgen generate` and validation iterate: an all-bad predict split stops with the rows named
    (it used to yield ``None``, which crashed generation with an AttributeError); a batch whose rows all
    fail is filled with the next usable row, marked as a filler, so it is never empty."""
    m = corpus.manifest("bad.jsonl", [{"id": f"nan{i}", "audio": f"nan{i}.wav"} for i in range(4)])
    dm = ManifestDataModule(predict_manifest=str(m), batch_size=4, duration=0.5, max_skip_fraction=1.0)
    with helpers.time_limit(60), pytest.raises(ValueError, match=r"none of the 4 rows could be loaded.*nan0"):
        next(iter(dm.predict_dataloader()))
    rows = [{"id": f"nan{i}", "audio": f"nan{i}.wav"} for i in range(2)] + [
        {"id": f"ok{i}", "audio": "good.wav"} for i in range(2)]
    m = corpus.manifest("half.jsonl", rows)
    dm = ManifestDataModule(predict_manifest=str(m), batch_size=2, duration=0.5, max_skip_fraction=0.5)
    batches = list(dm.predict_dataloader())
    assert [b.ids for b in batches] == [["ok0"], ["ok0", "ok1"]]
    assert batches[0].meta[0]["filler"] and not batches[1].meta[0].get("filler")
    events = {e[:2] for e in batches[0].meta[0]["data_events"]}
    assert {("skipped", "nan0"), ("skipped", "nan1"), ("filler", "ok0")} <= events


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_bad_row_is_counted_once_and_batches_stay_full(corpus, helpers, tmp_path, caplog, num_workers):
    rows = [{"id": f"ok{i}", "audio": "good.wav"} for i in range(7)] + [{"id": "nan0", "audio": "nan0.wav"}]
    m = corpus.manifest("m.jsonl", rows)
    dm = ManifestDataModule(train_manifest=str(m), batch_size=4, duration=0.5, num_workers=num_workers,
                            max_skip_fraction=0.2)
    probe, report = helpers.Probe(), DataReportCallback()
    with caplog.at_level(logging.WARNING), helpers.time_limit(120):
        helpers.trainer(tmp_path, max_epochs=3, callbacks=[report]).fit(probe, dm)
    assert len(probe.batches) == 6 and all(len(ids) == 4 for ids in probe.batches)  # substituted, never short
    assert all("nan0" not in ids for ids in probe.batches)
    assert report.report.count("skipped") == 1  # three epochs (and two workers): one row, counted once
    assert list(report.report.items["skipped"]) == ["nan0"]
    if num_workers == 0:  # worker processes log to their own stderr
        assert sum("id 'nan0'" in r.getMessage() for r in caplog.records if r.name == "avgen.data.manifest") == 1
    summary = json.loads((tmp_path / "data_report.json").read_text())
    assert summary["counts"] == {"skipped": 1} and "NaN" in summary["items"]["skipped"]["nan0"]
