"""Whisper ASR through ``transformers`` for the speech metrics WER / CER (AudioGen-Omni's and
F5-TTS's speech tables transcribe generated speech with Whisper and score it against the text).

``WhisperForConditionalGeneration`` + ``WhisperProcessor`` are loaded by hub name (e.g.
``openai/whisper-large-v3``) or from a local ``save_pretrained`` directory. Decoding is greedy
(``num_beams=1``) in ``language`` (default English) with the ``transcribe`` task and no
timestamps; each clip is one 30-s window of the feature extractor (longer clips are truncated, as
generated clips are seconds long). English-only checkpoints (``*.en``) are decoded without the
language / task tokens. Transcripts are normalised by the metric, not here
(:func:`avgen.eval.english.english_normalize`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor, nn

from avgen.eval.backends import BackendUnavailable

__all__ = ["WhisperBackend"]


class WhisperBackend(nn.Module):
    """``transcribe(waveforms, sample_rate) -> list[str]`` with a Whisper checkpoint."""

    def __init__(self, model_name_or_path: str, language: str | None = "en", max_new_tokens: int = 128) -> None:
        super().__init__()
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            self.processor = WhisperProcessor.from_pretrained(model_name_or_path)
            self.model = WhisperForConditionalGeneration.from_pretrained(model_name_or_path).eval()
        except (OSError, ValueError, TypeError) as err:
            raise BackendUnavailable(
                "whisper", f"Whisper weights {model_name_or_path!r} cannot be loaded ({str(err).splitlines()[0][:200]})",
                "--whisper <local directory of WhisperForConditionalGeneration + WhisperProcessor save_pretrained, "
                "e.g. openai/whisper-large-v3>") from None
        self.name = f"whisper:{os.path.basename(os.path.normpath(model_name_or_path))}"
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))
        # the prompt (start, language, task, no-timestamps: 4 tokens) and the answer share the decoder's positions
        max_new_tokens = min(max_new_tokens, int(self.model.config.max_target_positions) - 4)
        self.generate_kwargs = {"num_beams": 1, "do_sample": False, "max_new_tokens": max_new_tokens}
        if multilingual:
            self.generate_kwargs.update(task="transcribe", language=language)

    @torch.no_grad()
    def transcribe(self, waveforms: Tensor | list[Tensor], sample_rate: int) -> list[str]:
        from avgen.data.media import resample

        clips = []
        for w in waveforms:
            x = w.detach().cpu().double().numpy() if isinstance(w, Tensor) else np.asarray(w, np.float64)
            clips.append(resample(x, int(sample_rate), self.sample_rate).astype(np.float32))
        features = self.processor.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        tokens = self.model.generate(features["input_features"], **self.generate_kwargs)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]
