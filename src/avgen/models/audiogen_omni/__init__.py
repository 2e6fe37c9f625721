"""AudioGen-Omni (arXiv 2508.00733): MMDiT over audio, video, lyrics/transcript and caption tokens."""

from avgen.models.audiogen_omni.module import AudioGenOmni, AudioGenOmniEncoded
from avgen.models.audiogen_omni.network import AudioGenOmniConditions, AudioGenOmniNetwork
from avgen.models.audiogen_omni.tasks import TASKS, AudioGenOmniGeneration, AudioGenOmniSampling

__all__ = [
    "TASKS",
    "AudioGenOmni",
    "AudioGenOmniConditions",
    "AudioGenOmniEncoded",
    "AudioGenOmniGeneration",
    "AudioGenOmniNetwork",
    "AudioGenOmniSampling",
]
