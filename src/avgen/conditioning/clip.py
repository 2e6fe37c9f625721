"""CLIP vision and text condition encoders through open_clip.

Follows MMAudio's conditioning pipeline (``mmaudio/model/utils/features_utils.py``):

- vision: frames are resized bicubically to the model's square input size with no crop and no
  aspect-ratio preservation, normalised with the model's mean/std, and ``encode_image(normalize=True)``
  gives one L2-normalised embedding per frame (1024-d for DFN5B-CLIP-ViT-H-14-384);
- text: the open_clip tokenizer (77 tokens) and the per-token final-layer states after
  ``ln_final``, L2-normalised per token (MMAudio's patched ``encode_text``), not the pooled embedding.

Where the weights come from (``pretrained``):

- ``None``: random weights from ``init_seed`` (tests, tiny configs);
- an open_clip pretrained tag (``"openai"``, ``"dfn5b"``...) for the built-in ``model_name``;
- a local weights file (``.pt``/``.bin``/``.safetensors``) for the built-in ``model_name``;
- a local directory holding ``open_clip_config.json`` and weights (open_clip's ``local-dir:``);
- ``"hf-hub:org/repo"`` (e.g. MMAudio's ``hf-hub:apple/DFN5B-CLIP-ViT-H-14-384``).

``model_name`` is an open_clip config name (built-in or registered, e.g. ``ViT-H-14-378-quickgelu``
or ``avgen-tiny-clip``), or itself a ``hf-hub:`` / ``local-dir:`` name when ``pretrained`` is None.
When ``pretrained`` is a hub name or directory, its own config defines the architecture; the
``model_name`` config is then used for the tokenizer (as MMAudio does) and for meta-device builds,
which never download anything.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from avgen.conditioning._common import (
    FrozenEncoder,
    TextLimit,
    building_on_meta,
    check_frames,
    resize_bicubic,
    seeded_build,
)

_SCHEMAS = ("hf-hub:", "local-dir:")


def _is_known_config(name: str) -> bool:
    return name.replace("/", "-") in open_clip.list_models()


def _create_open_clip(
    model_name: str, pretrained: str | None, *, image_size: int | None, init_seed: int
) -> tuple[nn.Module, str]:
    """Build an open_clip model from (model_name, pretrained); return it and the tokenizer name.

    Under a meta-device context only the architecture is built (no weights, no downloads).
    """
    # Make sure avgen's tiny config is known to open_clip whatever the import order was.
    from avgen.conditioning.tiny import register_tiny_models

    register_tiny_models()
    if model_name.startswith(_SCHEMAS) and pretrained is not None:
        raise ValueError(
            f"CLIP model_name={model_name!r} already names its weights; pretrained={pretrained!r} "
            "would be ignored. Pass the hub/local name either as model_name or as pretrained, not both."
        )
    tokenizer_name = model_name
    kwargs: dict[str, Any] = dict(force_image_size=image_size)
    if pretrained is None:
        source, tag = model_name, None
    elif pretrained.startswith("hf-hub:"):
        source, tag = pretrained, None
        tokenizer_name = model_name if _is_known_config(model_name) else pretrained
    elif os.path.isdir(pretrained):
        if not os.path.isfile(os.path.join(pretrained, "open_clip_config.json")):
            raise FileNotFoundError(
                f"CLIP pretrained directory {pretrained!r} has no open_clip_config.json. A local CLIP "
                "directory must hold open_clip_config.json ({'model_cfg': ..., 'preprocess_cfg': ...}) "
                "and a weights file (open_clip_model.safetensors or open_clip_pytorch_model.bin)."
            )
        source, tag = f"local-dir:{pretrained}", None
        tokenizer_name = source
    else:
        if not _is_known_config(model_name):
            raise ValueError(
                f"CLIP model_name={model_name!r} is not an open_clip config (see open_clip.list_models()); "
                f"it is needed to load weights from pretrained={pretrained!r}."
            )
        known_tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in known_tags and not os.path.isfile(pretrained):
            raise FileNotFoundError(
                f"CLIP pretrained={pretrained!r} is neither an existing file, a directory, an 'hf-hub:' "
                f"name nor an open_clip tag of {model_name!r} (tags: {known_tags}). Fix the path or the tag."
            )
        source, tag = model_name, pretrained

    # open_clip warns "No pretrained weights loaded ... initialized randomly" whenever create_model
    # gets no weights tag: wrong for an architecture-only (meta) build and for avgen's seeded tiny
    # models, which are random by design. Real models without weights still warn.
    quiet = building_on_meta() or model_name.startswith("avgen-tiny")
    with seeded_build(init_seed) as device, _without_random_init_notice(quiet):
        if device.type == "meta":
            # Architecture only: a hub/local source is replaced by the model_name config when that
            # is known, so counting parameters of a paper config never touches the network.
            if source.startswith(_SCHEMAS) and _is_known_config(model_name):
                source = model_name
            model = open_clip.create_model(source, load_weights=False, device=device, **kwargs)
        else:
            model = open_clip.create_model(source, pretrained=tag, device=device, **kwargs)
    return model, tokenizer_name


class _RandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextmanager
def _without_random_init_notice(active: bool):
    if not active:
        yield
        return
    notice = _RandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


class CLIPVisionEncoder(FrozenEncoder):
    """Per-frame CLIP image embeddings: (B, F, 3, H, W) in [0, 1] -> (B, F, D), unit norm.

    Args:
        model_name: open_clip config name (or a ``hf-hub:``/``local-dir:`` name, see module docs).
        pretrained: weights source (tag, file, directory, ``hf-hub:`` name) or None for seeded init.
        image_size: override the model's input size (MMAudio: 384 for DFN5B-ViT-H-14-384).
        frozen: eval mode and no gradients (default, as in every paper).
        init_seed: seed for the random initialisation when no weights are loaded.
        chunk_size: frames per forward pass of the image tower (bounds activation memory).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        image_size: int | None = None,
        frozen: bool = True,
        init_seed: int = 0,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"CLIPVisionEncoder: chunk_size must be >= 1, got {chunk_size}")
        model, _ = _create_open_clip(model_name, pretrained, image_size=image_size, init_seed=init_seed)
        # Keep only the image tower: the text tower of ViT-H is ~350M parameters we never run here.
        self.visual = model.visual
        pp = open_clip.get_model_preprocess_cfg(model)
        self.image_size: tuple[int, int] = tuple(model.visual.image_size)
        self.chunk_size = chunk_size
        with torch.device("meta" if building_on_meta() else "cpu"):
            mean = torch.tensor(pp["mean"], dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(pp["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self._output_dim = _vision_output_dim(model)
        self._apply_frozen(frozen)

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D) L2-normalised (open_clip ``encode_image(normalize=True)``)."""
        images = resize_bicubic(images, self.image_size)
        images = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, frames: Tensor) -> Tensor:
        check_frames(frames, "CLIPVisionEncoder")
        b = frames.shape[0]
        images = rearrange(frames, "b f c h w -> (b f) c h w")
        with self.grad_context():
            feats = [self.encode_images(chunk) for chunk in images.split(self.chunk_size)]
            out = torch.cat(feats) if feats else images.new_zeros(0, self.output_dim)
        return rearrange(out, "(b f) d -> b f d", b=b)


def _vision_output_dim(model: nn.Module) -> int:
    dim = getattr(model.visual, "output_dim", None)
    if dim is None:
        proj = model.text_projection
        dim = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
    return int(dim)


class _TextTower(nn.Module):
    """The parts of an open_clip text tower that produce per-token states (no pooling/projection)."""

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.register_buffer("attn_mask", src.attn_mask, persistent=False)

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, W) ``ln_final`` states (open_clip ``CLIP.encode_text`` minus pooling)."""
        length = tokens.shape[1]
        dtype = self.token_embedding.weight.dtype
        x = self.token_embedding(tokens).to(dtype)
        x = x + self.positional_embedding[:length].to(dtype)
        # The causal mask makes the first L states independent of the tokens after L, so truncating
        # the context is exact (no re-interpolation of positions as open_clip's resize would do).
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        return self.ln_final(x)


def _text_tower_source(model: nn.Module, name: str) -> nn.Module:
    if isinstance(model, open_clip.CLIP):
        return model  # the text tower's modules live on the CLIP model itself
    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer) and getattr(text, "cls_emb", None) is None:
        return text
    raise NotImplementedError(
        f"CLIPTextEncoder: the text tower of {name!r} ({type(text).__name__}) is not a plain open_clip "
        "TextTransformer (e.g. a Hugging Face text model or a CoCa tower); per-token ln_final states are "
        "only defined for open_clip text transformers. Use a CLIP/DFN/MetaCLIP model."
    )


class CLIPTextEncoder(FrozenEncoder):
    """Per-token CLIP text states: list[str] -> (B, L, W), each token L2-normalised.

    This is the ``ln_final`` output of the text transformer (width W = 1024 for ViT-H-14), the
    representation MMAudio feeds its text stream, rather than the pooled, projected embedding.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        context_length: int = 77,
        frozen: bool = True,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        model, tokenizer_name = _create_open_clip(model_name, pretrained, image_size=None, init_seed=init_seed)
        self.text = _TextTower(_text_tower_source(model, model_name))
        if context_length > self.text.context_length:
            raise ValueError(
                f"CLIPTextEncoder: context_length={context_length} exceeds the model's "
                f"{self.text.context_length} positions; use context_length <= {self.text.context_length}."
            )
        self.context_length = context_length
        self.tokenizer = open_clip.get_tokenizer(tokenizer_name, context_length=context_length)
        self._output_dim = int(self.text.ln_final.normalized_shape[0])
        self._apply_frozen(frozen)

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def text_limit(self) -> TextLimit:
        """The caption token limit (open_clip cuts longer captions to ``context_length``), for data checks."""
        return TextLimit(self.tokenizer, self.context_length, "cut", "CLIP text encoder", special_tokens=2)

    def tokenize(self, texts: list[str]) -> Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"CLIPTextEncoder expects a list of strings, got {type(texts).__name__}: {texts!r:.80}")
        return self.tokenizer(list(texts))

    def forward(self, texts: list[str]) -> Tensor:
        tokens = self.tokenize(texts).to(self.text.token_embedding.weight.device)
        with self.grad_context():
            return F.normalize(self.text(tokens), dim=-1)
