"""Audio (and video) codecs behind one interface: :class:`AudioCodec`."""

from avgen.codecs.base import AudioCodec
from avgen.codecs.mel import MelCodec

__all__ = ["AudioCodec", "MelCodec"]
