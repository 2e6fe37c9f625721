"""OmniSonic (TriAttn-DiT with MoE gating, multi-condition CFG): network and LightningModule."""

from avgen.models.omnisonic.module import CFG_PRESETS, GUIDANCE_BRANCHES, SCENARIO_PRESETS, OmniSonic, OmniSonicEncoded
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
    "OmniSonicNetwork",
    "TriAttnDiTBlock",
    "TriCrossAttention",
]
