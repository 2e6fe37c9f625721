"""Audio (and video) codecs behind one interface: :class:`AudioCodec`.

* :class:`MelCodec`: weight-free normalised log-mel + Griffin-Lim (tiny configs).
* :class:`MMAudioCodec`: MMAudio's mel VAE + BigVGAN (16k / 44k), public checkpoints via key maps.
* :class:`OobleckCodec`: Stable Audio Open's waveform VAE through diffusers.
* :class:`AudioLDMCodec`: AudioLDM's mel VAE (diffusers AutoencoderKL) + SpeechT5 HiFi-GAN (OmniSonic).

Video codecs implement :class:`VideoCodec` (frames (B, F, 3, H, W) in [0, 1] <-> (B, T, C, h, w)):

* :class:`WanVideoCodec`: the Wan2.1/2.2 VAE (diffusers AutoencoderKLWan) with Wan's per-channel normalisation.
* :class:`PixelVideoCodec`: weight-free pooling + patchify (tiny configs).
"""

from avgen.codecs.audioldm import AudioLDMCodec
from avgen.codecs.base import AudioCodec
from avgen.codecs.bigvgan import BigVGAN
from avgen.codecs.mel import MelCodec
from avgen.codecs.mmaudio import MMAudioCodec
from avgen.codecs.mmaudio_vae import MMAudioVAE
from avgen.codecs.oobleck import OobleckCodec
from avgen.codecs.video import PixelVideoCodec, VideoCodec
from avgen.codecs.wan import WanVideoCodec

__all__ = ["AudioCodec", "AudioLDMCodec", "BigVGAN", "MelCodec", "MMAudioCodec", "MMAudioVAE", "OobleckCodec",
           "PixelVideoCodec", "VideoCodec", "WanVideoCodec"]
