"""Tiny encoder configurations for tests and ``configs/*/tiny.yaml`` (CPU, seconds).

They use the real classes (open_clip's CLIP, avgen's Synchformer-style :class:`SyncEncoder`) at toy
sizes, so the code path a user takes with ``ViT-H-14`` / the real Synchformer is the one tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip

TINY_CLIP = "avgen-tiny-clip"
_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def register_tiny_models() -> None:
    """Register the open_clip config ``avgen-tiny-clip`` (ViT 32 px, patch 8, width 32, 2 layers;
    text width 32, 2 layers, 77 tokens; embed_dim 32). Idempotent."""
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR / f"{TINY_CLIP}.json")


def tiny_sync_kwargs() -> dict[str, Any]:
    """Constructor arguments of a tiny :class:`~avgen.conditioning.SyncEncoder` (32 px, 4x4 patches)."""
    return dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, tubelet=2, image_size=32)
