"""Harmony (joint audio-video generation). Video branch: the Wan2.2 DiT and its public-weight loaders."""

from avgen.models.harmony.video_network import (
    WanBlock,
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
    "WanBlock",
    "WanVideoConditions",
    "WanVideoNetwork",
    "load_wan_state_dict",
    "network_kwargs_from_config",
    "read_wan_checkpoint",
    "ti2v_inputs",
    "wan_timestep",
    "wan_video_network_from_pretrained",
]
