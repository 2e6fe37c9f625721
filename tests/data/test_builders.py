"""Manifest builders (issue 14) on tiny fake trees in each corpus's published layout.

Each tree holds 0.2-s clips plus bad entries (missing file, unreadable file, too short, low rate,
missing transcript/caption); every test asserts the exact manifest rows, the skip report (kind and
file of each skip) and that the manifest loads through the real reader (ManifestDataModule).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avgen.data.builders import BUILDERS, Limits, build, get_builder
from avgen.data.manifest import ManifestDataModule
from avgen.data.media import write_mp4, write_wav

LIMITS = Limits(min_duration=0.1, min_sample_rate=16000, min_fps=10.0)
RATE = 16000


def tone(seconds: float = 0.2, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(path: Path, seconds: float = 0.2, rate: int = RATE) -> Path:
    return write_wav(path, tone(seconds, rate), rate)


def mp4(path: Path, seconds: float = 0.2, fps: float = 25.0) -> Path:
    frames = torch.rand(int(round(seconds * fps)), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return write_mp4(path, frames, fps, audio=tone(seconds), sample_rate=RATE)


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not media" * 8)
    return path


def run(name: str, root: Path, out: Path, splits=None, **kwargs):
    options = kwargs.pop("options", {})
    builder = get_builder(name)(root, splits, **options)
    report = build(builder, out / f"{name}.jsonl", limits=kwargs.pop("limits", LIMITS), progress=False, **kwargs)
    rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
    assert json.loads(Path(report["report"]).read_text())["skips"] == report["skips"]
    return rows, report


def measured(rows: list[dict], duration: float = 0.2, tol: float = 0.06) -> list[dict]:
    """Check and drop what was measured from the files (durations, fps), leaving what the metadata fixes."""
    for row in rows:
        meta = row["meta"]
        assert abs(meta.pop("duration") - duration) <= tol, row
        if "fps" in meta:
            assert meta.pop("fps") == pytest.approx(25.0)
            assert abs(meta.pop("video_duration") - duration) <= tol, row
    return rows


def skips(report: dict, root: Path) -> list[tuple[str, str, str]]:
    return [(s["id"], s["kind"], str(Path(s["file"]).relative_to(root)) if s["file"].startswith(str(root)) else s["file"])
            for s in report["skips"]]


def loads(manifest: Path, split: str = "train", **kw) -> int:
    """Rows of ``split`` that the real reader keeps; decoding the first checks paths and rates."""
    dm = ManifestDataModule(train_manifest=str(manifest), duration=0.2, sample_rate=RATE, on_error="raise", **kw)
    ds = dm.dataset("train") if split == "train" else ManifestDataModule(
        test_manifest=str(manifest), duration=0.2, sample_rate=RATE, on_error="raise", **kw).dataset("test")
    sample = ds[0]
    assert sample.audio.shape == (int(0.2 * RATE),) and sample.audio.abs().max() > 0.1
    return len(ds)


# --------------------------------------------------------------------------------------------- VGGSound
def vggsound_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "vggsound.csv").write_text(
        "---g-f_I2yQ,1,dog barking,train\n"
        "abc,30,\"male speech, man speaking\",train\n"
        "miss,0,cat meowing,train\n"
        "brok,12,rain,test\n"
        "tst,5,people whispering,test\n"
        "bad line without fields\n"
    )
    mp4(root / "video" / "---g-f_I2yQ_000001.mp4")
    mp4(root / "video" / "abc_000030.mp4")
    garbage(root / "video" / "brok_000012.mp4")
    mp4(root / "scratch" / "tst_000005.mp4")  # clips are found anywhere below the root
    return root


def test_vggsound_and_unihagen_environment(tmp_path):
    root = vggsound_tree(tmp_path / "vgg")
    out = tmp_path / "out"
    rows, report = run("vggsound", root, out)
    assert measured(rows) == [
        {"id": "---g-f_I2yQ_000001", "audio": "vggsound_audio/---g-f_I2yQ_000001.wav",
         "video": "../vgg/video/---g-f_I2yQ_000001.mp4", "caption": "dog barking", "split": "train", "sample_rate": RATE,
         "meta": {"corpus": "vggsound", "corpus_split": "train", "label": "dog barking", "youtube_id": "---g-f_I2yQ",
                  "captions": ["dog barking"]}},
        {"id": "abc_000030", "audio": "vggsound_audio/abc_000030.wav", "video": "../vgg/video/abc_000030.mp4",
         "caption": "male speech, man speaking", "split": "train", "sample_rate": RATE,
         "meta": {"corpus": "vggsound", "corpus_split": "train", "label": "male speech, man speaking",
                  "youtube_id": "abc", "captions": ["male speech, man speaking"]}},
        {"id": "tst_000005", "audio": "vggsound_audio/tst_000005.wav", "video": "../vgg/scratch/tst_000005.mp4",
         "caption": "people whispering", "split": "test", "sample_rate": RATE,
         "meta": {"corpus": "vggsound", "corpus_split": "test", "label": "people whispering", "youtube_id": "tst",
                  "captions": ["people whispering"]}},
    ]
    assert skips(report, root) == [("miss_000000", "missing", "video/miss_000000.mp4"),
                                   ("brok_000012", "unreadable", "video/brok_000012.mp4"),
                                   ("vggsound.csv:6", "bad_metadata", "vggsound.csv")]
    assert report["rows_per_split"] == {"test": 1, "train": 2} and report["skipped_by_kind"]["missing"] == 1
    assert sf.info(str(out / "vggsound_audio" / "abc_000030.wav")).samplerate == RATE  # the mp4's track, extracted
    assert loads(out / "vggsound.jsonl") == 2
    # OmniSonic §4.1's pool: the speech categories are gone, each named in the report.
    extracted = out / "vggsound_audio" / "abc_000030.wav"
    stamp = extracted.stat().st_mtime_ns
    rows, report = run("unihagen-environment", root, out, splits=["train", "test"], audio_dir=out / "vggsound_audio")
    assert extracted.stat().st_mtime_ns == stamp  # a rerun reuses the extracted audio
    assert [r["id"] for r in rows] == ["---g-f_I2yQ_000001"]
    assert [(s["id"], s["kind"], s["reason"]) for s in report["skips"] if s["kind"] == "excluded"] == [
        ("abc_000030", "excluded", "speech-related category 'male speech, man speaking'"),
        ("tst_000005", "excluded", "speech-related category 'people whispering'")]


# --------------------------------------------------------------------------------------------- captions
def test_audiocaps_groups_captions_per_clip(tmp_path):
    root = tmp_path / "audiocaps"
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n91139,r1nicOVtvkQ,130,A woman talks\n11,gone,0,lost clip\n"
        "12,short,20,a short one\n")
    (root / "dataset" / "val.csv").write_text("audiocap_id,youtube_id,start_time,caption\n"
                                              + "".join(f"{90 + k},vvv,10,caption {k}\n" for k in range(5)))
    wav(root / "audio" / "train" / "91139.wav")  # the audiocap_id naming
    wav(root / "audio" / "short_20.wav", seconds=0.05)  # the <ytid>_<start> naming, too short
    wav(root / "audio" / "val" / "Yvvv.flac")  # the AudioSet Y<ytid> naming
    out = tmp_path / "out"
    rows, report = run("audiocaps", root, out)  # default splits: test.csv is absent and reported
    assert report["splits_missing"] == ["test"]
    assert measured(rows) == [
        {"id": "r1nicOVtvkQ_130", "audio": "../audiocaps/audio/train/91139.wav", "caption": "A woman talks",
         "split": "train", "sample_rate": RATE, "meta": {"corpus": "audiocaps", "corpus_split": "train",
         "youtube_id": "r1nicOVtvkQ", "audiocap_ids": ["91139"], "captions": ["A woman talks"]}},
        {"id": "vvv_10", "audio": "../audiocaps/audio/val/Yvvv.flac", "caption": "caption 0", "split": "val",
         "sample_rate": RATE, "meta": {"corpus": "audiocaps", "corpus_split": "val", "youtube_id": "vvv",
         "audiocap_ids": ["90", "91", "92", "93", "94"], "captions": [f"caption {k}" for k in range(5)]}},
    ]
    assert skips(report, root) == [("gone_0", "missing", "11.wav"),
                                   ("short_20", "too_short", "audio/short_20.wav")]
    rows, _ = run("audiocaps", root, out, ["val"], options={"captions": "each"})
    assert [(r["id"], r["caption"], r["meta"]["caption_index"]) for r in rows] == [
        (f"vvv_10#{k + 1}", f"caption {k}", k + 1) for k in range(5)]
    with pytest.raises(FileNotFoundError, match="test.csv"):  # a split asked for by name must exist
        run("audiocaps", root, out, ["test"])


def test_clotho_five_captions_and_splits(tmp_path):
    root = tmp_path / "clotho"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    (root).mkdir()
    (root / "clotho_captions_development.csv").write_text(
        header + '"Rain, light.wav",r1,r2,r3,r4,r5\nshort.wav,s1,s2,s3,s4,s5\nnocap.wav,,,,,\n')
    (root / "clotho_captions_evaluation.csv").write_text(header + "bird.wav,b1,b2,b3,b4,b5\nlost.wav,l1,l2,l3,l4,l5\n")
    wav(root / "development" / "Rain, light.wav")
    wav(root / "development" / "short.wav", seconds=0.05)
    wav(root / "development" / "nocap.wav")
    wav(root / "evaluation" / "bird.wav")
    out = tmp_path / "out"
    rows, report = run("clotho", root, out, ["development", "evaluation"])
    meta = {"corpus": "clotho", "corpus_split": "development", "file_name": "Rain, light.wav",
            "captions": ["r1", "r2", "r3", "r4", "r5"]}
    assert measured(rows) == [
        {"id": f"development/Rain, light#{k}", "audio": "../clotho/development/Rain, light.wav", "split": "train",
         "sample_rate": RATE, "caption": f"r{k}", "meta": {**meta, "caption_index": k}} for k in range(1, 6)
    ] + [{"id": "evaluation/bird", "audio": "../clotho/evaluation/bird.wav", "split": "test", "sample_rate": RATE,
          "caption": "b1", "meta": {"corpus": "clotho", "corpus_split": "evaluation", "file_name": "bird.wav",
                                    "captions": ["b1", "b2", "b3", "b4", "b5"]}}]
    assert skips(report, root) == [("development/short", "too_short", "development/short.wav"),
                                   ("development/nocap", "no_caption", "development/nocap.wav"),
                                   ("evaluation/lost", "missing", "evaluation/lost.wav")]
    assert loads(out / "clotho.jsonl") == 5 and loads(out / "clotho.jsonl", split="test") == 1


def test_wavcaps_sources(tmp_path):
    root = tmp_path / "wavcaps"
    data = {
        "AudioSet_SL": ("as_final.json", [{"id": "Yb0RFKhbpFJA.wav", "caption": "Wind blows.", "audio": "wav_path",
                                           "duration": 10.0}, {"id": "Ygone.wav", "caption": "x", "duration": 1.0}]),
        "FreeSound": ("fsd_final.json", [{"id": "180913", "file_name": "UK Mello.wav", "href": "h", "tags": ["a"],
                                          "author": "who", "caption": "A bell rings.", "duration": 0.2},
                                         {"id": "7", "caption": "", "duration": 0.2}, {"caption": "no id"}]),
    }
    for source, (name, items) in data.items():
        (root / "json_files" / source).mkdir(parents=True)
        (root / "json_files" / source / name).write_text(json.dumps({"num_captions_per_audio": 1, "data": items}))
    wav(root / "Zip_files" / "AudioSet_SL" / "Yb0RFKhbpFJA.flac")
    wav(root / "Zip_files" / "FreeSound" / "part1" / "180913.flac")
    wav(root / "Zip_files" / "FreeSound" / "7.flac")
    out = tmp_path / "out"
    rows, report = run("wavcaps", root, out, ["AudioSet_SL", "FreeSound"])
    assert measured(rows) == [
        {"id": "AudioSet_SL/Yb0RFKhbpFJA", "audio": "../wavcaps/Zip_files/AudioSet_SL/Yb0RFKhbpFJA.flac",
         "split": "train", "sample_rate": RATE, "caption": "Wind blows.",
         "meta": {"corpus": "wavcaps", "corpus_split": "AudioSet_SL", "source": "AudioSet_SL", "metadata_duration": 10.0,
                  "captions": ["Wind blows."]}},
        {"id": "FreeSound/180913", "audio": "../wavcaps/Zip_files/FreeSound/part1/180913.flac", "split": "train",
         "sample_rate": RATE, "caption": "A bell rings.",
         "meta": {"corpus": "wavcaps", "corpus_split": "FreeSound", "source": "FreeSound", "metadata_duration": 0.2,
                  "file_name": "UK Mello.wav", "tags": ["a"], "author": "who", "href": "h",
                  "captions": ["A bell rings."]}},
    ]
    assert skips(report, root) == [("AudioSet_SL/Ygone", "missing", "Zip_files/AudioSet_SL/Ygone.flac"),
                                   ("FreeSound/7", "no_caption", "Zip_files/FreeSound/7.flac"),
                                   ("FreeSound/item2", "bad_metadata", "json_files/FreeSound/fsd_final.json")]
    assert loads(out / "wavcaps.jsonl") == 2
    # --full_decode also decodes the samples: a clip whose header parses but holds NaNs is unreadable.
    bad = np.full(3200, np.nan, np.float32)
    sf.write(str(root / "Zip_files" / "FreeSound" / "part1" / "180913.wav"), bad, RATE, subtype="FLOAT")
    (root / "Zip_files" / "FreeSound" / "part1" / "180913.flac").unlink()
    rows, report = run("wavcaps", root, out, ["FreeSound"], full_decode=True)
    assert rows == [] and ("FreeSound/180913", "unreadable", "Zip_files/FreeSound/part1/180913.wav") in skips(report, root)
    assert "NaN" in report["skips"][0]["reason"]
    rows, _ = run("wavcaps", root, out, ["FreeSound"])  # the header alone passes
    assert [r["id"] for r in rows] == ["FreeSound/180913"]


# --------------------------------------------------------------------------------------------- speech
LRS_TXT = "Text:  HELLO THERE\nConf:  4\n\nWORD START END ASDSCORE\nHELLO 0.05 0.10 1.2\nTHERE 0.11 0.19 2.0\n"


def lrs3_tree(root: Path) -> Path:
    for split, speaker, utt, txt in [("trainval", "spkA", "00001", LRS_TXT), ("trainval", "spkA", "00002", LRS_TXT),
                                     ("trainval", "spkB", "00001", None), ("trainval", "spkB", "00002", "Conf:  3\n"),
                                     ("test", "spkC", "00001", LRS_TXT)]:
        mp4(root / split / speaker / f"{utt}.mp4")
        if txt is not None:
            (root / split / speaker / f"{utt}.txt").write_text(txt)
    return root


WORDS = [{"word": "HELLO", "start": 0.05, "end": 0.1}, {"word": "THERE", "start": 0.11, "end": 0.19}]


def test_lrs3_speakers_words_and_same_speaker_reference(tmp_path):
    root = lrs3_tree(tmp_path / "lrs3")
    out = tmp_path / "out"
    rows, report = run("lrs3", root, out, ["trainval", "test"], same_speaker_reference=True)
    def row(split, spk, utt, ref=None):
        r = {"id": f"{split}/{spk}/{utt}", "audio": f"lrs3_audio/{split}/{spk}/{utt}.wav",
             "video": f"../lrs3/{split}/{spk}/{utt}.mp4", "transcript": "HELLO THERE",
             "split": "train" if split == "trainval" else "test", "sample_rate": RATE,
             "meta": {"corpus": "lrs3", "corpus_split": split, "speaker": spk, "words": WORDS}}
        return {**r, "reference_audio": ref} if ref else r
    assert measured(rows) == [row("trainval", "spkA", "00001", "lrs3_audio/trainval/spkA/00002.wav"),
                              row("trainval", "spkA", "00002", "lrs3_audio/trainval/spkA/00001.wav"),
                              row("test", "spkC", "00001")]
    assert skips(report, root) == [("trainval/spkB/00001", "no_transcript", "trainval/spkB/00001.txt"),
                                   ("trainval/spkB/00002", "no_transcript", "trainval/spkB/00002.txt")]
    assert report["references"] == {"assigned": 2, "without_other_clip_of_speaker": 1} and report["speakers"] == 2
    assert loads(out / "lrs3.jsonl") == 2


def test_lrs2_filelists(tmp_path):
    root = tmp_path / "lrs2"
    base = root / "mvlrs_v1"
    mp4(base / "main" / "555" / "00001.mp4")
    (base / "main" / "555" / "00001.txt").write_text(LRS_TXT)
    mp4(base / "main" / "666" / "00003.mp4")
    (base / "main" / "666" / "00003.txt").write_text(LRS_TXT)
    mp4(base / "pretrain" / "777" / "00001.mp4", seconds=0.04)  # too short
    (base / "pretrain" / "777" / "00001.txt").write_text(LRS_TXT)
    mp4(base / "main" / "888" / "00001.mp4", seconds=0.4, fps=5.0)  # below min_fps
    (base / "main" / "888" / "00001.txt").write_text(LRS_TXT)
    (base / "train.txt").write_text("555/00001\n555/00002\n888/00001\n")  # 555/00002 is not in the copy
    (base / "test.txt").write_text("666/00003 NF\n")
    (base / "pretrain.txt").write_text("777/00001\n")
    out = tmp_path / "out"
    rows, report = run("lrs2", root, out, ["pretrain", "train", "test"], audio_rate=22050)
    assert measured(rows) == [
        {"id": "train/555/00001", "audio": "lrs2_audio/train/555/00001.wav", "video": "../lrs2/mvlrs_v1/main/555/00001.mp4",
         "transcript": "HELLO THERE", "split": "train", "sample_rate": 22050,
         "meta": {"corpus": "lrs2", "corpus_split": "train", "programme": "555", "words": WORDS}},
        {"id": "test/666/00003", "audio": "lrs2_audio/test/666/00003.wav", "video": "../lrs2/mvlrs_v1/main/666/00003.mp4",
         "transcript": "HELLO THERE", "split": "test", "sample_rate": 22050,
         "meta": {"corpus": "lrs2", "corpus_split": "test", "programme": "666", "words": WORDS}},
    ]
    assert skips(report, root) == [("pretrain/777/00001", "too_short", "mvlrs_v1/pretrain/777/00001.mp4"),
                                   ("train/555/00002", "no_transcript", "mvlrs_v1/main/555/00002.txt"),
                                   ("train/888/00001", "low_fps", "mvlrs_v1/main/888/00001.mp4")]
    assert sf.info(str(out / "lrs2_audio" / "train" / "555" / "00001.wav")).samplerate == 22050  # --audio_rate


def commonvoice_tree(root: Path) -> Path:
    lang = root / "cv-corpus-17.0-2024-03-15" / "en"
    (lang / "clips").mkdir(parents=True)
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"
    (lang / "train.tsv").write_text(header
                                    + "c1\tcommon_voice_en_1.mp3\ts\tHe said \"hi\".\t\t2\t0\ttwenties\tmale\t\t\ten\t\n"
                                    + "c1\tcommon_voice_en_2.mp3\ts\tSecond one.\t\t2\t0\t\t\t\t\ten\t\n"
                                    + "c2\tcommon_voice_en_3.mp3\ts\t\t\t2\t0\t\t\t\t\ten\t\n"
                                    + "c2\tcommon_voice_en_4.mp3\ts\tGone.\t\t2\t0\t\t\t\t\ten\t\n")
    (lang / "dev.tsv").write_text(header + "c3\tcommon_voice_en_5.mp3\ts\tDev clip.\t\t2\t0\t\t\t\t\ten\t\n")
    for k in (1, 2, 3, 5):
        sf.write(str(lang / "clips" / f"common_voice_en_{k}.mp3"), tone(0.3), RATE, format="MP3")
    return root


CV_META = {"corpus": "commonvoice", "corpus_split": "train", "speaker": "c1", "locale": "en"}


def test_commonvoice_mp3_and_client_ids(tmp_path):
    root = commonvoice_tree(tmp_path / "cv")
    out = tmp_path / "out"
    rows, report = run("commonvoice", root, out, ["train", "dev"], options={"language": "en"})
    clips = "../cv/cv-corpus-17.0-2024-03-15/en/clips"
    assert measured(rows, duration=0.3, tol=0.08) == [
        {"id": "common_voice_en_1", "audio": f"{clips}/common_voice_en_1.mp3", "transcript": 'He said "hi".',
         "split": "train", "sample_rate": RATE, "meta": {**CV_META, "gender": "male", "age": "twenties"}},
        {"id": "common_voice_en_2", "audio": f"{clips}/common_voice_en_2.mp3", "transcript": "Second one.",
         "split": "train", "sample_rate": RATE, "meta": CV_META},
        {"id": "common_voice_en_5", "audio": f"{clips}/common_voice_en_5.mp3", "transcript": "Dev clip.",
         "split": "val", "sample_rate": RATE, "meta": {**CV_META, "corpus_split": "dev", "speaker": "c3"}},
    ]
    assert skips(report, root) == [
        ("common_voice_en_3", "no_transcript", "cv-corpus-17.0-2024-03-15/en/clips/common_voice_en_3.mp3"),
        ("common_voice_en_4", "missing", "cv-corpus-17.0-2024-03-15/en/clips/common_voice_en_4.mp3")]
    assert loads(out / "commonvoice.jsonl") == 2


def test_libritts_speakers_and_transcripts(tmp_path):
    root = tmp_path / "LibriTTS"
    good = root / "train-clean-100" / "19" / "198"
    wav(good / "19_198_000000_000000.wav", rate=24000)
    (good / "19_198_000000_000000.normalized.txt").write_text("Hello world.\n")
    wav(good / "19_198_000000_000001.wav", rate=24000)  # no transcript file
    low = root / "dev-clean" / "84" / "121123"
    wav(low / "84_121123_000008_000000.wav", rate=8000)
    (low / "84_121123_000008_000000.normalized.txt").write_text("Low rate.")
    wav(good / "19_198_000000_000002.wav", seconds=0.5, rate=24000)  # longer than max_duration
    (good / "19_198_000000_000002.normalized.txt").write_text("Too long.")
    garbage(root / "test-clean" / "1089" / "134686" / "1089_134686_000001_000001.wav")
    (root / "test-clean" / "1089" / "134686" / "1089_134686_000001_000001.normalized.txt").write_text("Broken.")
    out = tmp_path / "out"
    rows, report = run("libritts", root, out, ["train-clean-100", "dev-clean", "test-clean"],
                       limits=Limits(min_duration=0.1, max_duration=0.4))
    assert measured(rows) == [
        {"id": "19_198_000000_000000", "audio": "../LibriTTS/train-clean-100/19/198/19_198_000000_000000.wav",
         "transcript": "Hello world.", "split": "train", "sample_rate": 24000,
         "meta": {"corpus": "libritts", "corpus_split": "train-clean-100", "speaker": "19", "chapter": "198"}}]
    assert skips(report, root) == [
        ("19_198_000000_000001", "no_transcript", "train-clean-100/19/198/19_198_000000_000001.normalized.txt"),
        ("19_198_000000_000002", "too_long", "train-clean-100/19/198/19_198_000000_000002.wav"),
        ("84_121123_000008_000000", "low_sample_rate", "dev-clean/84/121123/84_121123_000008_000000.wav"),
        ("1089_134686_000001_000001", "unreadable", "test-clean/1089/134686/1089_134686_000001_000001.wav")]
    assert "8000 Hz is below min_sample_rate=16000 Hz" in report["skips"][2]["reason"]
    assert loads(out / "libritts.jsonl") == 1


def test_unihagen_speech_pool(tmp_path):
    lrs3 = lrs3_tree(tmp_path / "lrs3")
    cv = commonvoice_tree(tmp_path / "cv")
    rows, report = run("unihagen-speech", lrs3, tmp_path / "out",
                       options={"commonvoice_root": str(cv), "commonvoice_split": ["train"]})
    assert [(r["id"], r["meta"]["speaker"], r["split"], "video" in r) for r in rows] == [
        ("lrs3/trainval/spkA/00001", "lrs3/spkA", "train", True), ("lrs3/trainval/spkA/00002", "lrs3/spkA", "train", True),
        ("lrs3/test/spkC/00001", "lrs3/spkC", "test", True),
        ("commonvoice/common_voice_en_1", "commonvoice/c1", "train", False),
        ("commonvoice/common_voice_en_2", "commonvoice/c1", "train", False)]
    assert {r["meta"]["pool_source"] for r in rows} == {"lrs3", "commonvoice"}
    assert report["skipped_by_kind"] == {"missing": 1, "no_transcript": 3}
    # The UniHAGen mixer's speech side reads it: transcripts present, talking-face videos found.
    from avgen.data.manifest import ManifestDataset
    ds = ManifestDataset(tmp_path / "out" / "unihagen-speech.jsonl", split="train", duration=0.2, on_error="raise")
    assert len(ds) == 4 and ds.video_indices() == [0, 1] and all(r.texts["transcript"] for r in ds.rows)
    # ... and mixes it with the environment pool (the builder already removed what §4.1's filters remove).
    from avgen.data.unihagen import UniHAGenMixer
    run("unihagen-environment", vggsound_tree(tmp_path / "vgg"), tmp_path / "out")
    env = ManifestDataset(tmp_path / "out" / "unihagen-environment.jsonl", split="train", duration=0.2, on_error="raise")
    mixer = UniHAGenMixer(env, ds, scenarios=("s1", "s2"), snr_db=(0.0, 0.0), seed=0, size=4)
    assert mixer.environment_pool == [0] and sum(mixer.filter_counts.values()) == 0
    mixes = [mixer[i] for i in range(4)]
    assert {m.meta["unihagen"]["scenario"] for m in mixes} == {"s1", "s2"}
    for m in mixes:
        assert (m.transcript == "HELLO THERE" if m.meta["unihagen"]["scenario"] == "s2" else m.caption == "dog barking")


# --------------------------------------------------------------------------------------------- Greatest Hits
def test_greatest_hits_windows_with_hits(tmp_path):
    root = tmp_path / "greatesthits"
    data = root / "vis-data"
    mp4(data / "2015-02-16-16-49-06_denoised.mp4", seconds=0.4)
    (data / "2015-02-16-16-49-06_times.txt").write_text("0.05 wood hit static\n0.27 None scratch None\n0.29 rock hit\n")
    mp4(data / "2015-02-17-10-00-00_denoised.mp4", seconds=0.4)  # no _times.txt
    garbage(data / "2015-02-18-10-00-00_denoised.mp4")
    (data / "2015-02-18-10-00-00_times.txt").write_text("0.1 wood hit static\n")
    (root / "train.txt").write_text("2015-02-16-16-49-06\n2015-02-17-10-00-00\n2015-02-18-10-00-00\n")
    out = tmp_path / "out"
    rows, report = run("greatest-hits", root, out, options={"clip_seconds": 0.1})
    base = {"audio": "greatest-hits_audio/2015-02-16-16-49-06.wav", "video": "../greatesthits/vis-data/2015-02-16-16-49-06_denoised.mp4",
            "split": "train", "sample_rate": RATE}
    assert measured(rows, duration=0.4) == [
        {**base, "id": "2015-02-16-16-49-06_0000", "meta": {"corpus": "greatest-hits", "corpus_split": "train",
         "hits": [{"time": 0.05, "material": "wood", "action": "hit", "reaction": "static"}], "window": 0}},
        {**base, "id": "2015-02-16-16-49-06_0002", "start": 0.2, "meta": {"corpus": "greatest-hits", "corpus_split": "train",
         "hits": [{"time": 0.07, "material": "None", "action": "scratch", "reaction": "None"},
                  {"time": 0.09, "material": "rock", "action": "hit", "reaction": "None"}], "window": 2}},
    ]
    assert skips(report, root) == [("2015-02-17-10-00-00", "missing", "vis-data/2015-02-17-10-00-00_times.txt"),
                                   ("2015-02-18-10-00-00", "unreadable", "vis-data/2015-02-18-10-00-00_denoised.mp4")]
    dm = ManifestDataModule(train_manifest=str(out / "greatest-hits.jsonl"), duration=0.1, sample_rate=RATE,
                            on_error="raise")
    second = dm.dataset("train")[1]  # the window at 0.2 s decodes from its start
    assert second.seconds_start == pytest.approx(0.2) and second.audio_length == int(0.1 * RATE)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_build_manifest_in_process_with_workers(tmp_path, capsys):
    from avgen.cli import COMMANDS, main

    assert "build-manifest" in COMMANDS and set(BUILDERS) >= {"vggsound", "audiocaps", "clotho", "wavcaps", "lrs3",
                                                                "lrs2", "commonvoice", "libritts", "greatest-hits",
                                                                "unihagen-environment", "unihagen-speech"}
    root = tmp_path / "clotho"
    root.mkdir()
    (root / "clotho_captions_evaluation.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        + "".join(f"c{k}.wav,a{k},b,c,d,e\n" for k in range(6)))
    for k in range(5):
        wav(root / "evaluation" / f"c{k}.wav", seconds=0.05 if k == 3 else 0.2)
    out = tmp_path / "m" / "clotho.jsonl"
    main(["build-manifest", "clotho", "--root", str(root), "--output", str(out), "--split", "evaluation",
          "--min_duration", "0.1", "--workers", "2", "--no_progress"])
    printed = capsys.readouterr().out
    assert "clotho: 4 rows from 4 clips" in printed and "too_short 1" in printed and "missing 1" in printed
    assert str(root / "evaluation" / "c5.wav") in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["caption"] for r in rows] == ["a0", "a1", "a2", "a4"]  # the metadata's order, across workers
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert [(s["id"], s["kind"]) for s in report["skips"]] == [("evaluation/c3", "too_short"), ("evaluation/c5", "missing")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metadata for any of the splits"):
        main(["build-manifest", "clotho", "--root", str(tmp_path / "empty"), "--output", str(out), "--no_progress"])
    with pytest.raises(SystemExit, match="unknown split"):
        main(["build-manifest", "clotho", "--root", str(root), "--output", str(out), "--split", "dev"])
