"""Attention-head element-wise ops, before and after, side by side in one run (issue 15).

* RoPE: the real-valued form ``x * cos + swap_pairs(x) * sin`` (what ``apply_rope`` ran before, and
  still runs while ``torch.compile`` traces) against one complex multiply ``(x0 + i x1) e^{i angle}``
  (eager ``apply_rope`` now), both on the (B, H, L, Dh) view of a fused projection that attention
  passes, fp32;
* key-padding masks: zeroing the output of samples without keys (B, H, Lq, Dh) against zeroing their
  values (B, H, Lk, Dh) before SDPA (``avgen.nn.scaled_dot_product_attention`` now).

Shapes are the sampling step's (2 CFG branches) at the speed bench's sizes. The max |difference|
column shows both forms give the same numbers to fp32 rounding.

    python bench/bench_rope.py [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _timing import timed  # bench/ is on sys.path when a script runs
from avgen.nn.rope import RopeRotation, apply_rope, rope_angles, rope_rotation

# (name, heads, query tokens, head dim, key tokens of a masked cross-attention)
SHAPES = [
    ("FoleyGenEx 8 s: latents + CLIP", 7, 314, 64, 77),
    ("AudioGen-Omni 8 s: latents", 8, 345, 64, 77),
    ("OmniSonic 8 s: 100 x 8 patches", 6, 800, 64, 141),
    ("Harmony video 21 x 30 x 52 / 4", 12, 1638, 128, 512),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), fastest of {args.repeats} calls (CPU seconds of this "
          f"process with 1 thread)")
    clock = time.process_time if args.threads == 1 else time.perf_counter
    g = torch.Generator().manual_seed(0)
    print(f"\n{'shape':34s} {'RoPE real':>10s} {'complex':>8s} {'ratio':>6s} {'max|diff|':>9s}   "
          f"{'mask: zero out':>14s} {'zero v':>7s} {'ratio':>6s}")
    for name, heads, length, head_dim, keys in SHAPES:
        fused = torch.randn(2, length, 3 * heads * head_dim, generator=g)
        q = fused[..., : heads * head_dim].unflatten(-1, (heads, head_dim)).transpose(1, 2)  # as QKVProjection
        rotation = rope_rotation(rope_angles(torch.arange(float(length)), head_dim))
        real = RopeRotation(rotation.cos, rotation.sin)  # no complex form: the real-valued path
        t_real = timed(lambda: apply_rope(q, real), 2, args.repeats, "min", clock)
        t_complex = timed(lambda: apply_rope(q, rotation), 2, args.repeats, "min", clock)
        diff = (apply_rope(q, real) - apply_rope(q, rotation)).abs().max().item()

        k, v = (torch.randn(2, heads, keys, head_dim, generator=g) for _ in range(2))
        mask = torch.ones(2, keys, dtype=torch.bool)
        mask[1] = False  # the unconditional branch of an empty caption
        has_key = mask.any(-1)[:, None, None, None]
        safe = (mask | ~mask.any(-1, keepdim=True))[:, None, None, :]
        qc = q.contiguous()
        t_out = timed(lambda: F.scaled_dot_product_attention(qc, k, v, attn_mask=safe) * has_key, 2, args.repeats, "min",
                      clock)
        t_v = timed(lambda: F.scaled_dot_product_attention(qc, k, v * has_key, attn_mask=safe), 2, args.repeats, "min",
                    clock)
        print(f"{name:34s} {1e3 * t_real:8.2f}ms {1e3 * t_complex:6.2f}ms {t_complex / t_real:6.2f} {diff:9.1e}   "
              f"{1e3 * t_out:12.2f}ms {1e3 * t_v:5.2f}ms {t_v / t_out:6.2f}", flush=True)


if __name__ == "__main__":
    main()
