"""Evaluation: weight-free oracle metrics on ToyWorld ground truth (more metrics live beside them)."""

from avgen.eval.oracle import classify_event, detect_onsets, event_class_accuracy, onset_offset

__all__ = ["detect_onsets", "onset_offset", "classify_event", "event_class_accuracy"]
