"""FoleyGenEx (MMAudio backbone + masked multimodal training): network and LightningModule."""

from avgen.models.foleygenex.module import FoleyGenEx, FoleyGenExEncoded
from avgen.models.foleygenex.network import FoleyGenExConditions, FoleyGenExNetwork

__all__ = ["FoleyGenEx", "FoleyGenExConditions", "FoleyGenExEncoded", "FoleyGenExNetwork"]
