"""Per-paper models: backbones (``<paper>/network.py``) and LightningModules (``<paper>/module.py``).

:class:`FlowMatchingModule` is the shared training recipe; every paper subclasses it.
"""

from avgen.models.audiogen_omni import AudioGenOmni
from avgen.models.base import FlowMatchingModule
from avgen.models.foleygenex import FoleyGenEx
from avgen.models.omnisonic import OmniSonic

__all__ = ["AudioGenOmni", "FlowMatchingModule", "FoleyGenEx", "OmniSonic"]
