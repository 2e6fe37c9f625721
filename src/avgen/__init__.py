"""avgen: an open PyTorch Lightning zoo of video-to-audio and audio-video generation papers."""

__version__ = "0.1.0"
