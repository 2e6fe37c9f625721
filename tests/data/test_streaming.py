"""Precomputed shards (issue 14): same losses as media, resume without repeats or gaps, mixing weights, resumable precompute."""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from avgen.cli.precompute import latent_statistics, litdata_optimize, precompute
from avgen.codecs.mel import MelCodec
from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
from avgen.data import ToyWorldDataModule, collate
from avgen.data.batch import Sample
from avgen.data.shards import record_to_sample, sample_to_record
from avgen.data.streaming import StreamingDataModule, mixing_weights
from avgen.models.foleygenex import FoleyGenEx
from tests.data.ddp_stream_resume import Recorder

CLIPS = 8


def tiny_foleygenex() -> FoleyGenEx:
    torch.manual_seed(0)
    return FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"),
        CLIPTextEncoder("avgen-tiny-clip", context_length=16),
        SyncEncoder(**tiny_sync_kwargs()),
        hidden_dim=32, num_heads=2, num_joint_blocks=1, num_single_blocks=1, duration=1.0,
    )


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory, single_thread):
    """Tiny FoleyGenEx, ToyWorld (VTA and TTA clips mixed) and its precomputed train shards (2 parts)."""
    model = tiny_foleygenex()
    data = ToyWorldDataModule(batch_size=4, train_size=CLIPS, duration=1.0, semantic_size=32, sync_size=32,
                              scenarios=["vta", "tta"], seed=3)
    out = tmp_path_factory.mktemp("shards")
    report = precompute(model, data, out, batch_size=3, clips_per_part=5, progress=False)
    return model, data, out, report


def test_precompute_report_counts_clips_and_bytes(toy_shards):
    _, _, out, report = toy_shards
    assert report.written == CLIPS and report.parts_written == 2 and not report.skipped
    assert report.seconds == pytest.approx(CLIPS * 1.0)
    on_disk = sum(p.stat().st_size for p in (out / "train").glob("part-*-chunk-*.bin"))
    assert report.bytes == on_disk > 0


def test_training_from_shards_gives_the_media_losses(toy_shards):
    """Same seed, fp32: three optimiser steps from shards and from the media they were made from."""
    model, data, out, _ = toy_shards
    data.setup("fit")
    media = DataLoader(data.train_dataloader().dataset, batch_size=4, shuffle=False, collate_fn=collate)
    shards = StreamingDataModule(str(out / "train"), batch_size=4, shuffle=False)
    shards.setup("fit")
    losses = {}
    for name, loader in (("media", media), ("shards", shards.train_dataloader())):
        m = copy.deepcopy(model).train()
        optimizer = torch.optim.AdamW(m.network.parameters(), lr=1e-3)
        torch.manual_seed(7)
        losses[name] = []
        for _, batch in zip(range(2), loader):
            if name == "shards":  # the precomputed path: no waveform, no frames; posterior + features
                assert batch.audio is None and batch.video_semantic is None and batch.caption_features is not None
                with mock.patch.object(m.text_encoder, "forward", side_effect=AssertionError("CLIP text ran")):
                    loss = m.training_step(batch, 0)
            else:
                loss = m.training_step(batch, 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    assert len(losses["media"]) == 2
    torch.testing.assert_close(torch.tensor(losses["shards"]), torch.tensor(losses["media"]), rtol=1e-5, atol=1e-6)


def test_shard_record_round_trip_keeps_the_sample():
    sample = Sample(id="a", sample_rate=16000, caption="a dog", transcript=None, seconds_total=2.0, task="vta",
                    audio=torch.zeros(100), audio_length=80, meta={"events": [1, 2]})
    feats = {"posterior_mean": torch.randn(4, 3), "posterior_std": torch.rand(4, 3),
             "caption_features": torch.randn(5, 2), "caption_mask": torch.tensor([1, 1, 0, 0, 0]).bool()}
    back = record_to_sample(sample_to_record(sample, feats, latent_length=3))
    assert (back.id, back.caption, back.transcript, back.audio_length, back.latent_length) == ("a", "a dog", None, 80, 3)
    assert back.meta == {"events": [1, 2]} and back.semantic_features is None and back.audio is None
    torch.testing.assert_close(back.posterior_mean, feats["posterior_mean"])
    batch = collate([back])
    assert batch.latent_lengths.tolist() == [3] and batch.has_audio.tolist() == [True] and not batch.has_video.any()


_Recorder = Recorder  # records the ids of every training batch (the DDP script's stand-in model)


def _fit(shards: Path, steps: int, root: Path, ckpt: str | None = None) -> list[list[str]]:
    model = _Recorder()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    data = StreamingDataModule(str(shards), batch_size=2, shuffle=True, seed=5)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt)
    if ckpt is None:
        trainer.save_checkpoint(root / f"step{steps}.ckpt")
    return model.seen


def test_resume_continues_with_the_next_unseen_sample(toy_shards, tmp_path):
    """Interrupted after 2 of 4 batches, the resumed run sees exactly the uninterrupted run's batches 3-4."""
    _, _, out, _ = toy_shards
    full = _fit(out / "train", 4, tmp_path / "full")
    first = _fit(out / "train", 2, tmp_path / "cut")
    rest = _fit(out / "train", 4, tmp_path / "cut", ckpt=str(tmp_path / "cut" / "step2.ckpt"))
    assert first + rest == full
    ids = [i for b in full for i in b]
    assert len(ids) == len(set(ids)) == CLIPS  # one epoch: every clip once, none twice


def _synthetic_set(root: Path, name: str, n: int) -> str:
    """A shard set of ``n`` metadata-only clips (ids ``<name><i>``, clip i lasts 1 + i % 4 s), written with litdata."""
    def record(i: int):
        return sample_to_record(Sample(id=f"{name}{i}", sample_rate=10, audio=torch.zeros(10 * (1 + i % 4))), {})

    path = root / name
    litdata_optimize(fn=record, inputs=list(range(n)), output_dir=str(path), chunk_size=50, num_workers=1,
                     start_method="fork", verbose=False)
    (path / "precompute.json").write_text(json.dumps({"media": {}, "split": "train"}))
    return str(path)


def test_mixing_weights_hold_within_sampling_error(tmp_path):
    sets = [_synthetic_set(tmp_path, "a", 400), _synthetic_set(tmp_path, "b", 400)]
    data = StreamingDataModule(sets, weights=[3, 1], batch_size=10, shuffle=True, seed=0)
    data.setup("fit")
    ids = [i for _, batch in zip(range(30), data.train_dataloader()) for i in batch.ids]
    share = sum(i.startswith("a") for i in ids) / len(ids)
    std = (0.75 * 0.25 / len(ids)) ** 0.5  # binomial, 300 draws: 0.025
    assert abs(share - 0.75) < 4 * std, share
    assert mixing_weights([100, 300], None, [3, 1]) == [0.5, 0.5]  # MMAudio repeat factors: size x repeat
    # The mixed stream resumes too: cut after 5 batches, restored from the loader's state.
    cut = data.train_dataloader()
    head = [b.ids for _, b in zip(range(5), cut)]
    state = cut.state_dict()
    again = StreamingDataModule(sets, weights=[3, 1], batch_size=10, shuffle=True, seed=0)
    resumed = again.train_dataloader()
    resumed.load_state_dict(state)
    tail = [b.ids for _, b in zip(range(5), resumed)]
    full = [b.ids for _, b in zip(range(10), StreamingDataModule(sets, weights=[3, 1], batch_size=10, seed=0)
                                   .train_dataloader())]
    assert head + tail == full


def test_precompute_resumes_and_rebuilds_a_lost_chunk(toy_shards):
    model, data, out, _ = toy_shards
    root = out / "train"
    before = {p.name: p.read_bytes() for p in root.glob("part-*-chunk-*.bin")}
    again = precompute(model, data, out, batch_size=3, clips_per_part=5, progress=False)
    assert again.written == 0 and again.reused == CLIPS and again.parts_reused == 2
    lost = sorted(before)[-1]  # a chunk of the second part
    (root / lost).unlink()
    handler = signal.getsignal(signal.SIGINT)
    rebuilt = precompute(model, data, out, batch_size=3, clips_per_part=5, progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # litdata's optimize must not keep Ctrl-C for itself
    assert rebuilt.parts_written == 1 and rebuilt.written == CLIPS - 5 and rebuilt.reused == 5
    assert {p.name: p.read_bytes() for p in root.glob("part-*-chunk-*.bin")} == before
    stats = latent_statistics([root])
    from litdata import StreamingDataset

    ds = StreamingDataset(str(root))
    frames = torch.cat([ds[i]["posterior_mean"][: int(ds[i]["latent_length"])] for i in range(len(ds))])
    torch.testing.assert_close(stats["latent_mean"], frames.mean(0))
    torch.testing.assert_close(stats["latent_std"], frames.std(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_length_buckets_give_batches_of_one_duration(tmp_path):
    from avgen.cli.precompute import write_buckets

    path = _synthetic_set(tmp_path, "c", 120)
    buckets = write_buckets(Path(path), [1.5, 2.5])
    assert [b["clips"] for b in buckets] == [30, 30, 60]  # 1 s | 2 s | 3 s and 4 s
    data = StreamingDataModule(path, batch_size=6, bucket_by_length=True, seed=1)
    data.setup("fit")
    batches = [b for _, b in zip(range(12), data.train_dataloader())]
    bucket_of = lambda seconds: 0 if seconds <= 1.5 else 1 if seconds <= 2.5 else 2  # noqa: E731
    for batch in batches:
        assert len({bucket_of(int(n) / 10) for n in batch.audio_lengths}) == 1, batch.audio_lengths
    assert len({bucket_of(int(b.audio_lengths[0]) / 10) for b in batches}) > 1  # more than one bucket is drawn


def test_each_rank_resumes_its_own_stream(toy_shards, monkeypatch):
    """Two simulated DDP ranks: disjoint halves of the epoch; each, cut after one batch and restored from
    the loader's state (what Lightning checkpoints), continues with exactly its remaining batches."""
    from litdata.utilities.env import _DistributedEnv

    _, _, out, _ = toy_shards

    def loader():
        data = StreamingDataModule(str(out / "train"), batch_size=2, shuffle=True, seed=9)
        data.setup("fit")
        return data.train_dataloader()

    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(_DistributedEnv, "detect", classmethod(lambda cls, r=rank: cls(2, r, 1)))
        full = [b.ids for b in loader()]
        cut = loader()
        it = iter(cut)
        first = next(it).ids
        state = cut.state_dict()
        resumed = loader()
        resumed.load_state_dict(state)
        assert [first] + [b.ids for b in resumed] == full
        seen += [i for b in full for i in b]
    assert len(seen) == len(set(seen)) == CLIPS  # the ranks split the epoch: no clip twice, none left out


@pytest.mark.slow
def test_ddp_two_processes_resume_without_repeats_or_gaps(toy_shards, tmp_path):
    """The real thing once: 2-process gloo DDP; a run cut after 2 steps and resumed from its checkpoint sees,
    on every rank, exactly the uninterrupted run's batches; the ranks share no clip and cover the epoch."""
    import os
    import subprocess
    import sys

    _, _, out, _ = toy_shards
    script = Path(__file__).with_name("ddp_stream_resume.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(out / "train"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = []
    for rank in (0, 1):
        full, cut, rest = (json.loads((tmp_path / f"{run}-rank{rank}.json").read_text()) for run in ("full", "cut", "rest"))
        assert len(full) == 4 and cut + rest == full, (rank, full, cut, rest)
        seen += [i for batch in full for i in batch]
    assert len(seen) == len(set(seen)) == CLIPS
