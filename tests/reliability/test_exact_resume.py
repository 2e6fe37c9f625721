"""Item 5: resume is exact. A run killed with SIGKILL and resumed with ``--ckpt_path last`` (and a run that
stopped at max_steps mid-epoch, resumed with a larger one) ends with the weights, EMA and optimizer state of
the uninterrupted run, bit for bit on CPU; the training loaders
resume at the first batch not trained on (no repeat, no gap) and draw a new order every epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.fabric.utilities.data import _set_sampler_epoch

from avgen.data import BalancedBatchSampler
from avgen.data.sampling import EpochSampler, ResumableDataLoader
from avgen.training.randomness import StepRandomness

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ loaders, in process
def index_loader(num_workers: int = 0) -> ResumableDataLoader:
    data = list(range(10))  # batches of 3: [3, 3, 3, 1] per epoch
    return ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(data, seed=7), num_workers=num_workers,
                               seed=7, collate_fn=list)


def balanced_loader() -> ResumableDataLoader:
    data = list(range(6 + 10))  # ConcatDataset-style indices: 6 of the first, 10 of the second
    return ResumableDataLoader(data, batch_sampler=BalancedBatchSampler((6, 10), batch_size=4, seed=3),
                               collate_fn=list)


def train(loader: ResumableDataLoader, first_epoch: int, epochs: int, stop: tuple[int, int] | None = None):
    """What Lightning does with a training loader: set the epoch, iterate; optionally stop after batch
    ``stop = (epoch, i)`` and return the loader's state as a checkpoint would hold it."""
    seen = []
    for epoch in range(first_epoch, epochs):
        _set_sampler_epoch(loader, epoch)
        for i, batch in enumerate(loader):
            seen.append((epoch, batch))
            if stop == (epoch, i):
                return seen, loader.state_dict()
    return seen, None


@pytest.mark.parametrize("make, stop", [
    (index_loader, (1, 1)),  # mid-epoch
    (index_loader, (1, 3)),  # after the epoch's last batch
    (lambda: index_loader(num_workers=2), (1, 1)),  # workers prefetch indices; only handed-out batches count
    (balanced_loader, (1, 2)),
])
def test_loader_resumes_at_the_next_unseen_batch(make, stop):
    uninterrupted, _ = train(make(), 0, 3)
    before, state = train(make(), 0, 3, stop=stop)
    resumed = make()
    resumed.load_state_dict(state)
    after, _ = train(resumed, resumed.epoch, 3)  # Lightning restores the epoch the state says
    assert before + after == uninterrupted  # no batch repeated, none skipped, same order
    for epoch in range(3):
        items = [i for e, batch in uninterrupted if e == epoch for i in batch]
        if make is not balanced_loader:
            assert sorted(items) == list(range(10))  # every sample once per epoch
        else:
            assert set(range(6)) <= set(items) and set(range(6, 16)) <= set(items)  # both datasets covered
    orders = [[b for e, b in uninterrupted if e == epoch] for epoch in range(3)]
    assert orders[0] != orders[1] != orders[2]  # a new order every epoch (set_epoch reaches the sampler)


def test_step_randomness_depends_only_on_the_step():
    a, b = StepRandomness(seed=5, reseed_global=False), StepRandomness(seed=5, reseed_global=False)
    a.start_step(3, 3)
    first = torch.rand(4, generator=a.generator())
    for step in range(3):  # b gets there through earlier steps that drew other amounts
        b.start_step(step, step)
        torch.randn(step + 1, generator=b.generator())
    b.start_step(3, 3)
    assert torch.equal(torch.rand(4, generator=b.generator()), first)
    b.start_step(3, 4)  # the next micro-batch of the same optimizer step draws differently
    assert not torch.equal(torch.rand(4, generator=b.generator()), first)


# ------------------------------------------------------------------------------ kill -9 and resume
# 4 batches per epoch: killed mid-epoch 1 (step 6), resumed to a max_steps that ends mid-epoch 1 too (step 7),
# then resumed again across the start of epoch 2
STEPS, EVERY, KILL_AT, STOP_AT = 10, 3, 6, 7


def tiny_config(tmp_path: Path) -> Path:
    """The tiny FoleyGenEx config with its periodic checkpoint every EVERY steps."""
    from cli_support import FOLEYGENEX_TINY

    config = yaml.safe_load(Path(FOLEYGENEX_TINY).read_text())
    periodic = [c for c in config["trainer"]["callbacks"] if c.get("init_args", {}).get("every_n_train_steps")]
    assert len(periodic) == 1, "the tiny config should save last.ckpt periodically"
    periodic[0]["init_args"]["every_n_train_steps"] = EVERY
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fit_args(config: Path, root: Path, *extra: str) -> list[str]:
    from cli_support import FOLEYGENEX_FAST

    return ["fit", "--config", str(config), *FOLEYGENEX_FAST, f"--trainer.default_root_dir={root}",
            f"--trainer.max_steps={STEPS}", "--trainer.val_check_interval=1000", *extra]


def training_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's training state: weights, EMA, optimizer moments and steps."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {f"state_dict.{k}": v for k, v in ckpt["state_dict"].items()}
    for i, optimizer in enumerate(ckpt["optimizer_states"]):
        for param, slots in optimizer["state"].items():
            tensors.update({f"optimizer{i}.{param}.{k}": torch.as_tensor(v) for k, v in slots.items()})
    tensors["global_step"] = torch.tensor(ckpt["global_step"])
    return tensors


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_weights_bit_for_bit(tmp_path):
    from avgen.cli import main
    from cli_support import last_checkpoint

    config = tiny_config(tmp_path)
    threads = torch.get_num_threads()  # the killed run uses as many, so kernels sum in the same order
    killed_root, marker = tmp_path / "killed", tmp_path / "stalled"
    stall = (f'--trainer.callbacks+={{"class_path": "stall.StallAfterStep", '
             f'"init_args": {{"step": {KILL_AT}, "marker": "{marker}"}}}}')
    path = [str(HERE.parents[1] / "src"), str(HERE), os.environ.get("PYTHONPATH")]  # src, stall.py
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, path))}
    script = Path(sys.executable).with_name("avgen")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "avgen.cli"]
    log = (tmp_path / "killed.log").open("w")  # a file, not a pipe: a full pipe would block the run
    killed = subprocess.Popen([*command, *fit_args(config, killed_root, stall)], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        # Meanwhile, the uninterrupted run, in this process.
        main(fit_args(config, tmp_path / "uninterrupted"))
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert killed.poll() is None, f"the run ended early:\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the run to kill never reached its stall point"
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
        log.close()
    assert killed.returncode == -signal.SIGKILL
    interrupted = last_checkpoint(killed_root)
    assert training_state(interrupted)["global_step"] == KILL_AT

    # A fit that ends at max_steps in the middle of an epoch, resumed with a larger max_steps, continues with
    # that epoch's next batch (ResumableCheckpoints saves last.ckpt at the last step, before Lightning marks
    # the cut-short epoch completed).
    main(fit_args(config, killed_root, "--ckpt_path=last", f"--trainer.max_steps={STOP_AT}"))
    stopped = torch.load(last_checkpoint(killed_root), map_location="cpu", weights_only=True)
    assert stopped["global_step"] == STOP_AT
    assert stopped["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1  # epoch 1 not completed
    main(fit_args(config, killed_root, "--ckpt_path=last"))

    expected = training_state(last_checkpoint(tmp_path / "uninterrupted"))
    resumed = training_state(last_checkpoint(killed_root))
    assert resumed.keys() == expected.keys()
    assert int(resumed["global_step"]) == STEPS
    different = [k for k in expected if not torch.equal(resumed[k], expected[k])]
    if different:
        worst = max((resumed[k].float() - expected[k].float()).abs().max() for k in different)
        raise AssertionError(f"{len(different)} of {len(expected)} tensors differ after the resume, e.g. "
                             f"{different[:3]} (max |dw| {worst:.2e})")
