"""The ground-truth audio of a datamodule config's predict split, by sample id: what `avgen evaluate` compares a folder
of generated files against (shared by the evaluate / back-end tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def reference_audio(config: str | Path) -> dict[str, np.ndarray]:
    """{safe sample id: (S,) float32 ground-truth audio} of the predict split of ``config``'s datamodule."""
    from avgen.cli.compare import build_datamodule
    from avgen.cli.generate import safe_name

    dm = build_datamodule(str(config))
    dm.setup("predict")
    truth = {}
    for batch in dm.predict_dataloader():
        for i, sample_id in enumerate(batch.ids):
            truth[safe_name(sample_id)] = batch.audio[i, : int(batch.audio_lengths[i])].numpy()
    return truth
