"""Speech-transcript condition: SpeechT5 text encoder + the differentiable Durator (OmniSonic §3.1,
"we follow the setup in VoiceLDM and employ SpeechT5, followed by a differentiable Durator module to
upsample the hidden sequence"; both are trained).

The Durator is VoiceLDM's (``voiceldm/modules.py``, itself the NaturalSpeech / Parallel Tacotron 2
learnable upsampler). With token states V (B, K, D) and token mask m (B, K):

* :class:`DurationPredictor`: on the *detached* states, ``conv(k=3) -> ReLU -> LayerNorm -> dropout``
  twice, then a 1x1 conv to one channel: log-durations l (B, K).
* :class:`Durator`: ``w = clamp(exp(clamp(l, max=3.5)), min=1) * m`` (1 to ~33 frames per token) and
  ``T = round(sum_k w_k)`` frames per sample, capped at ``max_frames``.
* :class:`LearnableUpsampler`: token boundaries ``e = cumsum(w)``, ``s = e - w``; for output frame
  t = 1..T, ``S_tk = t - s_k`` and ``E_tk = e_k - t`` (0 outside valid source / target positions);
  ``W = softmax_k(SwishMLP_w([S, E, ConvBlock_w(V)]))`` (B, T, K, 4) with invalid tokens at -inf,
  ``C = SwishMLP_c([S, E, ConvBlock_c(V)])`` (B, T, K, 2),
  ``O = Linear(flatten_q(W_q V)) + Linear(flatten(einsum(W, C)))``, then LayerNorm, mask, ``proj_o``.

There is no duration loss (VoiceLDM has none): durations learn only through the generative loss,
whose gradient reaches ``w`` through S and E (``T`` itself is rounded, hence not differentiable).
The upsampled sequence is a cross-attention context, not aligned to the latent frames.

Deviations, each a documented choice: the output is masked again after ``proj_o`` (VoiceLDM masks
before it, so padded frames there carry the projection bias); VoiceLDM silently clamps T at 1000,
here ``overflow="error"`` (default) raises naming the sample and ``"truncate"`` cuts with a warning.

Tokenisation: SpeechT5's tokenizer is a character-level SentencePiece model (needs the
``sentencepiece`` package). ``tokenizer="auto"`` loads it with ``AutoTokenizer``; ``"char"`` uses
:class:`CharacterTokenizer`, a built-in character vocabulary (lower-case letters, digits,
punctuation) that needs no files but whose ids do NOT match the released SpeechT5 vocabulary: use it
for from-scratch / tiny models only, never with pretrained SpeechT5 weights.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from transformers import AutoConfig, AutoTokenizer, SpeechT5Config, SpeechT5ForTextToSpeech
from transformers.models.speecht5.modeling_speecht5 import SpeechT5EncoderWithTextPrenet

from avgen.conditioning._common import FrozenEncoder, TextLimit, building_on_meta, seeded_build

log = logging.getLogger(__name__)

TINY_SPEECHT5 = "avgen-tiny-speecht5"
OVERFLOW_POLICIES = ("error", "truncate")

# microsoft/speecht5_tts uses SpeechT5Config's defaults (hidden 768, 12 encoder layers, 12 heads,
# FFN 3072, 81 characters, 450 text positions); the tiny config is for tests / tiny.yaml.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "microsoft/speecht5_tts": {},
    TINY_SPEECHT5: dict(
        vocab_size=81, hidden_size=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, max_text_positions=450,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        positional_dropout=0.0,
    ),
}

_ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789'.,?!-"


class CharacterTokenizer:
    """A file-free character tokenizer with the call signature of a Hugging Face tokenizer.

    Special ids are given explicitly (SpeechT5 layout by default: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
    ``<unk>`` 3); characters of ``alphabet`` take the ids after the largest special id. Text is
    lower-cased; unknown characters map to ``unk_id``; ``eos_id`` is appended (after truncation, as
    Hugging Face tokenizers do), ``bos_id`` (if not None) is reserved but not prepended.
    """

    def __init__(
        self, pad_id: int = 1, eos_id: int = 2, unk_id: int = 3, bos_id: int | None = 0, alphabet: str = _ALPHABET
    ) -> None:
        specials = [i for i in (pad_id, eos_id, unk_id, bos_id) if i is not None]
        if len(set(specials)) != len(specials):
            raise ValueError(f"CharacterTokenizer: special ids must differ, got {specials}")
        self.pad_id, self.eos_id, self.unk_id = pad_id, eos_id, unk_id
        offset = max(specials) + 1
        self.vocab = {c: offset + i for i, c in enumerate(alphabet)}
        self._size = offset + len(alphabet)

    def __len__(self) -> int:
        return self._size

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(c, self.unk_id) for c in text.lower()]

    def __call__(
        self,
        texts: Sequence[str],
        padding: bool | str = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str = "pt",
    ) -> dict[str, Tensor]:
        rows = []
        for text in texts:
            ids = self.encode(text)
            if truncation and max_length is not None:
                ids = ids[: max_length - 1]
            rows.append(ids + [self.eos_id])
        width = max_length if padding == "max_length" and max_length is not None else max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


# --------------------------------------------------------------------------------------------
# Durator (VoiceLDM / NaturalSpeech)
# --------------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, T) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DurationPredictor(nn.Module):
    """(B, K, D) token states, (B, K) mask -> (B, K) log-durations (0 on padding).

    The input is detached (VoiceLDM): the duration branch does not train the text encoder.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, kernel_size: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        hidden = hidden_dim or dim
        pad = kernel_size // 2
        self.conv_1 = nn.Conv1d(dim, hidden, kernel_size, padding=pad)
        self.norm_1 = ChannelLayerNorm(hidden)
        self.conv_2 = nn.Conv1d(hidden, hidden, kernel_size, padding=pad)
        self.norm_2 = ChannelLayerNorm(hidden)
        self.proj = nn.Conv1d(hidden, 1, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :].to(x.dtype)  # (B, 1, K)
        h = rearrange(x.detach(), "b k d -> b d k")
        h = self.drop(self.norm_1(F.relu(self.conv_1(h * m))))
        h = self.drop(self.norm_2(F.relu(self.conv_2(h * m))))
        return (self.proj(h * m) * m).squeeze(1)


class ConvBlock(nn.Module):
    """(B, K, D) -> (B, K, out): Conv1d -> BatchNorm -> SiLU -> dropout -> LayerNorm (VoiceLDM)."""

    def __init__(self, dim: int, out_dim: int, kernel_size: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, out_dim, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm1d(out_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.conv(rearrange(x * mask[..., None].to(x.dtype), "b k d -> b d k"))
        h = self.drop(F.silu(self.bn(h)))
        return self.norm(rearrange(h, "b d k -> b k d"))


class SwishMLP(nn.Sequential):
    """Linear -> SiLU -> Linear -> SiLU -> Linear (VoiceLDM's ``SwishBlock``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, out_dim),
        )


class LearnableUpsampler(nn.Module):
    """Token states + durations -> frame states (NaturalSpeech / VoiceLDM learnable upsampling).

    Args:
        dim: token / output width D.
        conv_channels: ConvBlock output width (VoiceLDM 8).
        dim_w, dim_c: number of attention maps W and auxiliary features C (VoiceLDM 4 and 2).
        kernel_size, dropout: of the ConvBlocks (VoiceLDM 3 and 0.5).
    """

    def __init__(
        self, dim: int, conv_channels: int = 8, dim_w: int = 4, dim_c: int = 2, kernel_size: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.conv_w = ConvBlock(dim, conv_channels, kernel_size, dropout)
        self.swish_w = SwishMLP(conv_channels + 2, dim_w, dim_w)
        self.linear_w = nn.Linear(dim_w * dim, dim)
        self.conv_c = ConvBlock(dim, conv_channels, kernel_size, dropout)
        self.swish_c = SwishMLP(conv_channels + 2, dim_c, dim_c)
        self.linear_c = nn.Linear(dim_c * dim_w, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj_o = nn.Linear(dim, dim)

    @staticmethod
    def boundaries(durations: Tensor, src_mask: Tensor, tgt_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """S (B, T, K), E (B, T, K) and the valid (target, source) pair mask (B, T, K)."""
        ends = torch.cumsum(durations, dim=1)  # e_k (B, K)
        starts = ends - durations  # s_k
        t = torch.arange(1, tgt_mask.shape[1] + 1, device=durations.device, dtype=durations.dtype)[None, :, None]
        valid = tgt_mask[:, :, None] & src_mask[:, None, :]
        s = (t - starts[:, None, :]).masked_fill(~valid, 0.0)
        e = (ends[:, None, :] - t).masked_fill(~valid, 0.0)
        return s, e, valid

    def forward(self, values: Tensor, durations: Tensor, src_mask: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """values (B, K, D), durations (B, K) float, src_mask (B, K) bool, lengths (B,) long frames
        -> frames (B, T, D) with T = max(lengths) (zero past each length) and their mask (B, T)."""
        num_frames = int(lengths.max().item()) if lengths.numel() else 0
        tgt_mask = torch.arange(num_frames, device=values.device)[None, :] < lengths[:, None]  # (B, T)
        s, e, _ = self.boundaries(durations, src_mask, tgt_mask)
        se = torch.stack([s, e], dim=-1)  # (B, T, K, 2)

        def features(conv: ConvBlock) -> Tensor:
            v = conv(values, src_mask)  # (B, K, conv)
            return torch.cat([se, v[:, None].expand(-1, num_frames, -1, -1)], dim=-1)  # (B, T, K, 2 + conv)

        w = self.swish_w(features(self.conv_w))  # (B, T, K, dim_w)
        w = w.masked_fill(~src_mask[:, None, :, None], float("-inf")).softmax(dim=2)
        w = w.masked_fill(~tgt_mask[:, :, None, None], 0.0)
        c = self.swish_c(features(self.conv_c))  # (B, T, K, dim_c)
        attended = torch.einsum("btkq,bkd->btqd", w, values)  # (B, T, dim_w, D)
        aux = torch.einsum("btkq,btkp->btqp", w, c)  # (B, T, dim_w, dim_c)
        out = self.linear_w(rearrange(attended, "b t q d -> b t (q d)")) + self.linear_c(
            rearrange(aux, "b t q p -> b t (q p)")
        )
        keep = tgt_mask[..., None].to(out.dtype)
        out = self.proj_o(self.norm(out) * keep) * keep
        return out, tgt_mask


class Durator(nn.Module):
    """Duration prediction + learnable upsampling: (B, K, D) tokens -> (B, T, D) frames.

    Args:
        dim: token width D.
        max_frames: cap on T per sample (VoiceLDM ``max_seq_len`` 1000).
        overflow: what happens when round(sum w) > max_frames: ``"error"`` raises naming the sample
            and the fix; ``"truncate"`` cuts the sample to ``max_frames`` frames with a warning.
        max_log_duration: clamp of the predicted log-duration (VoiceLDM 3.5).
        dropout: of the duration predictor and the upsampler's ConvBlocks (VoiceLDM 0.5).
        conv_channels, dim_w, dim_c: see :class:`LearnableUpsampler`.
    """

    def __init__(
        self,
        dim: int,
        max_frames: int = 1000,
        overflow: str = "error",
        max_log_duration: float = 3.5,
        dropout: float = 0.5,
        conv_channels: int = 8,
        dim_w: int = 4,
        dim_c: int = 2,
    ) -> None:
        super().__init__()
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"Durator: overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if max_frames < 1:
            raise ValueError(f"Durator: max_frames must be >= 1, got {max_frames}")
        self.max_frames, self.overflow, self.max_log_duration = int(max_frames), overflow, float(max_log_duration)
        self.duration_predictor = DurationPredictor(dim, dropout=dropout)
        self.upsampler = LearnableUpsampler(dim, conv_channels, dim_w, dim_c, dropout=dropout)

    def durations(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, K, D), (B, K) bool -> frames per token w (B, K): clamp(exp(clamp(l, max)), min=1) * mask."""
        log_w = self.duration_predictor(x, mask).clamp(max=self.max_log_duration)
        return torch.exp(log_w).clamp(min=1.0) * mask.to(x.dtype)

    def frame_lengths(self, durations: Tensor, names: Sequence[str] | None = None) -> Tensor:
        """T = round(sum_k w_k) per sample (B,) long, with the ``max_frames`` policy applied."""
        lengths = torch.round(durations.detach().sum(dim=1)).long()
        over = (lengths > self.max_frames).nonzero().flatten().tolist()
        if over:
            def name(i: int) -> str:
                text = names[i] if names is not None else ""
                return f"sample {i}" + (f" ({text[:60]!r}{'...' if len(text) > 60 else ''})" if names is not None else "")

            listing = ", ".join(f"{name(i)}: {int(lengths[i])} frames" for i in over)
            if self.overflow == "error":
                raise ValueError(
                    f"Durator: predicted speech length exceeds max_frames={self.max_frames} for {listing}. "
                    "Raise max_frames, shorten the transcript, or set overflow='truncate'."
                )
            log.warning("Durator: truncating to max_frames=%d frames: %s", self.max_frames, listing)
            lengths = lengths.clamp(max=self.max_frames)
        return lengths

    def forward(self, x: Tensor, mask: Tensor, names: Sequence[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, K, D), mask (B, K) bool -> frames (B, T, D), frame mask (B, T) bool, durations (B, K)."""
        if not bool(mask.any(dim=1).all()):
            bad = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"Durator: samples {bad} have no valid token; every transcript needs at least one (EOS)")
        w = self.durations(x, mask)
        lengths = self.frame_lengths(w, names)
        out, out_mask = self.upsampler(x, w, mask, lengths)
        return out, out_mask, w


# --------------------------------------------------------------------------------------------
# SpeechT5 text encoder + Durator
# --------------------------------------------------------------------------------------------


def _speecht5_config(model_name: str) -> SpeechT5Config:
    if os.path.isdir(model_name):
        return AutoConfig.from_pretrained(model_name)
    if model_name in KNOWN_CONFIGS:
        return SpeechT5Config(**KNOWN_CONFIGS[model_name])
    try:
        return AutoConfig.from_pretrained(model_name)
    except OSError as err:
        raise OSError(
            f"SpeechTranscriptEncoder: cannot find the config of {model_name!r} (not a directory, not in the "
            f"built-in table {sorted(KNOWN_CONFIGS)}, not in the Hugging Face cache). Pass a local directory "
            "written by SpeechT5ForTextToSpeech.save_pretrained."
        ) from err


class SpeechTranscriptEncoder(FrozenEncoder):
    """Transcripts -> frame-rate speech states: SpeechT5 text encoder, then :class:`Durator`.

    Args:
        model_name: public name (``microsoft/speecht5_tts``), a local ``SpeechT5ForTextToSpeech``
            directory (only its text encoder is kept), or ``"avgen-tiny-speecht5"`` (seeded tiny config).
        max_frames, overflow: the Durator's frame budget and its policy (see :class:`Durator`).
        frozen: False by default: OmniSonic trains the SpeechT5 encoder and the Durator.
        init_seed: seed of every randomly initialised part (the Durator; the tiny encoder).
        tokenizer: ``"auto"`` (the checkpoint's SpeechT5Tokenizer; needs sentencepiece) or ``"char"``
            (built-in characters, see the module docstring). The tiny config always uses ``"char"``.
        durator_dropout: dropout of the Durator (VoiceLDM 0.5).
        layerdrop: probability of skipping a whole encoder layer in training (SpeechT5's
            ``encoder_layerdrop``; 0.1 in the released config). None (default): 0 for a trainable
            encoder, because a skipped layer leaves parameters without gradient in that step, which
            stops DDP ("Expected to have finished reduction ... parameters that were not used");
            VoiceLDM and OmniSonic say nothing of LayerDrop. Set it explicitly to train with LayerDrop
            (then DDP needs ``strategy: ddp_find_unused_parameters_true``).
    """

    def __init__(
        self,
        model_name: str = "microsoft/speecht5_tts",
        max_frames: int = 1000,
        overflow: str = "error",
        frozen: bool = False,
        init_seed: int = 0,
        tokenizer: str = "auto",
        durator_dropout: float = 0.5,
        layerdrop: float | None = None,
    ) -> None:
        super().__init__()
        if layerdrop is not None and not 0.0 <= layerdrop < 1.0:
            raise ValueError(f"SpeechTranscriptEncoder: layerdrop must be in [0, 1), got {layerdrop}")
        if tokenizer not in ("auto", "char"):
            raise ValueError(f"SpeechTranscriptEncoder: tokenizer must be 'auto' or 'char', got {tokenizer!r}")
        self.model_name, self.overflow = model_name, overflow
        with seeded_build(init_seed) as device:
            if device.type == "meta" or model_name == TINY_SPEECHT5:
                self.text_encoder = SpeechT5EncoderWithTextPrenet(_speecht5_config(model_name))
            else:
                full = SpeechT5ForTextToSpeech.from_pretrained(model_name, dtype=torch.float32)
                self.text_encoder = full.speecht5.encoder  # keep the text encoder only
                del full
            config = self.text_encoder.config
            self.layerdrop = float(layerdrop) if layerdrop is not None else (
                float(config.encoder_layerdrop) if frozen else 0.0)
            config.encoder_layerdrop = self.layerdrop
            self.text_encoder.wrapped_encoder.layerdrop = self.layerdrop
            self.durator = Durator(config.hidden_size, max_frames, overflow, dropout=durator_dropout)
        self.max_tokens = int(config.max_text_positions)
        if tokenizer == "char" or model_name == TINY_SPEECHT5:
            self.tokenizer: Any = CharacterTokenizer(
                pad_id=config.pad_token_id, eos_id=config.eos_token_id, unk_id=3, bos_id=config.bos_token_id
            )
            if len(self.tokenizer) > config.vocab_size:
                raise ValueError(
                    f"SpeechTranscriptEncoder: the character vocabulary ({len(self.tokenizer)}) exceeds the "
                    f"config's vocab_size ({config.vocab_size})"
                )
        elif building_on_meta():
            self.tokenizer = None
        else:
            self.tokenizer = _load_speecht5_tokenizer(model_name)
        self._output_dim = int(config.hidden_size)
        self._apply_frozen(frozen)

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def text_limit(self) -> TextLimit | None:
        """The transcript token limit (``max_text_positions``) and its ``overflow`` policy, for data checks."""
        if self.tokenizer is None:
            return None
        return TextLimit(self.tokenizer, self.max_tokens, self.overflow, f"SpeechT5 encoder {self.model_name}",
                         special_tokens=1)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Transcripts -> (ids (B, K) long, mask (B, K) bool), padded to the longest; the token cap
        ``max_text_positions`` follows the ``overflow`` policy."""
        if self.tokenizer is None:
            raise RuntimeError("SpeechTranscriptEncoder was built on the meta device; rebuild it on a real device")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"SpeechTranscriptEncoder expects a list of strings, got {type(texts).__name__}")
        out = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        ids, mask = out["input_ids"].long(), out["attention_mask"].bool()
        if ids.shape[1] > self.max_tokens:
            over = [i for i in range(len(texts)) if int(mask[i].sum()) > self.max_tokens]
            if self.overflow == "error":
                raise ValueError(
                    f"SpeechTranscriptEncoder: transcripts {over} have more than {self.max_tokens} tokens "
                    f"(first: {texts[over[0]][:60]!r}). Shorten them or set overflow='truncate'."
                )
            log.warning("SpeechTranscriptEncoder: truncating transcripts %s to %d tokens", over, self.max_tokens)
            ids, mask = ids[:, : self.max_tokens], mask[:, : self.max_tokens]
        return ids, mask

    def encode_tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Transcripts -> SpeechT5 token states (B, K, D) and token mask (B, K)."""
        ids, mask = self.tokenize(texts)
        device = next(self.text_encoder.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        states = self.text_encoder(input_values=ids, attention_mask=mask.long()).last_hidden_state
        return states, mask

    def forward_with_durations(self, texts: list[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Like :meth:`forward`, also returning the token durations w (B, K) and the token mask."""
        with self.grad_context():
            states, mask = self.encode_tokens(texts)
            frames, frame_mask, w = self.durator(states, mask, names=list(texts))
        return frames, frame_mask, w, mask

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``texts`` (B strings) -> frame states (B, T, D) (zero past each length), mask (B, T) bool."""
        frames, frame_mask, _, _ = self.forward_with_durations(texts)
        return frames, frame_mask


def _load_speecht5_tokenizer(model_name: str) -> Any:
    try:
        import sentencepiece  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"SpeechTranscriptEncoder({model_name!r}): SpeechT5's tokenizer needs the 'sentencepiece' package "
            "(pip install sentencepiece). Without it, tokenizer='char' works for models trained from scratch "
            "(its ids do not match the pretrained SpeechT5 vocabulary)."
        ) from err
    return AutoTokenizer.from_pretrained(model_name)
