"""How fast can an 8-s sampling step get on this machine? A floor from the profile (issue 15).

Issue 15 asks for an 8-s sample at <= 0.8x of the time before the speed work (``--before``). A sampling
step (25 per sample, 2 CFG branches batched) is a chain of convolutions, matmuls and attention kernels
separated by element-wise ops. The speed work removes and fuses element-wise ops; it does not change
the FLOPs of the kernels (that would change the outputs). So the time the step spends inside those
kernels is a floor for any element-wise work, and its ratio to the time before is the best that
element-wise work can reach. Per family, in one run with this process's CPU seconds on one thread:

* ``before`` / ``after``: fastest sampling step of the same weights, the tree before issue 15 against
  today's (interleaved, so the same load for both);
* ``kernels``: share of the after step's self CPU time in convolution / matmul / attention kernels
  (``torch.profiler``; per-call profiler overhead falls mostly on the many small ops, so the share is
  an underestimate and the floor below a conservative one);
* ``floor / before``: kernels' time / before, the ratio an after step would reach if every other op
  took no time at all; above 0.8 the target cannot be met by removing ops, only by faster kernels
  (on a GPU: bf16 tensor cores, where the element-wise share is larger, see DEVELOPERS.md);
* the kernels' achieved GFLOP/s against the fp32 matmul ceiling, i.e. how much faster they could run.

Harmony (added after that revision; its step is SyncCFG's 3 branches, 5-s clip) has no before: nan.

    python bench/bench_sampling_floor.py [--families foleygenex,audiogen_omni,omnisonic,harmony] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import bench_speed as speed  # bench/ is on sys.path when a script runs

KERNELS = ("conv", "addmm", "aten::mm", "aten::bmm", "aten::linear", "scaled_dot_product", "baddbmm")


def kernel_share(step) -> float:
    """Fraction of one step's self CPU time spent in convolution / matmul / attention kernels."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if any(k in e.key for k in KERNELS)) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(speed.FAMILIES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", default=speed.BEFORE_REV, help="git revision of the tree before issue 15")
    args = parser.parse_args()
    torch.set_num_threads(1)
    speed.CLOCK = time.process_time
    ceiling = speed.ceilings(1, args.repeats)
    peak = max(ceiling["matmul_fp32"], ceiling["conv1d_fp32"])
    print(f"torch {torch.__version__}, 1 thread, CPU seconds, fastest of {args.repeats}; fp32 ceiling {peak:.1f} GFLOP/s")
    before_pkg = speed.import_before(args.before)
    for family in args.families.split(","):
        torch.manual_seed(0)
        after = speed.FAMILIES[family]("avgen", False)
        speed.perturb(after["net"])
        runs = {"after": after.get("runner", speed.Runner)(after, old_recipe=False, batch=2)}
        if speed.module_exists(f"{before_pkg}.models.{family}.network"):  # Harmony came after issue 15's base
            before = speed.FAMILIES[family](before_pkg, False)
            before["net"].load_state_dict(after["net"].state_dict())
            runs["before"] = speed.Runner(before, old_recipe=True, batch=2)
        for run in runs.values():
            run.net.eval()
        times = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved: the same load for both
            for name, run in runs.items():
                times[name].append(speed.clocked(run.sample_step, 1, 1))
        best = {name: min(values) for name, values in times.items()}
        share = kernel_share(runs["after"].sample_step)
        flops = speed.flops(runs["after"].sample_step)
        kernel_seconds = share * best["after"]
        before = best.get("before", float("nan"))
        print(f"{after['name']:30s} before {1e3 * before:6.0f} ms  after {1e3 * best['after']:6.0f} ms "
              f"({best['after'] / before:.2f})  kernels {100 * share:3.0f}% = {1e3 * kernel_seconds:5.0f} ms  "
              f"floor/before {kernel_seconds / before:.2f}  kernels at {flops / kernel_seconds / 1e9:5.1f} GFLOP/s "
              f"({100 * flops / kernel_seconds / 1e9 / peak:3.0f}% of ceiling)", flush=True)


if __name__ == "__main__":
    main()
