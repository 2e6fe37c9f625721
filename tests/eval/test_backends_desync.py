"""DeSync protocol (av-benchmark's Synchformer evaluation) against a transcription of its numbers."""

import numpy as np
import pytest
import torch

from avgen.eval.desync import SYNCHFORMER, DeSync, crop_starts, offset_classes, predicted_offsets


def test_synchformer_grid_and_crops_follow_the_protocol():
    assert SYNCHFORMER.crop_seconds == pytest.approx(4.8) and SYNCHFORMER.crop_samples == 76800
    np.testing.assert_allclose(offset_classes().numpy(), np.round(np.arange(-2.0, 2.0001, 0.2), 10), atol=1e-12)
    # 8 s at 25 fps: 24 segments of 16 frames (stride 8); crops = segments 0..13 and 10..23
    assert crop_starts(200) == [(0, 0), (80, 80 * 640)]
    assert crop_starts(120) == [(0, 0), (0, 0)]  # exactly 4.8 s: both crops coincide
    assert crop_starts(127) == [(0, 0), (0, 0)] and crop_starts(128) == [(0, 0), (8, 5120)]
    with pytest.raises(ValueError, match="at least 4.80 s"):
        crop_starts(119)


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_desync_matches_numpy_and_accumulates():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(9, 21))
    grid = np.linspace(-2, 2, 21)
    expected = np.abs(grid[logits.argmax(1)]).mean()
    metric = DeSync()
    metric.update(torch.tensor(logits[:4]))
    metric.update(torch.tensor(logits[4:]))
    assert float(metric.compute()) == pytest.approx(expected)
    one_hot = torch.full((2, 21), -5.0)
    one_hot[0, 10], one_hot[1, 0] = 5.0, 5.0  # offset 0 and -2 s
    assert predicted_offsets(one_hot).tolist() == [0.0, -2.0]
    with pytest.raises(ValueError, match=r"\(N, 21\)"):
        DeSync().update(torch.zeros(2, 20))
    with pytest.raises(ValueError, match="no crops"):
        DeSync().compute()
