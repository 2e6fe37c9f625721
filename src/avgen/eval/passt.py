"""PaSST-S (Koutini et al. 2022, "Efficient Training of Audio Transformers with Patchout",
Interspeech; arXiv 2110.05069): the AudioSet tagger behind FD_PaSST, KL_PaSST and IS_PaSST in
MMAudio's av-benchmark.

av-benchmark calls ``hear21passt.base.get_basic_model(mode="all")``: the ``AugmentMelSTFT``
front-end and the ``passt_s_swa_p16_128_ap476`` network with the released AudioSet weights
``passt-s-f128-p16-s10-ap.476-swa.pt`` (mAP .476, SWA), on mono 32-kHz clips padded / truncated to
320,000 samples (10 s). The wrapper returns ``cat([logits (527), embedding (768)])``; av-benchmark
splits it into the 527 logits (KL, IS) and the 768-d embedding (FD). This module is an own
implementation of that computation with the checkpoint's parameter names:

* :class:`PasstMel` - ``AugmentMelSTFT`` in eval mode (no frequency / time masking, no random
  fmin / fmax): pre-emphasis ``y[n] = x[n+1] - 0.97 x[n]`` (a 2-tap convolution, one sample
  shorter), ``torch.stft`` n_fft 1024, hop 320, a symmetric Hann window of 800 samples (centred in
  the 1024-sample frame), ``center=True`` with reflect padding, power ``re^2 + im^2``; Kaldi mel
  filters (torchaudio's ``get_mel_banks``, 128 bins over 0 - 15,000 Hz: ``fmax = sr/2 -
  fmax_aug_range/2`` with ``fmax_aug_range=2000``; :func:`avgen.eval.kaldi.kaldi_mel_banks`), the
  natural log of ``mel + 1e-5`` and the "fast normalisation" ``(x + 4.5) / 5``. 10 s -> 1000 frames.
* :class:`PaSST` - the ViT (Sec. 2 of the paper): ``patch_embed.proj`` Conv2d(1, 768, 16,
  stride 10) over the (128 mel x frames) image -> a 12 x 99 grid; the separate frequency and time
  positional embeddings ``freq_new_pos_embed`` (1, 768, 12, 1) and ``time_new_pos_embed``
  (1, 768, 1, 99) are added to the grid (the time one is cut to the first T columns for shorter
  inputs); the grid is flattened frequency-major; the class and distillation tokens ``cls_token``
  / ``dist_token`` plus their positions ``new_pos_embed`` (1, 2, 768) are prepended; 12 pre-norm
  blocks (timm's ViT ``Block``: LayerNorm eps 1e-6, 12 heads, MLP ratio 4, GELU, qkv bias); the
  final ``norm``; the embedding is the mean of the class and distillation outputs and the logits
  are ``head`` = LayerNorm (eps 1e-5) + Linear(768, 527) of that mean. ``head_dist`` is in the
  checkpoint but unused at inference (the public forward averages the tokens, not two heads).
  Patchout (Sec. 2.2) is training-only and absent here.
* :class:`PasstModel` - hear21passt's ``PasstBasicWrapper`` layout (``mel`` + ``net`` +
  ``device_proxy``), so a wrapper's state dict (``net.``-prefixed keys; also a PaSST Lightning
  checkpoint's ``state_dict``) loads strictly, as the bare released file loads into ``net``.
* :class:`PasstBackend` (``passt``): ``embed`` -> 768-d, ``logits`` -> 527, metrics ``fd_passt``,
  ``kl_passt``, ``is_passt``.

Network sizes are constructor arguments (read from the state dict by :meth:`PaSST.from_state_dict`)
so a tiny local instance loads through the same path as the real file. The number of heads is not
stored in a state dict: it defaults to width / 64 (ViT-B's head width).
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import partial

import numpy as np
import torch
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.nn import functional as F

from avgen.eval.backends import BackendUnavailable, EmbeddingBackend, load_weights_file
from avgen.eval.kaldi import kaldi_mel_banks
from avgen.eval.registry import BackendSpec, MetricSpec, register_backend, register_metric
from avgen.eval.scores import frechet_score, inception_score, paired_kl_score

__all__ = ["PasstMel", "PaSST", "PasstModel", "PasstBackend", "PASST_URL", "PASST_CLIP_SAMPLES", "read_passt_checkpoint", "build_passt_backend"]

PASST_URL = "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"
PASST_FIX = f"--passt <path of passt-s-f128-p16-s10-ap.476-swa.pt, downloaded from {PASST_URL}>"
PASST_SAMPLE_RATE = 32000
PASST_CLIP_SAMPLES = 320_000  # av-benchmark pads / truncates every clip to 10 s at 32 kHz


class PasstMel(nn.Module):
    """hear21passt's ``AugmentMelSTFT`` in eval mode: (B, S) waveforms -> (B, n_mels, frames) normalised log-mel.

    Defaults are ``get_basic_model``'s: 128 mels, 32 kHz, win 800, hop 320, n_fft 1024, fmin 0,
    fmax None -> sr/2 - fmax_aug_range/2 = 15 kHz. The eval computation uses fmin / fmax as given
    (the training-time jitter of ``fmin_aug_range`` / ``fmax_aug_range`` and the masks are off).
    """

    def __init__(self, n_mels: int = 128, sample_rate: int = PASST_SAMPLE_RATE, win_length: int = 800,
                 hop_length: int = 320, n_fft: int = 1024, fmin: float = 0.0, fmax: float | None = None,
                 fmax_aug_range: int = 2000, preemphasis: float = 0.97, log_offset: float = 1e-5,
                 norm_shift: float = 4.5, norm_scale: float = 5.0) -> None:
        super().__init__()
        if fmax is None:
            fmax = sample_rate // 2 - fmax_aug_range // 2
        self.n_mels, self.sample_rate, self.n_fft, self.hop_length = n_mels, sample_rate, n_fft, hop_length
        self.win_length, self.fmin, self.fmax = win_length, float(fmin), float(fmax)
        self.log_offset, self.norm_shift, self.norm_scale = log_offset, norm_shift, norm_scale
        # Non-persistent, as in AugmentMelSTFT: the wrapper's state dict has no "mel." entries.
        self.register_buffer("preemphasis_kernel", torch.tensor([[[-preemphasis, 1.0]]]), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        # torchaudio.compliance.kaldi.get_mel_banks(n_mels, n_fft, sr, fmin, fmax) + a zero Nyquist column
        self.register_buffer("mel_basis", kaldi_mel_banks(n_mels, n_fft, sample_rate, self.fmin, self.fmax).float(),
                             persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames for a clip of ``num_samples`` (pre-emphasis drops one sample; centred STFT)."""
        return (num_samples - 1) // self.hop_length + 1

    def forward(self, waveform: Tensor) -> Tensor:
        x = F.conv1d(waveform.float()[:, None], self.preemphasis_kernel)[:, 0]  # x[n+1] - 0.97 x[n]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # (B, n_fft//2+1, frames)
        mel = torch.matmul(self.mel_basis, power)
        return (torch.log(mel + self.log_offset) + self.norm_shift) / self.norm_scale


class PatchEmbed(nn.Module):
    """Overlapping patches: Conv2d(in_chans, D, patch, stride) over (B, 1, mel, frames) -> (B, D, F, T) grid."""

    def __init__(self, embed_dim: int, patch_size: int = 16, stride: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.patch_size, self.stride = patch_size, stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class PaSST(nn.Module):
    """PaSST with distillation token, the ``passt_s_swa_p16_128_ap476`` layout.

    forward(spec (B, 1, mel, frames)) -> (logits (B, classes), embedding (B, D)).

    Args:
        embed_dim / depth / num_heads / mlp_ratio: transformer sizes (768 / 12 / 12 / 4 for PaSST-S).
        num_classes: 527 AudioSet classes.
        freq_patches / time_patches: the positional-embedding grid (12 x 99: 128 mels and 998 frames
            with stride 10, as the reference sizes it); inputs may have fewer time patches.
        patch_size / stride: the patch convolution (16 / 10: "p16", "s10").
    """

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 num_classes: int = 527, freq_patches: int = 12, time_patches: int = 99, patch_size: int = 16,
                 stride: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.embed_dim, self.num_classes = embed_dim, num_classes
        self.freq_patches, self.time_patches = freq_patches, time_patches
        self.patch_embed = PatchEmbed(embed_dim, patch_size, stride, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, embed_dim))  # positions of the two tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, freq_patches, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, time_patches))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm,
                                            act_layer=nn.GELU) for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))  # eps 1e-5 here
        self.head_dist = nn.Linear(embed_dim, num_classes)  # trained, stored, not used by the public forward
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def tokens(self, spec: Tensor) -> Tensor:
        """(B, 1, mel, frames) -> (B, 2 + F*T, D): patch grid + frequency / time positions, then the two tokens."""
        grid = self.patch_embed(spec)  # (B, D, F, T)
        freq, time = grid.shape[-2:]
        if freq != self.freq_patches:
            raise ValueError(f"PaSST: the spectrogram gives {freq} frequency patches, the network has {self.freq_patches} "
                             f"(check the front-end's mel count)")
        if time > self.time_patches:
            raise ValueError(f"PaSST: {time} time patches exceed the {self.time_patches} of its time positions "
                             f"(at most {self.time_patches * self.patch_embed.stride} frames; cut the clip)")
        grid = grid + self.time_new_pos_embed[..., :time] + self.freq_new_pos_embed
        patches = rearrange(grid, "b d f t -> b (f t) d")
        batch = spec.shape[0]
        cls = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
        return torch.cat([cls, dist, patches], dim=1)

    def forward(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        x = self.norm(self.blocks(self.tokens(spec)))
        embedding = (x[:, 0] + x[:, 1]) / 2
        return self.head(embedding), embedding

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], num_heads: int | None = None, stride: int = 10) -> "PaSST":
        """A PaSST shaped like ``state`` (bare key names), weights loaded strictly."""
        embed_dim = int(state["cls_token"].shape[-1])
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        model = cls(embed_dim=embed_dim, depth=depth, num_heads=num_heads or max(1, embed_dim // 64),
                    mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
                    num_classes=int(state["head.1.weight"].shape[0]),
                    freq_patches=int(state["freq_new_pos_embed"].shape[2]),
                    time_patches=int(state["time_new_pos_embed"].shape[3]),
                    patch_size=int(state["patch_embed.proj.weight"].shape[-1]), stride=stride,
                    in_chans=int(state["patch_embed.proj.weight"].shape[1]))
        model.load_state_dict(state, strict=True)
        return model.eval()


class PasstModel(nn.Module):
    """hear21passt's ``PasstBasicWrapper`` (``mode="all"``): waveform -> (logits, embedding).

    ``device_proxy`` is kept only so the wrapper's state dict loads strictly (hear21passt uses it to
    find the device).
    """

    def __init__(self, mel: PasstMel, net: PaSST) -> None:
        super().__init__()
        self.mel, self.net = mel, net
        self.device_proxy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(self.mel(waveform)[:, None])


def read_passt_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict in a PaSST file: bare (the release), ``{"model"|"state_dict": ...}``, or hear21passt-wrapped."""
    checkpoint = load_weights_file("passt", path, "a PaSST checkpoint", PASST_FIX)
    state = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(k in state for k in ("cls_token", "net.cls_token")):
        raise BackendUnavailable("passt", f"{path} holds no PaSST state dict (no cls_token / net.cls_token)", PASST_FIX)
    return state


class PasstBackend(EmbeddingBackend):
    """FD_PaSST embeddings (768-d) and AudioSet logits (527) for KL_PaSST / IS_PaSST, at 32 kHz.

    As av-benchmark: every clip is zero-padded at the end or truncated to ``clip_samples`` (320,000 =
    10 s; an option) and clips run in batches of ``batch_size``. The outputs of the last ``memo_size``
    distinct clips are kept (about 5 kB each), so ``logits`` after ``embed`` of the same clips is free.
    """

    name = "passt"
    sample_rate = PASST_SAMPLE_RATE
    has_logits = True

    def __init__(self, checkpoint: str, clip_samples: int = PASST_CLIP_SAMPLES, batch_size: int = 8,
                 num_heads: int | None = None, n_mels: int = 128, stride: int = 10,
                 memo_size: int = 10_000) -> None:
        super().__init__()
        state = read_passt_checkpoint(checkpoint)
        wrapped = "net.cls_token" in state
        bare = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} if wrapped else state
        try:
            net = PaSST.from_state_dict(bare, num_heads=num_heads, stride=stride)
            self.model = PasstModel(PasstMel(n_mels=n_mels), net).eval()
            if wrapped:  # the wrapper's names, strictly: net.* and device_proxy (a Lightning checkpoint has no proxy)
                self.model.load_state_dict({"device_proxy": torch.zeros(1), **state}, strict=True)
        except (RuntimeError, KeyError, ValueError) as err:
            raise BackendUnavailable("passt", f"{checkpoint} does not match the PaSST-S layout ({str(err).splitlines()[0][:200]})",
                                     PASST_FIX) from None
        frames = self.model.mel.num_frames(clip_samples)
        time_patches = (frames - net.patch_embed.patch_size) // stride + 1
        if clip_samples <= 0 or time_patches > net.time_patches or time_patches < 1:
            raise ValueError(f"PaSST clip_samples={clip_samples} gives {time_patches} time patches; the network takes "
                             f"1..{net.time_patches} (at most {PASST_CLIP_SAMPLES} samples at 32 kHz)")
        self.name = f"passt:{os.path.splitext(os.path.basename(checkpoint))[0]}"
        self.clip_samples, self.batch_size, self.dim = clip_samples, batch_size, net.embed_dim
        self.memo_size = memo_size
        self._memo: dict[bytes, tuple[Tensor, Tensor]] = {}  # network input digest -> (embedding, logits)

    def fit_clip(self, x: np.ndarray) -> Tensor:
        """Truncate / zero-pad at the end to ``clip_samples`` (av-benchmark's ``wav[..., :320000]`` / ``F.pad``)."""
        signal = torch.as_tensor(x[: self.clip_samples], dtype=torch.float32)
        return F.pad(signal, (0, self.clip_samples - signal.numel()))

    def _forward(self, waveforms: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """(embeddings (N, D), logits (N, classes)); a clip seen before (by its exact network input) is not rerun:
        FD asks for the embeddings and KL / IS for the logits of the same clips, one forward gives both."""
        clips = [self.fit_clip(x) for x in waveforms]
        keys = [hashlib.sha1(clip.numpy().tobytes()).digest() for clip in clips]
        found = {k: self._memo[k] for k in keys if k in self._memo}
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        index = {k: n for n, k in enumerate(keys)}
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = torch.stack([clips[index[k]] for k in chunk]).to(self.model.device_proxy.device)
            logits, embeddings = self.model(batch)  # on the device the back-end was moved to; results kept on CPU
            found.update({k: (e.float().cpu(), lo.float().cpu()) for k, e, lo in zip(chunk, embeddings, logits)})
        for k in todo:
            while self._memo and len(self._memo) >= self.memo_size:
                self._memo.pop(next(iter(self._memo)))  # oldest first
            if self.memo_size > 0:
                self._memo[k] = found[k]
        rows = [found[k] for k in keys]
        return torch.stack([e for e, _ in rows]), torch.stack([lo for _, lo in rows])

    def embed_resampled(self, waveforms: list[np.ndarray]) -> Tensor:
        return self._forward(waveforms)[0]

    @torch.no_grad()
    def logits(self, waveforms, sample_rate: int) -> Tensor:
        return self._forward(self.prepare(waveforms, sample_rate))[1]


# ---------------------------------------------------------------------------------- registry
def build_passt_backend(value: str | None) -> PasstBackend:
    """The ``passt`` back-end from the ``--passt`` flag's value (a local checkpoint path)."""
    if not value:
        raise BackendUnavailable("passt", "PaSST-S weights not given", PASST_FIX)
    return PasstBackend(value)


register_backend(BackendSpec("passt", build_passt_backend,
                             f"PaSST-S AudioSet checkpoint passt-s-f128-p16-s10-ap.476-swa.pt (download: {PASST_URL}) "
                             "for fd_passt / kl_passt / is_passt"))
register_metric(MetricSpec(
    "fd_passt", False, "Frechet distance of PaSST-S (32 kHz, 10 s) 768-d embeddings to the reference set (MMAudio FD_PaSST)",
    "passt", frechet_score))
register_metric(MetricSpec(
    "kl_passt", False, "KL(ground truth || generated) of the PaSST AudioSet class softmax, mean over pairs (MMAudio KL_PaSST)",
    "passt", paired_kl_score))
register_metric(MetricSpec(
    "is_passt", True, "Inception score of PaSST logits, 10 splits (fewer when fewer than 10 clips), seed 2020",
    "passt", inception_score))
