"""Audio (and video) codecs behind one interface: :class:`AudioCodec`.

* :class:`MelCodec`: weight-free normalised log-mel + Griffin-Lim (tiny configs).
* :class:`MMAudioCodec`: MMAudio's mel VAE + BigVGAN (16k / 44k), public checkpoints via key maps.
* :class:`OobleckCodec`: Stable Audio Open's waveform VAE through diffusers.
"""

from avgen.codecs.base import AudioCodec
from avgen.codecs.bigvgan import BigVGAN
from avgen.codecs.mel import MelCodec
from avgen.codecs.mmaudio import MMAudioCodec
from avgen.codecs.mmaudio_vae import MMAudioVAE
from avgen.codecs.oobleck import OobleckCodec

__all__ = ["AudioCodec", "BigVGAN", "MelCodec", "MMAudioCodec", "MMAudioVAE", "OobleckCodec"]
