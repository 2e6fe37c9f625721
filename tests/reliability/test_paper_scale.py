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
def test_two_process_ddp_and_fsdp2_fits_foleygenex_and_omnisonic_with_a_trainable_speecht5(layerdrop_speecht5,
                                                                                           tmp_path):
    """The suite's 2-process fits (CPU, gloo), all in one launch of the ranks (tests/cli_support.py):

    * FoleyGenEx's tiny config under DDP: its BalancedDataModule shards the batches per rank itself (no
      distributed sampler), validation with generation at step 3, last.ckpt at step 3;
    * the same 3 steps under FSDP2 (:class:`avgen.training.BlockFullyShardStrategy`, validation with
      generation by the sharded EMA network): every declared block is its own unit sharded over the 2
      ranks, frozen encoders are plain replicated tensors, the losses and the gathered weights (network
      and EMA) equal DDP's, and the single-file checkpoint loads into a fresh module (``weights_only``);
    * a resume of its step-2 checkpoint (written mid-run), with ``checkpoint_blocks`` (each block recomputed in
      backward), ends with its step-3 weights: exact resume, and recomputation gives the same gradients;
    * OmniSonic's tiny config with a trainable SpeechT5 whose config asks for LayerDrop 0.9: DDP fails at
      the second step if a step leaves a layer without gradient (the encoder must use every layer).
    """
    from cli_support import FOLEYGENEX_FAST, FOLEYGENEX_TINY, last_checkpoint

    from avgen.checkpoints import load_model

    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    fsdp2 = ['--trainer.strategy={"class_path": "avgen.training.BlockFullyShardStrategy"}', "--trainer.devices=2"]
    fsdp2_recomputed = ['--trainer.strategy={"class_path": "avgen.training.BlockFullyShardStrategy", '
                        '"init_args": {"checkpoint_blocks": true}}', "--trainer.devices=2"]
    roots = {name: tmp_path / name for name in ("ddp", "fsdp2", "fsdp2_resumed", "omnisonic")}

    def foleygenex(strategy: list[str], root: Path, steps: int, *extra: str) -> list[str]:
        return [
            "fit", "--config", FOLEYGENEX_TINY, *FOLEYGENEX_FAST, *strategy, f"--trainer.default_root_dir={root}",
            f"--trainer.max_steps={steps}",
            "--trainer.use_distributed_sampler=false",  # BalancedDataModule shards per rank
            "--trainer.val_check_interval=3", "--model.init_args.num_val_generate_batches=1",
            "--trainer.callbacks+=cli_support.ShardingProbe", *extra,
        ]

    omnisonic = [
        "fit", "--config", str(REPO / "configs/omnisonic/tiny.yaml"), *ddp,
        "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={roots['omnisonic']}",
        f"--model.init_args.speech_encoder.init_args.model_name={layerdrop_speecht5}",
        "--model.init_args.speech_encoder.init_args.tokenizer=char",
        "--data.init_args.batch_size=2", "--data.init_args.train_size=8", "--data.init_args.duration=1.0",
        "--model.init_args.duration=1.0",
    ]
    at_step2 = ('--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
                f'{{"dirpath": "{roots["fsdp2"]}", "filename": "at_step2", "every_n_train_steps": 2, '
                '"save_top_k": 1}}')
    commands = [
        foleygenex(ddp, roots["ddp"], 3),
        foleygenex(fsdp2, roots["fsdp2"], 3, at_step2),
        foleygenex(fsdp2_recomputed, roots["fsdp2_resumed"], 3, f"--ckpt_path={roots['fsdp2'] / 'at_step2.ckpt'}",
                   "--trainer.limit_val_batches=0"),
        omnisonic,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "cli_support.py"), json.dumps(commands)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count("`Trainer.fit` stopped: `max_steps=3` reached") == 3  # FoleyGenEx, DDP and FSDP2
    ddp_checkpoint = torch.load(last_checkpoint(roots["ddp"]), map_location="cpu", weights_only=True)
    assert ddp_checkpoint["global_step"] == 3
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in done.stderr  # OmniSonic, both steps with every layer
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr

    # FSDP2: each declared block of the network and of the EMA network is its own unit, every parameter a
    # DTensor sharded on dim 0 over the 2 ranks (the two local shards make the full tensor); frozen
    # components stay plain tensors, whole on every rank.
    probes = {name: [json.loads((roots[name] / f"probe_rank{rank}.json").read_text()) for rank in (0, 1)]
              for name in ("ddp", "fsdp2", "fsdp2_resumed")}
    assert all(probe["world_size"] == 2 for probe in probes["fsdp2"])
    units = [probe["units"] for probe in probes["fsdp2"]]
    blocks = [name for name in units[0] if ".block" in name]
    assert len(blocks) == 2 * 4  # 2 joint + 2 single blocks, network and EMA
    assert units[0]["network"]["unit"] and units[0]["ema_network.module"]["unit"]
    for name in blocks:
        assert units[0][name]["unit"] and units[1][name]["unit"], name
        for (placement, local0, full), (_, local1, _) in zip(units[0][name]["params"], units[1][name]["params"]):
            assert placement == "(Shard(dim=0),)" and local0 + local1 == full, (name, placement, local0, local1, full)
    frozen = [name for name in units[0] if name not in blocks and not name.startswith(("network", "ema_network"))]
    assert {"codec", "vision_encoder", "text_encoder", "sync_encoder"} <= set(frozen)
    for name in frozen:
        assert not units[0][name]["unit"] and all(p[0] == "plain" and p[1] == p[2] for p in units[0][name]["params"])
    assert all(u["unit"] is False for u in probes["ddp"][0]["units"].values())  # DDP: nothing sharded

    # The same 3 optimizer steps: per-rank losses and the gathered weights equal DDP's within fp32 rounding,
    # although each step moves the weights far more.
    for rank in (0, 1):
        assert probes["fsdp2"][rank]["losses"] == pytest.approx(probes["ddp"][rank]["losses"], rel=1e-5, abs=1e-6)
    sharded = torch.load(last_checkpoint(roots["fsdp2"]), map_location="cpu", weights_only=True)
    at_step2 = torch.load(roots["fsdp2"] / "at_step2.ckpt", map_location="cpu", weights_only=True)
    assert sharded["global_step"] == 3 and at_step2["global_step"] == 2
    assert sharded["state_dict"].keys() == ddp_checkpoint["state_dict"].keys()
    assert any(key.startswith("ema_network.module.") for key in sharded["state_dict"])
    for key, value in ddp_checkpoint["state_dict"].items():
        torch.testing.assert_close(sharded["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    moved = max((at_step2["state_dict"][k] - v).abs().max().item() for k, v in sharded["state_dict"].items()
                if k.startswith("network."))
    assert moved > 1e-4  # step 3 changed the weights by far more than the tolerance

    # Exact resume of the sharded run's mid-run checkpoint (weights, EMA, optimizer states, data position),
    # stepped with the network's blocks recomputed in backward (the EMA network's are not: never backpropagated).
    recomputed = [probe["units"] for probe in probes["fsdp2_resumed"]]
    assert all(recomputed[0][name]["apis"] == (["checkpoint", "fully_shard"] if name.startswith("network.")
                                               else ["fully_shard"]) for name in blocks)
    assert all(units[0][name]["apis"] == ["fully_shard"] for name in blocks)
    assert probes["fsdp2"][0]["leaf_calls_per_step"] == 1 and probes["fsdp2_resumed"][0]["leaf_calls_per_step"] == 2
    resumed = torch.load(last_checkpoint(roots["fsdp2_resumed"]), map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 3
    for rank in (0, 1):
        assert probes["fsdp2_resumed"][rank]["losses"] == pytest.approx(probes["fsdp2"][rank]["losses"][2:], rel=1e-6)
    for key, value in sharded["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7, msg=key)

    # The single-file checkpoint is what `avgen generate` loads: a fresh module, weights_only, strict.
    model = load_model(last_checkpoint(roots["fsdp2"]))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ddp_checkpoint["state_dict"][key], rtol=1e-5, atol=1e-6, msg=key)


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
