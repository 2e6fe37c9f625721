"""OmniSonic as a LightningModule: TriAttn-DiT trained by the shared flow-matching recipe.

Conditions (OmniSonic §3.2.1, A.5): FLAN-T5 (frozen) encodes the on-screen and the off-screen
environmental captions, SpeechT5 + the differentiable Durator (trainable) the speech transcript,
a CLIP image tower (frozen, 512-d in the paper) the video frames; the AudioLDM mel-VAE is the
codec (``configs/omnisonic/paper.yaml``), whose flat latents (B, T, C*F) are handled as the latent
map (B, C, T, F) the network patchifies. A codec without a map layout (``MelCodec`` in
``tiny.yaml``) is a one-channel map (B, 1, T, n_mels). Encoders run once per batch, never per
ODE step; the Durator's frame budget is the speech encoder's ``max_frames`` / ``overflow``.

Training (A.1): each of the four conditions (on-screen caption, off-screen caption, transcript,
video frames) is dropped independently per sample with p = 0.1 and replaced by the network's
learned null token. The visual block stays routed by the sample's on-screen caption presence
(see :mod:`avgen.models.omnisonic.network`). AdamW, lr 5e-5, weight decay 1e-2 (A.5; set in the
configs). Two stages: stage 1 on speech only (environmental captions empty), stage 2 on the full
UniHAGen mixture, initialised from the stage-1 checkpoint with ``init_checkpoint``.

Inference (Eq. 9 / Eq. 14): v = V(x, c_on, c_off, c_sp, c_v) + sum_i lambda_i (V(x, c_i, c_v) -
V(x, c_v)); the video condition is kept in every branch, so five branches [all, on only, off only,
sp only, none(+video)] run in ONE batched forward per Euler step (``MultiConditionGuidance``).
The scales come from, in order of precedence: ``cfg_scales`` (explicit, per call or init), a
scalar ``cfg_scale`` (1 disables guidance; another value sets all three lambdas), or
``cfg_preset``: a name of :data:`CFG_PRESETS` (A.5's per-scenario values) or ``"auto"``, which
picks each sample's preset from its scenario (``batch.task``: omnisonic_s1/s2/s3), or, for
samples without one, from which texts it carries (on + off -> s3, on -> s1, else s2); a batch
mixing scenarios is sampled per scenario group.

Logging: the MoE gate weights per condition, averaged over blocks and samples, go to
``train/gate_<condition>`` and ``val/gate_<condition>`` (``test/...``) in TensorBoard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avgen.codecs.base import AudioCodec
from avgen.data.batch import AVBatch
from avgen.flow import Guidance, MultiConditionGuidance, NoGuidance
from avgen.models.base import FlowMatchingModule
from avgen.models.generation import SamplingOptions
from avgen.models.omnisonic.network import CONDITIONS, OmniSonicConditions
from avgen.models.omnisonic.tasks import CFG_PRESETS, SCENARIO_PRESETS, OmniSonicGeneration
from avgen.models.registry import create_network

__all__ = ["EMPTY_CAPTION_MODES", "GUIDANCE_BRANCHES", "OmniSonic", "OmniSonicEncoded"]

# What an empty environmental caption is: FLAN-T5("") (the paper) or the null token (see OmniSonic).
EMPTY_CAPTION_MODES: tuple[str, ...] = ("encode", "null")
# Branch order of MultiConditionGuidance: [all, c_1 only, ..., c_K only, none]; video kept in all.
GUIDANCE_BRANCHES: tuple[str, ...] = ("all", *(f"{c}_only" for c in CONDITIONS), "none")


@dataclass
class OmniSonicEncoded:
    """Encoder outputs of one batch and what each sample carries."""

    onscreen: tuple[Tensor, Tensor]  # FLAN-T5 (states (B, L, d_env), mask (B, L))
    offscreen: tuple[Tensor, Tensor]
    speech: tuple[Tensor, Tensor]  # SpeechT5 + Durator (B, T_sp, d_sp), mask
    visual: Tensor  # CLIP frames (B, N, d_vis)
    present: dict[str, Tensor]  # onscreen / offscreen / speech / visual -> (B,) bool
    visual_to_onscreen: Tensor  # (B,) bool


class OmniSonic(FlowMatchingModule):
    """OmniSonic universal holistic audio generation (TriAttn-DiT + multi-condition CFG).

    Args:
        codec: audio codec; AudioLDM's VAE (latent map 8 x T x 16) in the paper.
        env_text_encoder: FLAN-T5 (``avgen.conditioning.t5.T5TextEncoder``), frozen; encodes the
            on- and off-screen environmental captions.
        speech_encoder: SpeechT5 + Durator (``avgen.conditioning.speech.SpeechTranscriptEncoder``),
            trainable.
        vision_encoder: CLIP image tower (``avgen.conditioning.CLIPVisionEncoder``), frozen.
        network: a size preset of :func:`avgen.models.list_networks` (default ``omnisonic-xl``, the
            paper's); its input widths are replaced by what the encoders and codec give.
        hidden_dim, depth, num_heads, patch_size, mlp_ratio, gating, gate_hidden_dim,
            timestep_scale, self_attention_rope: see :class:`OmniSonicNetwork` (paper: 1152, 28,
            16, 2, 4, "moe").
        qk_norm: RMS QK-norm in every attention (see :class:`OmniSonicNetwork`; DiT has none).
        condition_dropout: per-sample drop probability of each of the four conditions (A.1: 0.1).
        empty_caption: what an empty (or absent) on-/off-screen environmental caption means.
            ``"encode"`` (default, the paper's reading): FLAN-T5's encoding of ``""`` is a present
            condition (Fig. 2 feeds the placeholder ``""`` through the encoder; stage 1 keeps the
            captions "empty strings", A.1); only CFG dropout and the Eq. 9 branches use the null
            token, so in Eq. 9 the S1 off-screen and S2 on-screen terms (lambda = 0.5, A.5) are
            V(x, T5(""), c_v) - V(x, null, c_v), not zero. ``"null"``: an empty caption is the null
            token (avgen's earlier behaviour; those two terms are then exactly zero).
        cfg_preset: ``"auto"`` or a key of :data:`CFG_PRESETS`; cfg_scales: explicit
            {condition: lambda} (or a list in :data:`CONDITIONS` order) overriding the preset.
        cfg_scale: None (default) uses the per-condition scales; 1.0 disables guidance; another
            value sets every lambda to it (the generic ``--cfg_scale`` flag).
        semantic_fps: frame rate of the CLIP stream, used only to size the null video of a
            batch that carries no video at all.
        **kwargs: the shared recipe of :class:`~avgen.models.base.FlowMatchingModule`.
    """

    def __init__(
        self,
        codec: AudioCodec,
        env_text_encoder: nn.Module,
        speech_encoder: nn.Module,
        vision_encoder: nn.Module,
        *,
        network: str = "omnisonic-xl",
        hidden_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        patch_size: int | None = None,
        mlp_ratio: float | None = None,
        gating: str = "moe",
        gate_hidden_dim: int = 256,
        timestep_scale: float = 1000.0,
        self_attention_rope: bool = False,
        qk_norm: bool = True,
        condition_dropout: float = 0.1,
        empty_caption: str = "encode",
        cfg_preset: str = "auto",
        cfg_scales: dict[str, float] | list[float] | None = None,
        cfg_scale: float | None = None,
        num_sampling_steps: int = 25,
        semantic_fps: float = 8.0,
        **kwargs: Any,
    ):
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be a probability in [0, 1], got {condition_dropout}")
        if empty_caption not in EMPTY_CAPTION_MODES:
            raise ValueError(f"empty_caption must be one of {EMPTY_CAPTION_MODES}, got {empty_caption!r}")
        if cfg_preset != "auto" and cfg_preset not in CFG_PRESETS:
            raise ValueError(f"cfg_preset must be 'auto' or one of {sorted(CFG_PRESETS)}, got {cfg_preset!r}")
        map_channels = getattr(codec, "latent_map_channels", None)
        sizes = dict(hidden_dim=hidden_dim, depth=depth, num_heads=num_heads, patch_size=patch_size, mlp_ratio=mlp_ratio)
        backbone = create_network(
            network,
            **{name: value for name, value in sizes.items() if value is not None},
            latent_channels=map_channels or 1,
            frequency_bins=getattr(codec, "latent_frequency_bins", None) if map_channels else codec.latent_channels,
            env_dim=env_text_encoder.output_dim,
            speech_dim=speech_encoder.output_dim,
            visual_dim=vision_encoder.output_dim,
            qk_norm=qk_norm,
            gating=gating,
            gate_hidden_dim=gate_hidden_dim,
            timestep_scale=timestep_scale,
            self_attention_rope=self_attention_rope,
        )
        super().__init__(backbone, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)  # type: ignore[arg-type]
        self.env_text_encoder = env_text_encoder
        self.speech_encoder = speech_encoder
        self.vision_encoder = vision_encoder
        self.condition_dropout = condition_dropout
        self.empty_caption = empty_caption
        self.cfg_preset = cfg_preset
        self.cfg_scales = None if cfg_scales is None else self._scale_list(cfg_scales)
        self.semantic_fps = semantic_fps

    generation = OmniSonicGeneration()

    # ------------------------------------------------------------------ latent layout
    def to_map(self, latents: Tensor) -> Tensor:
        """Flat codec latents (B, T, C*F) -> latent map (B, C, T, F)."""
        if hasattr(self.codec, "to_latent_map"):
            return self.codec.to_latent_map(latents)
        return latents.unsqueeze(1)

    def from_map(self, latent_map: Tensor) -> Tensor:
        if hasattr(self.codec, "from_latent_map"):
            return self.codec.from_latent_map(latent_map)
        return latent_map.squeeze(1)

    def predict_velocity(
        self, network: nn.Module, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None
    ) -> Tensor:
        return self.from_map(network.predict_velocity(self.to_map(x_t), t, conditions, latent_mask=latent_mask))

    def velocity_and_logs(
        self, network: nn.Module, x_t: Tensor, t: Tensor, conditions: Any, latent_mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The velocity and the mean MoE gate weight per condition (over samples and blocks): ``gate_<c>``."""
        velocity, gates = network.predict_velocity(
            self.to_map(x_t), t, conditions, latent_mask=latent_mask, return_gate_weights=True
        )
        means = gates.float().mean(dim=(0, 1))
        return self.from_map(velocity), {f"gate_{name}": means[i] for i, name in enumerate(CONDITIONS)}

    # ------------------------------------------------------------------ conditions
    def _visual(self, batch: AVBatch) -> Tensor:
        """CLIP frame features (B, N, D): precomputed, encoded, or null placeholders."""
        if batch.semantic_features is not None:
            return batch.semantic_features
        if batch.video_semantic is not None:
            return self.vision_encoder(batch.video_semantic)
        if bool(batch.has_video.any()):
            raise ValueError(f"batch {batch.ids[:4]} flags video as present but carries no frames or features")
        seconds = self.clip_seconds(batch)
        frames = max(1, round(seconds * self.semantic_fps))
        return torch.zeros(len(batch), frames, self.vision_encoder.output_dim, device=self.device)

    def _caption_states(self, batch: AVBatch, name: str) -> tuple[Tensor, Tensor]:
        """FLAN-T5 (states, mask) of a caption field: precomputed in the batch, else encoded now."""
        states = self.precomputed(batch, f"{name}_features", self.env_text_encoder.output_dim)
        if states is None:
            return self.env_text_encoder(list(getattr(batch, name)))
        return states, getattr(batch, f"{name}_mask").to(states.device)

    def precompute_features(self, batch: AVBatch) -> dict[str, Tensor]:
        """FLAN-T5 states of both environmental captions and CLIP frames (SpeechT5 + Durator train: not stored)."""
        features: dict[str, Tensor] = {}
        for name in ("caption", "offscreen_caption"):
            features[f"{name}_features"], features[f"{name}_mask"] = self.env_text_encoder(list(getattr(batch, name)))
        if batch.video_semantic is not None:
            features["semantic_features"] = self.vision_encoder(batch.video_semantic)
        return features

    def encode_conditions(self, batch: AVBatch) -> OmniSonicEncoded:
        """Encode the four conditions once per batch and decide which count as present.

        The batch schema flags a caption present only when its text is non-empty (``""`` and
        ``None`` both give ``has_caption=False``), which is what FoleyGenEx and the other models
        want. OmniSonic reads those flags as the *text* being empty and decides itself what an
        empty environmental caption means (``empty_caption``), so the schema stays unchanged:
        under ``"encode"`` both environmental captions are present for every sample (an empty one
        is FLAN-T5's encoding of ``""``, Fig. 2 / A.1) and only dropout and the guidance branches
        put the null token in; under ``"null"`` an empty caption is the null token. The transcript
        always follows its flag (an empty transcript is null): speech is part of every UniHAGen
        scenario and of stage 1, so the paper never feeds an empty one. The visual routing (Eq. 6)
        follows the on-screen text being non-empty under both modes.
        """
        visual = self._visual(batch)
        device = visual.device
        onscreen = self._caption_states(batch, "caption")
        offscreen = self._caption_states(batch, "offscreen_caption")
        speech = self.speech_encoder(list(batch.transcript))  # trainable: gradients flow in training
        nonempty_onscreen = batch.has_caption.to(device)
        if self.empty_caption == "encode":
            everyone = torch.ones(len(batch), dtype=torch.bool, device=device)
            captions = {"onscreen": everyone, "offscreen": everyone.clone()}
        else:
            captions = {"onscreen": nonempty_onscreen, "offscreen": batch.has_offscreen_caption.to(device)}
        present = {
            **captions,
            "speech": batch.has_transcript.to(device),
            "visual": batch.has_video.to(device),
        }
        return OmniSonicEncoded(onscreen, offscreen, speech, visual, present, nonempty_onscreen.clone())

    def make_conditions(
        self,
        network: nn.Module,
        encoded: OmniSonicEncoded,
        batch: AVBatch,
        *,
        latent_length: int,
        branch: str,
        options: SamplingOptions | None = None,
    ) -> OmniSonicConditions:
        present = dict(encoded.present)
        if branch == "train":  # A.1: each condition dropped independently per sample
            present = {
                name: flag & (self.training_rand(flag) >= self.condition_dropout)
                for name, flag in present.items()
            }
        elif branch == "unconditional":  # everything null, video included (not an Eq. 9 branch)
            present = {name: torch.zeros_like(flag) for name, flag in present.items()}
        elif branch in GUIDANCE_BRANCHES[1:]:  # "<c>_only" or "none": that text (if any) + video
            keep = branch[: -len("_only")] if branch.endswith("_only") else None
            for name in CONDITIONS:
                if name != keep:
                    present[name] = torch.zeros_like(present[name])
        elif branch not in ("conditional", "all"):
            raise ValueError(f"unknown condition branch {branch!r}; OmniSonic has {GUIDANCE_BRANCHES}")
        return network.preprocess_conditions(
            encoded.onscreen,
            encoded.offscreen,
            encoded.speech,
            encoded.visual,
            onscreen_present=present["onscreen"],
            offscreen_present=present["offscreen"],
            speech_present=present["speech"],
            visual_present=present["visual"],
            visual_to_onscreen=encoded.visual_to_onscreen,
            gate_logits_override=getattr(options, "gate_logits_override", None),
        )

    # ------------------------------------------------------------------ guidance (Eq. 9)
    @staticmethod
    def _scale_list(scales: Mapping[str, float] | Sequence[float]) -> list[float]:
        if isinstance(scales, Mapping):
            unknown = set(scales) - set(CONDITIONS)
            missing = set(CONDITIONS) - set(scales)
            if unknown or missing:
                raise ValueError(f"cfg_scales must name exactly {CONDITIONS}; unknown {sorted(unknown)}, missing {sorted(missing)}")
            return [float(scales[name]) for name in CONDITIONS]
        values = [float(s) for s in scales]
        if len(values) != len(CONDITIONS):
            raise ValueError(f"cfg_scales needs {len(CONDITIONS)} values in the order {CONDITIONS}, got {values}")
        return values

    def sample_presets(self, batch: AVBatch, preset: str | None = None) -> list[str]:
        """The A.5 preset of each sample: ``preset`` itself, or under ``"auto"`` its scenario."""
        preset = preset or self.cfg_preset
        if preset != "auto":
            if preset not in CFG_PRESETS:
                raise ValueError(f"cfg_preset must be 'auto' or one of {sorted(CFG_PRESETS)}, got {preset!r}")
            return [preset] * len(batch)
        tasks = batch.task or [""] * len(batch)
        out = []
        for i, task in enumerate(tasks):
            if task in SCENARIO_PRESETS:
                out.append(SCENARIO_PRESETS[task])
            elif bool(batch.has_caption[i]):
                out.append("s3" if bool(batch.has_offscreen_caption[i]) else "s1")
            else:
                out.append("s2")
        return out

    def guidance(self, options: SamplingOptions, batch: AVBatch) -> tuple[Guidance, list[str]]:
        """Eq. 9: five branches [all, on only, off only, sp only, none], video in every one.

        The scales come from, in order: the call's ``cfg_scales``, the call's scalar ``cfg_scale``, the
        model's ``cfg_scales``, the model's ``cfg_scale`` (a scalar of 1 disables guidance, another value
        sets all three lambdas), else the A.5 preset of each sample (the call's ``cfg_preset``, else the
        model's): a batch mixing scenarios passes (B, K) per-sample scales and still runs ONE batched
        forward per step.
        """
        explicit = getattr(options, "cfg_scales", None)
        scalar = options.cfg_scale
        if explicit is None and scalar is None:
            explicit, scalar = self.cfg_scales, self.cfg_scale
        if explicit is not None:
            scales: list[float] | Tensor = self._scale_list(explicit)
        elif scalar is not None:
            if float(scalar) == 1.0:
                return NoGuidance(), ["all"]
            scales = [float(scalar)] * len(CONDITIONS)
        else:
            presets = self.sample_presets(batch, getattr(options, "cfg_preset", None))
            scales = torch.tensor([self._scale_list(CFG_PRESETS[name]) for name in presets], dtype=torch.float32)
        return MultiConditionGuidance(scales), list(GUIDANCE_BRANCHES)
