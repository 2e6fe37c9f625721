"""Item 9: what stopped paper-scale runs. (a) S2 on-screen speech at LRS3 : CommonVoice proportions,
(b) SpeechT5's LayerDrop under DDP, (c) the OmniSonic stage configs' manifests and init checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import SpeechT5Config, SpeechT5ForTextToSpeech

from avgen.conditioning.speech import KNOWN_CONFIGS, TINY_SPEECHT5, SpeechTranscriptEncoder
from avgen.data import ManifestDataset, UniHAGenMixer, read_manifest

REPO = Path(__file__).resolve().parents[2]


def test_s2_never_fails_when_few_speech_clips_have_video(corpus):
    # 2 % of the speech clips have a face video, as LRS3 (33K) among LRS3 + CommonVoice (1.67M)
    speech_rows = [{"id": f"cv{i}", "audio": "good.wav", "transcript": "hello there"} for i in range(196)]
    speech_rows += [{"id": f"lrs{i}", "audio": "good.wav", "video": "full.mp4", "transcript": "see you"}
                    for i in range(4)]
    env_rows = [{"id": f"env{i}", "audio": "long.wav", "video": "full.mp4", "caption": "a bell rings"}
                for i in range(4)]
    media = dict(duration=0.5, semantic_size=32, sync_size=32, on_error="raise")
    speech = ManifestDataset(corpus.manifest("speech.jsonl", speech_rows), **media)
    env = ManifestDataset(corpus.manifest("env.jsonl", env_rows), **media)
    mixer = UniHAGenMixer(env, speech, scenarios=["s2"], size=24, seed=0)
    for i in range(len(mixer)):  # each used to fail with probability 0.98 ** 64 = 27 %
        mix = mixer[i]
        onscreen = mix.meta["unihagen"]["onscreen"]["id"]
        assert onscreen.startswith("lrs") and mix.video_sync is not None and mix.transcript == "see you"
    without_video = ManifestDataset(corpus.manifest("cv.jsonl", speech_rows[:196]), **media)
    with pytest.raises(ValueError, match="s2 needs on-screen speech, but no speech clip has a video"):
        UniHAGenMixer(env, without_video, scenarios=["s1", "s2"])
    only_faces = ManifestDataset(corpus.manifest("lrs.jsonl", speech_rows[196:]), **media)
    mixer = UniHAGenMixer(env, without_video, scenarios=["s2"], size=4, onscreen_speech_sources=only_faces)
    assert all(mixer[i].meta["unihagen"]["onscreen"]["id"].startswith("lrs") for i in range(4))


@pytest.fixture(scope="module")
def layerdrop_speecht5(tmp_path_factory) -> Path:
    """A tiny SpeechT5 checkpoint whose config asks for LayerDrop (the released one has 0.1)."""
    path = tmp_path_factory.mktemp("speecht5")
    torch.manual_seed(0)
    SpeechT5ForTextToSpeech(SpeechT5Config(**{**KNOWN_CONFIGS[TINY_SPEECHT5], "encoder_layerdrop": 0.9})).save_pretrained(path)
    return path


def test_trainable_speecht5_uses_every_layer_every_step(layerdrop_speecht5):
    encoder = SpeechTranscriptEncoder(str(layerdrop_speecht5), tokenizer="char", durator_dropout=0.0).train()
    assert encoder.layerdrop == 0.0
    for _ in range(4):  # with LayerDrop 0.9 some layer is skipped (no gradient) in nearly every step
        encoder.zero_grad()
        frames, mask = encoder(["hello there", "see you soon"])
        frames.sum().backward()
        unused = [n for n, p in encoder.text_encoder.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == []
    assert SpeechTranscriptEncoder(str(layerdrop_speecht5), tokenizer="char", layerdrop=0.5).layerdrop == 0.5
    with torch.device("meta"):  # the paper's SpeechT5 (encoder_layerdrop 0.1 in its config), trainable
        assert SpeechTranscriptEncoder("microsoft/speecht5_tts").text_encoder.wrapped_encoder.layerdrop == 0.0


@pytest.mark.slow
def test_two_process_ddp_fits_foleygenex_and_omnisonic_with_a_trainable_speecht5(layerdrop_speecht5, tmp_path):
    """The suite's 2-process DDP fits (CPU, gloo), both in one launch of the ranks (tests/cli_support.py):

    * FoleyGenEx's tiny config: its BalancedDataModule shards the batches per rank itself (no distributed
      sampler), validation with generation at step 3, last.ckpt at step 3;
    * OmniSonic's tiny config with a trainable SpeechT5 whose config asks for LayerDrop 0.9: DDP fails at
      the second step if a step leaves a layer without gradient (the encoder must use every layer).
    """
    from cli_support import FOLEYGENEX_FAST, FOLEYGENEX_TINY, last_checkpoint

    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    foleygenex_root, omnisonic_root = tmp_path / "foleygenex", tmp_path / "omnisonic"
    foleygenex = [
        "fit", "--config", FOLEYGENEX_TINY, *FOLEYGENEX_FAST, *ddp, f"--trainer.default_root_dir={foleygenex_root}",
        "--trainer.max_steps=3", "--trainer.use_distributed_sampler=false",  # BalancedDataModule shards per rank
        "--trainer.val_check_interval=3", "--model.init_args.num_val_generate_batches=1",
    ]
    omnisonic = [
        "fit", "--config", str(REPO / "configs/omnisonic/tiny.yaml"), *ddp,
        "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={omnisonic_root}",
        f"--model.init_args.speech_encoder.init_args.model_name={layerdrop_speecht5}",
        "--model.init_args.speech_encoder.init_args.tokenizer=char",
        "--data.init_args.batch_size=2", "--data.init_args.train_size=8", "--data.init_args.duration=1.0",
        "--model.init_args.duration=1.0",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "cli_support.py"), json.dumps([foleygenex, omnisonic])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "`Trainer.fit` stopped: `max_steps=3` reached" in done.stderr  # FoleyGenEx
    assert torch.load(last_checkpoint(foleygenex_root), map_location="cpu", weights_only=True)["global_step"] == 3
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in done.stderr  # OmniSonic, both steps with every layer
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr


def test_omnisonic_stage_configs_name_jsonl_manifests_and_chain_the_checkpoint(tmp_path):
    configs = {name: yaml.safe_load((REPO / f"configs/omnisonic/{name}.yaml").read_text())
               for name in ("paper", "stage1", "stage2")}
    # paper.yaml streams precomputed shards; its media datamodule (what precompute reads) is media.yaml
    media = {"paper": yaml.safe_load((REPO / "configs/omnisonic/media.yaml").read_text()),
             "stage1": configs["stage1"]["data"], "stage2": configs["stage2"]["data"]}
    assert configs["paper"]["data"]["class_path"].endswith("StreamingDataModule")
    for name, data in media.items():
        for source in ("speech", "environment"):
            args = data["init_args"][source]["init_args"]
            manifests = [v for k, v in args.items() if k.endswith("_manifest")]
            assert manifests and all(m.endswith(".jsonl") for m in manifests), (name, manifests)
    stage1_last = [c["init_args"] for c in configs["stage1"]["trainer"]["callbacks"]
                   if c["class_path"].endswith("ModelCheckpoint") and c["init_args"].get("save_last")]
    assert len(stage1_last) == 1
    written = Path(stage1_last[0]["dirpath"]) / "last.ckpt"
    assert Path(configs["stage2"]["model"]["init_args"]["init_checkpoint"]) == written
    table = tmp_path / "speech_train.csv"
    table.write_text("id,audio,transcript\nclip0,clip0.wav,hello\n")
    with pytest.raises(ValueError, match=r"line 1: malformed JSON.*JSON lines, not CSV"):
        read_manifest(table)
