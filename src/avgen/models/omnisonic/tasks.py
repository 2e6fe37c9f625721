"""OmniSonic's generation interface: multi-condition guidance scales (A.5) and the Fig. 4 gate override.

OmniSonic has one task (holistic audio for a video from three texts, any of which may be empty);
its options choose the Eq. 9 / Eq. 14 guidance scales and, for the analysis of Fig. 4, fixed MoE gate
scores. ``avgen generate --cfg_preset s2``, ``--cfg_scales 5 0.5 2.5``, ``--gate_logits_override
'{"speech": 0.0}'``.
"""

from __future__ import annotations

from dataclasses import dataclass

from avgen.models.generation import GenerationInterface, SamplingOptions

__all__ = ["CFG_PRESETS", "SCENARIO_PRESETS", "OmniSonicSampling", "OmniSonicGeneration"]

# A.5: per-scenario multi-condition CFG scales (lambda_on, lambda_off, lambda_sp).
CFG_PRESETS: dict[str, dict[str, float]] = {
    "s1": {"onscreen": 5.0, "offscreen": 0.5, "speech": 2.5},  # on-screen env + off-screen speech
    "s2": {"onscreen": 0.5, "offscreen": 2.5, "speech": 7.5},  # on-screen speech + off-screen env
    "s3": {"onscreen": 5.0, "offscreen": 2.5, "speech": 2.5},  # on env + off env + off speech
}
SCENARIO_PRESETS: dict[str, str] = {"omnisonic_s1": "s1", "omnisonic_s2": "s2", "omnisonic_s3": "s3"}


@dataclass
class OmniSonicSampling(SamplingOptions):
    """OmniSonic's sampling options (multi-condition CFG, Eq. 9 / Eq. 14).

    Attributes:
        cfg_preset: the A.5 scales of a UniHAGen scenario (s1, s2, s3), or auto (default: the model's
            cfg_preset; auto picks each sample's preset from its scenario or the texts it carries).
        cfg_scales: explicit scales (on-screen, off-screen, speech) of Eq. 9, overriding the preset.
        gate_logits_override: pre-softmax MoE gate scores of the named conditions (Fig. 4), e.g.
            {"speech": 0.0}; conditions not named keep the gate MLP's scores.
    """

    cfg_preset: str | None = None
    cfg_scales: list[float] | None = None
    gate_logits_override: dict[str, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cfg_preset is not None and self.cfg_preset != "auto" and self.cfg_preset not in CFG_PRESETS:
            raise ValueError(f"cfg_preset must be 'auto' or one of {sorted(CFG_PRESETS)}, got {self.cfg_preset!r}")
        if self.cfg_scales is not None and len(self.cfg_scales) != len(CFG_PRESETS["s1"]):
            raise ValueError(f"cfg_scales needs 3 values (on-screen, off-screen, speech), got {self.cfg_scales}")


class OmniSonicGeneration(GenerationInterface):
    options_class = OmniSonicSampling
