"""OmniSonic (TriAttn-DiT with MoE gating, multi-condition CFG): network and LightningModule."""

from avgen.models.omnisonic.module import GUIDANCE_BRANCHES, OmniSonic, OmniSonicEncoded
from avgen.models.omnisonic.tasks import CFG_PRESETS, SCENARIO_PRESETS, OmniSonicGeneration, OmniSonicSampling
from avgen.models.omnisonic.network import (
    CONDITIONS,
    GATINGS,
    OmniSonicConditions,
    OmniSonicNetwork,
    TriAttnDiTBlock,
    TriCrossAttention,
)

__all__ = [
    "CFG_PRESETS",
    "CONDITIONS",
    "GATINGS",
    "GUIDANCE_BRANCHES",
    "SCENARIO_PRESETS",
    "OmniSonic",
    "OmniSonicConditions",
    "OmniSonicEncoded",
    "OmniSonicGeneration",
    "OmniSonicSampling",
    "OmniSonicNetwork",
    "TriAttnDiTBlock",
    "TriCrossAttention",
]
