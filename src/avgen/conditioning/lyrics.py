"""Lyrics-transcription (LT) encoder: VoiceBPE tokens -> frame-aligned text features (AudioGen-Omni §3.2).

Paper: "Non-Roman scripts are first converted to phonemes, followed by unified multilingual VoiceBPE
tokenization. Learnable 768-dimensional embeddings are padded to the frame budget and masked at
padding positions, enhanced with sinusoidal absolute positional encodings up to 4,000 positions, and
refined through ConvNeXt-V2 blocks that respect the padding mask" ("inspired by F5-TTS and
Ace-step"). The module is duration-free: the token sequence is not length-regulated, token i simply
sits on latent frame i and the transformer learns the alignment.

Two parts:

* :class:`VoiceBPETokenizer`: the public VoiceBPE vocabulary (Coqui XTTS-v2's ``vocab.json``, the file
  ACE-Step ships as ``lyric_tokenizer.py``'s vocabulary, 6681 entries) loaded through the
  ``tokenizers`` library from a file or a Hugging Face hub name. The XTTS/ACE-Step pipeline:
  clean the text, romanise non-Latin scripts (the pluggable ``romanizers`` hook: zh -> pypinyin
  TONE3, ja -> cutlet, ko -> hangul-romanize by default, each imported only when used), prepend the
  language tag ``[lang]`` (``zh`` -> ``zh-cn``), replace spaces by ``[SPACE]``, BPE.
  :meth:`VoiceBPETokenizer.train` trains a small BPE with the same special tokens in memory: the
  file-free tokenizer of tests and ``tiny.yaml``.
* :class:`TextEmbedding`: F5-TTS's ``TextEmbedding`` as ONE configurable module (AudioGen-Omni: vocab
  6681, 768-d, 4000 positions, 4 ConvNeXt-V2 blocks; Harmony's transcript embedding: 512-d, 8192
  positions). Token ids are shifted by +1 so 0 is the filler (``filler_shift``), the sequence is
  right-padded with filler to the frame budget N, the sinusoidal table ``cat[cos(p f), sin(p f)]``,
  ``f_i = 10000^(-2i/dim)`` is added (positions clamped to ``max_positions - 1`` as F5 does), then
  ConvNeXt-V2 blocks; with ``mask_padding`` filler positions are zeroed before and after every block.

Deviation from F5-TTS v1, as the paper asks ("ConvNeXt-V2 blocks that respect the padding mask"):
the blocks get the filler mask, so their depthwise conv sees zeros there (as in F5) *and* GRN pools
over the text tokens only (F5 pools over all N frames). Valid outputs therefore do not depend on how
much padding follows, which is what makes a variable-length batch equal to its samples run alone.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from avgen.nn import ConvNeXtV2Block, sinusoidal_embedding
from avgen.nn.conv import masked_fill_padding

__all__ = [
    "DEFAULT_ROMANIZERS",
    "LyricsTooLongError",
    "TextEmbedding",
    "VoiceBPETokenizer",
    "basic_cleaner",
]

PAD_ID = -1  # id of padding in a batch of token sequences (F5-TTS's convention); filler after the shift
SPACE_TOKEN = "[SPACE]"
# XTTS/ACE-Step special tokens present in the public vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = ("[STOP]", "[UNK]", SPACE_TOKEN)


class LyricsTooLongError(ValueError):
    """A transcript / lyric needs more tokens than the clip has latent frames."""


def basic_cleaner(text: str) -> str:
    """Lower-case and collapse whitespace (the language-independent part of XTTS's cleaners).

    XTTS's ``multilingual_cleaners`` also expand numbers, abbreviations and symbols per language;
    pass your own ``cleaner`` to :class:`VoiceBPETokenizer` for that.
    """
    text = text.lower().replace('"', "")
    return re.sub(r"\s+", " ", text).strip()


def _pinyin(text: str) -> str:
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError as err:
        raise ImportError("romanising Chinese needs pypinyin (pip install pypinyin), or pass romanizers={'zh': fn}") from err
    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))


def _romaji(text: str) -> str:
    try:
        import cutlet
    except ImportError as err:
        raise ImportError("romanising Japanese needs cutlet (pip install cutlet), or pass romanizers={'ja': fn}") from err
    return cutlet.Cutlet().romaji(text)


def _hangul(text: str) -> str:
    try:
        from hangul_romanize import Transliter
        from hangul_romanize.rule import academic
    except ImportError as err:
        raise ImportError(
            "romanising Korean needs hangul-romanize (pip install hangul-romanize), or pass romanizers={'ko': fn}"
        ) from err
    return Transliter(academic).translit(text)


# Non-Latin scripts -> Latin phoneme-like text, as XTTS / ACE-Step do before BPE.
DEFAULT_ROMANIZERS: dict[str, Callable[[str], str]] = {"zh": _pinyin, "ja": _romaji, "ko": _hangul}


class VoiceBPETokenizer:
    """Multilingual VoiceBPE tokenizer over a ``tokenizers.Tokenizer``.

    Args:
        source: a ``vocab.json`` / ``tokenizer.json`` file, or a Hugging Face hub name (with
            ``filename`` the file inside that repository, fetched by ``huggingface_hub``; without it
            ``Tokenizer.from_pretrained``). Offline, a hub name resolves only from the local cache.
        filename: file inside the hub repository (e.g. ``"vocab.json"``).
        tokenizer: an already-built ``tokenizers.Tokenizer`` (used by :meth:`train`).
        default_lang: language when :meth:`encode` gets none.
        romanizers: language -> callable turning that script into Latin text; ``None`` uses
            :data:`DEFAULT_ROMANIZERS`. Applied after cleaning, before the language tag.
        cleaner: text normaliser, default :func:`basic_cleaner`.
        add_lang_tag: prepend ``[lang]`` (XTTS/ACE-Step do).
    """

    def __init__(
        self,
        source: str | None = None,
        *,
        filename: str | None = None,
        tokenizer=None,
        default_lang: str = "en",
        romanizers: Mapping[str, Callable[[str], str]] | None = None,
        cleaner: Callable[[str], str] = basic_cleaner,
        add_lang_tag: bool = True,
    ) -> None:
        from tokenizers import Tokenizer

        if tokenizer is None:
            if source is None:
                raise ValueError("VoiceBPETokenizer needs a vocabulary file, a hub name, or a built tokenizer")
            if os.path.isfile(source):
                tokenizer = Tokenizer.from_file(source)
            elif filename is not None:
                from huggingface_hub import hf_hub_download

                tokenizer = Tokenizer.from_file(hf_hub_download(source, filename))
            else:
                try:
                    tokenizer = Tokenizer.from_pretrained(source)
                except Exception as err:  # tokenizers raises a plain Exception for unknown names
                    raise OSError(
                        f"VoiceBPETokenizer: {source!r} is neither a file nor a loadable hub name ({err}). Pass the "
                        "path of the VoiceBPE vocab.json (XTTS-v2 / ACE-Step) or a cached hub repository + filename."
                    ) from err
        self.tokenizer = tokenizer
        self.default_lang = default_lang
        self.romanizers = dict(DEFAULT_ROMANIZERS if romanizers is None else romanizers)
        self.cleaner = cleaner
        self.add_lang_tag = add_lang_tag

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def __len__(self) -> int:
        return self.vocab_size

    @staticmethod
    def lang_tag(lang: str) -> str:
        """XTTS's tag: the base language (``"zh-cn"`` -> ``"zh"``), then ``zh`` becomes ``zh-cn``."""
        base = lang.split("-")[0]
        return "[zh-cn]" if base == "zh" else f"[{base}]"

    def preprocess(self, text: str, lang: str) -> str:
        text = self.cleaner(text)
        romanize = self.romanizers.get(lang.split("-")[0])
        if romanize is not None:
            text = romanize(text)
        if self.add_lang_tag:
            text = self.lang_tag(lang) + text
        return text.replace(" ", SPACE_TOKEN)

    def encode(self, text: str, lang: str | None = None) -> list[int]:
        """Text -> VoiceBPE ids (language tag first). An empty text gives only the tag."""
        lang = lang or self.default_lang
        tag = self.lang_tag(lang)
        if self.add_lang_tag and self.tokenizer.token_to_id(tag) is None:
            raise ValueError(f"VoiceBPETokenizer: language tag {tag} is not in the vocabulary; use a language it has")
        return list(self.tokenizer.encode(self.preprocess(text, lang)).ids)

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return text.replace(" ", "").replace(SPACE_TOKEN, " ")

    def batch(
        self,
        texts: Sequence[str],
        frame_lengths: Sequence[int] | Tensor,
        *,
        langs: Sequence[str | None] | None = None,
        names: Sequence[str] | None = None,
        present: Sequence[bool] | Tensor | None = None,
    ) -> Tensor:
        """Tokenise a batch, padded with ``PAD_ID`` (-1) to ``max(frame_lengths)``: (B, N) long.

        Each sample must fit its own frame budget (its latent length): more tokens than frames is a
        :class:`LyricsTooLongError` naming the sample. ``present`` False rows are all padding
        (F5-TTS's ``drop_text``: after the +1 shift they are all filler).
        """
        lengths = [int(n) for n in (frame_lengths.tolist() if isinstance(frame_lengths, Tensor) else frame_lengths)]
        if len(lengths) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(lengths)} frame lengths")
        width = max(lengths) if lengths else 0
        out = torch.full((len(texts), width), PAD_ID, dtype=torch.long)
        for i, text in enumerate(texts):
            if present is not None and not bool(present[i]):
                continue
            ids = self.encode(text, None if langs is None else langs[i])
            if len(ids) > lengths[i]:
                who = names[i] if names is not None else f"sample {i}"
                raise LyricsTooLongError(
                    f"{who}: the lyrics/transcript needs {len(ids)} tokens (language tag included) but the clip has "
                    f"only {lengths[i]} latent frames ({text[:60]!r}{'...' if len(text) > 60 else ''}). Shorten the "
                    "text or generate a longer clip (--duration)."
                )
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    @classmethod
    def train(
        cls, corpus: Sequence[str], vocab_size: int = 96, *, langs: Sequence[str] = ("en",), **kwargs
    ) -> "VoiceBPETokenizer":
        """A small VoiceBPE-style tokenizer trained in memory (no files): tests and tiny configs.

        Same pre-processing and special tokens as the public vocabulary ([STOP], [UNK], [SPACE],
        the language tags); BPE merges are learned on ``corpus`` after :meth:`preprocess`.
        """
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tags = [cls.lang_tag(lang) for lang in langs]
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        # Keep the special tokens whole; the rest is split per character before merging.
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # as the public vocab.json
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *tags], show_progress=False
        )
        probe = cls(tokenizer=tokenizer, romanizers={}, add_lang_tag=True, **kwargs)
        lines = [probe.preprocess(text, lang) for text in corpus for lang in langs]
        tokenizer.train_from_iterator(lines, trainer)
        return cls(tokenizer=tokenizer, **kwargs)


class TextEmbedding(nn.Module):
    """F5-TTS ``TextEmbedding``: token ids (B, K) -> frame-aligned features (B, N, dim).

    Args:
        vocab_size: tokenizer vocabulary (VoiceBPE 6681).
        dim: embedding width (AudioGen-Omni 768; F5-TTS / Harmony 512).
        max_positions: size of the sinusoidal table (AudioGen-Omni 4000, F5-TTS 8192); positions at
            or beyond it reuse the last one (F5-TTS's clamp).
        num_blocks: ConvNeXt-V2 blocks (F5-TTS 4; AudioGen-Omni does not say, spec default 4).
        mult: hidden width of a block = ``dim * mult`` (F5-TTS 2).
        kernel_size: depthwise kernel of a block (F5-TTS 7).
        filler_shift: add 1 to every id so that 0 is the filler (F5-TTS); ``Embedding(vocab + 1)``.
            False: ids are used as given and ``filler_id`` marks filler.
        filler_id: the filler when ``filler_shift`` is False.
        mask_padding: zero filler positions before and after every block (F5-TTS v1); the blocks
            also pool GRN over text tokens only (see the module docstring).
        add_positions: add the sinusoidal table (F5 does so only when it has blocks).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        max_positions: int = 4000,
        num_blocks: int = 4,
        mult: int = 2,
        kernel_size: int = 7,
        filler_shift: bool = True,
        filler_id: int = 0,
        mask_padding: bool = True,
        add_positions: bool = True,
    ) -> None:
        super().__init__()
        if max_positions < 1:
            raise ValueError(f"max_positions must be >= 1, got {max_positions}")
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.max_positions = int(max_positions)
        self.filler_shift, self.filler_id = bool(filler_shift), int(filler_id)
        self.mask_padding, self.add_positions = bool(mask_padding), bool(add_positions)
        self.embed = nn.Embedding(self.vocab_size + (1 if filler_shift else 0), self.dim)
        self.blocks = nn.ModuleList(
            ConvNeXtV2Block(self.dim, self.dim * mult, kernel_size=kernel_size) for _ in range(num_blocks)
        )
        # A buffer (not saved: it is a pure function of the config), built lazily on the right device.
        self.register_buffer(
            "positions", sinusoidal_embedding(torch.arange(self.max_positions), self.dim), persistent=False
        )

    @property
    def filler(self) -> int:
        return 0 if self.filler_shift else self.filler_id

    def token_mask(self, ids: Tensor, length: int) -> Tensor:
        """(B, K) ids -> (B, N) bool, True on text tokens (not filler / padding)."""
        return self._fit(ids, length) != self.filler

    def _fit(self, ids: Tensor, length: int) -> Tensor:
        """Shift, truncate to ``length`` and right-pad with filler: (B, K) -> (B, N)."""
        ids = ids.long()
        if self.filler_shift:
            ids = ids + 1  # PAD_ID (-1) becomes the filler 0
        ids = ids[:, :length]
        if ids.shape[1] < length:
            pad = ids.new_full((ids.shape[0], length - ids.shape[1]), self.filler)
            ids = torch.cat([ids, pad], dim=1)
        return ids

    def forward(self, ids: Tensor, length: int, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """ids (B, K) (``PAD_ID`` padded) -> (features (B, N, dim), token mask (B, N)), N = ``length``.

        ``frame_mask`` (B, N) (True = valid latent frame) additionally zeroes token ids that fall on
        padded frames of a shorter clip, so a sample's features never depend on batch padding.
        """
        ids = self._fit(ids, length)
        if frame_mask is not None:
            ids = ids.masked_fill(~frame_mask.to(torch.bool), self.filler)
        mask = ids != self.filler
        if ids.numel() and ids.device.type != "meta" and int(ids.max()) >= self.embed.num_embeddings:
            raise ValueError(f"a token id is outside the vocabulary of {self.vocab_size}; check the tokenizer")
        x = self.embed(ids)  # (B, N, dim)
        if self.add_positions:
            index = torch.arange(length, device=ids.device).clamp(max=self.max_positions - 1)
            x = x + self.positions.to(x.device, x.dtype)[index]
        block_mask = mask if self.mask_padding else None
        for block in self.blocks:
            x = block(masked_fill_padding(x, block_mask), block_mask)
        return masked_fill_padding(x, block_mask), mask
