"""UniHAGen mixture synthesis: SNRs, per-scenario conditions, the keyword filter, determinism."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from avgen.data.batch import Sample, collate
from avgen.data.toyworld import ToyWorldDataModule
from avgen.data.unihagen import UniHAGenDataModule, UniHAGenMixer, is_speech_like

SR, N = 1000, 1000


class ListDataset(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _tone(freq, amp, n=N):
    return amp * torch.sin(2 * math.pi * freq * torch.arange(n) / SR)


def _env(i, caption=None, video=True, n=N):
    return Sample(id=f"env{i}", sample_rate=SR, audio=_tone(37 + 10 * i, 0.3 + 0.05 * i, n),
                  video_semantic=torch.full((2, 3, 4, 4), float(i) / 10) if video else None,
                  caption=caption or f"a machine number {i} hums",
                  meta={"events": [{"class": i, "onset": 0.5, "onscreen": True}], "class": i, "class_name": f"c{i}"})


def _speech(i, video=True, n=N):
    return Sample(id=f"spk{i}", sample_rate=SR, audio=_tone(211 + 13 * i, 0.5, n),
                  video_semantic=torch.full((2, 3, 4, 4), 0.5 + i / 100) if video else None,
                  transcript=f"hello number {i}",
                  meta={"words": [{"word": "hello", "start": 0.1, "end": 0.4, "onscreen": True}]})


def _mixer(scenarios=("s1", "s2", "s3"), env=None, speech=None, **kw):
    env = env if env is not None else ListDataset([_env(i) for i in range(4)])
    speech = speech if speech is not None else ListDataset([_speech(i) for i in range(4)])
    kw.setdefault("size", 64)
    return UniHAGenMixer(env, speech, scenarios=scenarios, **kw)


def _source(mixer, sid):
    for ds in (mixer.environment, mixer.speech):
        for s in ds.samples:
            if s.id == sid:
                return s
    raise KeyError(sid)


def environment_ids_used(mixer, draws: int = 30) -> set[str]:
    """Ids of the environmental clips the first ``draws`` mixtures used (on or off screen)."""
    used = set()
    for i in range(draws):
        info = mixer[i].meta["unihagen"]
        used |= {o["id"] for o in info["offscreen"] if o["kind"] == "environment"}
        if info["onscreen"]["kind"] == "environment":
            used.add(info["onscreen"]["id"])
    return used


def test_mixtures_hit_the_drawn_snr_within_half_a_db():
    # sources of other lengths than the on-screen clip: cropped at random offsets or zero-padded
    env = ListDataset([_env(i, n=N if i % 2 == 0 else 700) for i in range(4)])
    speech = ListDataset([_speech(i, n=1500 if i % 2 == 0 else 800) for i in range(4)])
    mixer = _mixer(env=env, speech=speech, snr_db=(-5.0, 15.0), peak=0.5)  # low peak: whole-mix rescaling too
    rescaled = cropped = 0
    for index in range(16):
        s = mixer[index]
        info = s.meta["unihagen"]
        onscreen = _source(mixer, info["onscreen"]["id"]).audio
        n = onscreen.shape[0]
        assert s.audio.shape == (n,)
        offs = [torch.nn.functional.pad(a := _source(mixer, o["id"]).audio[off : off + n], (0, n - a.shape[0]))
                for o, off in zip(info["offscreen"], info["offsets"])]
        cropped += sum(off > 0 for off in info["offsets"])
        basis = torch.stack([onscreen] + offs, dim=1).double()  # (N, sources): the tones are independent
        coef = torch.linalg.lstsq(basis, s.audio.double()[:, None]).solution[:, 0]
        p_on = (coef[0] * onscreen.double()).pow(2).mean()
        for k, (off, snr) in enumerate(zip(offs, info["snr_db"])):
            measured = 10 * math.log10(p_on / (coef[k + 1] * off.double()).pow(2).mean())
            assert abs(measured - snr) < 0.5 and -5.0 <= snr <= 15.0
        assert s.audio.abs().max() <= 0.5 + 1e-6
        rescaled += info["mix_scale"] < 1.0
    assert rescaled > 0 and cropped > 0


def test_conditions_and_video_per_scenario():
    for scenario in ("s1", "s2", "s3"):
        s = _mixer((scenario,))[1]
        info = s.meta["unihagen"]
        visible = _source(_mixer(), info["onscreen"]["id"])
        assert s.task == f"omnisonic_{scenario}" and torch.equal(s.video_semantic, visible.video_semantic)
        kinds = [o["kind"] for o in info["offscreen"]]
        if scenario == "s1":
            assert info["onscreen"]["kind"] == "environment" and kinds == ["speech"]
            assert s.caption == visible.caption and s.offscreen_caption == ""
            assert s.transcript == _source(_mixer(), info["offscreen"][0]["id"]).transcript
        elif scenario == "s2":
            assert info["onscreen"]["kind"] == "speech" and kinds == ["environment"]
            assert s.caption == "" and s.transcript == visible.transcript
            assert s.offscreen_caption == _source(_mixer(), info["offscreen"][0]["id"]).caption
        else:
            assert kinds == ["environment", "speech"] and info["offscreen"][0]["id"] != info["onscreen"]["id"]
            assert s.caption == visible.caption and s.offscreen_caption and s.transcript
        # ground truth: on-screen items flagged on screen, off-screen ones off screen
        flags = {e["onscreen"] for e in s.meta["events"]} | {w["onscreen"] for w in s.meta["words"]}
        assert flags == {True, False}
    batch = collate([_mixer((sc,))[0] for sc in ("s1", "s2", "s3")])
    assert batch.has_caption.tolist() == [True, False, True]
    assert batch.has_offscreen_caption.tolist() == [False, True, True]
    assert batch.has_transcript.all() and batch.has_video.all()


def test_keyword_filter_drops_speech_like_environment_clips():
    assert is_speech_like("A man SAYS hello") and is_speech_like("people talking in a room")
    assert not is_speech_like("a dog barks") and not is_speech_like("an essay on rain")  # word starts only
    assert not is_speech_like("", ("speech",)) and not is_speech_like("speech", ())
    captions = ["a woman speaks loudly", "a dog barks", "crowd voices", "rain falls", "someone says yes"]
    env = ListDataset([_env(i, c) for i, c in enumerate(captions)])
    mixer = _mixer(env=env, snr_db=(0, 10))
    used = environment_ids_used(mixer)
    assert used == {"env1", "env3"}
    # no filter: speech-like clips are used again
    unfiltered = _mixer(env=env, speech_keywords=())
    assert any(mixer_id in {"env0", "env2", "env4"} for i in range(30)
               for mixer_id in [unfiltered[i].meta["unihagen"]["onscreen"]["id"]])
    with pytest.raises(RuntimeError, match="speech_keywords"):
        _mixer(("s1",), env=ListDataset([_env(0, "a man talks")]))[0]


def test_deterministic_per_seed_and_index():
    a, b, c = _mixer(seed=3), _mixer(seed=3), _mixer(seed=4)
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x.audio, y.audio) and x.meta == y.meta and x.caption == y.caption
    assert any(not torch.equal(a[i].audio, c[i].audio) for i in range(4))


def test_stage_one_is_speech_only_with_empty_captions():
    mixer = UniHAGenMixer(None, ListDataset([_speech(i) for i in range(3)]), stage="speech")
    s = mixer[2]
    assert s.caption == "" and s.offscreen_caption == "" and s.transcript == "hello number 2"
    assert torch.equal(s.audio, _speech(2).audio) and s.task == "speech"
    with pytest.raises(ValueError, match="environment_sources"):
        UniHAGenMixer(None, ListDataset([_speech(0)]))


def test_bad_sources_fail_clearly():
    with pytest.raises(ValueError, match="same sample_rate"):
        odd = Sample(id="spk_22k", sample_rate=22050, audio=_tone(200, 0.5), transcript="hi")
        _mixer(("s1",), speech=ListDataset([odd]))[0]
    with pytest.raises(RuntimeError, match="on-screen speech.*video"):
        _mixer(("s2",), speech=ListDataset([_speech(0, video=False)]))[0]
    with pytest.raises(ValueError, match="snr_db"):
        _mixer(snr_db=(10, 0))


def test_datamodule_over_toyworld_sources():
    common = dict(duration=0.5, semantic_size=16, sync_size=16, train_size=4, val_size=2, test_size=2,
                  predict_size=2, speech="formant")
    env = ToyWorldDataModule(scenarios=["vta"], **common)
    speech = ToyWorldDataModule(scenarios=["speech"], seed=1, **common)
    dm = UniHAGenDataModule(speech, env, batch_size=4, snr_db=[0, 10], seed=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio.shape == (4, 8000) and dm.sample_rate == 16000 and dm.duration == 0.5
    for i, task in enumerate(batch.task):
        assert batch.has_caption[i] == (task != "omnisonic_s2")
        assert batch.has_offscreen_caption[i] == (task != "omnisonic_s1")
        assert batch.has_transcript[i] and batch.has_video[i]
    v1 = next(iter(dm.val_dataloader()))
    v2 = next(iter(dm.val_dataloader()))
    assert torch.equal(v1.audio, v2.audio)
    stage1 = UniHAGenDataModule(speech, stage="speech", batch_size=2)
    stage1.setup("fit")
    b = next(iter(stage1.train_dataloader()))
    assert not b.has_caption.any() and not b.has_offscreen_caption.any() and b.has_transcript.all()
    mismatched = ToyWorldDataModule(scenarios=["vta"], **{**common, "duration": 1.0})
    with pytest.raises(ValueError, match="duration"):
        UniHAGenDataModule(speech, mismatched).setup("fit")


def test_speech_category_filter_per_draw_by_label_or_caption():
    from avgen.data.unihagen import DEFAULT_SPEECH_CATEGORIES, source_label

    assert "male speech, man speaking" in DEFAULT_SPEECH_CATEGORIES and "people whispering" in DEFAULT_SPEECH_CATEGORIES
    assert source_label({"label": "", "class_name": "dog barking"}) == "dog barking"
    env = [_env(i) for i in range(5)]
    env[0].meta["label"] = "People  Whispering"  # label field, any case / spacing
    env[2].caption = "the sound of female speech, woman speaking"  # caption carries the class name
    env[3].meta["class_name"] = "people crowded"  # not a category: whole phrases only
    mixer = _mixer(env=ListDataset(env), snr_db=(0, 10))
    assert mixer.environment_pool is None  # no rows: filtered per draw
    used = environment_ids_used(mixer)
    assert used == {"env1", "env3", "env4"}
    assert mixer.filter_counts["speech_category"] > 0 and mixer.filter_counts["speech_keyword"] == 0
    unfiltered = _mixer(env=ListDataset(env), speech_categories=())
    assert any(unfiltered[i].meta["unihagen"]["onscreen"]["id"] in {"env0", "env2"} for i in range(30))
    with pytest.raises(RuntimeError, match="speech_categories"):
        _mixer(("s1",), env=ListDataset([env[0]]))[0]


def test_speech_filters_screen_manifest_rows_once_counted_and_logged(tmp_path, caplog):
    import json
    import logging

    import soundfile as sf

    from avgen.data.manifest import ManifestDataset

    sr, n = 16000, 1600
    rows = [("a dog barks", {"label": "dog barking"}), ("", {"label": "male speech, man speaking"}),
            ("a man says hello", {"label": "people eating"}), ("rain on a roof", {}),
            ("the sound of people babbling", {}), ("an engine idles", {"label": "engine idling"})]
    with open(tmp_path / "env.jsonl", "w") as f:
        for i, (caption, meta) in enumerate(rows):
            sf.write(tmp_path / f"e{i}.wav", (0.2 + 0.02 * i) * np.sin(2 * np.pi * (300 + 50 * i) * np.arange(n) / sr), sr)
            f.write(json.dumps({"id": f"e{i}", "audio": f"e{i}.wav", "caption": caption, "meta": meta}) + "\n")
    env = ManifestDataset(tmp_path / "env.jsonl", duration=0.1, sample_rate=sr)
    speech = ListDataset([Sample(id=f"spk{i}", sample_rate=sr, audio=0.5 * torch.sin(torch.arange(n) * (0.2 + i / 50)),
                                 video_semantic=torch.zeros(2, 3, 4, 4), transcript=f"hello {i}") for i in range(2)])
    with caplog.at_level(logging.INFO, logger="avgen.data.unihagen"):
        mixer = UniHAGenMixer(env, speech, scenarios=("s2",), size=12)
    assert mixer.environment_pool == [0, 3, 5]
    assert mixer.filter_counts == {"speech_category": 2, "speech_keyword": 1}
    assert "keeps 3 of 6 clips (2 speech categories, 1 speech keywords excluded)" in caplog.text
    used = {mixer[i].meta["unihagen"]["offscreen"][0]["id"] for i in range(12)}
    assert used <= {"e0", "e3", "e5"} and len(used) > 1
    with pytest.raises(ValueError, match="every one of the 6 environmental clips"):
        UniHAGenMixer(env, speech, scenarios=("s2",), speech_categories=["dog barking", "engine idling", "people babbling", "male speech, man speaking"],
                      speech_keywords=["rain", "say"])
