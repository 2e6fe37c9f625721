"""FoleyGenEx (MMAudio backbone + masked multimodal training): network, LightningModule, tasks, MMAudio import."""

from avgen.models.foleygenex.mmaudio_checkpoint import (
    MMAudioImport,
    export_mmaudio_state_dict,
    load_mmaudio_checkpoint,
    mmaudio_to_avgen_key,
)
from avgen.models.foleygenex.module import MASK_STRATEGIES, TASKS, FoleyGenEx, FoleyGenExEncoded
from avgen.models.foleygenex.network import FoleyGenExConditions, FoleyGenExNetwork, InputEmbedding
from avgen.models.foleygenex.tasks import FoleyGenExGeneration, FoleyGenExSampling

__all__ = [
    "MASK_STRATEGIES",
    "TASKS",
    "FoleyGenEx",
    "FoleyGenExConditions",
    "FoleyGenExEncoded",
    "FoleyGenExGeneration",
    "FoleyGenExSampling",
    "FoleyGenExNetwork",
    "InputEmbedding",
    "MMAudioImport",
    "export_mmaudio_state_dict",
    "load_mmaudio_checkpoint",
    "mmaudio_to_avgen_key",
]
