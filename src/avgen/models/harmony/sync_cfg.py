"""Harmony's guidance at inference: SyncCFG (Main Eq. 9-10) and plain text CFG (Main Eq. 8), per modality.

SyncCFG guides each modality against an anchor that differs in its *inputs*, not in dropped
conditions (spec §1.5 item 9; paper notation ε̂, avgen velocities here, the formula is linear so
it carries over unchanged):

    ṽ_v = v_v(z_v,t | z^null_a,0) + s_v [v_v(z_v,t | z_a,t) - v_v(z_v,t | z^null_a,0)]     (Eq. 9)
    ṽ_a = v_a(z_a,t | z^null_v,0) + s_a [v_a(z_a,t | z_v,t) - v_a(z_a,t | z^null_v,0)]     (Eq. 10)

z^null_a,0 is the codec latent of silence ("mute audio") and z^null_v,0 the video latent of the
reference image repeated over every frame ("static video"), both clean: avgen t = 1 (the paper's
t = 0). The joint generation runs three branches in ONE batched forward per Euler step:

    J: audio noisy,  video noisy      -> its video pairs with M's, its audio with S's
    M: audio = mute anchor (t = 1),   video noisy
    S: audio noisy,  video = static anchor (t = 1)

M's audio and S's video are discarded. The text conditions are kept in all branches (spec [D]; the
paper's notation omits c). In the driven tasks the driving modality is given clean (t = 1) and only
the generated one is guided: audio-driven video pairs [given audio, mute audio], video-driven audio
[given video, static video].

The "w/o SyncCFG" ablation (Supp Table 4) is Ovi-style text CFG (Eq. 8): ṽ = v(∅_c) + s (v(c) - v(∅_c))
with every prompt null in the second branch; here each modality keeps its own scale (s_v, s_a).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from avgen.flow import Guidance

__all__ = ["Branch", "GUIDANCE_MODES", "HarmonyGuidance", "guidance_plan"]

GUIDANCE_MODES = ("sync", "text", "none")


@dataclass(frozen=True)
class Branch:
    """Inputs of one guidance branch.

    audio / video: ``"noisy"`` (the ODE state at time t), ``"clean"`` (the given driving modality at
    t = 1), ``"anchor"`` (the SyncCFG null anchor at t = 1) or ``None`` (no video: audio-only network).
    text: ``"conditional"`` (the sample's prompts) or ``"unconditional"`` (null prompts, Eq. 8).
    """

    audio: str | None
    video: str | None
    text: str = "conditional"


def guidance_plan(task: str, mode: str, *, with_video: bool) -> list[Branch]:
    """The branches of one generation call, in order; branch 0 is always the fully conditional one.

    task: ``"joint"``, ``"a2v"`` (audio-driven video), ``"v2a"`` (video-driven audio) or ``"audio"``
    (no video). ``mode``: ``"sync"`` (SyncCFG), ``"text"`` (Eq. 8) or ``"none"``.
    """
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"unknown guidance {mode!r}; choose one of {GUIDANCE_MODES}")
    inputs = {"joint": ("noisy", "noisy"), "a2v": ("clean", "noisy"), "v2a": ("noisy", "clean"), "audio": ("noisy", None)}
    if task not in inputs:
        raise ValueError(f"unknown Harmony task {task!r}; choose one of {tuple(inputs)}")
    audio, video = inputs[task]
    if not with_video:
        if task != "audio":
            raise ValueError(f"task {task!r} needs a network with a video branch; this one is audio only")
    if task == "audio" and mode == "sync":
        raise ValueError("SyncCFG guides one modality against the other's anchor; audio-only generation takes "
                         "--guidance text or none")
    plan = [Branch(audio, video)]
    if mode == "none":
        return plan
    if mode == "text":
        return plan + [Branch(audio, video, "unconditional")]
    if video == "noisy":  # M: video noisy with the mute-audio anchor (or the given audio's anchor in a2v)
        plan.append(Branch("anchor", "noisy"))
    if audio == "noisy":  # S: audio noisy with the static-video anchor
        plan.append(Branch("noisy", "anchor"))
    return plan


class HarmonyGuidance(Guidance):
    """Combines per-branch (audio, video) velocities of a :func:`guidance_plan` into one pair.

    Each generated (noisy) modality m pairs branch 0 with the first later branch in which m is also
    noisy: v = v_anchor + s_m (v_0 - v_anchor), the form of Eq. 8-10 (SyncCFG: J with M for video,
    J with S for audio; text CFG: conditional with unconditional). A modality that is not generated
    gets velocity None (the caller keeps it fixed).
    """

    def __init__(self, plan: list[Branch], video_scale: float = 3.0, audio_scale: float = 2.0):
        self.plan = list(plan)
        self.num_branches = len(self.plan)
        self.video_scale, self.audio_scale = float(video_scale), float(audio_scale)

    def _pair(self, modality: str) -> int | None:
        if getattr(self.plan[0], modality) != "noisy":
            return None
        for i, branch in enumerate(self.plan[1:], start=1):
            if getattr(branch, modality) == "noisy":
                return i
        return 0  # no guidance branch: the conditional prediction itself

    def combine(self, velocities: list[tuple[Tensor | None, Tensor | None]]) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        self._check(velocities)
        out: list[Tensor | None] = []
        for index, (modality, scale) in enumerate((("audio", self.audio_scale), ("video", self.video_scale))):
            pair = self._pair(modality)
            if pair is None:
                out.append(None)
                continue
            v_cond = velocities[0][index]
            if pair == 0:
                out.append(v_cond)
                continue
            v_anchor = velocities[pair][index]
            out.append(v_anchor + scale * (v_cond - v_anchor))
        return out[0], out[1]

    def __repr__(self) -> str:
        return f"HarmonyGuidance(plan={self.plan}, video_scale={self.video_scale}, audio_scale={self.audio_scale})"
