"""Data: the batch schema, ToyWorld (the embedded default data), manifest datasets of real media,
FoleyGenEx adverb augmentation, balanced two-dataset batches, OmniSonic's UniHAGen mixtures and
streaming from precomputed litdata shards (``StreamingDataModule``)."""

from avgen.data.augmentation import AdverbAugmentation, AppliedAugmentation, mine_adverbs
from avgen.data.batch import AVBatch, Sample, collate, length_mask
from avgen.data.spec import MediaSpec
from avgen.data.export import export_toyworld
from avgen.data.manifest import ManifestDataModule, ManifestDataset, collate_skipping, read_manifest
from avgen.data.media import MediaError, load_audio, load_video, write_mp4, write_video_with_audio, write_wav
from avgen.data.mixing import BalancedBatchSampler, BalancedDataModule
from avgen.data.streaming import StreamingDataModule
from avgen.data.unihagen import (
    DEFAULT_SPEECH_CATEGORIES,
    DEFAULT_SPEECH_KEYWORDS,
    UNIHAGEN_SCENARIOS,
    UniHAGenDataModule,
    UniHAGenMixer,
    is_speech_like,
)
from avgen.data.toyworld import CLASS_NAMES, CLASSES, SCENARIOS, ToyWorld, ToyWorldDataModule

__all__ = [
    "AVBatch", "Sample", "collate", "length_mask", "MediaSpec",
    "ToyWorld", "ToyWorldDataModule", "SCENARIOS", "CLASSES", "CLASS_NAMES",
    "ManifestDataModule", "ManifestDataset", "read_manifest", "collate_skipping",
    "MediaError", "load_audio", "load_video", "write_wav", "write_mp4", "write_video_with_audio",
    "export_toyworld",
    "AdverbAugmentation", "AppliedAugmentation", "mine_adverbs",
    "BalancedDataModule", "BalancedBatchSampler", "StreamingDataModule",
    "UniHAGenMixer", "UniHAGenDataModule", "UNIHAGEN_SCENARIOS", "DEFAULT_SPEECH_KEYWORDS",
    "DEFAULT_SPEECH_CATEGORIES", "is_speech_like",
]
