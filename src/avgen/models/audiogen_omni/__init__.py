"""AudioGen-Omni (arXiv 2508.00733): MMDiT over audio, video, lyrics/transcript and caption tokens."""

from avgen.models.audiogen_omni.network import AudioGenOmniConditions, AudioGenOmniNetwork

__all__ = ["AudioGenOmniConditions", "AudioGenOmniNetwork"]
