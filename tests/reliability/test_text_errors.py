"""Item 7: text errors name the manifest line or the item: non-UTF-8 manifest lines, and transcripts
longer than OmniSonic's SpeechT5 encoder takes (checked when the row is loaded, not at the step)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from avgen.codecs import MelCodec
from avgen.conditioning import CLIPVisionEncoder
from avgen.conditioning.speech import SpeechTranscriptEncoder
from avgen.conditioning.t5 import T5TextEncoder
from avgen.data import ManifestDataModule, ManifestDataset, read_manifest
from avgen.data.report import DataReportCallback, events_of
from avgen.models.omnisonic import OmniSonic


def test_non_utf8_manifest_line_is_named_and_follows_on_error(corpus):
    m = corpus.dir / "latin1.jsonl"
    m.write_bytes(b'{"id": "a", "audio": "good.wav"}\n'
                  b'{"id": "caf\xe9", "audio": "good.wav", "caption": "caf\xe9 noise"}\n'
                  b'{"id": "b", "audio": "good.wav"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl, line 2: not UTF-8 text \(byte 0xe9 at column 12\)\. Fix:"):
        read_manifest(m)
    with pytest.raises(ValueError, match=r"line 2: not UTF-8"):
        ManifestDataset(m, on_error="raise")
    ds = ManifestDataset(m, on_error="skip", duration=0.5, max_skip_fraction=0.5)
    assert [r.id for r in ds.rows] == ["a", "b"]
    assert ds.setup_events() == [("skipped", "line 2", "latin1.jsonl line 2: not UTF-8 text (byte 0xe9 at column 12)")]


@pytest.fixture(scope="module")
def omnisonic() -> OmniSonic:
    torch.manual_seed(0)
    return OmniSonic(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        T5TextEncoder("avgen-tiny-t5", max_length=40), SpeechTranscriptEncoder("avgen-tiny-speecht5"),
        CLIPVisionEncoder("avgen-tiny-clip"), hidden_dim=32, depth=2, num_heads=4, gate_hidden_dim=16, duration=1.0,
    )


def test_overlong_transcript_is_caught_when_the_row_loads_naming_it(corpus, omnisonic):
    long = "see you soon " * 40  # 520 characters: over SpeechT5's 450 text positions
    with pytest.raises(ValueError, match="more than 450 tokens"):  # what the training step would hit
        omnisonic.speech_encoder.tokenize([long])
    rows = [{"id": f"ok{i}", "audio": "good.wav", "transcript": "hello"} for i in range(3)]
    rows.insert(1, {"id": "talky", "audio": "good.wav", "transcript": long})
    m = corpus.manifest("m.jsonl", rows)
    callback = DataReportCallback()
    strict = ManifestDataModule(train_manifest=str(m), batch_size=4, duration=0.5, on_error="raise", shuffle=False)
    strict.setup("fit")
    callback.setup(SimpleNamespace(datamodule=strict), omnisonic, "fit")  # what Trainer.fit does
    with pytest.raises(ValueError, match=r"line 2 \(id 'talky'\).*transcript has 521 tokens, more than the SpeechT5"):
        next(iter(strict.train_dataloader()))
    lenient = ManifestDataModule(train_manifest=str(m), batch_size=4, duration=0.5, shuffle=False,
                                 max_skip_fraction=0.25)
    lenient.setup("fit")
    callback.setup(SimpleNamespace(datamodule=lenient), omnisonic, "fit")
    batch = next(iter(lenient.train_dataloader()))
    assert batch.ids == ["ok0", "ok1", "ok1", "ok2"]  # the bad row replaced by the next usable one
    omnisonic.speech_encoder.tokenize(batch.transcript)  # the batch the model gets is valid
    assert ("skipped", "talky") in {e[:2] for meta in batch.meta for e in events_of(meta)}
