"""OmniSonic (TriAttn-DiT with MoE gating, multi-condition CFG): network and LightningModule."""

from avgen.models.omnisonic.module import EMPTY_CAPTION_MODES, GUIDANCE_BRANCHES, OmniSonic, OmniSonicEncoded
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
    "EMPTY_CAPTION_MODES",
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
