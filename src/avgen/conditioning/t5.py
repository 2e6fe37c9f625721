"""FLAN-T5 encoder for environmental-sound captions (OmniSonic §3.1: "we adopt FLAN-T5 as the
environmental sound caption encoder", frozen during training).

``T5TextEncoder(texts) -> (states (B, L, D), mask (B, L))`` with L = ``max_length`` (captions are
padded / truncated to a fixed length so every batch has the same key length).

Where the weights come from (``model_name``):

- a public name (``"google/flan-t5-large"``) or a local directory holding a ``T5EncoderModel`` /
  ``T5ForConditionalGeneration`` checkpoint and its tokenizer (``save_pretrained`` output): loaded
  through ``T5EncoderModel.from_pretrained`` and ``AutoTokenizer.from_pretrained``;
- ``"avgen-tiny-t5"``: a built-in tiny config (d_model 32, 2 layers) with weights from ``init_seed``
  and a character tokenizer, for tests and ``configs/*/tiny.yaml`` (no files needed).

Empty captions (OmniSonic feeds ``""`` for an absent on-screen caption, Fig. 2): the text is
tokenised as T5 tokenises it, i.e. a single end-of-sequence token, so the mask is True at position 0
only and the states there are T5's encoding of "". The sequence is never fully masked, which keeps
a downstream cross-attention finite; whether the condition is *present* is decided by the batch's
presence flags (the network swaps in its null embedding), not by this encoder.

:class:`UMT5TextEncoder` is the same wrapper around ``UMT5EncoderModel`` with Wan's settings (512
tokens, whitespace cleaning) for the Wan / Harmony video prompt.

Under ``with torch.device("meta")`` only the architecture is built, from the local config, the
built-in table (``KNOWN_CONFIGS``: flan-t5-large, flan-t5-base, t5-base and the tiny config) or the Hugging Face cache.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoTokenizer, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from avgen.conditioning._common import FrozenEncoder, TextLimit, building_on_meta, seeded_build

TINY_T5 = "avgen-tiny-t5"

# Architectures known without any file (meta-device builds of paper configs, the tiny config).
# google/flan-t5-large: config.json of the public checkpoint (T5 v1.1 layout, gated-GELU FFN).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "google/flan-t5-large": dict(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.1, layer_norm_epsilon=1e-6,
    ),
    # google/flan-t5-base (AudioGen-Omni's caption encoder, §3.2 / Fig. 1): T5 v1.1 layout at 768-d.
    "google/flan-t5-base": dict(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.1, layer_norm_epsilon=1e-6,
    ),
    # google-t5/t5-base (the original T5 the paper's §3.2 names): ReLU FFN of 3072, tied embeddings.
    "google-t5/t5-base": dict(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        relative_attention_num_buckets=32, feed_forward_proj="relu", tie_word_embeddings=True,
        dropout_rate=0.1, layer_norm_epsilon=1e-6,
    ),
    # google/umt5-xxl (Wan's text encoder; about 5.7B parameters, encoder only).
    "google/umt5-xxl": dict(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.1, layer_norm_epsilon=1e-6,
    ),
    TINY_T5: dict(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    ),
}


def _t5_config(model_name: str, config_cls: type = T5Config) -> T5Config:
    """The T5 config of ``model_name``: a local directory, the built-in table, or the HF cache."""
    if os.path.isdir(model_name):
        return AutoConfig.from_pretrained(model_name)
    if model_name in KNOWN_CONFIGS:
        return config_cls(**KNOWN_CONFIGS[model_name])
    try:
        return AutoConfig.from_pretrained(model_name)
    except OSError as err:
        raise OSError(
            f"T5TextEncoder: cannot find the config of {model_name!r} (not a directory, not in the "
            f"built-in table {sorted(KNOWN_CONFIGS)}, not in the Hugging Face cache). Pass a local "
            "directory written by save_pretrained, or download the model first."
        ) from err


def _pipeline_part(model_name: str, part: str) -> str:
    """``<dir>/<part>`` when ``model_name`` is a local diffusers pipeline folder (text_encoder/ + tokenizer/)."""
    if os.path.isdir(model_name) and os.path.isdir(os.path.join(model_name, part)):
        return os.path.join(model_name, part)
    return model_name


class T5TextEncoder(FrozenEncoder):
    """Per-token FLAN-T5 encoder states for a batch of captions.

    Args:
        model_name: public name, local directory or ``"avgen-tiny-t5"`` (see module docstring).
        max_length: tokens per caption after padding / truncation (OmniSonic does not state it;
            77 follows the CLIP-style context used across avgen, configurable).
        frozen: eval mode and no gradients (OmniSonic freezes the caption encoder).
        init_seed: seed of the random initialisation of the tiny config.
    """

    model_cls: type = T5EncoderModel
    config_cls: type = T5Config

    def __init__(
        self,
        model_name: str = "google/flan-t5-large",
        max_length: int = 77,
        frozen: bool = True,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if max_length < 1:
            raise ValueError(f"T5TextEncoder: max_length must be >= 1, got {max_length}")
        self.model_name, self.max_length = model_name, int(max_length)
        with seeded_build(init_seed) as device:
            if device.type == "meta" or model_name == TINY_T5:
                self.encoder = self.model_cls(_t5_config(_pipeline_part(model_name, "text_encoder"), self.config_cls))
            else:
                self.encoder = self.model_cls.from_pretrained(_pipeline_part(model_name, "text_encoder"), dtype=torch.float32)
        if model_name == TINY_T5:
            from avgen.conditioning.speech import CharacterTokenizer

            self.tokenizer: Any = CharacterTokenizer(pad_id=0, eos_id=1, unk_id=2, bos_id=None)
            if len(self.tokenizer) > self.encoder.config.vocab_size:
                raise ValueError("T5TextEncoder: the character vocabulary exceeds the tiny config's vocab_size")
        elif building_on_meta():
            self.tokenizer = None  # architecture only: never tokenises, never touches the network
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(_pipeline_part(model_name, "tokenizer"))
        self._output_dim = int(self.encoder.config.d_model)
        self._apply_frozen(frozen)

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def text_limit(self) -> TextLimit | None:
        """The caption token limit (longer captions are cut to ``max_length``), for data checks."""
        if self.tokenizer is None:
            return None
        return TextLimit(self.tokenizer, self.max_length, "cut", f"T5 encoder {self.model_name}", special_tokens=1)

    def clean(self, text: str) -> str:
        """Text normalisation before tokenising (none for FLAN-T5)."""
        return text

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Captions -> (token ids (B, L) long, mask (B, L) bool), L = ``max_length``."""
        if self.tokenizer is None:
            raise RuntimeError("T5TextEncoder was built on the meta device (architecture only); rebuild it on a real device")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"T5TextEncoder expects a list of strings, got {type(texts).__name__}")
        out = self.tokenizer(
            [self.clean(t) for t in texts], padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return out["input_ids"].long(), out["attention_mask"].bool()

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``texts`` (B strings) -> states (B, L, D) (zero on padding) and mask (B, L) bool, True = token."""
        ids, mask = self.tokenize(texts)
        device = next(self.encoder.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        with self.grad_context():
            states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        return states * mask[..., None].to(states.dtype), mask


class UMT5TextEncoder(T5TextEncoder):
    """umT5 encoder as Wan2.x uses it for the video prompt (Wan ``T5EncoderModel``; diffusers' Wan pipelines).

    ``UMT5EncoderModel`` (public ``google/umt5-xxl``, or a local copy of
    ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, whose ``text_encoder/`` and ``tokenizer/`` are used), 4096-d states,
    **512 tokens**: prompts are whitespace-cleaned (Wan's ``clean='whitespace'``, diffusers'
    ``prompt_clean``: HTML entities unescaped, runs of whitespace collapsed), tokenised with special
    tokens, padded / truncated to 512, and the states are **zero at padding**. That is exactly the
    context Wan's DiT receives (Wan cuts each sequence to its length and its DiT zero-pads it back to
    ``text_len``; diffusers zero-pads in the pipeline). ``ftfy.fix_text`` (also in both pipelines) is
    applied when ftfy is installed.
    """

    model_cls = UMT5EncoderModel
    config_cls = UMT5Config

    def __init__(self, model_name: str = "google/umt5-xxl", max_length: int = 512, frozen: bool = True, init_seed: int = 0):
        super().__init__(model_name, max_length=max_length, frozen=frozen, init_seed=init_seed)

    def clean(self, text: str) -> str:
        import html

        try:
            import ftfy

            text = ftfy.fix_text(text)
        except ImportError:
            pass
        text = html.unescape(html.unescape(text)).strip()
        return " ".join(text.split())
