"""FoleyGenEx backbone benchmark at MMAudio-S-16k shape: fp32 vs bf16-mixed, and model FLOPs utilisation.

Measured side by side in one run on the CPU (ratios are the point, not absolute numbers):

* a training step: forward + backward + AdamW of the full FoleyGenEx backbone (conditional
  injection on, a 70-100 % span masked, masked MSE, Eq. 3-4) on [250 latents x 20 ch | 64 CLIP
  frames x 1024 | 77 text tokens x 1024] with 192 sync tokens x 768 (MMAudio-S-16k: D=448,
  7 heads, 4 joint + 8 single blocks);
* a sampling step: one Euler step with classifier-free guidance (both branches in one batched
  forward of 2B, conditions preprocessed once as in avgen's sampler).

Each is timed in fp32 and under bf16 autocast ("bf16-mixed"); printed as the bf16/fp32 time ratio
and as model FLOPs utilisation: the step's matmul FLOPs (counted with
``torch.utils.flop_counter.FlopCounterMode``; the optimizer and elementwise work are not counted)
per second, divided by the FLOP/s of a plain square matmul of the same dtype timed in the same run.

    python bench/bench_foleygenex.py [--quick] [--threads 2] [--batch 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from avgen.flow import ClassifierFreeGuidance
from avgen.flow.guidance import concat_conditions
from avgen.models.foleygenex.network import FoleyGenExNetwork
from _timing import timed  # bench/ is on sys.path when a script runs

# MMAudio-S-16k (networks.py `small_16k`): hidden 448 = 7 x 64, depth 12 with 8 fused (single) blocks.
S16K = dict(hidden_dim=448, num_heads=7, num_joint_blocks=4, num_single_blocks=8)
LATENTS, CHANNELS = 250, 20  # 8 s at 31.25 latents/s, 20-channel 16 kHz VAE
CLIP_FRAMES, CLIP_DIM = 64, 1024  # 8 fps x 8 s, DFN5B-CLIP-ViT-H-14-384
SYNC_TOKENS, SYNC_DIM = 192, 768  # Synchformer: 24 segments x 8 tokens
TEXT_TOKENS, TEXT_DIM = 77, 1024


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_flops_per_second(dtype: torch.dtype, size: int, warmup: int, repeats: int) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    seconds = timed(lambda: a @ b, warmup, repeats, statistic="min")
    return 2 * size**3 / seconds


def span_mask(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """A contiguous span of 70-100 % of the frames per sample (FoleyGenEx §3.1), True = masked."""
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        span = int(length * (0.7 + 0.3 * torch.rand((), generator=generator)))
        start = int(torch.randint(0, length - span + 1, (), generator=generator))
        mask[b, start : start + span] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed repeat after one warm-up (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 2, --quick 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warmup, repeats = (1, 1) if args.quick else (1, 3)
    batch = args.batch or (1 if args.quick else 2)

    network = FoleyGenExNetwork(latent_channels=CHANNELS, semantic_dim=CLIP_DIM, sync_dim=SYNC_DIM, text_dim=TEXT_DIM,
                                text_length=TEXT_TOKENS, conditional_injection=True, **S16K)
    with torch.no_grad():  # off the adaLN-Zero init, as after training (same FLOPs either way)
        for p in network.parameters():
            p.add_(0.02 * torch.randn_like(p))
    params = sum(p.numel() for p in network.parameters())
    print(f"FoleyGenEx backbone at MMAudio-S-16k shape {S16K}: {params / 1e6:.1f}M parameters; "
          f"batch {batch}; threads {args.threads}")
    print(f"latents ({LATENTS}, {CHANNELS}), clip ({CLIP_FRAMES}, {CLIP_DIM}), sync ({SYNC_TOKENS}, {SYNC_DIM}), "
          f"text ({TEXT_TOKENS}, {TEXT_DIM})")

    g = torch.Generator().manual_seed(0)
    feats = (torch.randn(batch, CLIP_FRAMES, CLIP_DIM), torch.randn(batch, SYNC_TOKENS, SYNC_DIM),
             torch.randn(batch, TEXT_TOKENS, TEXT_DIM))
    present = torch.ones(batch, dtype=torch.bool)
    x0, x1 = torch.randn(batch, LATENTS, CHANNELS), torch.randn(batch, LATENTS, CHANNELS)
    mask = span_mask(batch, LATENTS, g)
    cond_latent = x1 * (~mask).unsqueeze(-1)  # the unmasked context
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)

    def forward_backward(bf16: bool) -> None:
        t = torch.rand(batch)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = network(x_t, t, *feats, present, present, cond_latent=cond_latent)
        frame_loss = ((v.float() - (x1 - x0)) ** 2).mean(-1)  # Eq. 3
        loss = (frame_loss * mask).sum() / mask.sum()  # Eq. 4
        loss.backward()

    def train_step(bf16: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward(bf16)
        optimizer.step()

    guidance = ClassifierFreeGuidance(4.5)
    absent = torch.zeros(batch, dtype=torch.bool)

    def sampling_step(bf16: bool) -> None:
        """One Euler step with CFG; conditions preprocessed once, outside the step (as avgen's sampler)."""
        x = x0.repeat(2, 1, 1)
        t = torch.full((2 * batch,), 0.3)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = network.predict_velocity(x, t, both)
        guidance.combine(list(v.float().chunk(2)))

    network.train()
    train_flops = count_flops(lambda: forward_backward(False))
    optimizer.zero_grad(set_to_none=True)
    network.eval()
    with torch.no_grad():
        cond = network.preprocess_conditions(*feats, video_present=present, text_present=present,
                                             latent_length=LATENTS, cond_latent=cond_latent)
        uncond = network.preprocess_conditions(*feats, video_present=absent, text_present=absent,
                                               latent_length=LATENTS, cond_latent=cond_latent)
        both = concat_conditions([cond, uncond])
    sample_flops = count_flops(lambda: sampling_step(False))

    results = {}
    matmul_size = 1024 if args.quick else 2048
    for name, bf16, dtype in (("fp32", False, torch.float32), ("bf16-mixed", True, torch.bfloat16)):
        peak = matmul_flops_per_second(dtype, matmul_size, warmup, 10)
        network.train()
        train = timed(lambda: train_step(bf16), warmup, repeats, statistic="min")
        network.eval()
        sample = timed(lambda: sampling_step(bf16), warmup, repeats, statistic="min")
        results[name] = (peak, train, sample)

    print(f"\nmatmul FLOPs counted: training step (fwd + bwd) {train_flops / 1e9:.1f} GFLOP, "
          f"sampling step (CFG, {2 * batch} rows) {sample_flops / 1e9:.1f} GFLOP")
    print(f"{'':12s}{'plain matmul':>16s}{'train step':>14s}{'train MFU':>11s}{'sample step':>14s}{'sample MFU':>12s}")
    for name, (peak, train, sample) in results.items():
        print(f"{name:12s}{peak / 1e9:>10.1f} GF/s{train:>12.3f} s{train_flops / train / peak:>10.1%}"
              f"{sample:>12.3f} s{sample_flops / sample / peak:>11.1%}")
    (p32, t32, s32), (p16, t16, s16) = results["fp32"], results["bf16-mixed"]
    print(f"\nbf16 / fp32 time ratio: training step {t16 / t32:.2f}, sampling step {s16 / s32:.2f}; "
          f"plain {matmul_size}^3 matmul {p32 / p16:.2f}")


if __name__ == "__main__":
    main()
