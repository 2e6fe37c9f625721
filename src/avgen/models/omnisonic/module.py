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
from avgen.models.base import CheckpointMismatchError, FlowMatchingModule, _class_name
from avgen.models.omnisonic.network import CONDITIONS, OmniSonicConditions, OmniSonicNetwork

__all__ = ["CFG_PRESETS", "EMPTY_CAPTION_MODES", "SCENARIO_PRESETS", "OmniSonic", "OmniSonicEncoded", "GUIDANCE_BRANCHES"]

# A.5: per-scenario multi-condition CFG scales (lambda_on, lambda_off, lambda_sp).
CFG_PRESETS: dict[str, dict[str, float]] = {
    "s1": {"onscreen": 5.0, "offscreen": 0.5, "speech": 2.5},  # on-screen env + off-screen speech
    "s2": {"onscreen": 0.5, "offscreen": 2.5, "speech": 7.5},  # on-screen speech + off-screen env
    "s3": {"onscreen": 5.0, "offscreen": 2.5, "speech": 2.5},  # on env + off env + off speech
}
# What an empty environmental caption is: FLAN-T5("") (the paper) or the null token (see OmniSonic).
EMPTY_CAPTION_MODES: tuple[str, ...] = ("encode", "null")
SCENARIO_PRESETS: dict[str, str] = {"omnisonic_s1": "s1", "omnisonic_s2": "s2", "omnisonic_s3": "s3"}
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
        init_checkpoint: a checkpoint (e.g. stage 1) whose weights initialise a new ``fit`` (not
            a resume: ``--ckpt_path`` restores the full training state and wins).
        **kwargs: the shared recipe of :class:`~avgen.models.base.FlowMatchingModule`.
    """

    def __init__(
        self,
        codec: AudioCodec,
        env_text_encoder: nn.Module,
        speech_encoder: nn.Module,
        vision_encoder: nn.Module,
        *,
        hidden_dim: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
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
        init_checkpoint: str | None = None,
        **kwargs: Any,
    ):
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be a probability in [0, 1], got {condition_dropout}")
        if empty_caption not in EMPTY_CAPTION_MODES:
            raise ValueError(f"empty_caption must be one of {EMPTY_CAPTION_MODES}, got {empty_caption!r}")
        if cfg_preset != "auto" and cfg_preset not in CFG_PRESETS:
            raise ValueError(f"cfg_preset must be 'auto' or one of {sorted(CFG_PRESETS)}, got {cfg_preset!r}")
        map_channels = getattr(codec, "latent_map_channels", None)
        network = OmniSonicNetwork(
            latent_channels=map_channels or 1,
            frequency_bins=getattr(codec, "latent_frequency_bins", None) if map_channels else codec.latent_channels,
            env_dim=env_text_encoder.output_dim,
            speech_dim=speech_encoder.output_dim,
            visual_dim=vision_encoder.output_dim,
            hidden_dim=hidden_dim,
            depth=depth,
            num_heads=num_heads,
            patch_size=patch_size,
            mlp_ratio=mlp_ratio,
            qk_norm=qk_norm,
            gating=gating,
            gate_hidden_dim=gate_hidden_dim,
            timestep_scale=timestep_scale,
            self_attention_rope=self_attention_rope,
        )
        super().__init__(network, codec, cfg_scale=cfg_scale, num_sampling_steps=num_sampling_steps, **kwargs)  # type: ignore[arg-type]
        self.env_text_encoder = env_text_encoder
        self.speech_encoder = speech_encoder
        self.vision_encoder = vision_encoder
        self.condition_dropout = condition_dropout
        self.empty_caption = empty_caption
        self.cfg_preset = cfg_preset
        self.cfg_scales = None if cfg_scales is None else self._scale_list(cfg_scales)
        self.semantic_fps = semantic_fps
        self.init_checkpoint = init_checkpoint
        self._active_scales: list[float] | Tensor | None = None  # scales of the batch being sampled: (K,) or (B, K)
        self._eval_gates: Tensor | None = None

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

    # ------------------------------------------------------------------ conditions
    def _visual(self, batch: AVBatch) -> Tensor:
        """CLIP frame features (B, N, D): precomputed, encoded, or null placeholders."""
        if batch.semantic_features is not None:
            return batch.semantic_features
        if batch.video_semantic is not None:
            return self.vision_encoder(batch.video_semantic)
        if bool(batch.has_video.any()):
            raise ValueError(f"batch {batch.ids[:4]} flags video as present but carries no frames or features")
        seconds = batch.audio.shape[1] / batch.sample_rate if batch.audio is not None else self.duration
        frames = max(1, round(seconds * self.semantic_fps))
        return torch.zeros(len(batch), frames, self.vision_encoder.output_dim, device=self.device)

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
        onscreen = self.env_text_encoder(list(batch.caption))
        offscreen = self.env_text_encoder(list(batch.offscreen_caption))
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
        self, network: nn.Module, encoded: OmniSonicEncoded, batch: AVBatch, *, latent_length: int, branch: str
    ) -> OmniSonicConditions:
        present = dict(encoded.present)
        if branch == "train":  # A.1: each condition dropped independently per sample
            present = {
                name: flag & (torch.rand(flag.shape, device=flag.device) >= self.condition_dropout)
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

    def guidance(self, cfg_scale: float | None) -> tuple[Guidance, list[str]]:
        """Eq. 9: five branches [all, on only, off only, sp only, none], video in every one."""
        if cfg_scale is not None and float(cfg_scale) == 1.0:
            return NoGuidance(), ["all"]
        if cfg_scale is not None:
            scales = [float(cfg_scale)] * len(CONDITIONS)
        elif self._active_scales is not None:
            scales = self._active_scales
        else:
            scales = self.cfg_scales or self._scale_list(CFG_PRESETS["s3"])
        return MultiConditionGuidance(scales), list(GUIDANCE_BRANCHES)

    @torch.no_grad()
    def sample_latents(
        self,
        batch: AVBatch,
        *,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        progress: bool = False,
        cfg_scales: Mapping[str, float] | Sequence[float] | None = None,
        cfg_preset: str | None = None,
        gate_logits_override: Mapping[str, float] | None = None,
    ) -> tuple[Tensor, Tensor, int]:
        """Sample latents with Eq. 9 guidance; each sample gets its own preset's scales.

        A batch mixing scenarios still runs ONE batched forward per ODE step: the scales enter
        :class:`~avgen.flow.MultiConditionGuidance` as a (B, K) tensor. ``gate_logits_override`` sets
        the pre-softmax MoE scores of the named conditions for this call (Fig. 4), e.g. ``{"speech": 0.0}``.
        """
        explicit = self._scale_list(cfg_scales) if cfg_scales is not None else self.cfg_scales
        network = self.inference_network
        previous = network.gate_logits_override
        network.gate_logits_override = dict(gate_logits_override) if gate_logits_override else None
        try:
            if explicit is not None or (cfg_scale if cfg_scale is not None else self.cfg_scale) is not None:
                self._active_scales = explicit
            else:
                per_sample = [self._scale_list(CFG_PRESETS[name]) for name in self.sample_presets(batch, cfg_preset)]
                self._active_scales = torch.tensor(per_sample, dtype=torch.float32)
            return super().sample_latents(batch, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed,
                                          progress=progress)
        finally:
            self._active_scales = None
            network.gate_logits_override = previous

    @torch.no_grad()
    def generate(self, batch: AVBatch, **options: Any) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """Waveforms (B, S) and lengths (B,); options of :meth:`sample_latents`."""
        from avgen.data.batch import length_mask

        latents, lengths, num_samples = self.sample_latents(batch, **options)
        waveforms = self._decode_latents(latents)[:, :num_samples]
        if waveforms.shape[1] < num_samples:
            waveforms = nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        return waveforms * length_mask(lengths, num_samples).to(waveforms.dtype), lengths

    def predict_step(self, batch: AVBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``avgen generate``: options num_steps, cfg_scale, cfg_scales, cfg_preset, gate_logits_override, seed."""
        options = {k: v for k, v in self.predict_options.items() if v is not None}
        known = {"num_steps", "cfg_scale", "cfg_scales", "cfg_preset", "gate_logits_override", "seed"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown predict options {unknown}; OmniSonic takes {sorted(known)}")
        seed = options.pop("seed", None)
        waveforms, lengths = self.generate(batch, seed=None if seed is None else seed + batch_idx, **options)
        return {"ids": list(batch.ids), "waveforms": waveforms, "lengths": lengths, "sample_rate": self.codec.sample_rate}

    # ------------------------------------------------------------------ gate logging
    def _log_gates(self, stage: str, gates: Tensor | None, batch_size: int) -> None:
        if gates is None:
            return
        means = gates.float().mean(dim=(0, 1))  # over samples and blocks
        for i, name in enumerate(CONDITIONS):
            self.log(f"{stage}/gate_{name}", means[i], batch_size=batch_size, sync_dist=stage != "train")

    def training_step(self, batch: AVBatch, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self._log_gates("train", self.network.gate_weights, len(batch))
        return loss

    @torch.no_grad()
    def binned_losses(self, batch: AVBatch, batch_idx: int = 0) -> list[Tensor]:
        losses = super().binned_losses(batch, batch_idx)
        self._eval_gates = self.inference_network.gate_weights  # conditional branch, last t bin
        return losses

    def validation_step(self, batch: AVBatch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._log_gates("val", self._eval_gates, len(batch))

    def test_step(self, batch: AVBatch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._log_gates("test", self._eval_gates, len(batch))

    # ------------------------------------------------------------------ two-stage training
    def setup(self, stage: str) -> None:
        """Stage 2 starts from the stage-1 weights (``init_checkpoint``), before any resume restore."""
        if stage != "fit" or not self.init_checkpoint or getattr(self, "_initialised_from", None):
            return
        checkpoint = torch.load(self.init_checkpoint, map_location="cpu", weights_only=True)
        trained = checkpoint.get("avgen", {}).get("model_class")
        if trained is not None and trained != _class_name(self):
            raise CheckpointMismatchError(
                f"init_checkpoint {self.init_checkpoint} was trained with {trained}, not {_class_name(self)}"
            )
        state = checkpoint["state_dict"]
        if self.ema_network is not None and not any(k.startswith("ema_network.") for k in state):
            state = {**state, **{f"ema_network.module.{k[len('network.'):]}": v for k, v in state.items()
                                 if k.startswith("network.")}}
        if self.ema_network is not None and "ema_network.num_updates" not in state:
            state["ema_network.num_updates"] = torch.zeros((), dtype=torch.long)
        self.load_state_dict(state, strict=True)
        self._initialised_from = self.init_checkpoint
