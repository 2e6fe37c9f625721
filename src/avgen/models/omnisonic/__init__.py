"""OmniSonic (TriAttn-DiT with MoE gating, multi-condition CFG): network and LightningModule."""

from avgen.models.omnisonic.module import (
    CFG_PRESETS,
    EMPTY_CAPTION_MODES,
    GUIDANCE_BRANCHES,
    SCENARIO_PRESETS,
    OmniSonic,
    OmniSonicEncoded,
)
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
    "EMPTY_CAPTION_MODES",
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
