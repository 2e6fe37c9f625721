"""``avgen toyworld export``: ToyWorld samples as real media files plus a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["toyworld"]


def toyworld(argv: list[str]) -> None:
    """Run ``avgen toyworld <action>``."""
    parser = argparse.ArgumentParser(
        prog="avgen toyworld", description="ToyWorld, the procedural audio-visual world avgen trains on by default."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    export = sub.add_parser(
        "export",
        help="write N samples as real files (mp4 video, wav audio) plus a manifest",
        description="Write N ToyWorld samples as real media files (mp4 + wav) and a manifest that "
        "ManifestDataModule reads, exercising the real-media path.",
    )
    export.add_argument("--n", type=int, required=True, help="number of samples")
    export.add_argument("--output_dir", required=True, help="directory for media files and the manifest")
    export.add_argument("--split", default="train", help="ToyWorld split (train/val/test/predict)")
    export.add_argument("--seed", type=int, default=0, help="world seed (samples are deterministic per seed)")
    export.add_argument("--duration", type=float, help="clip length in seconds (default 2.0)")
    export.add_argument("--sample_rate", type=int, help="audio sample rate in Hz (default 16000)")
    export.add_argument("--size", type=int, help="video frame side in pixels (default 64); the mp4 is 25 fps")
    export.add_argument("--scenarios", nargs="+", help="scenarios to draw from, e.g. vta tta omnisonic_s1 joint_av")
    export.add_argument("--speech", choices=["auto", "espeak", "formant"], help="speech synthesizer (default auto)")
    export.add_argument("--mux_audio", action="store_true",
                        help="also mux the audio into each mp4 (a playable clip with sound; the wav stays)")
    ns = parser.parse_args(argv)
    from avgen.data import export_toyworld

    media = {
        k: getattr(ns, k)
        for k in ("duration", "sample_rate", "size", "scenarios", "speech")
        if getattr(ns, k) is not None
    }
    manifest = export_toyworld(ns.n, ns.output_dir, split=ns.split, seed=ns.seed, mux_audio=ns.mux_audio, **media)
    print(f"avgen toyworld export: wrote {ns.n} samples to {Path(ns.output_dir).resolve()} (manifest {manifest})")


