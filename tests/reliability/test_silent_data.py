"""Item 6: data problems that used to pass silently are now errors (where the sample would be wrong)
or counted warnings naming the item, and the end-of-fit report lists them."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
from avgen.codecs.mel import MelCodec
from avgen.data import ManifestDataModule, ManifestDataset
from avgen.data.media import MediaError, load_audio
from avgen.data.report import DataReportCallback, events_of, install_text_spec, text_spec
from avgen.models.foleygenex import FoleyGenEx


def test_a_half_copied_wav_is_rejected_not_shortened(corpus):
    with pytest.raises(MediaError, match=r"half\.wav: truncated audio"):
        load_audio(corpus.dir / "half.wav", 16000, duration=0.5)
    m = corpus.manifest("m.jsonl", [{"id": "whole", "audio": "whole.wav"}, {"id": "half", "audio": "half.wav"}])
    with pytest.raises(ValueError, match=r"line 2 \(id 'half'\).*truncated audio.*Fix:"):
        ManifestDataset(m, on_error="raise", duration=0.5)
    ds = ManifestDataset(m, on_error="skip", duration=0.5, max_skip_fraction=0.5)
    assert [r.id for r in ds.rows] == ["whole"] and ds.setup_events()[0][:2] == ("skipped", "half")


def test_a_much_shorter_video_is_a_bad_row_and_a_slightly_shorter_one_a_counted_warning(corpus, caplog):
    m = corpus.manifest("m.jsonl", [{"id": "short", "audio": "long.wav", "video": "short.mp4"},
                                    {"id": "nearly", "audio": "long.wav", "video": "nearly.mp4"}])
    ds = ManifestDataset(m, on_error="raise", duration=1.0, semantic_size=32, sync_size=32)
    with pytest.raises(ValueError, match=r"id 'short'.*video ends at 0\.20 s but its audio runs to 1\.00 s"):
        ds[0]
    with caplog.at_level(logging.WARNING, logger="avgen.data.manifest"):
        nearly = ds[1]
    assert ("video_padded", "nearly") in {e[:2] for e in events_of(nearly.meta)}
    assert "'nearly'" in caplog.text and "repeating its last frame" in caplog.text
    assert torch.equal(nearly.video_sync[-1], nearly.video_sync[-2])  # padded, as reported


def test_stereo_is_reported_as_downmixed(corpus):
    m = corpus.manifest("m.jsonl", [{"id": "st", "audio": "stereo.wav"}])
    sample = ManifestDataset(m, duration=0.5)[0]
    assert ("downmixed", "st", "2 channels averaged") in events_of(sample.meta)


@pytest.fixture(scope="module")
def foleygenex() -> FoleyGenEx:
    torch.manual_seed(0)
    return FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"), CLIPTextEncoder("avgen-tiny-clip", context_length=8),
        SyncEncoder(**tiny_sync_kwargs()), hidden_dim=32, num_heads=2, num_joint_blocks=1, num_single_blocks=1,
        duration=1.0,
    )


def test_cut_captions_and_ignored_transcripts_are_counted_per_item(corpus, foleygenex):
    spec = text_spec(foleygenex)
    assert spec.consumed == ("caption",) and spec.limits["caption"].max_tokens == 8
    long = "a dog barks loudly near a busy road at night"
    assert spec.limits["caption"].count(long) > 8  # longer than the context ...
    assert foleygenex.text_encoder.tokenize([long])[0, -1] != 0  # ... which the encoder fills: the caption is cut
    m = corpus.manifest("m.jsonl", [{"id": "cap", "audio": "good.wav", "caption": long},
                                    {"id": "tr", "audio": "good.wav", "caption": "a bell", "transcript": "hello"},
                                    {"id": "fine", "audio": "good.wav", "caption": "a bell"}])
    ds = ManifestDataset(m, duration=0.5)
    ds.text_spec = spec
    events = [e[:2] for i in range(3) for e in events_of(ds[i].meta)]
    assert events == [("text_cut:caption", "cap"), ("ignored:transcript", "tr")]


def test_end_of_fit_report_lists_what_was_skipped_padded_cut_and_ignored(corpus, helpers, foleygenex, tmp_path):
    rows = [
        {"id": "ok", "audio": "long.wav", "video": "full.mp4", "caption": "a bell"},
        {"id": "stereo", "audio": "stereo.wav", "caption": "a bell"},
        {"id": "nearly", "audio": "long.wav", "video": "nearly.mp4", "caption": "a bell"},
        {"id": "half", "audio": "half.wav"},
        {"id": "cap", "audio": "long.wav", "caption": "a dog barks loudly near a busy road at night"},
        {"id": "tr", "audio": "long.wav", "caption": "a bell", "transcript": "hello there"},
    ]
    m = corpus.manifest("m.jsonl", rows)
    dm = ManifestDataModule(train_manifest=str(m), batch_size=5, duration=1.0, semantic_size=32, sync_size=32,
                            max_skip_fraction=0.2, shuffle=False)
    probe = helpers.Probe()
    probe.text_encoder = foleygenex.text_encoder  # a model with FoleyGenEx's caption encoder
    with helpers.time_limit(120):
        helpers.trainer(tmp_path, max_epochs=2, callbacks=[DataReportCallback()]).fit(probe, dm)
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["counts"] == {"skipped": 1, "downmixed": 1, "video_padded": 1, "text_cut:caption": 1,
                                "ignored:transcript": 1}
    assert list(report["items"]["skipped"]) == ["half"] and "truncated" in report["items"]["skipped"]["half"]
    assert list(report["items"]["video_padded"]) == ["nearly"]


def test_install_reaches_datasets_built_before_and_after(corpus, foleygenex):
    m = corpus.manifest("m.jsonl", [{"id": "a", "audio": "good.wav"}])
    dm = ManifestDataModule(train_manifest=str(m), val_manifest=str(m), duration=0.5)
    dm.setup("validate")
    assert install_text_spec(dm, text_spec(foleygenex)) == 1
    assert dm.dataset("val").text_spec is dm.text_spec and dm.dataset("train").text_spec is dm.text_spec
