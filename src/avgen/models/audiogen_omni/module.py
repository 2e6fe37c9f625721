"""AudioGen-Omni as a LightningModule: the MMDiT of :mod:`.network` trained by the shared flow-matching
recipe on mixed audio / speech / song data (arXiv 2508.00733 §3.3, §3.4.2, §4).

Conditions per sample, any subset present (§3.3: "masking absent inputs ... permitting arbitrary
subsets of conditioning inputs during inference without retraining"):

* video: MetaCLIP frames (8 fps) and Synchformer features (frozen encoders, run once per batch);
* caption: Flan-T5 token states (frozen, Fig. 1);
* lyrics or transcript: VoiceBPE ids for the trainable LT-encoder inside the network. One stream
  serves both (§3.2 "a unified lyrics-transcription encoder"): a sample's lyrics if it has them,
  else its transcript;
* timing: ``seconds_start`` and ``seconds_total`` of the batch (ToyWorld sets them per clip).

Absent conditions come from the batch's presence flags; CFG dropout (spec §1.4.6: the paper gives no
rate, MMAudio's 0.1) drops video (CLIP + sync together), caption and lyrics independently per sample.
Variable length (§3.3): clips of different durations share a padded batch; the latent mask keeps the
padded frames out of attention and of the loss (the shared masked flow-matching loss).

Inference (§4): 25 Euler steps, CFG 4.5, the unconditional branch nulls video, caption and lyrics and
keeps the timing. Tasks (:data:`~avgen.models.audiogen_omni.tasks.TASKS`) only choose which conditions
a sample keeps; :meth:`AudioGenOmni.generate_task` runs one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.conditioning._common import building_on_meta
from avgen.conditioning.clip import CLIPVisionEncoder
from avgen.conditioning.lyrics import VoiceBPETokenizer
from avgen.conditioning.sync import SyncEncoder
from avgen.conditioning.t5 import T5TextEncoder
from avgen.data.batch import AVBatch, length_mask
from avgen.models.audiogen_omni.network import AudioGenOmniConditions, AudioGenOmniNetwork
from avgen.models.audiogen_omni.tasks import TASKS, AudioGenOmniTask
from avgen.models.base import FlowMatchingModule
from avgen.models.foleygenex.network import SYNC_SEGMENT_TOKENS

__all__ = ["AudioGenOmni", "AudioGenOmniEncoded", "TINY_LYRICS_TOKENIZER"]

TINY_LYRICS_TOKENIZER = "tiny"


def tiny_lyrics_tokenizer() -> VoiceBPETokenizer:
    """A small VoiceBPE-style tokenizer trained in memory on ToyWorld's words and the alphabet (no file)."""
    from avgen.data.speech import VOCABULARY

    corpus = [" ".join(VOCABULARY), "abcdefghijklmnopqrstuvwxyz", "la la la yo oh"]
    return VoiceBPETokenizer.train(corpus, vocab_size=96)


@dataclass
class AudioGenOmniEncoded:
    """Encoder outputs of one batch (computed once, reused by every CFG branch and ODE step)."""

    semantic_features: Tensor  # (B, F, Ds)
    semantic_mask: Tensor  # (B, F)
    sync_features: Tensor  # (B, Ts, Dy)
    sync_lengths: Tensor  # (B,)
    caption_features: Tensor  # (B, L, Dc)
    caption_mask: Tensor  # (B, L)
    lyrics_ids: Tensor  # (B, K), -1 padded
    latent_lengths: Tensor  # (B,) valid latent frames of each clip
    video_present: Tensor  # (B,) bool
    caption_present: Tensor
    lyrics_present: Tensor
    seconds_start: Tensor  # (B,)
    seconds_total: Tensor  # (B,)


class AudioGenOmni(FlowMatchingModule):
    """AudioGen-Omni: video / caption / lyrics / transcript (any subset) to audio, speech and song.

    Args:
        codec: audio codec (paper: Kling-Foley's private Mel-VAE; here the MMAudio 44.1 kHz mel-VAE +
            BigVGAN with the same 43 Hz / 1024x rates, see docs/codecs.md).
        vision_encoder: semantic video encoder (MetaCLIP ViT-bigG-14-quickgelu, 8 fps).
        text_encoder: caption encoder (Flan-T5-base, frozen).
        sync_encoder: Synchformer visual branch.
        lyrics_tokenizer: VoiceBPE vocabulary file (XTTS-v2 / ACE-Step ``vocab.json``) or hub name,
            or ``"tiny"`` (a BPE trained in memory on ToyWorld's words; no file).
        lyrics_filename: file inside the hub repository when ``lyrics_tokenizer`` is a hub name.
        lyrics_vocab_size: vocabulary size when the tokenizer is not loaded (meta-device builds for
            ``avgen summary``); must agree with the tokenizer when both are known.
        lyrics_lang: language of lyrics / transcripts (a sample's ``meta["lang"]`` overrides it).
        lyrics_dim, lyrics_max_positions, lyrics_blocks: the LT-encoder (768, 4000, 4).
        hidden_dim, num_heads, num_joint_blocks, num_single_blocks, mlp_ratio: network size (paper
            1024, 16, 8, 16, 4).
        paapi, paapi_text, mask_caption_padding, mask_lyrics_filler, pooled_fusion, max_seconds:
            see :class:`~avgen.models.audiogen_omni.network.AudioGenOmniNetwork`.
        video_dropout, caption_dropout, lyrics_dropout: per-sample CFG drop probabilities (0.1).
        semantic_fps, sync_fps: frame rates of the two video streams (valid-frame counts of
            variable-length clips and placeholders of clips without video).
        max_duration: longest clip the model generates (paper: 10 s).
        **kwargs: the shared recipe (optimizer, lr_scheduler, ema_decay, duration, sampling, ...).
    """

    def __init__(
        self,
        codec: AudioCodec,
        vision_encoder: CLIPVisionEncoder,
        text_encoder: T5TextEncoder,
        sync_encoder: SyncEncoder,
        *,
        lyrics_tokenizer: str = TINY_LYRICS_TOKENIZER,
        lyrics_filename: str | None = None,
        lyrics_vocab_size: int | None = None,
        lyrics_lang: str = "en",
        lyrics_dim: int = 768,
        lyrics_max_positions: int = 4000,
        lyrics_blocks: int = 4,
        hidden_dim: int = 1024,
        num_heads: int = 16,
        num_joint_blocks: int = 8,
        num_single_blocks: int = 16,
        mlp_ratio: float = 4.0,
        paapi: bool = True,
        paapi_text: bool = True,
        mask_caption_padding: bool = False,
        mask_lyrics_filler: bool = False,
        pooled_fusion: str = "concat",
        max_seconds: int = 30,
        video_dropout: float = 0.1,
        caption_dropout: float = 0.1,
        lyrics_dropout: float = 0.1,
        semantic_fps: float = 8.0,
        sync_fps: float = 25.0,
        max_duration: float = 10.0,
        cfg_scale: float = 4.5,
        num_sampling_steps: int = 25,
        **kwargs: Any,
    ):
        for name, p in (("video_dropout", video_dropout), ("caption_dropout", caption_dropout),
                        ("lyrics_dropout", lyrics_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        tokenizer = None
        if lyrics_tokenizer == TINY_LYRICS_TOKENIZER:
            tokenizer = tiny_lyrics_tokenizer()
        elif not building_on_meta():
            tokenizer = VoiceBPETokenizer(lyrics_tokenizer, filename=lyrics_filename, default_lang=lyrics_lang)
        if tokenizer is not None:
            if lyrics_vocab_size is not None and lyrics_vocab_size != tokenizer.vocab_size:
                raise ValueError(
                    f"lyrics_vocab_size={lyrics_vocab_size} but the tokenizer {lyrics_tokenizer!r} has "
                    f"{tokenizer.vocab_size} entries; drop lyrics_vocab_size or fix it"
                )
            lyrics_vocab_size = tokenizer.vocab_size
        elif lyrics_vocab_size is None:
            raise ValueError("lyrics_vocab_size is needed when the tokenizer is not loaded (meta-device build)")
        network = AudioGenOmniNetwork(
            latent_channels=codec.latent_channels,
            semantic_dim=vision_encoder.output_dim,
            sync_dim=sync_encoder.output_dim,
            caption_dim=text_encoder.output_dim,
            caption_length=text_encoder.max_length,
            lyrics_vocab_size=lyrics_vocab_size,
            lyrics_dim=lyrics_dim,
            lyrics_max_positions=lyrics_max_positions,
            lyrics_blocks=lyrics_blocks,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_joint_blocks=num_joint_blocks,
            num_single_blocks=num_single_blocks,
            mlp_ratio=mlp_ratio,
            latent_rate=codec.sample_rate / codec.hop_length,
            semantic_rate=semantic_fps,
            paapi=paapi,
            paapi_text=paapi_text,
            mask_caption_padding=mask_caption_padding,
            mask_lyrics_filler=mask_lyrics_filler,
            pooled_fusion=pooled_fusion,
            max_seconds=max_seconds,
        )
        super().__init__(network, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.sync_encoder = sync_encoder
        self.tokenizer = tokenizer
        self.lyrics_lang = lyrics_lang
        self.video_dropout, self.caption_dropout, self.lyrics_dropout = video_dropout, caption_dropout, lyrics_dropout
        self.semantic_fps, self.sync_fps = float(semantic_fps), float(sync_fps)
        self.max_duration = float(max_duration)

    # ------------------------------------------------------------------ conditions
    def _clip_seconds(self, batch: AVBatch) -> Tensor:
        """Each clip's duration (B,): its audio length, else seconds_total, else ``duration``."""
        size = len(batch)
        seconds = torch.full((size,), float(self.duration))
        if batch.seconds_total is not None:
            total = batch.seconds_total.float().cpu()
            seconds = torch.where(total > 0, total, seconds)
        if batch.audio is not None:
            from_audio = batch.audio_lengths.float().cpu() / batch.sample_rate
            seconds = torch.where(batch.has_audio.cpu(), from_audio, seconds)
        return seconds

    def _sync_tokens(self, seconds: float) -> int:
        try:
            tokens = self.sync_encoder.num_tokens(max(1, round(seconds * self.sync_fps)))
        except ValueError:  # shorter than one window
            tokens = 0
        return max(SYNC_SEGMENT_TOKENS, tokens)

    def _video_features(self, batch: AVBatch, seconds: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(semantic (B, F, Ds), semantic mask (B, F), sync (B, Ts, Dy), sync lengths (B,))."""
        size, device = len(batch), self.device
        semantic, sync = batch.semantic_features, batch.sync_features
        if semantic is None and batch.video_semantic is not None:
            semantic = self.vision_encoder(batch.video_semantic)
        if sync is None and batch.video_sync is not None:
            sync = self.sync_encoder(batch.video_sync)
        if (semantic is None) != (sync is None):
            raise ValueError(f"batch {batch.ids[:4]} carries one video stream but not the other; AudioGen-Omni needs both")
        frames = [max(1, round(float(s) * self.semantic_fps)) for s in seconds]
        tokens = [self._sync_tokens(float(s)) for s in seconds]
        if semantic is None:
            if bool(batch.has_video.any()):
                raise ValueError(f"batch {batch.ids[:4]} flags video as present but carries no frames or features")
            semantic = torch.zeros(size, max(frames), self.vision_encoder.output_dim, device=device)
            sync = torch.zeros(size, max(tokens), self.sync_encoder.output_dim, device=device)
        # Valid frames / tokens of each clip (the batch pads shorter clips with zero frames).
        frames = torch.tensor(frames).clamp(max=semantic.shape[1]).to(device)
        tokens = torch.tensor(tokens).clamp(max=sync.shape[1]).to(device)
        return semantic, length_mask(frames, semantic.shape[1]), sync, tokens

    def _lyrics_texts(self, batch: AVBatch) -> tuple[list[str], Tensor]:
        """One text per sample for the LT-encoder: its lyrics, else its transcript."""
        texts = [lyr if has_l else tr for lyr, tr, has_l in zip(batch.lyrics, batch.transcript, batch.has_lyrics.tolist())]
        return texts, (batch.has_lyrics | batch.has_transcript)

    def _langs(self, batch: AVBatch) -> list[str]:
        metas = batch.meta or [{} for _ in range(len(batch))]
        return [str(m.get("lang", self.lyrics_lang)) if isinstance(m, dict) else self.lyrics_lang for m in metas]

    def encode_conditions(self, batch: AVBatch) -> AudioGenOmniEncoded:
        if self.tokenizer is None:
            raise RuntimeError("AudioGenOmni was built on the meta device (no tokenizer); rebuild it on a real device")
        seconds = self._clip_seconds(batch)
        num_samples = torch.round(seconds * self.codec.sample_rate).long()
        if batch.audio is not None:
            num_samples = torch.where(batch.has_audio.cpu(), batch.audio_lengths.cpu(), num_samples)
        latent_lengths = self.codec.latent_lengths(num_samples)
        semantic, semantic_mask, sync, sync_lengths = self._video_features(batch, seconds)
        caption, caption_mask = self.text_encoder(list(batch.caption))
        texts, lyrics_present = self._lyrics_texts(batch)
        ids = self.tokenizer.batch(texts, latent_lengths, langs=self._langs(batch), names=list(batch.ids),
                                   present=lyrics_present)
        device = semantic.device
        start = batch.seconds_start if batch.seconds_start is not None else torch.zeros(len(batch))
        total = batch.seconds_total if batch.seconds_total is not None else torch.zeros(len(batch))
        total = torch.where(total > 0, total, seconds)  # data without a source length: the clip's own
        return AudioGenOmniEncoded(
            semantic_features=semantic,
            semantic_mask=semantic_mask,
            sync_features=sync,
            sync_lengths=sync_lengths,
            caption_features=caption,
            caption_mask=caption_mask,
            lyrics_ids=ids.to(device),
            latent_lengths=latent_lengths.to(device),
            video_present=batch.has_video.to(device),
            caption_present=batch.has_caption.to(device),
            lyrics_present=lyrics_present.to(device),
            seconds_start=start.float().to(device),
            seconds_total=total.float().to(device),
        )

    def make_conditions(
        self, network: nn.Module, encoded: AudioGenOmniEncoded, batch: AVBatch, *, latent_length: int, branch: str
    ) -> AudioGenOmniConditions:
        video, caption, lyrics = encoded.video_present, encoded.caption_present, encoded.lyrics_present
        if branch == "train":
            video = video & (torch.rand(video.shape, device=video.device) >= self.video_dropout)
            caption = caption & (torch.rand(caption.shape, device=caption.device) >= self.caption_dropout)
            lyrics = lyrics & (torch.rand(lyrics.shape, device=lyrics.device) >= self.lyrics_dropout)
        elif branch == "unconditional":  # timing is kept: it defines the length
            video, caption, lyrics = torch.zeros_like(video), torch.zeros_like(caption), torch.zeros_like(lyrics)
        elif branch != "conditional":
            raise ValueError(f"unknown condition branch {branch!r}")
        latent_mask = length_mask(encoded.latent_lengths.clamp(max=latent_length), latent_length)
        return network.preprocess_conditions(
            semantic_features=encoded.semantic_features,
            semantic_mask=encoded.semantic_mask,
            sync_features=encoded.sync_features,
            sync_lengths=encoded.sync_lengths,
            caption_features=encoded.caption_features,
            caption_mask=encoded.caption_mask,
            lyrics_ids=encoded.lyrics_ids,
            video_present=video,
            caption_present=caption,
            lyrics_present=lyrics,
            seconds_start=encoded.seconds_start,
            seconds_total=encoded.seconds_total,
            latent_mask=latent_mask,
        )

    # ------------------------------------------------------------------ tasks
    def apply_task(
        self,
        batch: AVBatch,
        task: str,
        *,
        caption: str | None = None,
        lyrics: str | None = None,
        transcript: str | None = None,
    ) -> AVBatch:
        """The batch with only the task's conditions present (and the given texts filled in)."""
        if task not in TASKS:
            raise ValueError(f"unknown AudioGen-Omni task {task!r}; choose one of {', '.join(TASKS)}")
        spec: AudioGenOmniTask = TASKS[task]
        size = len(batch)

        def filled(values: list[str], flags: Tensor, text: str | None) -> tuple[list[str], Tensor]:
            if text is None:
                return list(values), flags
            return [text] * size, torch.full((size,), bool(text), dtype=torch.bool)

        captions, has_caption = filled(batch.caption, batch.has_caption, caption)
        lyr, has_lyrics = filled(batch.lyrics, batch.has_lyrics, lyrics)
        trs, has_transcript = filled(batch.transcript, batch.has_transcript, transcript)
        if spec.video and not bool(batch.has_video.all()):
            lacking = [i for i, h in zip(batch.ids, batch.has_video.tolist()) if not h]
            raise ValueError(f"task {task!r} needs video but samples {lacking[:4]} have none; give --video or use {spec.text_only_alternative}")
        if spec.text == "lyrics" and not bool(has_lyrics.any()) and lyrics is None:
            raise ValueError(f"task {task!r} sings lyrics: give them (--lyrics TEXT; an empty string gives instrumental music)")
        if spec.text == "transcript" and not bool(has_transcript.all()):
            raise ValueError(f"task {task!r} speaks a transcript: give it (--transcript TEXT)")
        if spec.caption_required and not bool(has_caption.all()):
            raise ValueError(f"task {task!r} needs a caption: give --caption TEXT")
        return replace(
            batch,
            has_video=batch.has_video & spec.video,
            caption=captions,
            has_caption=has_caption & spec.caption,
            lyrics=lyr,
            has_lyrics=has_lyrics & (spec.text == "lyrics"),
            transcript=trs,
            has_transcript=has_transcript & (spec.text == "transcript"),
        )

    def _with_duration(self, batch: AVBatch, duration: float | None) -> AVBatch:
        """Generate ``duration`` seconds (up to ``max_duration``) instead of the batch's length."""
        if duration is None:
            return batch
        if not 0 < duration <= self.max_duration + 1e-6:
            raise ValueError(f"duration {duration} s is outside (0, {self.max_duration}] s, the model's range")
        size = len(batch)
        num = int(round(duration * self.codec.sample_rate))
        return replace(
            batch,
            audio=torch.zeros(size, num, device=self.device),
            audio_lengths=torch.full((size,), num, dtype=torch.long),
            has_audio=torch.zeros(size, dtype=torch.bool),
            seconds_total=torch.full((size,), float(duration)),
        )

    @torch.no_grad()
    def generate_task(
        self,
        batch: AVBatch,
        task: str = "v2a",
        *,
        caption: str | None = None,
        lyrics: str | None = None,
        transcript: str | None = None,
        duration: float | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Generate for one task (see :data:`TASKS`) -> (waveforms (B, S), lengths (B,))."""
        batch = self._with_duration(self.apply_task(batch, task, caption=caption, lyrics=lyrics, transcript=transcript), duration)
        return self.generate(batch, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, progress=progress)

    def _output_lengths(self, batch: AVBatch) -> tuple[int, Tensor]:
        # A batch whose audio is only a length placeholder (has_audio False) still fixes the length.
        if batch.audio is not None and not bool(batch.has_audio.any()):
            return batch.audio.shape[1], batch.audio_lengths.to(self.device)
        return super()._output_lengths(batch)

    def predict_step(self, batch: AVBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        options = dict(self.predict_options)
        seed = options.pop("seed", None)
        seed = None if seed is None else seed + batch_idx
        task = options.pop("task", None)
        if task is None:
            waveforms, lengths = self.generate(batch, seed=seed, **options)
        else:
            waveforms, lengths = self.generate_task(batch, task, seed=seed, **options)
        return {"ids": list(batch.ids), "waveforms": waveforms, "lengths": lengths, "sample_rate": self.codec.sample_rate}
