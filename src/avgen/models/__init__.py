"""Per-paper models: backbones (``<paper>/network.py``), LightningModules (``<paper>/module.py``) and
generation interfaces (``<paper>/tasks.py``).

:class:`FlowMatchingModule` is the shared training recipe; every paper subclasses it. Network sizes
are listed and built by name: :func:`list_networks`, :func:`create_network`.
"""

from avgen.models.base import FlowMatchingModule
from avgen.models.generation import GenerationInputs, GenerationInterface, GenerationRequest, SamplingOptions, Task
from avgen.models.protocol import FlowNetwork
from avgen.models.registry import create_network, list_networks, network_preset, register_network
from avgen.models.audiogen_omni import AudioGenOmni  # noqa: E402  (registers its presets)
from avgen.models.foleygenex import FoleyGenEx  # noqa: E402  (registers its presets)
from avgen.models.omnisonic import OmniSonic  # noqa: E402
from avgen.models.harmony import HarmonyModule  # noqa: E402  (registers the Wan and Harmony presets)

__all__ = [
    "AudioGenOmni",
    "FlowMatchingModule",
    "FlowNetwork",
    "FoleyGenEx",
    "GenerationInputs",
    "GenerationInterface",
    "GenerationRequest",
    "HarmonyModule",
    "OmniSonic",
    "SamplingOptions",
    "Task",
    "create_network",
    "list_networks",
    "network_preset",
    "register_network",
]
