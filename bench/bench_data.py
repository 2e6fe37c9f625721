"""Data throughput: precomputed shards vs media decoded and encoded every step, vs what training consumes.

Measured in one run on this machine (tiny FoleyGenEx on ToyWorld, CPU):

* **media**: ``ManifestDataset`` over exported ToyWorld mp4 + wav files (PyAV decode, resampling to
  the two frame rates), then the frozen encoders (CLIP frames, Synchformer, CLIP text) and the codec
  encoder, as the media path runs them every step;
* **shards**: ``StreamingDataModule`` reading the same clips from ``avgen precompute`` shards;
* **train step**: forward + backward + AdamW of the tiny FoleyGenEx from shard batches: the rate the
  step *consumes* samples at;
* **paper-shaped shards**: read rate of records with FoleyGenEx / MMAudio-L-44k shapes (8 s: posterior
  345 x 40 mean + std, 64 CLIP frames x 1024, 192 sync tokens x 768, 77 text tokens x 1024).

At paper size (estimated from FLOPs, no paper-size weights are run): the frozen encoders per 8 s clip
(CLIP ViT-H/14 at 384 px on 64 frames, Synchformer on 24 windows, CLIP text) against one training
sample of MMAudio-L-44k (forward + backward = 3 x the forward's matmul FLOPs, counted with
``FlopCounterMode`` on the meta device), both at the same assumed accelerator throughput, to show what
the encoders would take from every step if they ran online.

    python bench/bench_data.py [--clips 24] [--batch 4] [--threads 2] [--accelerator_tflops 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

# Paper shapes (FoleyGenEx = MMAudio-L-44.1kHz, 8 s clips).
LATENTS, CHANNELS = 345, 40
CLIP_FRAMES, CLIP_DIM = 64, 1024
SYNC_TOKENS, SYNC_DIM = 192, 768
TEXT_TOKENS, TEXT_DIM = 77, 1024
# Encoder forward FLOPs ~ 2 x parameters x tokens (matmuls; attention's L^2 terms are small here).
CLIP_H_VISION_PARAMS, CLIP_H_TOKENS = 632e6, (384 // 14) ** 2 + 1  # DFN5B-CLIP-ViT-H-14-384, 27 x 27 patches + CLS
SYNC_PARAMS, SYNC_TOKENS_PER_WINDOW, SYNC_WINDOWS = 86e6, 8 * 14 * 14, 24  # MotionFormer ViT-B, 16 frames / tubelet 2
CLIP_H_TEXT_PARAMS = 354e6


def rate(fn, items: int, repeats: int = 2) -> float:
    """Items per second of ``fn`` (the best of ``repeats`` runs after one warm-up; a shared CPU)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def tiny_model():
    from avgen.codecs.mel import MelCodec
    from avgen.conditioning import CLIPTextEncoder, CLIPVisionEncoder, SyncEncoder, tiny_sync_kwargs
    from avgen.models.foleygenex import FoleyGenEx

    torch.manual_seed(0)
    return FoleyGenEx(
        MelCodec(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32, griffin_lim_iters=2),
        CLIPVisionEncoder("avgen-tiny-clip"), CLIPTextEncoder("avgen-tiny-clip", context_length=32),
        SyncEncoder(**tiny_sync_kwargs()), hidden_dim=64, num_heads=4, num_joint_blocks=2, num_single_blocks=2,
        duration=2.0,
    )


def paper_shaped_set(root: Path, clips: int) -> str:
    from litdata import optimize

    from avgen.data.batch import Sample
    from avgen.data.shards import sample_to_record

    def record(i: int):
        g = torch.Generator().manual_seed(i)
        feats = {
            "posterior_mean": torch.randn(LATENTS, CHANNELS, generator=g),
            "posterior_std": torch.rand(LATENTS, CHANNELS, generator=g),
            "semantic_features": torch.randn(CLIP_FRAMES, CLIP_DIM, generator=g),
            "sync_features": torch.randn(SYNC_TOKENS, SYNC_DIM, generator=g),
            "caption_features": torch.randn(TEXT_TOKENS, TEXT_DIM, generator=g),
        }
        return sample_to_record(Sample(id=f"p{i}", sample_rate=44100, caption="a dog barks", audio=torch.zeros(8)),
                                feats, latent_length=LATENTS)

    optimize(fn=record, inputs=list(range(clips)), output_dir=str(root), chunk_bytes="64MB", num_workers=1,
             start_method="fork", verbose=False)
    (root / "precompute.json").write_text(json.dumps({"media": {"duration": 8.0, "sample_rate": 44100}, "split": "train"}))
    return str(root)


def read_all(loader) -> int:
    return sum(len(batch) for batch in loader)


def training_flops_per_sample() -> float:
    """Forward + backward matmul FLOPs of one MMAudio-L-44k training sample (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    from avgen.models.registry import create_network

    with torch.device("meta"):
        net = create_network("mmaudio-l-44k", latent_channels=CHANNELS, semantic_dim=CLIP_DIM, sync_dim=SYNC_DIM,
                             text_dim=TEXT_DIM, text_length=TEXT_TOKENS)
        conditions = net.preprocess_conditions(
            torch.zeros(1, CLIP_FRAMES, CLIP_DIM), torch.zeros(1, SYNC_TOKENS, SYNC_DIM),
            torch.zeros(1, TEXT_TOKENS, TEXT_DIM), video_present=torch.ones(1, dtype=torch.bool),
            text_present=torch.ones(1, dtype=torch.bool), latent_length=LATENTS)
        x, t = torch.zeros(1, LATENTS, CHANNELS), torch.zeros(1)
        with FlopCounterMode(display=False) as counter:
            net.predict_velocity(x, t, conditions)
    return 3.0 * counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator_tflops", type=float, default=400.0,
                        help="sustained dense bf16 TFLOP/s assumed for the paper-size estimate (default 400: ~40%% of an H100)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torch.utils.data import DataLoader

    from avgen.cli.precompute import precompute
    from avgen.data import ManifestDataModule, collate_skipping, export_toyworld
    from avgen.data.streaming import StreamingDataModule

    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    manifest = export_toyworld(args.clips, work / "media", scenarios=["vta"], size=32)
    media = ManifestDataModule(train_manifest=str(manifest), batch_size=args.batch, duration=2.0, sample_rate=16000,
                               semantic_size=32, sync_size=32, shuffle=False)
    media.setup("fit")
    model = tiny_model().eval()
    precompute(model, media, work / "shards", batch_size=args.batch, clips_per_part=args.clips, progress=False)
    shards = StreamingDataModule(str(work / "shards" / "train"), batch_size=args.batch, shuffle=False)
    shards.setup("fit")

    def media_epoch() -> None:
        loader = DataLoader(media.dataset("train"), batch_size=args.batch, collate_fn=collate_skipping)
        with torch.no_grad():
            for batch in loader:
                model.precompute_features(batch)
                model.codec.encode_posterior(batch.audio)

    media_rate = rate(media_epoch, args.clips)
    shard_rate = rate(lambda: read_all(shards.train_dataloader()), args.clips, repeats=3)

    train_model = tiny_model().train()
    optimizer = torch.optim.AdamW(train_model.network.parameters(), lr=1e-4)
    batches = list(shards.train_dataloader())

    def train_epoch() -> None:
        for batch in batches:
            loss = train_model.training_step(batch, 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        step_rate = rate(train_epoch, args.clips)

    paper = paper_shaped_set(work / "paper", 64)
    paper_loader = StreamingDataModule(paper, batch_size=8, shuffle=True)
    paper_loader.setup("fit")
    paper_rate = rate(lambda: read_all(paper_loader.train_dataloader()), 64, repeats=3)
    record_mb = sum(p.stat().st_size for p in Path(paper).glob("*.bin")) / 64 / 2**20

    encoder_flops = (2 * CLIP_H_VISION_PARAMS * CLIP_H_TOKENS * CLIP_FRAMES
                     + 2 * SYNC_PARAMS * SYNC_TOKENS_PER_WINDOW * SYNC_WINDOWS
                     + 2 * CLIP_H_TEXT_PARAMS * TEXT_TOKENS)
    train_flops = training_flops_per_sample()
    tflops = args.accelerator_tflops * 1e12

    print(f"bench_data: {args.clips} ToyWorld clips of 2 s, batch {args.batch}, {args.threads} CPU threads "
          "(a shared machine: absolute rates vary, compare within this run)")
    print("tiny FoleyGenEx (measured, samples/s):")
    print(f"  media: decode mp4/wav + frozen encoders + codec encoder   {media_rate:8.1f}")
    print(f"  shards: litdata StreamingDataLoader                        {shard_rate:8.1f}  "
          f"({shard_rate / media_rate:.1f}x media)")
    print(f"  training step consumes (fwd + bwd + AdamW)                 {step_rate:8.1f}")
    print(f"paper-shaped shards (FoleyGenEx 8 s, {record_mb:.2f} MiB/clip), measured read rate: {paper_rate:.1f} clips/s "
          f"on {args.threads} CPU threads, one loader process")
    print(f"paper size, estimated from FLOPs at {args.accelerator_tflops:g} TFLOP/s per accelerator:")
    print(f"  frozen encoders per clip   {encoder_flops / 1e12:7.1f} TFLOP -> {tflops / encoder_flops:7.1f} clips/s")
    print(f"  MMAudio-L-44k train sample {train_flops / 1e12:7.1f} TFLOP -> {tflops / train_flops:7.1f} samples/s consumed")
    print(f"  running the encoders online would cost {encoder_flops / train_flops:.1f}x the training step itself; "
          f"shards need {tflops / train_flops * record_mb:.0f} MiB/s per accelerator")


if __name__ == "__main__":
    main()
