"""FoleyGenEx's masks (§3.1): the audio span mask and its images on the video streams.

Vocabulary used throughout FoleyGenEx: a (B, T) bool ``generate mask`` marks the latent frames the
model generates (True) and that enter the masked loss (Eq. 4); its complement inside the valid
frames is the *context*, whose clean latent is injected through the InputEmbedding.

* Training (§3.1 "Audio modality"): one contiguous span of 70-100 % of each sample's valid
  frames is masked (``avgen.flow.span_mask``, F5-TTS's ``frac_lengths_mask=(0.7, 1.0)``).
* Multimodal dynamic masking (§3.1 "Video modality"): the video of the context region is
  neutralised, so a surrogate reference video prepended at inference (AC-VTA) cannot disturb the
  alignment. The CLIP frames are weighted by a *bilinear* (1-D: linear) interpolation of the audio
  mask at the CLIP frame times (:func:`semantic_mask_weights`); the sync stream, which the network
  projects and upsamples to the latent rate anyway, is masked at the latent rate with the very same
  mask ("after undergoing an identical masking process"). Masked features become all-zero (the
  paper's FV0 / FS "all-zero features", Fig. 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from avgen.flow import span_mask

__all__ = ["semantic_mask_weights", "time_window_mask", "training_generate_mask"]


def training_generate_mask(
    latent_mask: Tensor,
    min_fraction: float = 0.7,
    max_fraction: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) valid-frame mask -> (B, T) bool span of 70-100 % of each sample's valid frames.

    The span is contiguous and lies inside the valid frames (FoleyGenEx §3.1, F5-TTS). A sample
    without valid frames gets an empty span (it contributes nothing to the loss).
    """
    lengths = latent_mask.long().sum(dim=1)
    return span_mask(lengths, min_fraction, max_fraction, generator=generator, max_length=latent_mask.shape[1])


def semantic_mask_weights(generate_mask: Tensor, num_frames: int) -> Tensor:
    """Bilinear mapping of the audio-rate mask onto the CLIP frames: (B, T) bool -> (B, F) in [0, 1].

    CLIP frame i sits at latent position p_i = i * T / F (the same placement the network's RoPE
    gives it, MMAudio). Its weight is the linear interpolation of the 0/1 audio mask between the
    latent frames floor(p_i) and floor(p_i) + 1 (clamped at the last frame), so it equals the audio
    mask wherever the mask is constant around p_i and lies in between at a span boundary.
    """
    if generate_mask.dim() != 2:
        raise ValueError(f"generate_mask must be (B, T), got {tuple(generate_mask.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    length = generate_mask.shape[1]
    mask = generate_mask.float()
    positions = torch.arange(num_frames, device=mask.device, dtype=torch.float64) * length / num_frames
    lower = positions.floor().long().clamp(max=length - 1)
    upper = (lower + 1).clamp(max=length - 1)
    frac = (positions - lower.double()).float()  # (F,)
    return (1 - frac) * mask[:, lower] + frac * mask[:, upper]


def time_window_mask(num_latents: int, latent_rate: float, start: Tensor, end: Tensor) -> Tensor:
    """(B,) window starts / ends in seconds -> (B, T) bool, True for frames whose time lies in [start, end).

    Latent frame j covers the time j / latent_rate.
    """
    times = torch.arange(num_latents, device=start.device, dtype=torch.float64) / latent_rate
    return (times[None] >= start.double()[:, None]) & (times[None] < end.double()[:, None])
