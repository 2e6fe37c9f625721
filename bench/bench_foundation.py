"""Foundation benchmark: batched vs separate CFG sampling, and bf16-mixed vs fp32 training steps.

Measured side by side in one run on the CPU (ratios, not absolute numbers, are the point):

1. N Euler steps with classifier-free guidance, both branches in ONE batched forward (2B) per
   step (avgen.flow.guided_velocity_fn) vs two separate forwards (MMAudio's ode_wrapper).
2. One training step (forward + backward + AdamW) under bf16 autocast vs fp32.

    python bench/bench_foundation.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from avgen.flow import ClassifierFreeGuidance, euler_sample, guided_velocity_fn, sampling_times
from avgen.flow.guidance import concat_conditions
from avgen.models.foleygenex.network import FoleyGenExNetwork
from _timing import timed  # bench/ is on sys.path when a script runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small network, few steps and repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.quick:
        dims = dict(hidden_dim=256, num_heads=4, num_joint_blocks=1, num_single_blocks=1)
        batch, latents, steps, warmup, repeats = 1, 125, 4, 1, 3
    else:
        dims = dict(hidden_dim=448, num_heads=7, num_joint_blocks=2, num_single_blocks=4)
        batch, latents, steps, warmup, repeats = 2, 250, 10, 1, 5
    channels, clip_frames, sync_tokens, text_length = 20, 64, 192, 77
    semantic_dim, sync_dim, text_dim = 512, 768, 512
    network = FoleyGenExNetwork(
        latent_channels=channels, semantic_dim=semantic_dim, sync_dim=sync_dim, text_dim=text_dim,
        text_length=text_length, **dims,
    )
    with torch.no_grad():  # off the adaLN-Zero init, as after training (same FLOPs either way)
        for p in network.parameters():
            p.add_(0.02 * torch.randn_like(p))
    params = sum(p.numel() for p in network.parameters())
    print(f"network: {dims}, {params / 1e6:.1f}M parameters; threads={args.threads}")
    print(
        f"shapes: latents ({batch}, {latents}, {channels}), clip ({batch}, {clip_frames}, {semantic_dim}), "
        f"sync ({batch}, {sync_tokens}, {sync_dim}), text ({batch}, {text_length}, {text_dim})"
    )

    feats = (
        torch.randn(batch, clip_frames, semantic_dim),
        torch.randn(batch, sync_tokens, sync_dim),
        torch.randn(batch, text_length, text_dim),
    )
    present, absent = torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)
    x0 = torch.randn(batch, latents, channels)
    times = sampling_times(steps)
    guidance = ClassifierFreeGuidance(4.5)

    # 1. CFG sampling
    network.eval()
    with torch.no_grad():
        cond = network.preprocess_conditions(*feats, video_present=present, text_present=present, latent_length=latents)
        uncond = network.preprocess_conditions(*feats, video_present=absent, text_present=absent, latent_length=latents)
        both = concat_conditions([cond, uncond])
        batched_fn = guided_velocity_fn(network.predict_velocity, both, guidance)

        def separate_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return guidance.combine([network.predict_velocity(x, t, cond), network.predict_velocity(x, t, uncond)])

        batched = timed(lambda: euler_sample(batched_fn, x0, times), warmup, repeats)
        separate = timed(lambda: euler_sample(separate_fn, x0, times), warmup, repeats)
        same = torch.allclose(euler_sample(batched_fn, x0, times), euler_sample(separate_fn, x0, times), atol=1e-4)
    print(f"\n[1] {steps} Euler steps with CFG (batch {batch})")
    print(f"    batched (one forward of {2 * batch}):  {batched:.3f} s")
    print(f"    separate (two forwards of {batch}):   {separate:.3f} s")
    print(f"    ratio batched / separate: {batched / separate:.2f}   (same result: {same})")

    # 2. training step
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)
    x1 = torch.randn(batch, latents, channels)

    def train_step(dtype: torch.dtype | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        t = torch.rand(batch)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            v = network(x_t, t, *feats, present, present)
        loss = ((v.float() - (x1 - x0)) ** 2).mean()
        loss.backward()
        optimizer.step()

    fp32 = timed(lambda: train_step(None), warmup, repeats)
    bf16 = timed(lambda: train_step(torch.bfloat16), warmup, repeats)
    print(f"\n[2] training step: forward + backward + AdamW (batch {batch})")
    print(f"    fp32:                {fp32:.3f} s")
    print(f"    bf16-mixed autocast: {bf16:.3f} s")
    print(f"    ratio bf16 / fp32: {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
