"""Harmony (joint audio-video generation, arXiv 2511.21579): Wan2.2 video DiT + audio MM-DiT + GLDI.

- :mod:`.video_network`: the Wan2.2 DiT (video branch) and :mod:`.wan_checkpoint`, its public-weight loaders;
- :mod:`.audio_network`: the audio MM-DiT over [reference | target | speech | prompt] tokens;
- :mod:`.gldi`: Global-Local Decoupled Interaction (local A2V / V2A, global style alignment);
- :mod:`.network`: :class:`HarmonyNetwork`, the twin-branch network and its presets
  (``harmony``, ``harmony-audio``, ``harmony-tiny``, ``harmony-audio-tiny``).
"""

from avgen.models.harmony.audio_network import AudioTokens, DualStreamWanBlock, HarmonyAudioNetwork
from avgen.models.harmony.gldi import CrossModalAttention, GLDIGeometry, GLDILayer, gldi_geometry, window_mask
from avgen.models.harmony.network import HarmonyConditions, HarmonyNetwork
from avgen.models.harmony.module import HarmonyModule
from avgen.models.harmony.video_network import (
    WanBlock,
    WanTokens,
    WanVideoConditions,
    WanVideoNetwork,
    ti2v_inputs,
    wan_timestep,
)
from avgen.models.harmony.wan_checkpoint import (
    load_wan_state_dict,
    network_kwargs_from_config,
    read_wan_checkpoint,
    wan_video_network_from_pretrained,
)

__all__ = [
    "AudioTokens",
    "CrossModalAttention",
    "DualStreamWanBlock",
    "GLDIGeometry",
    "GLDILayer",
    "HarmonyAudioNetwork",
    "HarmonyConditions",
    "HarmonyModule",
    "HarmonyNetwork",
    "WanBlock",
    "WanTokens",
    "WanVideoConditions",
    "WanVideoNetwork",
    "gldi_geometry",
    "load_wan_state_dict",
    "network_kwargs_from_config",
    "read_wan_checkpoint",
    "ti2v_inputs",
    "wan_timestep",
    "wan_video_network_from_pretrained",
    "window_mask",
]
