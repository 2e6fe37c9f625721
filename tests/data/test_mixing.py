"""1:1 VTA:TTA batch composition (FoleyGenEx §4.2): the balanced batch sampler and datamodule."""

from __future__ import annotations

import math

import pytest
import torch

from avgen.data import BalancedBatchSampler, BalancedDataModule, ToyWorldDataModule


@pytest.mark.parametrize("sizes,batch_size,ratio", [((10, 30), 8, 0.5), ((30, 10), 8, 0.5), ((7, 40), 8, 0.25)])
def test_every_batch_has_the_exact_share_and_an_epoch_covers_both_datasets(sizes, batch_size, ratio):
    sampler = BalancedBatchSampler(sizes, batch_size, ratio, seed=3)
    first_share = round(ratio * batch_size)
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(math.ceil(sizes[0] / first_share),
                                               math.ceil(sizes[1] / (batch_size - first_share)))
    firsts, seconds = [], []
    for batch in batches:
        assert len(batch) == batch_size
        a = [i for i in batch if i < sizes[0]]
        b = [i - sizes[0] for i in batch if i >= sizes[0]]
        assert len(a) == first_share and len(b) == batch_size - first_share
        assert all(0 <= i < sizes[1] for i in b)
        firsts += a
        seconds += b
    assert set(firsts) == set(range(sizes[0])) and set(seconds) == set(range(sizes[1]))
    # each dataset is walked by permutations: its first len(dataset) draws are all distinct
    assert sorted(firsts[: sizes[0]]) == list(range(sizes[0]))
    assert sorted(seconds[: sizes[1]]) == list(range(sizes[1]))


def test_order_is_seeded_per_epoch_and_ranks_split_the_batches():
    sampler = BalancedBatchSampler((12, 12), 4, seed=0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    ranks = [list(BalancedBatchSampler((12, 12), 4, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert ranks[0] == epoch0[0::2] and ranks[1] == epoch0[1::2]
    assert len(ranks[0]) == len(ranks[1])


def test_bad_shares_are_rejected():
    with pytest.raises(ValueError, match="raise batch_size"):
        BalancedBatchSampler((4, 4), 1, 0.5)
    with pytest.raises(ValueError, match="ratio"):
        BalancedBatchSampler((4, 4), 4, 1.0)
    with pytest.raises(ValueError, match="two non-empty"):
        BalancedBatchSampler((0, 4), 4)


def toy(scenario: str, seed: int, **kw) -> ToyWorldDataModule:
    options = dict(batch_size=3, train_size=6, val_size=2, test_size=2, predict_size=2, duration=0.5,
                   semantic_size=16, sync_size=16, speech="formant", scenarios=[scenario], seed=seed)
    return ToyWorldDataModule(**{**options, **kw})


def test_balanced_datamodule_mixes_vta_and_tta_half_and_half_over_toyworld():
    dm = BalancedDataModule(toy("vta", 0), toy("tta", 1, train_size=10), batch_size=4)
    dm.setup("fit")
    seen = {"vta": set(), "tta": set()}
    for batch in dm.train_dataloader():
        assert batch.task == ["vta", "vta", "tta", "tta"]
        assert batch.has_video.tolist() == [True, True, False, False]
        for task, sid in zip(batch.task, batch.ids):
            seen[task].add(sid)
    assert len(seen["vta"]) == 6 and len(seen["tta"]) == 10  # both datasets fully covered in one epoch
    assert not seen["vta"] & seen["tta"]
    val = list(dm.val_dataloader())
    assert [b.task for b in val] == [["vta", "vta"]]  # eval_from="first"
    assert dm.sample_rate == 16000 and dm.duration == 0.5
    both = BalancedDataModule(toy("vta", 0), toy("tta", 1), batch_size=4, eval_from="both")
    assert [b.task for b in both.val_dataloader()] == [["vta", "vta", "tta", "tta"]]


def test_mismatched_media_options_and_bad_eval_source_are_named():
    dm = BalancedDataModule(toy("vta", 0), toy("tta", 1, sample_rate=8000), batch_size=4)
    with pytest.raises(ValueError, match="sample_rate=16000 but second has sample_rate=8000"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="eval_from"):
        BalancedDataModule(toy("vta", 0), toy("tta", 1), eval_from="val")


def test_predict_duration_is_forwarded_to_both_datamodules():
    dm = BalancedDataModule(toy("vta", 0), toy("tta", 1), batch_size=2)
    dm.predict_duration = 1.5
    batch = next(iter(dm.predict_dataloader()))
    assert batch.audio.shape[1] == int(1.5 * 16000)
    assert batch.video_sync.shape[1] == round(1.5 * 25)
    # the training clips keep the training window
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())).audio.shape[1] == int(0.5 * 16000)
    assert torch.equal(dm.first.world_for("train").sample(0).audio, toy("vta", 0).world.sample(0).audio)
