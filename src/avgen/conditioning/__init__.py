"""Condition encoders: CLIP vision/text (open_clip) and the Synchformer visual branch (timm blocks).

All encoders are frozen by default, expose ``output_dim``, initialise from ``init_seed`` when no
weights are given, and build only their architecture under ``with torch.device("meta")``.
"""

from avgen.conditioning.clip import CLIPTextEncoder, CLIPVisionEncoder
from avgen.conditioning.sync import SyncCheckpointReport, SyncEncoder, load_synchformer_checkpoint
from avgen.conditioning.tiny import register_tiny_models, tiny_sync_kwargs

register_tiny_models()

__all__ = [
    "CLIPTextEncoder",
    "CLIPVisionEncoder",
    "SyncCheckpointReport",
    "SyncEncoder",
    "load_synchformer_checkpoint",
    "register_tiny_models",
    "tiny_sync_kwargs",
]
