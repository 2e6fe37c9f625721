"""ToyWorld: determinism, ground-truth sync in audio and frames, adverbs, scenarios and presence flags."""

import numpy as np
import pytest
import torch

from avgen.data import AVBatch, ToyWorldDataModule, collate
from avgen.data.speech import espeak_available
from avgen.data.toyworld import CLASSES, SCENARIOS, ToyWorld, envelope

SR = 16000
BACKGROUND = torch.tensor([[0.10, 0.10, 0.16], [0.22, 0.20, 0.18]])


@pytest.fixture(scope="module")
def world():
    return ToyWorld(speech="formant")


def foreground(frames: torch.Tensor) -> torch.Tensor:
    """(F, 3, H, W) -> (F, H, W) bool: pixels that are neither sky nor floor."""
    px = frames.permute(0, 2, 3, 1)[..., None, :]  # (F, H, W, 1, 3)
    return ((px - BACKGROUND).abs().amax(-1) > 0.05).all(-1)


def test_deterministic_per_seed_and_index(world):
    a = world.sample(5, scenario="joint_av")
    b = ToyWorld(speech="formant").sample(5, scenario="joint_av")
    for name in ("audio", "video_semantic", "video_sync", "reference_audio"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.caption, a.transcript, a.video_caption, a.meta) == (b.caption, b.transcript, b.video_caption, b.meta)
    other_seed = ToyWorld(speech="formant", seed=1).sample(5, scenario="joint_av")
    other_split = world.sample(5, "val", scenario="joint_av")
    assert not torch.equal(a.audio, other_seed.audio)
    assert not torch.equal(a.audio, other_split.audio)
    assert a.id != other_seed.id


@pytest.mark.skipif(not espeak_available(), reason="espeakng-loader not installed")
def test_espeak_speech_is_deterministic_and_differs_from_formant():
    a = ToyWorld(speech="espeak").sample(2, scenario="speech")
    b = ToyWorld(speech="espeak").sample(2, scenario="speech")
    f = ToyWorld(speech="formant").sample(2, scenario="speech")
    assert torch.equal(a.audio, b.audio)
    assert a.transcript == f.transcript  # the same words, spoken by a different synthesizer
    assert a.audio.abs().max() > 0.1
    assert not torch.equal(a.audio, f.audio)


def test_media_format(world):
    for scenario in SCENARIOS:
        s = world.sample(0, scenario=scenario)
        assert s.audio.dtype == torch.float32 and s.audio.shape == (2 * SR,)
        assert 0.0 < s.audio.abs().max() <= 0.95 + 1e-6
        if s.video_sync is not None:
            assert s.video_semantic.shape == (16, 3, 64, 64) and s.video_sync.shape == (50, 3, 64, 64)
            assert s.video_sync.min() >= 0 and s.video_sync.max() <= 1


@pytest.mark.parametrize("motion", ["bounce", "flash", "pop"])
def test_onsets_start_the_sound_and_the_object_appears_at_that_frame(world, motion):
    for index in range(3):
        s = world.sample(index, scenario="vta", adverbs={"speed": "slow", "distance": "normal"}, motion=motion)
        onsets = [e["onset"] for e in s.meta["events"]]
        assert all(e["onscreen"] for e in s.meta["events"]) and len(onsets) >= 1
        audio = s.audio.numpy()
        first_sample = int(np.flatnonzero(np.abs(audio) > 1e-4)[0])
        assert abs(first_sample - onsets[0] * SR) <= 2  # nothing sounds before the first event
        for t in onsets[1:]:  # each later event is a sharp rise in energy at its onset
            k = int(round(t * SR))
            before, after = audio[k - 160 : k], audio[k : k + 160]
            assert (after**2).mean() > 4 * (before**2).mean()
        fg = foreground(s.video_sync).flatten(1).sum(1)  # object pixels per 25 fps frame
        first_frame = int(round(onsets[0] * 25))
        assert fg[:first_frame].sum() == 0
        assert fg[first_frame] > 10


def test_bounce_touches_the_floor_at_each_event(world):
    s = world.sample(1, scenario="vta", adverbs={"speed": "slow", "distance": "near"}, motion="bounce")
    onsets = [e["onset"] for e in s.meta["events"]]
    assert len(onsets) >= 2
    fg = foreground(s.video_sync)
    rows = torch.arange(64, dtype=torch.float32)[None, :, None]
    centre_row = (fg * rows).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp(min=1)
    for a, b in zip(onsets[:-1], onsets[1:]):
        contact, mid = int(round(a * 25)), int(round((a + b) / 2 * 25))
        assert centre_row[contact] > centre_row[mid] + 5  # lower on screen (larger row) at contact


def test_adverbs_change_what_they_claim(world):
    for index in range(4):
        loud = world.sample(index, scenario="vta", adverbs={"loudness": "loud", "distance": "normal"})
        quiet = world.sample(index, scenario="vta", adverbs={"loudness": "quiet", "distance": "normal"})
        assert loud.audio.pow(2).mean().sqrt() > 3 * quiet.audio.pow(2).mean().sqrt()
        assert "loudly" in loud.caption and "quietly" in quiet.caption
        fast = world.sample(index, scenario="vta", adverbs={"speed": "fast"})
        slow = world.sample(index, scenario="vta", adverbs={"speed": "slow"})
        assert len(fast.meta["events"]) > len(slow.meta["events"])
        assert "quickly" in fast.caption and "slowly" in slow.caption
        near = world.sample(index, scenario="vta", adverbs={"distance": "near"}, motion="flash")
        far = world.sample(index, scenario="vta", adverbs={"distance": "far"}, motion="flash")
        assert "in the distance" in far.caption

        def high_energy(x):  # energy above 2 kHz
            spec = np.abs(np.fft.rfft(x.numpy())) ** 2
            return spec[int(len(spec) * 2000 / 8000) :].sum()

        if CLASSES[near.meta["class"]].name not in ("drum", "engine"):  # these have no highs to absorb
            assert high_energy(far.audio) < 0.1 * high_energy(near.audio)
        assert foreground(far.video_sync)[-1].sum() < 0.5 * foreground(near.video_sync)[-1].sum()


def test_mouth_follows_speech_envelope(world):
    s = world.sample(3, scenario="speech")
    mouth_color = torch.tensor([0.35, 0.05, 0.08])[:, None, None]
    mouth = ((s.video_sync - mouth_color).abs().amax(1) < 0.02).flatten(1).sum(1).float()
    times, env = envelope(s.audio.numpy(), SR)
    at_frames = np.interp(np.arange(50) / 25, times, env)
    assert np.corrcoef(mouth.numpy(), at_frames)[0, 1] > 0.6


EXPECTED = {  # scenario -> (video, caption, offscreen, transcript, lyrics, video_caption, reference)
    "vta": (True, True, False, False, False, False, None),
    "tta": (False, True, False, False, False, False, False),
    "omnisonic_s1": (True, True, False, True, False, False, False),
    "omnisonic_s2": (True, False, True, True, False, False, False),
    "omnisonic_s3": (True, True, True, True, False, False, False),
    "speech": (True, False, False, True, False, False, True),
    "song": (True, True, False, False, True, False, False),
    "joint_av": (True, True, False, True, False, True, True),
}


def test_presence_flags_match_content_for_every_scenario(world):
    samples = [world.sample(i, scenario=sc) for sc in SCENARIOS for i in range(2)]
    batch = collate(samples)
    for i, s in enumerate(samples):
        video, cap, off, tr, ly, vcap, ref = EXPECTED[s.task]
        assert batch.has_video[i] == video == (s.video_sync is not None)
        assert batch.has_caption[i] == cap and batch.has_offscreen_caption[i] == off
        assert batch.has_transcript[i] == tr and batch.has_lyrics[i] == ly and batch.has_video_caption[i] == vcap
        if ref is not None:
            assert batch.has_reference_audio[i] == ref
        assert batch.has_reference_audio[i] == (s.reference_audio is not None)
        if not video:
            assert batch.video_sync[i].abs().sum() == 0
        words = " ".join(w["word"] for w in s.meta["words"])
        assert words == (s.transcript or s.lyrics or "")
        events = s.meta["events"]
        on = {e["class"] for e in events if e["onscreen"]}
        off_classes = {e["class"] for e in events if not e["onscreen"]}
        assert bool(on) == (s.task in ("vta", "omnisonic_s1", "omnisonic_s3", "joint_av"))
        assert bool(off_classes) == (s.task in ("tta", "omnisonic_s2", "omnisonic_s3"))
        assert not on & off_classes
        if s.reference_audio is not None:
            assert s.reference_audio.shape == (SR,) and s.reference_audio.abs().max() > 0.01
            assert not torch.allclose(s.reference_audio, s.audio[:SR])


def test_scenario_mix_and_datamodule():
    dm = ToyWorldDataModule(batch_size=4, train_size=8, val_size=4, predict_size=2, speech="formant",
                            scenarios=["tta", "song"], duration=1.0, semantic_size=32, sync_size=48)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, AVBatch) and set(batch.task) <= {"tta", "song"}
    assert batch.audio.shape == (4, SR) and bool((batch.audio_lengths == SR).all())
    if batch.video_sync is not None:
        assert batch.video_sync.shape[-3:] == (3, 48, 48) and batch.video_semantic.shape[1:] == (8, 3, 32, 32)
    v1, v2 = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert [b.ids for b in v1] == [b.ids for b in v2] and torch.equal(v1[0].audio, v2[0].audio)
    assert len(list(dm.predict_dataloader())[0]) == 2
    with pytest.raises(ValueError, match="unknown ToyWorld scenarios"):
        ToyWorldDataModule(scenarios=["nope"])


def test_foleygenex_task_inputs_contradicting_caption_and_edit_window(world):
    """TC-VTA text of another class, an edit window strictly inside the clip; deterministic."""
    from avgen.data.toyworld import ADVERB_WORDS

    nouns = {c.noun for c in CLASSES}
    for index in range(12):
        s = world.sample(index, scenario="vta" if index % 2 else "tta")
        meta = s.meta
        other = meta["contradicting_class"]
        assert other != meta["class"]
        text = meta["contradicting_caption"]
        assert CLASSES[other].noun in text and CLASSES[meta["class"]].noun not in text
        assert {n for n in nouns if n in text} == {CLASSES[other].noun}
        # same adverbs: only the class differs from the real caption
        for key, value in meta["adverbs"].items():
            if value != "normal":
                assert ADVERB_WORDS[key][value] in text
        start, end = meta["edit_window"]
        assert 0.0 < start < end < world.duration
        assert 0.25 * world.duration - 1e-3 <= end - start <= 0.5 * world.duration + 1e-3
        again = ToyWorld(speech="formant").sample(index, scenario="vta" if index % 2 else "tta")
        assert again.meta == meta


def test_always_reference_adds_a_reference_and_changes_nothing_else():
    plain = ToyWorld(duration=1.0, speech="formant", scenarios=["vta", "tta"])
    always = ToyWorld(duration=1.0, speech="formant", scenarios=["vta", "tta"], always_reference=True)
    drawn = 0
    for index in range(8):
        a, b = plain.sample(index), always.sample(index)
        assert torch.equal(a.audio, b.audio) and a.caption == b.caption and a.meta == b.meta
        assert b.reference_audio is not None and b.reference_audio.shape == (16000,)
        if a.reference_audio is not None:
            drawn += 1
            assert torch.equal(a.reference_audio, b.reference_audio)
    assert drawn < 8  # by default only some samples draw a reference


def test_variable_length_clips_set_their_own_length_and_seconds_total():
    fixed = ToyWorld(speech="formant")
    same = ToyWorld(speech="formant", min_duration=2.0)  # min == max: exactly the fixed world
    assert torch.equal(fixed.sample(3, scenario="speech").audio, same.sample(3, scenario="speech").audio)
    var = ToyWorld(speech="formant", duration=2.0, min_duration=0.6)
    durations = set()
    for i in range(6):
        s = var.sample(i, scenario="joint_av")
        d = s.seconds_total
        durations.add(d)
        assert 0.6 <= d <= 2.0 and d == var.clip_duration(i)
        assert s.audio.shape == (int(round(d * SR)),)
        assert s.video_semantic.shape[0] == round(d * 8) and s.video_sync.shape[0] == round(d * 25)
        assert all(e["onset"] < d for e in s.meta["events"]) and all(w["end"] <= d + 1e-6 for w in s.meta["words"])
    assert len(durations) >= 4
    dm = ToyWorldDataModule(batch_size=4, train_size=4, speech="formant", scenarios=["vta"], duration=2.0,
                            min_duration=0.6, semantic_size=32, sync_size=32)
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio_lengths.tolist() == [round(float(t) * SR) for t in batch.seconds_total]
    with pytest.raises(ValueError, match="min_duration"):
        ToyWorld(duration=2.0, min_duration=3.0)


def _pitch(x: np.ndarray, lo: float = 80.0, hi: float = 500.0) -> float:
    """Autocorrelation pitch of a voiced segment."""
    x = x - x.mean()
    ac = np.correlate(x, x, mode="full")[x.size - 1 :]
    lags = np.arange(int(SR / hi), int(SR / lo))
    return SR / lags[np.argmax(ac[lags])]


def test_song_sings_the_given_lyrics_on_pitched_notes(world):
    s = world.sample(4, scenario="song", lyrics="Yo, la la!")
    assert s.lyrics == "yo la la" and [w["word"] for w in s.meta["words"]] == ["yo", "la", "la"]
    notes = s.meta["notes"]
    assert len(notes) == 3
    voice = s.meta["voice"]
    from avgen.data.speech import VOICES

    f0 = next(v.f0 for v in VOICES if v.name == voice)
    steps = [12 * np.log2(n / f0) for n in notes]
    assert all(abs(st - round(st)) < 1e-6 and round(st) in (0, 2, 4, 7, 9, 12) for st in steps)  # pentatonic
    audio = s.audio.numpy()
    for w, note in zip(s.meta["words"], notes):  # the sustained vowel of "la"/"yo" sits near its note
        mid = (w["start"] + w["end"]) / 2
        seg = audio[int((mid - 0.04) * SR) : int((mid + 0.04) * SR)]
        assert abs(_pitch(seg) / note - 1) < 0.15
    with pytest.raises(ValueError, match="cannot be spoken"):
        world.sample(4, scenario="speech", lyrics="supercalifragilistic")
    assert world.sample(4, scenario="speech", lyrics="red ball").transcript == "red ball"
