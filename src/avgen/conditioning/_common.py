"""Shared plumbing for the frozen condition encoders: seeded construction, meta-device builds,
frozen-module behaviour and frame resizing.

Every encoder in this package is built the same way: architecture first (on the meta device when
the caller only wants parameter counts), then weights, either loaded from a public name / local
path or initialised from ``init_seed`` so that rebuilding an encoder gives the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def building_on_meta() -> bool:
    """True inside ``with torch.device("meta"):`` (the ``avgen summary`` path): skip weight loading."""
    return torch.get_default_device().type == "meta"


@contextmanager
def seeded_build(seed: int) -> Iterator[torch.device]:
    """Build modules on the CPU (or meta) with the CPU RNG seeded, restoring global RNG state after.

    Construction always happens on the CPU generator so that the same seed gives the same weights
    whatever the caller's default device is; the parent module moves the encoder afterwards.
    Yields the device the architecture is built on.
    """
    device = torch.device("meta") if building_on_meta() else torch.device("cpu")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.default_generator.manual_seed(int(seed))
        yield device


class FrozenEncoder(nn.Module):
    """Base for condition encoders: ``frozen=True`` means eval mode forever and no gradients.

    Lightning calls ``.train()`` on the whole model at the start of every epoch; a frozen encoder
    must stay in eval mode (dropout off) and must not accumulate gradients, which is also why
    ``forward`` runs under ``torch.no_grad()`` when frozen (see :meth:`grad_context`).
    """

    frozen: bool

    def _apply_frozen(self, frozen: bool) -> None:
        self.frozen = bool(frozen)
        if self.frozen:
            for p in self.parameters():
                p.requires_grad_(False)
            self.train(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(mode and not getattr(self, "frozen", False))

    def grad_context(self) -> AbstractContextManager:
        return torch.no_grad() if self.frozen else nullcontext()


def check_frames(frames: Tensor, who: str) -> None:
    """Validate a (B, F, 3, H, W) float frame tensor in [0, 1]; raise a clear error otherwise."""
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(
            f"{who}: expected frames of shape (B, F, 3, H, W), got {tuple(frames.shape)}. "
            "Stack RGB frames channel-first per frame (e.g. einops 'b f h w c -> b f c h w')."
        )
    if not frames.is_floating_point():
        raise TypeError(
            f"{who}: expected float frames in [0, 1], got dtype {frames.dtype}. "
            "Convert uint8 video with frames.float() / 255."
        )


def resize_bicubic(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) -> (N, 3, *size), bicubic with antialiasing (torchvision's tensor default),
    clamped to [0, 1] because bicubic overshoots near edges. No-op when the size already matches."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def resize_short_side_center_crop(images: Tensor, size: int) -> Tensor:
    """(N, 3, H, W) -> (N, 3, size, size): resize the short side to ``size`` keeping the aspect
    ratio, then centre crop (Synchformer / MMAudio sync preprocessing)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    images = resize_bicubic(images, (new_h, new_w))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[..., top : top + size, left : left + size]


class TextLimit:
    """A text encoder's token limit, with a picklable token counter (for DataLoader workers).

    ``policy``: ``"cut"`` (the encoder truncates silently, e.g. T5 ``max_length``, CLIP's context),
    ``"truncate"`` (it cuts with a warning) or ``"error"`` (it raises: such a row is unusable).
    ``count(text)`` is the token count the encoder would see, special tokens included (CLIP's
    start/end tokens, T5's / SpeechT5's end-of-sequence token).
    """

    def __init__(self, tokenizer: object, max_tokens: int, policy: str, encoder: str, special_tokens: int = 0) -> None:
        self.tokenizer, self.max_tokens, self.policy = tokenizer, int(max_tokens), policy
        self.encoder, self.special_tokens = encoder, int(special_tokens)

    def count(self, text: str) -> int:
        from transformers import PreTrainedTokenizerBase

        if isinstance(self.tokenizer, PreTrainedTokenizerBase):  # adds its own special tokens
            return len(self.tokenizer(text)["input_ids"])
        return len(self.tokenizer.encode(text)) + self.special_tokens

    def __repr__(self) -> str:
        return f"TextLimit({self.encoder}, max_tokens={self.max_tokens}, policy={self.policy!r})"
