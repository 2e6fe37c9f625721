"""OmniSonic multi-condition CFG (Eq. 9): one sampling step, five branches batched vs five separate forwards.

Side by side in one run (the ratio is the point, not absolute numbers): the TriAttn-DiT velocity
for the five guidance branches [all, on only, off only, sp only, none(+video)]

* batched: conditions concatenated once (``concat_conditions``), ONE forward of 5B (avgen's sampler);
* separate: five forwards of B, one per branch, combined by the same Eq. 9.

Both results are checked equal before timing. Default shape: a reduced-width TriAttn-DiT on the
paper's latent map (AudioLDM 8 x 256 x 16 = 10.24 s, patch 2 -> 1024 tokens), 77 caption tokens
(1024-d), 300 speech frames (768-d), 82 CLIP frames (512-d, 8 fps). ``--paper`` uses hidden 1152 /
28 blocks (needs a GPU-class machine to finish quickly).

    python bench/bench_omnisonic.py [--batch 1] [--repeats 3] [--hidden 384 --depth 4] [--paper] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from avgen.flow import MultiConditionGuidance, concat_conditions
from avgen.models.omnisonic.module import CFG_PRESETS
from avgen.models.omnisonic.network import CONDITIONS, OmniSonicNetwork

ENV, SP, VIS = 1024, 768, 512
L_TEXT, L_SPEECH, N_FRAMES = 77, 300, 82
C, T, F = 8, 256, 16


def branch_conditions(net: OmniSonicNetwork, batch: int, device: torch.device) -> list:
    g = torch.Generator().manual_seed(0)

    def text(length: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[:, length // 2:] = torch.rand(batch, length - length // 2, generator=g) < 0.5
        return torch.randn(batch, length, dim, generator=g).to(device), mask.to(device)

    on, off, sp = text(L_TEXT, ENV), text(L_TEXT, ENV), text(L_SPEECH, SP)
    visual = torch.randn(batch, N_FRAMES, VIS, generator=g).to(device)
    yes = torch.ones(batch, dtype=torch.bool, device=device)
    no = ~yes
    flags = [{c: yes for c in CONDITIONS}] + [{c: (yes if c == k else no) for c in CONDITIONS} for k in CONDITIONS]
    flags.append({c: no for c in CONDITIONS})
    return [
        net.preprocess_conditions(on, off, sp, visual, onscreen_present=f["onscreen"], offscreen_present=f["offscreen"],
                                  speech_present=f["speech"], visual_present=yes, visual_to_onscreen=yes)
        for f in flags
    ]


def timed(fn, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--paper", action="store_true", help="hidden 1152, 28 blocks, 16 heads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, depth, heads = (1152, 28, 16) if args.paper else (args.hidden, args.depth, args.heads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = OmniSonicNetwork(latent_channels=C, frequency_bins=F, env_dim=ENV, speech_dim=SP, visual_dim=VIS,
                           hidden_dim=hidden, depth=depth, num_heads=heads).to(device).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from zero-init so every term contributes
            p.add_(torch.randn_like(p) * 0.02)
    guidance = MultiConditionGuidance([CFG_PRESETS["s3"][c] for c in CONDITIONS])
    branches = branch_conditions(net, args.batch, device)
    stacked = concat_conditions(branches)
    x = torch.randn(args.batch, C, T, F, device=device)
    t = torch.full((args.batch,), 0.3, device=device)
    k = guidance.num_branches

    @torch.no_grad()
    def batched() -> torch.Tensor:
        v = net(torch.cat([x] * k), torch.cat([t] * k), stacked)
        return guidance.combine(list(v.chunk(k)))

    @torch.no_grad()
    def separate() -> torch.Tensor:
        return guidance.combine([net(x, t, c) for c in branches])

    time_batched, v_batched = timed(batched, args.repeats, device)
    time_separate, v_separate = timed(separate, args.repeats, device)
    error = (v_batched - v_separate).abs().max().item()
    scale = v_separate.abs().max().item()
    print(f"device {device}, B={args.batch}, hidden {hidden}, depth {depth}, tokens {(T // 2) * (F // 2)}, "
          f"network {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M parameters")
    print(f"max |batched - separate| = {error:.2e} (max |v| = {scale:.2e})")
    print(f"one sampling step: batched 5 branches {time_batched * 1e3:.1f} ms, 5 separate forwards "
          f"{time_separate * 1e3:.1f} ms, ratio batched/separate = {time_batched / time_separate:.3f}")


if __name__ == "__main__":
    main()
