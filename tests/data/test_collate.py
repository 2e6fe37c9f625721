"""collate: padding, lengths and presence flags."""

import pytest
import torch

from avgen.data import Sample, collate, length_mask


def test_collate_pads_and_flags():
    a = Sample(id="a", sample_rate=8, audio=torch.ones(10), audio_length=6, caption="x",
               video_sync=torch.rand(4, 3, 2, 2), reference_audio=torch.ones(3))
    b = Sample(id="b", sample_rate=8, audio=torch.full((7,), 2.0), transcript="hi there")
    batch = collate([a, b])
    assert batch.audio.shape == (2, 10)
    assert batch.audio_lengths.tolist() == [6, 7]  # a: its declared valid length; b: its tensor length
    assert torch.equal(batch.audio[1, 7:], torch.zeros(3)) and torch.equal(batch.audio[1, :7], torch.full((7,), 2.0))
    assert batch.has_video.tolist() == [True, False]
    assert torch.equal(batch.video_sync[0], a.video_sync) and batch.video_sync[1].abs().sum() == 0
    assert batch.video_semantic is None  # absent for the whole batch
    assert batch.has_reference_audio.tolist() == [True, False] and batch.reference_audio_lengths.tolist() == [3, 0]
    assert batch.caption == ["x", ""] and batch.has_caption.tolist() == [True, False]
    assert batch.transcript == ["", "hi there"] and batch.has_transcript.tolist() == [False, True]
    assert batch.has_lyrics.tolist() == [False, False]
    mask = length_mask(batch.audio_lengths, 10)
    assert mask.sum(1).tolist() == [6, 7]
    sub = batch.select([1])
    assert sub.ids == ["b"] and sub.audio.shape == (1, 10)


def test_collate_rejects_mixed_rates_and_frame_sizes():
    with pytest.raises(ValueError, match="mix sample rates"):
        collate([Sample(id="a", sample_rate=8, audio=torch.ones(2)), Sample(id="b", sample_rate=16, audio=torch.ones(2))])
    with pytest.raises(ValueError, match="'b'.*trailing shape"):
        collate([Sample(id="a", sample_rate=8, video_sync=torch.rand(2, 3, 4, 4)),
                 Sample(id="b", sample_rate=8, video_sync=torch.rand(2, 3, 8, 8))])
