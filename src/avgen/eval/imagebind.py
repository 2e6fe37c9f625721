"""ImageBind (Girdhar et al. 2023, "ImageBind: One Embedding Space To Bind Them All", Sec. 3-4 and
App. B): the vision, audio and text encoders behind IB-score (MMAudio, AudioGen-Omni, Harmony:
video-audio cosine) and IB-A (Harmony: audio-text cosine).

An own implementation of the three modalities these metrics need, with the parameter names of the
public checkpoint ``imagebind_huge.pth`` (facebookresearch/ImageBind ``imagebind_model.py``; a bare
state dict), so its vision / audio / text keys load with ``load_state_dict(strict=True)``; the
other modalities' keys (depth, thermal, IMU) are counted and ignored.

Every modality is ``preprocessor -> trunk -> head -> postprocessor``:

* **vision** (``modality_*.vision``): ``PadIm2Video`` (an image becomes a 2-frame video by repeating
  it), a bias-free ``Conv3d`` stem with kernel = stride = (2, 14, 14) (``rgbt_stem.proj.1``), a cls
  token and a learned position embedding (``pos_embedding_helper.pos_embed``); the trunk starts with
  a LayerNorm (``pre_transformer_layer.0``); head LayerNorm -> cls token -> bias-free Linear;
  postprocessor: L2 normalisation.
* **audio**: a (1, 128, 204) Kaldi log-mel "image", a bias-free ``Conv2d`` stem (kernel 16, stride
  10: 12 x 19 patches) followed by a LayerNorm (``rgbt_stem.norm_layer``, eps 1e-5), cls token,
  position embedding; the trunk's attention appends learned ``bias_k`` / ``bias_v`` tokens
  (``nn.MultiheadAttention(add_bias_kv=True)``); DropPath 0.1 in training only; head as vision;
  postprocessor: L2 normalisation times a fixed logit scale exp(log 20).
* **text**: CLIP's token embedding + position embedding over 77 tokens, a causal mask (the
  checkpoint stores it as ``modality_preprocessors.text.mask``), head = LayerNorm + Linear at the
  end-of-text token (the largest id of each row), postprocessor: L2 normalisation times a learned
  logit scale (clipped at 100).

Trunk blocks are pre-LN: ``x + attn(norm_1(x))``, ``x + mlp(norm_2(x))`` (LayerNorm eps 1e-6, GELU
MLP of ratio 4, LayerScale when ``layer_scale_type`` is given - ImageBind-huge uses none).

Inputs follow ImageBind's ``data.py`` and MMAudio's av-benchmark (the IB-score protocol):

* audio (:func:`audio_clip_fbanks`): 16 kHz, ``ConstantClipsPerVideoSampler(2 s, 3 clips)`` of
  pytorchvideo (starts k * max(duration - 2, 0) / 3), each clip's mean removed (in place, as
  ``waveform2melspec`` does), Kaldi fbank (128 bins, 25 ms / 10 ms, Hanning, no dither;
  :func:`avgen.eval.kaldi.kaldi_fbank`), zero-padded / cut to 204 frames, normalised with
  mean -4.268 and std 9.138. The embedding is the mean over the 3 clips of the postprocessed
  vectors (ImageBind's ``forward`` for 5-d inputs).
* video (:func:`video_clips`): av-benchmark's ``VideoDataset``: frames at 0.5 fps as ffmpeg's
  ``fps`` filter picks them (the last frame whose time, rounded to the output grid, is at or before
  each output tick; int(0.5 * duration) frames), the shorter side resized to 224 (bicubic,
  antialiased, rounded back to uint8 as torchvision does for uint8 video), CLIP mean / std,
  three spatial crops of 224 (left / centre / right, or top / centre / bottom), then every pair
  of consecutive frames is a 2-frame clip (``encode_video_with_imagebind``). The embedding is the
  mean over crops x clips of the L2-normalised vision embeddings.
* text (:meth:`ImageBindBackend.tokenize`): CLIP's BPE tokenizer (``bpe_simple_vocab_16e6``, 77
  tokens). open_clip's ``SimpleTokenizer`` is used, loaded from its file without importing the
  open_clip package. Its vocabulary file is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz``
  (sha256 924691ac...6804a, checked in the tests); ImageBind ships a file of the same name (not
  byte-compared here: no copy offline) and reads it with CLIP's code: the same merges
  (49152 - 256 - 2), special-token ids 49406 / 49407, lower-cased ftfy/html cleaning and
  truncation (first 76 tokens + end-of-text). The one difference: ImageBind spells the special
  tokens ``<|startoftext|>`` / ``<|endoftext|>``, so a caption containing those literal strings
  tokenizes differently. ``bpe_path=`` reads ImageBind's own file instead.

Where av-benchmark would fail, avgen still scores (and says so here): videos shorter than 4 s give
fewer than two frames at 0.5 fps, so two frames are taken at the rate 2 / duration; a clip of
fewer than 400 samples gives an all-padding fbank. Audio at another rate is resampled with
avgen's polyphase filter (``avgen.data.media.resample``; ImageBind: torchaudio's sinc resampler),
and video frames come from PyAV's decoding (av-benchmark: torio / ffmpeg's ``fps`` filter, whose
frame choice :func:`ffmpeg_fps_indices` reproduces).

Sizes are constructor arguments (:data:`IMAGEBIND_HUGE` are the public ones); ``from_state_dict``
reads widths, depths, the image and patch size and the vocabulary from the tensors. Head counts are
not stored in the file: the huge widths use ImageBind-huge's (1280 and 1024: 16, 768: 12), any
other width heads of 16 channels (tiny test models: width 32 -> 2 heads), or ``num_heads=``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.data.media import resample
from avgen.eval.backends import BackendUnavailable, EmbeddingBackend, load_weights_file
from avgen.eval.kaldi import kaldi_fbank
from avgen.eval.registry import BackendSpec, MetricSpec, ScoreContext, register_backend, register_metric
from avgen.eval.video import _FrameConditionSimilarity
from avgen.nn.mlp import MLP

__all__ = [
    "IMAGEBIND_HUGE", "ImageBindModel", "ImageBindBackend", "PairedCosineSimilarity", "clip_timepoints",
    "audio_clip_fbanks", "ffmpeg_fps_indices", "video_clips", "read_imagebind_checkpoint",
]

MODALITIES = ("vision", "text", "audio")
IMAGEBIND_HUGE = dict(vision_width=1280, vision_depth=32, vision_heads=16, text_width=1024, text_depth=24,
                      text_heads=16, audio_width=768, audio_depth=12, audio_heads=12, out_dim=1024)
HUGE_HEADS = {1280: 16, 1024: 16, 768: 12}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# data.py::load_and_transform_audio_data defaults
AUDIO_FRONT_END = dict(sample_rate=16000, num_mel_bins=128, target_length=204, clip_duration=2.0, clips_per_video=3,
                       mean=-4.268, std=9.138)
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
FIX = f"--imagebind <path of imagebind_huge.pth from {IMAGEBIND_URL}>"


# ---------------------------------------------------------------------------------- building blocks
class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a sample's residual branch with probability p in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Normalize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """``exp(log_logit_scale)`` clipped at ``max_scale`` times x; a parameter (text) or a buffer (audio)."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: Tensor) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=self.max_scale) * x


class SelectToken(nn.Module):
    """The token at ``index`` (the cls token): (B, L, D) -> (B, D)."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]


class EndOfTextProjection(nn.Module):
    """Text pooling of CLIP: the features at each row's end-of-text position, then ``proj``."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, out_dim, bias=False))

    def forward(self, x: Tensor, end_positions: Tensor) -> Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), end_positions])


class PadImageToVideo(nn.Module):
    """(B, C, H, W) -> (B, C, T, H, W) by repeating the image ``frames`` times; a 1-frame video likewise."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"vision input must be (B, 3, H, W) or (B, 3, T, H, W), got {tuple(x.shape)}")
        return x.repeat(1, 1, self.frames, 1, 1) if x.shape[2] == 1 else x


class PatchStem(nn.Module):
    """Patches as a strided convolution (``proj``), flattened to tokens, optionally layer-normed."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # B D (T) H W -> B (T H W) D
        return self.norm_layer(x) if self.norm_layer is not None else x


class PositionEmbedding(nn.Module):
    def __init__(self, num_tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, width) * width**-0.5)


class PatchPreprocessor(nn.Module):
    """Stem tokens with a cls token in front, plus the learned position embedding (ImageBind's ``RGBDTPreprocessor``)."""

    def __init__(self, stem: PatchStem, num_patches: int, width: int, what: str) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = PositionEmbedding(1 + num_patches, width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width**-0.5)
        self.what = what

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] != pos.shape[1]:
            raise ValueError(f"ImageBind {self.what}: {tokens.shape[1] - 1} patches for an encoder built for "
                             f"{pos.shape[1] - 1} (input {tuple(x.shape)}); resize the input to the encoder's size")
        return tokens + pos


class TextPreprocessor(nn.Module):
    def __init__(self, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, width) * 0.01)
        # additive causal mask: -inf above the diagonal (stored in the checkpoint)
        self.register_buffer("mask", torch.full((context_length, context_length), float("-inf")).triu(1))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.token_embedding(tokens) + self.pos_embed


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters (packed ``in_proj``,
    ``out_proj``, optional ``bias_k`` / ``bias_v`` appended as one extra key / value token)."""

    def __init__(self, width: int, num_heads: int, add_bias_kv: bool) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        nn.init.xavier_uniform_(self.in_proj_weight)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.bias_v = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, L, D); mask: None or an additive (L, L) float mask."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(x.shape[0], -1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(x.shape[0], -1, -1)], dim=1)
            if mask is not None:  # the extra key is visible to every query
                mask = F.pad(mask, (0, 1))
        q, k, v = (rearrange(t, "b l (h d) -> b h l d", h=self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype))
        return self.out_proj(rearrange(out, "b h l d -> b l (h d)"))


class Block(nn.Module):
    """Pre-LN transformer block (ImageBind's ``BlockWithMasking``)."""

    def __init__(self, width: int, num_heads: int, add_bias_kv: bool, drop_path: float = 0.0, mlp_ratio: int = 4,
                 layer_scale_type: str | None = None, layer_scale_init: float = 1e-4) -> None:
        super().__init__()
        self.attn = Attention(width, num_heads, add_bias_kv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width, int(mlp_ratio * width), activation=nn.GELU())
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)
        if layer_scale_type not in (None, "per_channel", "scalar"):
            raise ValueError(f"layer_scale_type must be None, 'per_channel' or 'scalar', got {layer_scale_type!r}")
        self.layer_scale_type = layer_scale_type
        if layer_scale_type is not None:
            shape = (1, 1, width) if layer_scale_type == "per_channel" else (1, 1, 1)
            self.layer_scale_gamma1 = nn.Parameter(torch.full(shape, layer_scale_init))
            self.layer_scale_gamma2 = nn.Parameter(torch.full(shape, layer_scale_init))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        attn = self.attn(self.norm_1(x), mask)
        if self.layer_scale_type is not None:
            attn = attn * self.layer_scale_gamma1
        x = x + self.drop_path(attn)
        mlp = self.mlp(self.norm_2(x))
        if self.layer_scale_type is not None:
            mlp = mlp * self.layer_scale_gamma2
        return x + self.drop_path(mlp)


class Trunk(nn.Module):
    """ImageBind's ``SimpleTransformer``: optional LayerNorm, then the blocks (batch first here; the
    reference runs sequence first, which changes nothing). DropPath rises linearly to ``drop_path``."""

    def __init__(self, width: int, depth: int, num_heads: int, *, pre_norm: bool, add_bias_kv: bool,
                 drop_path: float = 0.0, layer_scale_type: str | None = None, layer_scale_init: float = 1e-4) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity())
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # torch.linspace(0, p, depth)
        self.blocks = nn.Sequential(*[Block(width, num_heads, add_bias_kv, rates[i], layer_scale_type=layer_scale_type,
                                            layer_scale_init=layer_scale_init) for i in range(depth)])

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        tokens = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return tokens


def _cls_head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width, eps=1e-6), SelectToken(0), nn.Linear(width, out_dim, bias=False))


# ---------------------------------------------------------------------------------- the network
class ImageBindModel(nn.Module):
    """The vision, audio and text encoders of ImageBind with the public checkpoint's key names.

    ``encode_vision`` (N, 3, [2,] S, S) normalised pixels -> (N, out_dim) unit vectors;
    ``encode_audio`` (N, 1, mel_bins, target_length) normalised fbanks -> (N, out_dim), unit vectors
    x 20; ``encode_text`` (N, context_length) token ids -> (N, out_dim), unit vectors x logit scale.
    """

    def __init__(self, vision_width: int = 1280, vision_depth: int = 32, vision_heads: int = 16,
                 text_width: int = 1024, text_depth: int = 24, text_heads: int = 16,
                 audio_width: int = 768, audio_depth: int = 12, audio_heads: int = 12, out_dim: int = 1024, *,
                 image_size: int = 224, patch_size: int = 14, video_frames: int = 2,
                 num_mel_bins: int = 128, audio_target_length: int = 204, audio_kernel: int = 16, audio_stride: int = 10,
                 context_length: int = 77, vocab_size: int = 49408, audio_drop_path: float = 0.1,
                 layer_scale_type: str | None = None, layer_scale_init: float = 1e-4) -> None:
        super().__init__()
        self.image_size, self.video_frames, self.out_dim = image_size, video_frames, out_dim
        self.num_mel_bins, self.audio_target_length, self.context_length = num_mel_bins, audio_target_length, context_length
        vision_patches = (video_frames // 2) * (image_size // patch_size) ** 2  # temporal kernel 2
        audio_patches = ((num_mel_bins - audio_kernel) // audio_stride + 1) * ((audio_target_length - audio_kernel) // audio_stride + 1)
        vision_stem = PatchStem(nn.Sequential(
            PadImageToVideo(video_frames),
            nn.Conv3d(3, vision_width, kernel_size=(2, patch_size, patch_size), stride=(2, patch_size, patch_size), bias=False)))
        audio_stem = PatchStem(nn.Conv2d(1, audio_width, kernel_size=audio_kernel, stride=audio_stride, bias=False),
                               norm_layer=nn.LayerNorm(audio_width))
        self.modality_preprocessors = nn.ModuleDict({
            "vision": PatchPreprocessor(vision_stem, vision_patches, vision_width, "vision"),
            "text": TextPreprocessor(vocab_size, context_length, text_width),
            "audio": PatchPreprocessor(audio_stem, audio_patches, audio_width, "audio"),
        })
        scale = dict(layer_scale_type=layer_scale_type, layer_scale_init=layer_scale_init)
        self.modality_trunks = nn.ModuleDict({
            "vision": Trunk(vision_width, vision_depth, vision_heads, pre_norm=True, add_bias_kv=False, **scale),
            "text": Trunk(text_width, text_depth, text_heads, pre_norm=False, add_bias_kv=False, **scale),
            "audio": Trunk(audio_width, audio_depth, audio_heads, pre_norm=False, add_bias_kv=True,
                           drop_path=audio_drop_path, **scale),
        })
        self.modality_heads = nn.ModuleDict({
            "vision": _cls_head(vision_width, out_dim),
            "text": EndOfTextProjection(text_width, out_dim),
            "audio": _cls_head(audio_width, out_dim),
        })
        self.modality_postprocessors = nn.ModuleDict({
            "vision": Normalize(),
            "text": nn.Sequential(Normalize(), LogitScale(1 / 0.07, learnable=True)),
            "audio": nn.Sequential(Normalize(), LogitScale(20.0, learnable=False)),
        })

    def encode_vision(self, pixels: Tensor) -> Tensor:
        tokens = self.modality_trunks["vision"](self.modality_preprocessors["vision"](pixels))
        return self.modality_postprocessors["vision"](self.modality_heads["vision"](tokens))

    def encode_audio(self, fbanks: Tensor) -> Tensor:
        tokens = self.modality_trunks["audio"](self.modality_preprocessors["audio"](fbanks))
        return self.modality_postprocessors["audio"](self.modality_heads["audio"](tokens))

    def encode_text(self, token_ids: Tensor) -> Tensor:
        preprocessor = self.modality_preprocessors["text"]
        tokens = self.modality_trunks["text"](preprocessor(token_ids), preprocessor.mask)
        # the end-of-text token has the largest id of the vocabulary, so argmax finds it
        pooled = self.modality_heads["text"](tokens, token_ids.argmax(dim=-1))
        return self.modality_postprocessors["text"](pooled)

    @classmethod
    def config_from_state_dict(cls, state: dict[str, Tensor], num_heads: dict[str, int] | None = None) -> dict:
        """Constructor arguments read from a state dict holding the three modalities' keys."""
        config, num_heads = {}, dict(num_heads or {})
        for m in MODALITIES:
            width = int(state[f"modality_heads.{m}.{'proj.1' if m == 'text' else '2'}.weight"].shape[1])
            prefix = f"modality_trunks.{m}.blocks."
            depth = len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
            config[f"{m}_width"], config[f"{m}_depth"] = width, depth
            config[f"{m}_heads"] = int(num_heads.get(m, HUGE_HEADS.get(width, max(1, width // 16))))
        config["out_dim"] = int(state["modality_heads.vision.2.weight"].shape[0])
        conv = state["modality_preprocessors.vision.rgbt_stem.proj.1.weight"]  # (D, 3, 2, p, p)
        patch = int(conv.shape[-1])
        grid = math.isqrt(int(state["modality_preprocessors.vision.pos_embedding_helper.pos_embed"].shape[1]) - 1)
        config.update(image_size=grid * patch, patch_size=patch, audio_kernel=int(state[
            "modality_preprocessors.audio.rgbt_stem.proj.weight"].shape[-1]))
        vocab, _ = state["modality_preprocessors.text.token_embedding.weight"].shape
        config.update(vocab_size=int(vocab), context_length=int(state["modality_preprocessors.text.pos_embed"].shape[1]))
        gammas = [k for k in state if k.endswith("layer_scale_gamma1")]
        if gammas:
            config["layer_scale_type"] = "scalar" if state[gammas[0]].numel() == 1 else "per_channel"
        return config

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], num_heads: dict[str, int] | None = None, **overrides
                        ) -> tuple["ImageBindModel", int]:
        """A model shaped like ``state`` with the vision / audio / text weights loaded strictly; returns
        (model, number of ignored keys of other modalities)."""
        ours = {k: v for k, v in state.items() if any(k.startswith(f"modality_{part}.{m}.") for part in
                                                       ("preprocessors", "trunks", "heads", "postprocessors") for m in MODALITIES)}
        model = cls(**{**cls.config_from_state_dict(ours, num_heads), **overrides})
        model.load_state_dict(ours, strict=True)
        return model.eval(), len(state) - len(ours)


# ---------------------------------------------------------------------------------- audio front-end
def clip_timepoints(duration: float, clip_duration: float = 2.0, clips_per_video: int = 3) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo's ``ConstantClipsPerVideoSampler`` read out to the end (ImageBind's ``get_clip_timepoints``):
    clip k starts at k * max(duration - clip_duration, 0) / clips_per_video (exact fractions)."""
    max_start = Fraction(max(duration - Fraction(clip_duration), 0))
    step = max_start / clips_per_video
    return [(step * k, step * k + Fraction(clip_duration)) for k in range(clips_per_video)]


def audio_clip_fbanks(waveform: np.ndarray | Tensor, sample_rate: int = 16000, num_mel_bins: int = 128,
                      target_length: int = 204, clip_duration: float = 2.0, clips_per_video: int = 3,
                      mean: float = -4.268, std: float = 9.138) -> Tensor:
    """(clips, 1, num_mel_bins, target_length) normalised Kaldi fbanks of one mono waveform already at
    ``sample_rate`` (ImageBind ``data.py``: ``load_and_transform_audio_data`` + ``waveform2melspec``)."""
    signal = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).flatten().clone()
    clips = []
    for start, end in clip_timepoints(signal.numel() / sample_rate, clip_duration, clips_per_video):
        clip = signal[int(start * sample_rate) : int(end * sample_rate)]
        clip -= clip.mean() if clip.numel() else 0.0  # in place on the view, as waveform2melspec does
        fbank = kaldi_fbank(clip, sample_frequency=sample_rate, num_mel_bins=num_mel_bins, frame_length=25.0,
                            frame_shift=10.0, window_type="hanning", dither=0.0, htk_compat=True, use_energy=False)
        fbank = fbank.T.reshape(num_mel_bins, -1)  # (mel, frames)
        pad = target_length - fbank.shape[1]
        fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :target_length]
        clips.append((fbank[None] - mean) / std)
    return torch.stack(clips)


# ---------------------------------------------------------------------------------- video front-end
def ffmpeg_fps_indices(num_frames: int, fps: float, rate: float, count: int) -> list[int]:
    """Indices of the frames ffmpeg's ``fps=rate`` filter (rounding "near") outputs first ``count`` times.

    Frame i (time i / fps) gets the output timestamp round(i * rate / fps); output n is the last frame
    whose timestamp is <= n, i.e. the last i with i * rate / fps < n + 1/2. A video that ends before
    an output tick repeats its last frame (av-benchmark copies the last frame when one is missing).
    """
    ratio = Fraction(fps).limit_denominator(1_000_000) / Fraction(rate).limit_denominator(1_000_000)
    indices = []
    for n in range(count):
        bound = (n + Fraction(1, 2)) * ratio  # i < bound
        last = math.ceil(bound) - 1
        indices.append(min(max(last, 0), num_frames - 1))
    return indices


def _short_side_resize(frames: Tensor, size: int) -> Tensor:
    """torchvision ``v2.Resize(size, BICUBIC)`` of uint8 frames (T, 3, H, W): antialiased bicubic in
    float, clamped and rounded back to uint8 values; the longer side int(size * long / short)."""
    h, w = frames.shape[-2:]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = frames.float()
    if (new_h, new_w) == (h, w):  # torchvision returns the frames unchanged
        return x
    return F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255).round()


def _spatial_crops(frames: Tensor, size: int, num_crops: int = 3) -> list[Tensor]:
    """ImageBind's ``SpatialCrop``/``uniform_crop``: along the longer side start / centre / end crops."""
    h, w = frames.shape[-2:]
    crops = []
    for index in ((0, 1, 2) if num_crops == 3 else (1,)):
        y, x = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
        if h > w:
            y = {0: 0, 1: y, 2: h - size}[index]
        else:
            x = {0: 0, 1: x, 2: w - size}[index]
        crops.append(frames[..., y : y + size, x : x + size])
    return crops


def video_clips(frames: np.ndarray | Tensor, fps: float, image_size: int = 224, rate: float = 0.5,
                duration: float | None = None, num_crops: int = 3) -> Tensor:
    """(num_crops * (F - 1), 3, 2, S, S) normalised 2-frame clips of one video (T, H, W, 3) uint8, as
    av-benchmark's ``VideoDataset`` + ``encode_video_with_imagebind`` build them (crop-major within a clip)."""
    video = torch.as_tensor(np.asarray(frames))
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"a video must be (T, H, W, 3) RGB frames, got {tuple(video.shape)}")
    duration = video.shape[0] / fps if duration is None else duration
    count = int(rate * duration)
    if count < 2:  # av-benchmark fails here (no 2-frame clip); two frames over the video instead
        rate, count = 2.0 / duration, 2
    picked = video[ffmpeg_fps_indices(video.shape[0], fps, rate, count)]
    pixels = _short_side_resize(rearrange(picked, "t h w c -> t c h w"), image_size) / 255.0
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    crops = torch.stack(_spatial_crops(pixels, image_size, num_crops))  # (crops, T, 3, S, S)
    clips = [crops[:, i : i + 2] for i in range(count - 1)]
    return rearrange(torch.cat(clips), "n t c h w -> n c t h w")


# ---------------------------------------------------------------------------------- tokenizer
_TOKENIZER_MODULE = None


def _open_clip_tokenizer_module():
    """open_clip's ``tokenizer.py`` loaded from its file (importing the package would pull torchvision and timm)."""
    global _TOKENIZER_MODULE
    if _TOKENIZER_MODULE is None:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailable("imagebind", "the text tokenizer needs open_clip (CLIP's BPE tokenizer)",
                                     "pip install open_clip_torch")
        path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.py")
        module_spec = importlib.util.spec_from_file_location("avgen_open_clip_tokenizer", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault("avgen_open_clip_tokenizer", module)
        module_spec.loader.exec_module(module)
        _TOKENIZER_MODULE = module
    return _TOKENIZER_MODULE


# ---------------------------------------------------------------------------------- checkpoint
def read_imagebind_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict of ``imagebind_huge.pth`` (a bare state dict; ``{"model": ...}`` / ``{"state_dict": ...}`` too)."""
    checkpoint = load_weights_file("imagebind", path, "an ImageBind checkpoint", FIX)
    state = checkpoint
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    needed = [f"modality_heads.{m}." for m in MODALITIES]
    if not isinstance(state, dict) or not all(any(k.startswith(p) for k in state) for p in needed):
        raise BackendUnavailable("imagebind", f"{path} holds no ImageBind state dict with vision, audio and text "
                                 "encoders (modality_heads.vision/audio/text)", FIX)
    return state


# ---------------------------------------------------------------------------------- back-end
class ImageBindBackend(EmbeddingBackend):
    """ImageBind embeddings: ``embed`` / ``embed_audio`` (waveforms at any rate), ``embed_video``
    (uint8 frames + fps) and ``embed_text`` (captions); (B, out_dim) each.

    Audio embeddings are the mean over the 3 clips of unit vectors x 20 and video embeddings the
    mean over crops x clips of unit vectors, exactly as ImageBind's forward reduces them; the
    metrics take cosines, so these scales do not matter.
    """

    name = "imagebind"
    sample_rate = 16000

    def __init__(self, checkpoint: str, *, num_heads: dict[str, int] | None = None, bpe_path: str | None = None,
                 batch_size: int = 16, video_rate: float = 0.5, num_crops: int = 3) -> None:
        super().__init__()
        state = read_imagebind_checkpoint(checkpoint)
        try:
            self.model, self.ignored_keys = ImageBindModel.from_state_dict(state, num_heads=num_heads)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("imagebind", f"{checkpoint} does not match the ImageBind layout "
                                     f"({str(err).splitlines()[0][:200]})", FIX) from None
        self.name = f"imagebind:{os.path.splitext(os.path.basename(checkpoint))[0]}"
        self.dim = self.model.out_dim
        self.batch_size, self.video_rate, self.num_crops, self.bpe_path = batch_size, video_rate, num_crops, bpe_path
        self._tokenizer = None

    def prepare(self, waveforms, sample_rate: int) -> list[np.ndarray]:
        """Resampled to 16 kHz only: ImageBind removes each 2 s clip's mean itself (av-benchmark reads the file as is)."""
        out = []
        for w in waveforms:
            x = w.detach().cpu().double().numpy() if isinstance(w, Tensor) else np.asarray(w, np.float64)
            if x.ndim == 2:  # (channels, samples): the mono mix
                x = x.mean(0)
            if x.ndim != 1:
                raise ValueError(f"ImageBind audio: expected (samples,) or (channels, samples), got shape {x.shape}")
            out.append(resample(x, int(sample_rate), self.sample_rate))
        return out

    def _batched(self, encode, inputs: Tensor) -> Tensor:
        if inputs.shape[0] == 0:
            return torch.zeros(0, self.dim)
        device = next(self.model.parameters()).device
        return torch.cat([encode(inputs[i : i + self.batch_size].to(device)).float().cpu()
                          for i in range(0, inputs.shape[0], self.batch_size)])

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        front_end = dict(AUDIO_FRONT_END, num_mel_bins=self.model.num_mel_bins, target_length=self.model.audio_target_length)
        fbanks = [audio_clip_fbanks(x, **front_end) for x in waveforms]
        if not fbanks:
            return torch.zeros(0, self.dim)
        per_clip = self._batched(self.model.encode_audio, torch.cat(fbanks))
        return torch.stack([chunk.mean(0) for chunk in per_clip.split([f.shape[0] for f in fbanks])])

    def embed_audio(self, waveforms, sample_rate: int) -> Tensor:
        return self.embed(waveforms, sample_rate)

    @torch.no_grad()
    def embed_video(self, videos: Sequence[tuple[np.ndarray, float]], durations: Sequence[float | None] | None = None
                    ) -> Tensor:
        """One embedding per (frames (T, H, W, 3) uint8, fps) video. ``durations`` (s): the part of each
        video to use (av-benchmark uses the generated audio's length); default the whole video."""
        out = []
        for index, (frames, fps) in enumerate(videos):
            duration = durations[index] if durations is not None else None
            clips = video_clips(frames, fps, self.model.image_size, self.video_rate, duration=duration,
                                num_crops=self.num_crops)
            out.append(self._batched(self.model.encode_vision, clips).mean(0))
        return torch.stack(out) if out else torch.zeros(0, self.dim)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        if self._tokenizer is None:
            module = _open_clip_tokenizer_module()
            self._tokenizer = (module.SimpleTokenizer(bpe_path=self.bpe_path) if self.bpe_path
                               else module.SimpleTokenizer())
        return self._tokenizer(list(texts), context_length=self.model.context_length)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        return self._batched(self.model.encode_text, self.tokenize(texts))


# ---------------------------------------------------------------------------------- metric
class PairedCosineSimilarity(_FrameConditionSimilarity):
    """Mean cosine similarity of paired embeddings (IB-score: video-audio; IB-A: audio-text),
    ``update(a (N, D), b (N, D))``; the sums are DDP-synchronised (the state of
    :mod:`avgen.eval.video`'s similarities, one "frame" per pair). av-benchmark reports the fraction
    (``torch.cosine_similarity(...).mean()``); MMAudio and AudioGen-Omni print IB x100, Harmony prints
    IB and IB-A as fractions."""

    def update(self, a: Tensor, b: Tensor) -> None:
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"expected two (N, D) embedding batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        for row in range(a.shape[0]):
            super().update(a[row : row + 1], b[row])


# ---------------------------------------------------------------------------------- registry
NAN = float("nan")


def _build_backend(value: str | None) -> ImageBindBackend:
    if not value:
        raise BackendUnavailable("imagebind", "no ImageBind weights given", FIX)
    return ImageBindBackend(value)


def ib_score(ctx: ScoreContext) -> float:
    """IB-score: per sample with a video, the cosine of the ImageBind video embedding (the part of the
    video as long as the generated audio, as av-benchmark cuts both to ``audio_length``) and the
    generated audio's embedding; mean over samples."""
    backend = ctx.backend
    ids = [i for i in ctx.ids if i in ctx.videos]
    if not ids:
        return NAN
    audio = ctx.embeddings("generated", ids)

    def video_embedding(sample_id: str) -> np.ndarray:
        try:
            frames, fps = ctx.video(sample_id)
            waveform, rate = ctx.audio("generated", sample_id)
            duration = min(frames.shape[0] / fps, waveform.numel() / rate)
            return backend.embed_video([(frames, fps)], [duration])[0].numpy()
        except ValueError as err:
            raise ValueError(f"ib_score: sample {sample_id!r} ({ctx.videos[sample_id]}): {err}") from None

    video = ctx.cached("generated", f"{backend.name}-video", ids, video_embedding)
    metric = PairedCosineSimilarity()
    metric.update(torch.as_tensor(np.stack([video[i] for i in ids])), torch.as_tensor(np.stack([audio[i] for i in ids])))
    return float(metric.compute())


def ib_a(ctx: ScoreContext) -> float:
    """IB-A (Harmony): the cosine of the ImageBind embeddings of the caption and the generated audio, mean over captioned samples."""
    backend = ctx.backend
    ids = [i for i in ctx.ids if ctx.samples[i].get("caption")]
    if not ids:
        return NAN
    audio = ctx.embeddings("generated", ids)
    text = ctx.cached("reference", f"{backend.name}-text", ids,
                      lambda sample_id: backend.embed_text([ctx.samples[sample_id]["caption"]])[0].numpy())
    metric = PairedCosineSimilarity()
    metric.update(torch.as_tensor(np.stack([audio[i] for i in ids])), torch.as_tensor(np.stack([text[i] for i in ids])))
    return float(metric.compute())


register_backend(BackendSpec("imagebind", _build_backend, f"ImageBind-huge checkpoint (imagebind_huge.pth, {IMAGEBIND_URL}) "
                                                          "for ib_score / ib_a"))
register_metric(MetricSpec(
    "ib_score", True, "ImageBind video-audio cosine of the generated audio and its video (IB; av-benchmark protocol; "
    "a fraction as av-benchmark's code gives it - MMAudio and AudioGen-Omni print it x100, Harmony as a fraction)",
    "imagebind", ib_score, needs_video=True))
register_metric(MetricSpec(
    "ib_a", True, "ImageBind audio-text cosine of the generated audio and the caption (Harmony IB-A, a fraction)",
    "imagebind", ib_a))
