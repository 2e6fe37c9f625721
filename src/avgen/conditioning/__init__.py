"""Condition encoders: CLIP vision/text (open_clip), the Synchformer visual branch (timm blocks),
T5 / FLAN-T5 / umT5 text (transformers) and the SpeechT5 transcript encoder with the differentiable Durator.

All encoders are frozen by default, expose ``output_dim``, initialise from ``init_seed`` when no
weights are given, and build only their architecture under ``with torch.device("meta")``.
"""

from avgen.conditioning.clip import CLIPTextEncoder, CLIPVisionEncoder
from avgen.conditioning.sync import SyncCheckpointReport, SyncEncoder, load_synchformer_checkpoint
from avgen.conditioning.speech import (
    CharacterTokenizer,
    DurationPredictor,
    Durator,
    LearnableUpsampler,
    SpeechTranscriptEncoder,
)
from avgen.conditioning.t5 import T5TextEncoder, UMT5TextEncoder
from avgen.conditioning.tiny import register_tiny_models, tiny_sync_kwargs

register_tiny_models()

__all__ = [
    "CharacterTokenizer",
    "DurationPredictor",
    "Durator",
    "LearnableUpsampler",
    "SpeechTranscriptEncoder",
    "T5TextEncoder",
    "UMT5TextEncoder",
    "CLIPTextEncoder",
    "CLIPVisionEncoder",
    "SyncCheckpointReport",
    "SyncEncoder",
    "load_synchformer_checkpoint",
    "register_tiny_models",
    "tiny_sync_kwargs",
]
