"""Audio (and video) codecs behind one interface: :class:`AudioCodec`.

* :class:`MelCodec`: weight-free normalised log-mel + Griffin-Lim (tiny configs).
* :class:`MMAudioCodec`: MMAudio's mel VAE + BigVGAN (16k / 44k), public checkpoints via key maps.
* :class:`OobleckCodec`: Stable Audio Open's waveform VAE through diffusers.
* :class:`AudioLDMCodec`: AudioLDM's mel VAE (diffusers AutoencoderKL) + SpeechT5 HiFi-GAN (OmniSonic).
"""

from avgen.codecs.audioldm import AudioLDMCodec
from avgen.codecs.base import AudioCodec
from avgen.codecs.bigvgan import BigVGAN
from avgen.codecs.mel import MelCodec
from avgen.codecs.mmaudio import MMAudioCodec
from avgen.codecs.mmaudio_vae import MMAudioVAE
from avgen.codecs.oobleck import OobleckCodec

__all__ = ["AudioCodec", "AudioLDMCodec", "BigVGAN", "MelCodec", "MMAudioCodec", "MMAudioVAE", "OobleckCodec"]
