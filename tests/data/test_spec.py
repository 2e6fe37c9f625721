"""MediaSpec: one declaration of the media options, reported by every datamodule and read by the CLI."""

from __future__ import annotations

import pytest

from avgen.data import BalancedDataModule, MediaSpec, ToyWorldDataModule
from avgen.data.composite import MEDIA_OPTIONS, media_option


def test_toyworld_and_composite_datamodules_report_their_spec():
    first = ToyWorldDataModule(duration=1.5, sample_rate=22050, semantic_fps=4.0, sync_size=48, scenarios=["vta"],
                               video_fps=12.0, video_size=16)
    second = ToyWorldDataModule(duration=1.5, sample_rate=22050, semantic_fps=4.0, sync_size=48, scenarios=["tta"],
                                video_fps=12.0, video_size=16)
    expected = MediaSpec(duration=1.5, sample_rate=22050, semantic_fps=4.0, sync_fps=25.0, semantic_size=64,
                         sync_size=48, video_fps=12.0, video_size=16)
    assert first.media == expected
    balanced = BalancedDataModule(first, second, batch_size=4)
    assert balanced.media == expected and balanced.sample_rate == 22050
    assert MEDIA_OPTIONS == MediaSpec.fields()
    assert {name: media_option(balanced, name) for name in MEDIA_OPTIONS} == expected.as_dict()
    # A longer predict split renders another duration, the spec of the training data stays.
    first.predict_duration = 3.0
    assert first.world_for("predict").media == expected.replace(duration=3.0)


def test_invalid_specs_name_the_field():
    with pytest.raises(ValueError, match="MediaSpec.duration"):
        MediaSpec(duration=0)
    with pytest.raises(ValueError, match="MediaSpec.video_fps"):
        MediaSpec(video_fps=-1.0)
    assert MediaSpec(video_size=[24, 32]).video_size == (24, 32)
