"""Evaluation: the papers' metrics (torchmetrics, DDP-synchronised), their embedding back-ends, and
the weight-free ToyWorld oracle metrics. ``avgen compare`` (``avgen.cli.compare``) runs them."""

from avgen.eval.backends import BackendUnavailable, ClapBackend, EmbeddingBackend, MelStatsBackend, UNAVAILABLE, get_backend
from avgen.eval.classifier import InceptionScore, PairedKL
from avgen.eval.desync import DeSync, crop_starts, offset_classes, predicted_offsets
from avgen.eval.english import english_normalize
from avgen.eval.frechet import FrechetDistance, GaussianStats, frechet_distance
from avgen.eval.panns import Cnn14, PannsBackend
from avgen.eval.onset_sync import OnsetSync, onset_average_precision, onset_sync_scores
from avgen.eval.oracle import classify_event, detect_onsets, event_class_accuracy, onset_offset
from avgen.eval.text import CharErrorRate, WordErrorRate, edit_distance, normalize_text
from avgen.eval.video import ClipImageTextBackend, ReferenceIdentitySimilarity, VideoTextSimilarity
from avgen.eval.whisper import WhisperBackend

__all__ = [
    "detect_onsets", "onset_offset", "classify_event", "event_class_accuracy",
    "frechet_distance", "GaussianStats", "FrechetDistance", "PairedKL", "InceptionScore",
    "normalize_text", "english_normalize", "edit_distance", "WordErrorRate", "CharErrorRate",
    "DeSync", "crop_starts", "offset_classes", "predicted_offsets",
    "ClipImageTextBackend", "VideoTextSimilarity", "ReferenceIdentitySimilarity",
    "OnsetSync", "onset_sync_scores", "onset_average_precision",
    "BackendUnavailable", "EmbeddingBackend", "MelStatsBackend", "ClapBackend", "PannsBackend", "Cnn14", "WhisperBackend",
    "UNAVAILABLE", "get_backend",
]
