"""FoleyGenEx adverb augmentation (§3.3): data mining, speed / distance / volume against direct
transcriptions, caption templates and the external rewriter hook, and the datamodule transforms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avgen.data import (
    AdverbAugmentation,
    ManifestDataModule,
    ManifestDataset,
    Sample,
    ToyWorldDataModule,
    export_toyworld,
    mine_adverbs,
)
from avgen.data.augmentation import (
    SPEED_LEVELS,
    change_speed,
    simulate_distance,
    synthetic_rir,
    template_caption,
    volume_envelope,
)
from avgen.data.toyworld import ToyWorld

SR = 16000


def tone(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr).astype(np.float32)


def sample(caption: str | None, audio: np.ndarray, *, video: bool = False, sid: str = "clip", **kw) -> Sample:
    frames = torch.arange(10, dtype=torch.float32)[:, None, None, None].expand(10, 3, 2, 2) if video else None
    return Sample(id=sid, sample_rate=SR, audio=torch.from_numpy(audio), caption=caption,
                  video_semantic=frames, video_sync=frames, **kw)


# ---------------------------------------------------------------------------- data mining
def test_mining_finds_adverbs_and_adjectives_as_whole_words_only():
    assert mine_adverbs("a dog barks loudly nearby") == {"loud", "near"}
    assert mine_adverbs("A fast train passes in the distance") == {"fast", "far"}
    assert mine_adverbs("someone knocks slowly and softly") == {"slow", "quiet"}
    assert mine_adverbs("a rapid clicking, close to the mic") == {"fast", "near"}
    # substrings are not words: breakfast, closet, loudspeaker, farm
    assert mine_adverbs("breakfast sizzles in a closet by the loudspeaker on a farm") == set()
    assert mine_adverbs(None) == set() and mine_adverbs("") == set()


# ---------------------------------------------------------------------------- speed
@pytest.mark.parametrize("factor", [1.3, 0.7])
def test_speed_scales_duration_and_pitch_by_the_factor(factor):
    x = tone(440.0)
    y = change_speed(x, factor)
    assert abs(y.size - x.size / factor) <= 1
    # direct transcription of playback at `factor` x the rate: y[n] = x(factor * n / sr) = sin(2 pi 440 factor n / sr)
    n = np.arange(y.size)
    expected = np.sin(2 * np.pi * 440.0 * factor * n / SR)
    middle = slice(400, y.size - 400)  # away from the resampling filter's edge transients
    assert np.abs(y[middle] - expected[middle]).max() < 0.02
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * SR / y.size
    assert abs(peak_hz - 440.0 * factor) < 2.0


def test_five_level_scale_is_the_papers():
    assert SPEED_LEVELS[("fast", 1.3)] == "very fast" and SPEED_LEVELS[("fast", 1.0)] == "fast"
    assert SPEED_LEVELS[("fast", 0.7)] == "medium" == SPEED_LEVELS[("slow", 1.3)]
    assert SPEED_LEVELS[("slow", 1.0)] == "slow" and SPEED_LEVELS[("slow", 0.7)] == "very slow"


# ---------------------------------------------------------------------------- volume
@pytest.mark.parametrize("direction", ["crescendo", "decrescendo"])
def test_volume_envelope_is_monotone_and_keeps_the_peak(direction):
    rng = np.random.default_rng(0)
    x = (rng.uniform(0.2, 1.0, SR) * rng.choice([-1, 1], SR)).astype(np.float32)
    y = volume_envelope(x, direction, floor_db=-24.0)
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-6)
    gain = y / x
    steps = np.diff(gain)
    assert (steps >= -1e-7).all() if direction == "crescendo" else (steps <= 1e-7).all()
    # direct transcription: gain linear in dB from -24 to 0 dB (or back), one scale to the input peak
    ramp = 10 ** (np.linspace(-24.0, 0.0, SR) / 20)
    ramp = ramp if direction == "crescendo" else ramp[::-1]
    expected = x * ramp * (np.abs(x).max() / np.abs(x * ramp).max())
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-7)
    assert 20 * np.log10(gain.max() / gain.min()) == pytest.approx(24.0, abs=0.01)


# ---------------------------------------------------------------------------- distance
def test_rir_decays_sixty_db_over_rt60():
    rt60 = 0.5
    h = synthetic_rir(rt60, SR, seed=3)
    assert h[0] == 1.0 and np.isclose((h[1:] ** 2).sum(), 1.0)
    window = int(0.05 * SR)
    t1, t2 = int(0.05 * SR), int(0.35 * SR)
    e1, e2 = (h[t1 : t1 + window] ** 2).mean(), (h[t2 : t2 + window] ** 2).mean()
    assert 10 * np.log10(e1 / e2) == pytest.approx(60 * (t2 - t1) / SR / rt60, abs=2.0)


def test_reverb_tail_energy_grows_with_rt60_and_highs_are_attenuated():
    rng = np.random.default_rng(1)
    x = np.zeros(SR, np.float32)
    x[:1600] = rng.standard_normal(1600)  # 0.1 s noise burst, then silence
    tails = []
    for rt60 in (0.2, 0.5, 0.9):
        y = simulate_distance(x, SR, rt60=rt60, distance_gain=1.0, seed=0)
        assert y.shape == x.shape
        tails.append(float((y[2400:] ** 2).sum()))  # after the burst (and the low-pass ringing) ends
    assert tails[0] < tails[1] < tails[2]

    noise = rng.standard_normal(SR).astype(np.float32)
    y = simulate_distance(noise, SR, rt60=0.3, cutoff_hz=2000.0, distance_gain=1.0)

    def band(z, lo, hi):
        spec = np.abs(np.fft.rfft(z)) ** 2
        f = np.fft.rfftfreq(z.size, 1 / SR)
        return spec[(f >= lo) & (f < hi)].sum()

    before = band(noise, 4000, 8000) / band(noise, 100, 1000)
    after = band(y, 4000, 8000) / band(y, 100, 1000)
    assert after < 1e-3 * before  # > 30 dB less high-frequency content relative to the lows
    assert np.abs(simulate_distance(noise, SR, distance_gain=0.5)).max() < np.abs(
        simulate_distance(noise, SR, distance_gain=1.0)).max()


# ---------------------------------------------------------------------------- captions
def test_templates_name_the_new_level_and_drop_the_old_word():
    assert template_caption("a drum thumps quickly", "speed", "very fast", "fast") == "a drum thumps very quickly"
    assert template_caption("a fast car passes", "speed", "medium", "fast") == "a moderately paced car passes"
    assert template_caption("a loud bang nearby", "distance", "far", "near") == "a distant bang"
    caption = template_caption("a drum thumps quickly, loudly and nearby", "distance", "far", "near")
    assert "loud" not in caption and "nearby" not in caption and "in the distance" in caption
    crescendo = template_caption("a horn honks loudly", "volume", "crescendo", "loud")
    assert crescendo == "a horn honks growing louder and louder"


# ---------------------------------------------------------------------------- the transform
def test_only_samples_with_a_matching_adverb_are_augmented_and_captions_change_only_then():
    aug = AdverbAugmentation(probability=1.0)
    plain = sample("a bell rings", tone(880.0))
    assert aug(plain) is plain  # no adverb: nothing to mine
    quiet = sample("a bell rings quietly", tone(880.0))
    assert aug(quiet) is quiet  # quiet allows none of speed (fast/slow), distance (near/loud), volume (loud)
    loud = sample("a bell rings loudly", tone(880.0))
    out = aug(loud)
    assert out.caption != loud.caption and out.meta["augmentation"]["original_caption"] == loud.caption
    assert out.meta["augmentation"]["operation"] in ("distance", "volume")
    assert not torch.equal(out.audio, loud.audio)
    never = AdverbAugmentation(probability=0.0)
    assert never(loud) is loud


def test_speed_transform_equals_change_speed_and_keeps_the_clip_length():
    aug = AdverbAugmentation(probability=1.0, operations=("speed",), speed_factors=(1.3,))
    x = tone(500.0, 2.0)
    out = aug(sample("a clock ticks quickly", x, meta={"events": [{"onset": 0.65}, {"onset": 1.95}]}))
    expected = change_speed(x, 1.3)
    assert out.audio.shape == (x.size,) and out.audio_length == expected.size
    np.testing.assert_array_equal(out.audio[: expected.size].numpy(), expected)
    assert (out.audio[expected.size :] == 0).all()
    assert out.caption == "a clock ticks very quickly" and out.meta["augmentation"]["level"] == "very fast"
    assert out.meta["events"] == [{"onset": pytest.approx(0.5)}, {"onset": pytest.approx(1.5)}]

    slow = AdverbAugmentation(probability=1.0, operations=("speed",), speed_factors=(0.7,))
    out = slow(sample("a clock ticks slowly", x))
    np.testing.assert_array_equal(out.audio.numpy(), change_speed(x, 0.7)[: x.size])  # cropped to the clip
    assert out.caption == "a clock ticks very slowly"


def test_speed_skips_video_samples_by_default_and_retimes_frames_when_asked():
    x = tone(500.0, 1.0)
    with_video = sample("a clock ticks quickly", x, video=True)
    assert AdverbAugmentation(probability=1.0, operations=("speed",))(with_video) is with_video
    aug = AdverbAugmentation(probability=1.0, operations=("speed",), speed_factors=(1.3,), speed_with_video=True)
    out = aug(with_video)
    # frame k shows source time 1.3 k (frame values are their own index), the last frame repeated
    expected = torch.clamp(torch.round(torch.arange(10) * 1.3), max=9)
    assert torch.equal(out.video_semantic[:, 0, 0, 0], expected) and torch.equal(out.video_sync[:, 0, 0, 0], expected)


def test_external_caption_rewriter_is_called_only_for_augmented_samples():
    calls = []

    def rewriter(caption, augmentation):
        calls.append((caption, augmentation.operation, augmentation.level, augmentation.template_caption))
        return f"LLM: {augmentation.level} version of '{caption}'"

    aug = AdverbAugmentation(probability=1.0, operations=("volume",), caption_rewriter=rewriter)
    out = aug(sample("a horn honks loudly", tone(330.0)))
    assert len(calls) == 1
    caption, operation, level, template = calls[0]
    assert (caption, operation) == ("a horn honks loudly", "volume") and level in ("crescendo", "decrescendo")
    assert template == template_caption("a horn honks loudly", "volume", level, "loud")
    assert out.caption == f"LLM: {level} version of 'a horn honks loudly'"
    aug(sample("a horn honks", tone(330.0)))
    assert len(calls) == 1
    bad = AdverbAugmentation(probability=1.0, operations=("volume",), caption_rewriter=lambda c, a: "")
    with pytest.raises(ValueError, match="caption_rewriter"):
        bad(sample("a horn honks loudly", tone(330.0), sid="x"))


def test_draw_is_a_function_of_seed_and_id_and_probability_is_respected():
    aug = AdverbAugmentation(probability=0.5, seed=4)
    samples = [sample("a drum thumps loudly", tone(100.0, 0.5), sid=f"s{i}") for i in range(200)]
    first = [aug(s) for s in samples]
    again = [aug(s) for s in samples]
    assert all(a.caption == b.caption and torch.equal(a.audio, b.audio) for a, b in zip(first, again))
    rate = np.mean([s.caption != "a drum thumps loudly" for s in first])
    assert 0.38 < rate < 0.62


def test_toyworld_and_manifest_datamodules_apply_the_transform_to_train_only(tmp_path):
    aug = AdverbAugmentation(probability=1.0, operations=("volume",))
    dm = ToyWorldDataModule(batch_size=4, train_size=12, val_size=12, duration=0.6, scenarios=["tta"],
                            semantic_size=16, sync_size=16, speech="formant", transform=aug)
    plain = ToyWorld(0.6, scenarios=["tta"], semantic_size=16, sync_size=16, speech="formant")
    train, val = dm.dataset("train"), dm.dataset("val")
    loud = [i for i in range(12) if plain.sample(i).meta["adverbs"]["loudness"] == "loud"]
    assert loud, "ToyWorld draws loud samples"
    for i in range(12):
        original = plain.sample(i)
        augmented = train[i]
        assert ("augmentation" in augmented.meta) == (i in loud)
        if i in loud:
            assert augmented.caption != original.caption
            np.testing.assert_allclose(augmented.audio.abs().max(), original.audio.abs().max(), rtol=1e-5)
        assert val[i].caption == plain.sample(i, "val").caption and "augmentation" not in val[i].meta

    manifest = export_toyworld(8, tmp_path / "toy", duration=0.6, scenarios=["tta"], speech="formant")
    augmented = ManifestDataModule(train_manifest=str(manifest), duration=0.6, transform=aug).dataset("train")
    plain_rows = ManifestDataset(manifest, split="train", duration=0.6)
    loud_rows = 0
    for i in range(len(plain_rows)):
        a, p = augmented[i], plain_rows[i]
        loud_row = "loud" in mine_adverbs(p.caption)
        loud_rows += loud_row
        assert ("augmentation" in a.meta) == loud_row and (a.caption != p.caption) == loud_row
    assert loud_rows > 0


def test_bad_options_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="probability"):
        AdverbAugmentation(probability=1.5)
    with pytest.raises(ValueError, match="operations"):
        AdverbAugmentation(operations=("pitch",))
    with pytest.raises(ValueError, match="speed factors"):
        AdverbAugmentation(speed_factors=(1.0,))
    with pytest.raises(ValueError, match="mono"):
        change_speed(np.zeros((2, 10)), 1.3)
    with pytest.raises(ValueError, match="crescendo"):
        volume_envelope(np.ones(10), "up")
    s = dataclasses.replace(sample("a clock ticks quickly", tone(100.0), video=True), video_semantic=None,
                            video_sync=None, semantic_features=torch.zeros(4, 8), sync_features=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="precomputed video features"):
        AdverbAugmentation(probability=1.0, operations=("speed",), speed_with_video=True)(s)
