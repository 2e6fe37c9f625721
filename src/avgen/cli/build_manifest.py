"""``avgen build-manifest <corpus> --root DIR --output M.jsonl``: a corpus's local copy -> a validated manifest."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["build_manifest", "parser"]


def parser() -> argparse.ArgumentParser:
    from avgen.data.builders import BUILDERS, SKIP_KINDS

    p = argparse.ArgumentParser(
        prog="avgen build-manifest",
        description="Read a corpus's local copy in its published layout, validate every clip (files readable, "
                    "duration, sample rate, video fps, transcript/caption present) and write an avgen manifest "
                    "(JSON lines) plus a report of every skipped file and why.",
        epilog="skip kinds in the report: " + "; ".join(f"{k}: {v}" for k, v in SKIP_KINDS.items()),
    )
    sub = p.add_subparsers(dest="corpus", required=True, metavar="corpus")
    for name, builder in BUILDERS.items():
        c = sub.add_parser(name, help=builder.description, description=f"{builder.description}. Expected layout: "
                           f"{builder.layout}")
        c.add_argument("--root", required=True, help="the corpus's local copy (its top folder)")
        c.add_argument("--output", required=True, help="the manifest to write (.jsonl); paths in it are relative to "
                       "its folder")
        splits = ", ".join(builder.splits)
        default = ", ".join(builder.default_splits or builder.splits)
        c.add_argument("--split", nargs="+", default=None, help=f"the corpus's splits to read ({splits}; default: "
                       f"{default}); they are mapped to avgen's train/val/test in the manifest")
        c.add_argument("--workers", type=int, default=1, help="validation processes (default 1)")
        c.add_argument("--captions", choices=["auto", "each", "first"], default="auto",
                       help="multi-caption clips: one row per caption (each), one row with the first (first), or "
                            "each on train and first elsewhere (auto, default); all captions stay in meta.captions")
        c.add_argument("--min_duration", type=float, default=1.0, help="shortest usable audio in seconds (default 1)")
        c.add_argument("--max_duration", type=float, default=None, help="longest usable audio in seconds (default: none)")
        c.add_argument("--min_sample_rate", type=int, default=16000, help="lowest usable sample rate in Hz "
                       "(default 16000)")
        c.add_argument("--min_fps", type=float, default=10.0, help="lowest usable video frame rate (default 10)")
        c.add_argument("--audio_dir", default=None, help="where audio extracted from videos goes (default "
                       "<output folder>/<corpus>_audio); reruns reuse it")
        c.add_argument("--audio_rate", type=int, default=None, help="resample extracted audio to this rate "
                       "(default: keep the source rate)")
        c.add_argument("--same_speaker_reference", action="store_true",
                       help="give every row of a speaker another clip of the same speaker as reference_audio "
                            "(Harmony stage 2's cross-utterance reference)")
        c.add_argument("--full_decode", action="store_true", help="decode every audio file in full, not only its "
                       "header (slower; catches damage past the header, NaN samples)")
        c.add_argument("--report", default=None, help="the report's path (default <output>.report.json)")
        c.add_argument("--no_progress", action="store_true", help="no progress bar")
        builder.add_arguments(c)
    return p


COMMON = {"root", "output", "split", "workers", "captions", "min_duration", "max_duration", "min_sample_rate",
          "min_fps", "audio_dir", "audio_rate", "same_speaker_reference", "full_decode", "report", "no_progress",
          "corpus"}


def build_manifest(argv: list[str]) -> dict[str, Any]:
    """Run ``avgen build-manifest``; returns the report (also written next to the manifest and summarised)."""
    from avgen.data.builders import Limits, build, format_summary, get_builder

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cls = get_builder(args.corpus)
    options = {k: v for k, v in vars(args).items() if k not in COMMON}
    try:
        builder = cls(args.root, args.split, captions=args.captions, **options)
        limits = Limits(args.min_duration, args.max_duration, args.min_sample_rate, args.min_fps)
        report = build(builder, args.output, limits=limits, workers=args.workers, audio_dir=args.audio_dir,
                       audio_rate=args.audio_rate, same_speaker_reference=args.same_speaker_reference,
                       full_decode=args.full_decode, report=args.report, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"avgen build-manifest {args.corpus}: {e}") from None
    print(format_summary(report))
    return report
