"""The metric registry: a metric registered by a user module is scored by `avgen evaluate` with the videos that
go with the audio, cached per sample (a rerun computes nothing), and a metric whose back-end is missing is skipped."""

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.eval.test_evaluate import DATA
from tests.eval.reference_data import reference_audio


@pytest.fixture
def probe_metrics():
    from avgen.eval.backends import BackendUnavailable
    from avgen.eval.registry import BACKENDS, METRICS, BackendSpec, MetricSpec, register_backend, register_metric

    seen = {"computed": [], "videos": {}, "generated_videos": set()}

    def mean_brightness(ctx):
        seen["generated_videos"] = set(ctx.generated_videos)

        def brightness(sample_id):
            seen["computed"].append(sample_id)
            frames, fps = ctx.video(sample_id)
            seen["videos"][sample_id] = (frames.shape, fps)
            return np.array([frames.mean() / 255.0])

        values = ctx.cached("generated", "probe-brightness", [i for i in ctx.ids if i in ctx.videos], brightness)
        return float(np.mean([v[0] for v in values.values()]))

    def missing(value):
        raise BackendUnavailable("probe_weights", "no probe weights given", "--probe_weights PATH")

    register_metric(MetricSpec("probe_brightness", True, "mean brightness of the video with the audio", None,
                               mean_brightness, needs_video=True))
    register_backend(BackendSpec("probe_weights", missing, "weights of the probe"))
    register_metric(MetricSpec("probe_weighted", True, "needs weights", "probe_weights", lambda ctx: 1.0))
    yield seen
    for name in ("probe_brightness", "probe_weighted"):
        METRICS.pop(name, None)
    BACKENDS.pop("probe_weights", None)


def test_a_registered_metric_sees_the_videos_and_caches(tmp_path, probe_metrics):
    from avgen.cli.compare import evaluate, evaluate_parser
    from avgen.data.media import write_mp4

    config = tmp_path / "data.yaml"
    config.write_text(DATA)
    truth = reference_audio(config)
    ids = sorted(truth)
    folder = tmp_path / "generated"
    folder.mkdir()
    for sample_id in ids[:2]:
        sf.write(str(folder / f"{sample_id}.wav"), truth[sample_id], 16000, subtype="FLOAT")
    # a joint system's output: a white video with the audio; the others go with the sample's own (ToyWorld) video
    write_mp4(folder / f"{ids[2]}.mp4", torch.ones(10, 3, 32, 32), 10.0, audio=truth[ids[2]], sample_rate=16000)

    assert "--probe_weights" in evaluate_parser().format_help()  # a registered back-end gets its weights flag
    args = ["--generated", str(folder), "--reference", str(config), "--metrics", "probe_brightness", "probe_weighted"]
    result = evaluate(args)
    seen = probe_metrics
    assert seen["generated_videos"] == {ids[2]}
    assert sorted(seen["videos"]) == ids
    assert seen["videos"][ids[2]][1] == pytest.approx(10.0)  # the generated video at its own rate
    assert seen["videos"][ids[0]][1] == pytest.approx(25.0)  # the sample's video: the sync stream's 25 fps
    assert seen["videos"][ids[0]][0][1:] == (32, 32, 3)
    assert 0.0 < result["row"]["probe_brightness"] < 1.0
    assert "probe_weighted" in result["skipped"] and "--probe_weights PATH" in result["skipped"]["probe_weighted"]

    seen["computed"].clear()
    again = evaluate(args)  # everything cached: nothing recomputed, the same score
    assert seen["computed"] == [] and again["row"]["probe_brightness"] == result["row"]["probe_brightness"]
