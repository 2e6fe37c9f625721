"""Oracle metrics: proven on independent synthetic signals and on ToyWorld's own ground truth."""

import math

import numpy as np
import pytest
import torch

from avgen.data.toyworld import CLASSES, EnvSource, ToyWorld, render_env
from avgen.eval import classify_event, detect_onsets, event_class_accuracy, onset_offset

SR = 16000


def bursts(times, seconds=2.0, seed=0):
    """Decaying noise bursts starting exactly at ``times`` (independent of ToyWorld)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR))
    n = int(0.1 * SR)
    for t in times:
        k = int(t * SR)
        x[k : k + n] += 0.5 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * SR))
    return x


@pytest.fixture(scope="module")
def world():
    return ToyWorld(speech="formant")


def test_detect_onsets_on_known_bursts():
    truth = [0.3, 0.9, 1.45]
    found = detect_onsets(bursts(truth), SR)
    assert len(found) == 3
    assert max(abs(a - b) for a, b in zip(found, truth)) < 0.01
    assert detect_onsets(np.zeros(SR), SR) == []
    assert detect_onsets(torch.from_numpy(bursts(truth)).float(), SR) == pytest.approx(found, abs=1e-6)


def test_onset_offset_matches_direct_formula():
    x = bursts([0.5])
    detected = detect_onsets(x, SR)[0]
    truth = [0.45, 0.6, 1.8]
    expected = (abs(0.45 - detected) + abs(0.6 - detected) + min(abs(1.8 - detected), 1.0)) / 3
    assert onset_offset(x, SR, truth) == pytest.approx(expected, abs=1e-9)
    assert onset_offset(np.zeros(SR), SR, [0.5]) == 1.0  # nothing detected: the cap
    assert math.isnan(onset_offset(x, SR, []))


def test_ground_truth_audio_is_in_sync_and_shifts_are_measured(world):
    offsets = {0.0: [], 0.05: [], 0.1: [], 0.2: []}
    for index in range(8):
        s = world.sample(index, scenario="vta", adverbs={"speed": "slow"})
        truth = [e["onset"] for e in s.meta["events"]]
        for shift in offsets:  # delay the audio: every detected onset moves by ``shift``
            delayed = np.concatenate([np.zeros(int(shift * SR)), s.audio.numpy()])[: s.audio.numel()]
            offsets[shift].append(onset_offset(delayed, SR, truth))
    means = {k: float(np.mean(v)) for k, v in offsets.items()}
    assert means[0.0] < 0.01
    assert means[0.0] < means[0.05] < means[0.1] < means[0.2]
    for shift in (0.05, 0.1, 0.2):
        assert abs(means[shift] - shift) < 0.02


def test_every_class_is_recognised_from_a_fresh_rendering():
    for cls in range(len(CLASSES)):
        for distance in ("near", "far"):
            src = EnvSource(cls, [0.2, 0.9], {"speed": "slow", "loudness": "quiet", "distance": distance},
                            True, seed=777 + cls)
            assert classify_event(render_env(src, 2 * SR, SR), SR) == cls, (CLASSES[cls].name, distance)


def test_event_class_accuracy_on_ground_truth_and_on_wrong_audio(world):
    samples = [world.sample(i, "test", scenario=("vta", "tta")[i % 2]) for i in range(24)]
    waveforms = torch.stack([s.audio for s in samples])
    metas = [s.meta for s in samples]
    assert event_class_accuracy(waveforms, SR, metas) >= 0.85
    # The same audio judged against another class's ground truth: the detected class is wrong.
    wrong = [dict(m, **{"class": (m["class"] + 1) % len(CLASSES)}) for m in metas]
    for m in wrong:
        m["events"] = [dict(e, **{"class": m["class"]}) for e in m["events"]]
    assert event_class_accuracy(waveforms, SR, wrong) <= 0.15
    speech_only = [world.sample(0, scenario="speech").meta]
    assert math.isnan(event_class_accuracy([samples[0].audio], SR, speech_only))
