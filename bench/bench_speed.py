"""Speed of every paper's network: fp32 vs bf16 vs compiled, the matmul ceiling, and before/after issue 15.

For FoleyGenEx (MMAudio small_16k shape), AudioGen-Omni, OmniSonic and Harmony at a mid size, side by
side in one run (ratios are the point; the machine may be shared, so every ratio is formed from numbers
timed in the same loop, the fastest of ``--repeats`` calls):

* forward and training step (preprocess + forward + backward + AdamW): fp32, bf16 autocast and
  ``torch.compile``d blocks (``avgen.nn.blocks.compile_blocks``; fp32); the sampling step also compiled
  whole (one graph per step, as ``compile: true`` sampling does);
* sampling: seconds of compute per generated second of audio (25 Euler steps, batched CFG: 2 branches
  in one forward). Harmony generates audio and video together; its column times its real step
  (:class:`HarmonyRunner`: SyncCFG's 3 branches in one forward, 40 steps, Supp §2) and still divides
  by the seconds of *audio* generated;
* aten calls per forward (a ``TorchDispatchMode`` counter);
* achieved GFLOP/s of the training step (FLOPs from ``torch.utils.flop_counter``) as a fraction of
  the measured ceiling: the faster of a plain matmul and a kernel-1 Conv1d of the same FLOPs, per dtype;
* before / after: the same network built from the source tree *before* issue 15 (git revision
  ``--before``, extracted to a temp dir and imported side by side as ``avgen_before``), same
  weights, called as the old recipe called it (an all-True latent mask), against today's (no mask
  when every frame is valid). Harmony was added after that revision: its row says n/a.

Harmony's training step is its Cross-Task Synergy loss (3 x batch rows in one forward) and its
forward runs both branches with the GLDI layers; its compiled column only with
``--compile-families harmony`` (the trace takes minutes on a small CPU).

    python bench/bench_speed.py [--quick] [--threads 2] [--repeats 5] [--compile inductor|aot_eager|none]
        [--compile-families foleygenex,audiogen_omni,omnisonic,harmony] [--before 001d644] [--families ...]
        [--paper-depth --forward-only] [--profile --families harmony]
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import importlib.util
import itertools
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from _timing import timed  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
BEFORE_REV = "001d644db3eaa633200a3e826ab26d9d9ffbf5b5"  # main before issue 15 (the speed branch's base)
SAMPLE_STEPS = 25
CLOCK = time.perf_counter  # --cpu-time: time.process_time


def clocked(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    """Fastest of ``repeats`` calls on the bench's clock (wall, or this process's CPU seconds)."""
    return timed(fn, warmup, repeats, "min", clock=CLOCK)


# ----------------------------------------------------------------------------- the tree before issue 15
def import_before(rev: str) -> str:
    """Extract ``src/avgen`` at ``rev`` as the package ``avgen_before`` (imports rewritten) and put it on sys.path."""
    root = Path(tempfile.mkdtemp(prefix="avgen_before_"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/avgen"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    package = root / "avgen_before"
    (root / "src" / "avgen").rename(package)
    pattern = re.compile(r"\b(from|import)\s+avgen(?=[\s.])")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(r"\1 avgen_before", path.read_text()))
    sys.path.insert(0, str(root))
    return "avgen_before"


def module_exists(name: str) -> bool:
    """Whether module ``name`` is in the tree (Harmony's package existed before issue 15, its network did not)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


# ----------------------------------------------------------------------------- counters
class AtenCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


def aten_calls(fn: Callable[[], Any]) -> int:
    with torch.no_grad(), AtenCounter() as counter:
        fn()
    return sum(counter.calls.values())


def flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def ceilings(threads: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a (512 x 1024) x (1024 x 1024) matmul and of the kernel-1 Conv1d with the same FLOPs.

    The matmul is ``F.linear`` (what nn.Linear runs; oneDNN for bf16): a bare bf16 ``a @ b`` takes
    a slow fallback on CPUs without bf16 instructions and would understate the ceiling.
    """
    m, k, n = 512, 1024, 1024
    work = 2 * m * k * n
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        x, w = torch.randn(1, k, m, dtype=dtype), torch.randn(n, k, 1, dtype=dtype)
        name = "fp32" if dtype == torch.float32 else "bf16"
        out[f"matmul_{name}"] = work / clocked(lambda: torch.nn.functional.linear(a, b), 2, repeats) / 1e9
        out[f"conv1d_{name}"] = work / clocked(lambda: torch.nn.functional.conv1d(x, w), 2, repeats) / 1e9
    return out


# ----------------------------------------------------------------------------- the three networks
def perturb(net: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the adaLN-Zero init, as after training (same FLOPs either way)
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))


def foleygenex(pkg: str, quick: bool, paper_depth: bool = False) -> dict[str, Any]:
    """MMAudio small_16k width (hidden 448, 7 heads) at half depth (2 joint + 4 single; ``paper_depth``: 4 + 8,
    MMAudio-S itself), 8 s = 250 latents."""
    module = importlib.import_module(f"{pkg}.models.foleygenex.network")
    joint, single = (4, 8) if paper_depth else ((1, 1) if quick else (2, 4))
    dims = dict(hidden_dim=448, num_heads=7, num_joint_blocks=joint, num_single_blocks=single)
    net = module.FoleyGenExNetwork(latent_channels=20, semantic_dim=1024, sync_dim=768, text_dim=1024, text_length=77,
                                   **dims)
    frames, seconds = (125, 4.0) if quick else (250, 8.0)
    g = torch.Generator().manual_seed(1)

    def conditions(batch: int, present: bool):
        flags = torch.full((batch,), present)
        return net.preprocess_conditions(
            torch.randn(batch, int(8 * seconds), 1024, generator=g), torch.randn(batch, int(24 * seconds), 768, generator=g),
            torch.randn(batch, 77, 1024, generator=g), video_present=flags, text_present=flags, latent_length=frames)

    return dict(net=net, frames=frames, channels=20, seconds=seconds, conditions=conditions,
                shape=lambda b: (b, frames, 20), name=f"FoleyGenEx (448 / {dims['num_joint_blocks']}+{dims['num_single_blocks']})")


def audiogen_omni(pkg: str, quick: bool, paper_depth: bool = False) -> dict[str, Any]:
    """AudioGen-Omni at hidden 512 / 8 heads (paper: 1024 / 16), 2 joint + 4 single blocks (``paper_depth``:
    8 + 16 as the paper); 8 s = 345 latents at 43 Hz."""
    module = importlib.import_module(f"{pkg}.models.audiogen_omni.network")
    joint, single = (8, 16) if paper_depth else ((1, 1) if quick else (2, 4))
    dims = dict(hidden_dim=512, num_heads=8, num_joint_blocks=joint, num_single_blocks=single)
    net = module.AudioGenOmniNetwork(latent_channels=40, semantic_dim=1280, sync_dim=768, caption_dim=768,
                                     lyrics_vocab_size=6681, lyrics_dim=256, lyrics_blocks=2, **dims)
    seconds = 4.0 if quick else 8.0
    frames = int(round(seconds * 44100 / 1024))
    g = torch.Generator().manual_seed(1)

    def conditions(batch: int, present: bool):
        flags = torch.full((batch,), present)
        return net.preprocess_conditions(
            semantic_features=torch.randn(batch, int(8 * seconds), 1280, generator=g),
            semantic_mask=torch.ones(batch, int(8 * seconds), dtype=torch.bool),
            sync_features=torch.randn(batch, int(24 * seconds), 768, generator=g),
            sync_lengths=torch.full((batch,), int(24 * seconds)),
            caption_features=torch.randn(batch, 77, 768, generator=g),
            caption_mask=torch.ones(batch, 77, dtype=torch.bool),
            lyrics_ids=torch.randint(0, 6681, (batch, 40), generator=g),
            video_present=flags, caption_present=flags, lyrics_present=flags,
            seconds_start=torch.zeros(batch), seconds_total=torch.full((batch,), seconds),
            latent_mask=torch.ones(batch, frames, dtype=torch.bool))

    return dict(net=net, frames=frames, channels=40, seconds=seconds, conditions=conditions,
                shape=lambda b: (b, frames, 40), name=f"AudioGen-Omni (512 / {dims['num_joint_blocks']}+{dims['num_single_blocks']})")


def omnisonic(pkg: str, quick: bool, paper_depth: bool = False) -> dict[str, Any]:
    """OmniSonic TriAttn-DiT at hidden 384 / 6 heads (paper: 1152 / 16) / 4 blocks (``paper_depth``: 28 as the
    paper) on AudioLDM's 8 x 200 x 16 map (8 s)."""
    module = importlib.import_module(f"{pkg}.models.omnisonic.network")
    depth = 28 if paper_depth else (2 if quick else 4)
    net = module.OmniSonicNetwork(latent_channels=8, frequency_bins=16, env_dim=1024, speech_dim=768, visual_dim=512,
                                  hidden_dim=384, depth=depth, num_heads=6)
    seconds = 4.0 if quick else 8.0
    frames = int(25 * seconds)
    g = torch.Generator().manual_seed(1)

    def conditions(batch: int, present: bool):
        flags = torch.full((batch,), present)

        def text(length, dim):
            return torch.randn(batch, length, dim, generator=g), torch.ones(batch, length, dtype=torch.bool)

        return net.preprocess_conditions(text(77, 1024), text(77, 1024), text(150, 768),
                                         torch.randn(batch, int(8 * seconds), 512, generator=g),
                                         onscreen_present=flags, offscreen_present=flags, speech_present=flags,
                                         visual_present=flags, visual_to_onscreen=torch.ones(batch, dtype=torch.bool))

    return dict(net=net, frames=frames, channels=8, seconds=seconds, conditions=conditions,
                shape=lambda b: (b, 8, frames, 16), name=f"OmniSonic (384 / {depth} blocks)")


def harmony(pkg: str, quick: bool, paper_depth: bool = False) -> dict[str, Any]:
    """Harmony's twin Wan-style DiT at width 512 / 4 heads (head 128 as Wan; paper: 3072 / 24), ffn 2048, 4 layer
    pairs (``paper_depth``: 30 as the paper) each with its GLDI layer, on a 5.04-s clip (Wan2.2's 121 frames at
    24 fps; ``quick``: 2.04 s, 2 pairs): video latents 48 x 31 x 8 x 8 (128 x 128 px through the Wan2.2 VAE; 16
    tokens a frame, 496 tokens; paper 704 x 1280, 27,280), audio 158 MMAudio-16k latents, a 2-s reference voice,
    the transcript filler-padded to the audio, 128 umT5-XXL prompt tokens (paper 512) and the TI2V first frame.

    The network takes both modalities (audio velocity, video velocity); ``runner`` times its real steps
    (:class:`HarmonyRunner`). Not in the tree before issue 15: before/after is n/a.
    """
    module = importlib.import_module(f"{pkg}.models.harmony.network")
    depth = 30 if paper_depth else (2 if quick else 4)
    width = dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=depth)
    net = module.HarmonyNetwork(
        **{f"video_{k}": v for k, v in width.items()}, **{f"audio_{k}": v for k, v in width.items()},
        video_latent_channels=48, video_text_dim=4096, video_text_len=128, video_freq_dim=256,
        audio_latent_channels=20, audio_prompt_dim=4096, audio_freq_dim=256,
        speech_vocab_size=2545, speech_dim=512, speech_max_positions=8192, speech_num_blocks=4,
    )
    seconds = 2.04 if quick else 5.04
    frames = math.ceil(seconds * 16000 / 512)  # MMAudio 16k: one latent per 512 samples, 31.25 Hz
    video_shape = (1 + round(seconds * 24 - 1) // 4, 48, 8, 8)  # Wan2.2 VAE: 4x in time (first frame alone)
    prompt_length, reference_length, transcript_length = 128, round(2 * 16000 / 512), int(12 * seconds)
    g = torch.Generator().manual_seed(1)

    def conditions(batch: int, present: bool):
        """Conditional (``present``) or every prompt null / the transcript all filler (Eq. 8's unconditional)."""
        ids = torch.randint(0, 2545, (batch, transcript_length), generator=g)
        return net.preprocess_conditions(
            audio_prompt_features=torch.randn(batch, prompt_length, 4096, generator=g) * present,
            audio_prompt_mask=torch.ones(batch, prompt_length, dtype=torch.bool),
            transcript_ids=ids if present else torch.full_like(ids, -1), audio_length=frames,
            reference_latent=torch.randn(batch, reference_length, 20, generator=g),
            reference_mask=torch.ones(batch, reference_length, dtype=torch.bool),
            video_text_features=torch.randn(batch, prompt_length, 4096, generator=g) * present,
            video_text_mask=torch.ones(batch, prompt_length, dtype=torch.bool),
            image_latent=torch.randn(batch, 1, *video_shape[1:], generator=g))

    return dict(net=net, frames=frames, channels=20, seconds=seconds, conditions=conditions,
                shape=lambda b: (b, frames, 20), video_shape=lambda b: (b, *video_shape), steps=40,
                runner=HarmonyRunner, name=f"Harmony (512 / {depth} pairs)")


FAMILIES = {"foleygenex": foleygenex, "audiogen_omni": audiogen_omni, "omnisonic": omnisonic, "harmony": harmony}


# ----------------------------------------------------------------------------- measurements
class Runner:
    """The closures one network is timed with; ``old_recipe`` passes the all-True mask the recipe passed before."""

    INPUTS = ("x", "x1", "t", "cond", "cfg", "x_cfg", "t_cfg")  # what two runners share to compare outputs

    def __init__(self, spec: dict[str, Any], old_recipe: bool, batch: int):
        self.spec, self.net, self.batch = spec, spec["net"], batch
        g = torch.Generator().manual_seed(2)
        frames = spec["frames"]
        self.mask = torch.ones(batch, frames, dtype=torch.bool) if old_recipe else None
        self.cfg_mask = torch.ones(2, frames, dtype=torch.bool) if old_recipe else None
        self.x = torch.randn(spec["shape"](batch), generator=g)
        self.x1 = torch.randn(spec["shape"](batch), generator=g)
        self.t = torch.rand(batch, generator=g)
        with torch.no_grad():
            self.cond = spec["conditions"](batch, True)
            from avgen.flow import concat_conditions

            self.cfg = concat_conditions([spec["conditions"](1, True), spec["conditions"](1, False)])
        self.x_cfg, self.t_cfg = torch.randn(spec["shape"](2), generator=g), torch.full((2,), 0.5)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)
        if not old_recipe:  # today's recipe: the fused AdamW kernel (FlowMatchingModule.configure_optimizers)
            from avgen.training import fastest_adam

            self.optimizer = fastest_adam(self.optimizer)

    def forward(self, bf16: bool = False):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return self.net.predict_velocity(self.x, self.t, self.cond, self.mask)

    def sample_step(self, bf16: bool = False):
        """One guided Euler step: ONE forward of the 2 CFG branches (conditions preprocessed once per sample)."""
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return self.net.predict_velocity(self.x_cfg, self.t_cfg, self.cfg, self.cfg_mask)

    def train_step(self, bf16: bool = False, *, step: bool = True):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            cond = self.spec["conditions"](self.batch, True)
            x_t = (1 - self.t.view(-1, *[1] * (self.x.dim() - 1))) * self.x + self.t.view(-1, *[1] * (self.x.dim() - 1)) * self.x1
            v = self.net.predict_velocity(x_t, self.t, cond, self.mask)
        loss = (v.float() - (self.x1 - self.x)).square().mean()
        loss.backward()
        if step:
            self.optimizer.step()

    def step_function(self, net: torch.nn.Module) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """(fn, args): the sampling step on ``net`` as ``compile: true`` sampling compiles it whole."""
        return (lambda x, t: net.predict_velocity(x, t, self.cfg, None)), (self.x_cfg, self.t_cfg)


class HarmonyRunner(Runner):
    """Harmony's steps as its module runs them (``models/harmony/module.py``), both modalities in every call.

    * forward: the joint task, audio and video noisy at the same t, without masks (nothing is padded here,
      and the module then passes none);
    * sampling step: SyncCFG's joint plan (Eq. 9-10), THREE branches in one forward (J: both noisy,
      M: mute-audio anchor, S: static-video anchor), built by the module's own ``_velocity_fn`` and
      ``HarmonyGuidance`` (the combine included), one clip;
    * training step: the Cross-Task Synergy loss (Eq. 3-4, ``cts_mode: sum``: joint, audio-driven and
      video-driven rows in ONE forward of 3 x batch rows) by the module's ``cross_task_losses``.
    """

    INPUTS = Runner.INPUTS + ("v", "v1")

    def __init__(self, spec: dict[str, Any], old_recipe: bool, batch: int):
        if old_recipe:
            raise ValueError("Harmony did not exist before issue 15: no old recipe to run")
        from avgen.flow import concat_conditions
        from avgen.models.harmony.module import HarmonyTargets
        from avgen.models.harmony.sync_cfg import HarmonyGuidance, guidance_plan
        from avgen.training import fastest_adam

        self.spec, self.net, self.batch = spec, spec["net"], batch
        g = torch.Generator().manual_seed(2)
        frames, video_shape = spec["frames"], spec["video_shape"]
        self.x, self.x1 = torch.randn(spec["shape"](batch), generator=g), torch.randn(spec["shape"](batch), generator=g)
        self.v, self.v1 = torch.randn(video_shape(batch), generator=g), torch.randn(video_shape(batch), generator=g)
        self.t = torch.rand(batch, generator=g)
        num_frames = video_shape(1)[1]
        self.mask = torch.ones(batch, frames, dtype=torch.bool)
        self.frame_lengths = torch.full((batch,), num_frames)
        loss_mask = torch.ones(batch, num_frames, dtype=torch.bool)
        loss_mask[:, 0] = False  # the TI2V first frame is given
        self.targets = HarmonyTargets(audio=self.x1, audio_mask=self.mask, audio_loss_mask=self.mask, video=self.v1,
                                      video_frame_lengths=self.frame_lengths, video_loss_mask=loss_mask)
        # HarmonyModule's loss settings (configs/harmony/paper.yaml): the only attributes cross_task_losses reads
        self.recipe = SimpleNamespace(cts_mode="sum", lambda_video=0.1, lambda_audio=0.3)
        self.plan = guidance_plan("joint", "sync", with_video=True)
        self.guidance = HarmonyGuidance(self.plan, video_scale=3.0, audio_scale=2.0)
        with torch.no_grad():
            self.cond = spec["conditions"](batch, True)
            # every SyncCFG branch keeps the sample's prompts (module.make_conditions(branch="conditional"))
            self.cfg = concat_conditions([spec["conditions"](1, True)] * len(self.plan))
        self.anchors = {"audio": torch.randn(spec["shape"](1), generator=g),  # mute audio, static video
                        "video": torch.randn(video_shape(1), generator=g)}
        self.x_cfg = (torch.randn(spec["shape"](1), generator=g), torch.randn(video_shape(1), generator=g))
        self.t_cfg = torch.full((1,), 0.5)
        self.optimizer = fastest_adam(
            torch.optim.AdamW(self.net.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=0.01))

    def forward(self, bf16: bool = False):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            # nothing padded: no masks, as the module's training and sampling pass them
            return self.net(self.x, self.t, self.cond, video_x=self.v, video_t=self.t)

    def guided(self, net: torch.nn.Module) -> Callable[..., Any]:
        """The module's per-step velocity function ((audio, video), t) -> guided (audio, video) velocities."""
        from avgen.models.harmony.module import HarmonyModule

        # _velocity_fn reads nothing from the module (an empty namespace stands in for it: it would raise if it did)
        return HarmonyModule._velocity_fn(SimpleNamespace(), net, self.plan, self.guidance, self.cfg, self.anchors,
                                          torch.ones(1, self.spec["frames"], dtype=torch.bool),
                                          self.frame_lengths[:1], self.v.shape[1])

    def sample_step(self, bf16: bool = False):
        """One SyncCFG Euler step: ONE forward of the 3 branches (conditions preprocessed once per sample)."""
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return self.guided(self.net)(self.x_cfg, self.t_cfg)

    def train_step(self, bf16: bool = False, *, step: bool = True):
        from avgen.models.harmony.module import HarmonyModule

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            cond = self.spec["conditions"](self.batch, True)
            losses = HarmonyModule.cross_task_losses(self.recipe, self.net, self.targets, cond, self.t, self.x, self.v)
        losses["loss"].backward()
        if step:
            self.optimizer.step()

    def step_function(self, net: torch.nn.Module) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.guided(net), (self.x_cfg, self.t_cfg)


def max_difference(a: Any, b: Any) -> float:
    """max |a - b| over a tensor or a tuple of tensors (Harmony returns audio and video velocities)."""
    if isinstance(a, torch.Tensor):
        return (a - b).abs().max().item()
    return max(max_difference(x, y) for x, y in zip(a, b) if x is not None)


def measure(
    runs: dict[str, Runner], repeats: int, fp32_only: bool = False, count_aten: bool | None = None,
    forward_only: bool = False,
) -> dict[str, dict[str, float]]:
    """Every metric for every runner, interleaved metric by metric (same load for the numbers of a ratio).

    ``fp32_only`` leaves the bf16 metrics NaN (on CPUs without bf16 instructions they take most of a run);
    ``forward_only`` the sampling-step and training metrics.
    """
    count_aten = not fp32_only if count_aten is None else count_aten
    out: dict[str, dict[str, float]] = {name: {} for name in runs}
    for name, run in runs.items():
        run.net.eval()
        run.forward()  # warm: RoPE caches filled, as at every later call
        out[name]["aten_fwd"] = aten_calls(run.forward) if count_aten else float("nan")
    for metric, fn in (
        ("fwd_fp32", lambda r: r.forward()),
        ("fwd_bf16", lambda r: r.forward(True)),
        ("step_fp32", lambda r: r.sample_step()),
        ("step_bf16", lambda r: r.sample_step(True)),
    ):
        for name, run in runs.items():
            if (fp32_only and metric.endswith("bf16")) or (forward_only and metric.startswith("step")):
                out[name][metric] = float("nan")
                continue
            out[name][metric] = clocked(lambda: fn(run), 1, repeats)
    for metric, bf16 in (("train_fp32", False), ("train_bf16", True)):
        for name, run in runs.items():
            if (fp32_only and bf16) or forward_only:
                out[name][metric] = float("nan")
                continue
            run.net.train()
            out[name][metric] = clocked(lambda: run.train_step(bf16), 1, repeats)
            run.net.eval()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1+1 blocks, 4-s clips; Harmony 2 layer pairs, 2.04 s (a smoke run)")
    parser.add_argument("--paper-depth", action="store_true",
                        help="the papers' depths (FoleyGenEx 4+8, AudioGen-Omni 8+16, OmniSonic 28, Harmony 30 pairs) "
                             "at the bench widths")
    parser.add_argument("--forward-only", action="store_true",
                        help="only the forward columns (sampling step and training NaN): for --paper-depth rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="training / forward batch (sampling: 1 clip, 2 CFG branches; Harmony: 3 SyncCFG branches)")
    parser.add_argument("--families", default=None,
                        help=f"subset of {','.join(FAMILIES)} (default: all; with --profile: foleygenex)")
    parser.add_argument("--fp32-only", action="store_true",
                        help="skip the bf16 columns (NaN): without bf16 instructions they dominate the run")
    parser.add_argument("--compile", default="inductor", help="torch.compile backend for the compiled column, or none")
    parser.add_argument("--compile-families", default="foleygenex",
                        help="families whose compiled column is measured (inductor compiles take minutes on a small CPU)")
    parser.add_argument("--profile", action="store_true",
                        help="only the ceilings and a torch.profiler breakdown of one forward and one sampling step, "
                             "fp32 vs bf16, per family in --families")
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the tree before issue 15; 'none' skips")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by this process's CPU seconds with 1 thread (robust to other processes on a shared CPU)")
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK, args.threads = time.process_time, 1
    torch.set_num_threads(args.threads)
    repeats = args.repeats
    clock = "CPU seconds of this process" if args.cpu_time else "wall seconds"
    print(f"torch {torch.__version__}, {args.threads} threads; fastest of {repeats} calls ({clock}); ratios from one run")

    ceiling = ceilings(args.threads, repeats)
    print("ceiling GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in ceiling.items()))
    peak = {"fp32": max(ceiling["matmul_fp32"], ceiling["conv1d_fp32"]),
            "bf16": max(ceiling["matmul_bf16"], ceiling["conv1d_bf16"])}
    if args.profile:
        for family in (args.families or "foleygenex").split(","):
            profile_forward(family, args.quick, args.fp32_only)
        return
    before_pkg = None if args.before == "none" else import_before(args.before)

    from avgen.nn.blocks import compile_blocks

    rows = []
    specs = {}
    for family in (args.families or ",".join(FAMILIES)).split(","):
        torch.manual_seed(0)
        after = FAMILIES[family]("avgen", args.quick, args.paper_depth)
        perturb(after["net"])
        specs[family] = after
        runner = after.get("runner", Runner)
        runs = {"after": runner(after, old_recipe=False, batch=args.batch)}
        if before_pkg is not None and not module_exists(f"{before_pkg}.models.{family}.network"):
            print(f"{after['name']}: not in the tree before issue 15 ({args.before}): before/after n/a", flush=True)
        elif before_pkg is not None:
            before = FAMILIES[family](before_pkg, args.quick, args.paper_depth)
            before["net"].load_state_dict(after["net"].state_dict())  # same weights, same keys
            runs["before"] = runner(before, old_recipe=True, batch=args.batch)
            with torch.no_grad():
                diff = max_difference(runs["after"].forward(), runs["before"].forward())
            print(f"{after['name']}: |after - before| forward = {diff:.2e}", flush=True)
        result = measure(runs, repeats, fp32_only=args.fp32_only, count_aten=True, forward_only=args.forward_only)
        run = runs["after"]
        run.net.train()
        train_flops = float("nan") if args.forward_only else flops(lambda: run.train_step(step=False))
        params = sum(p.numel() for p in after["net"].parameters()) / 1e6
        rows.append((after, params, train_flops, result))
        print_tables(rows, peak, before_pkg is not None)  # after every family: a long run that is cut short still reports

    # compiled blocks last (inductor compiles take minutes on a small CPU), timed against eager in one loop
    if args.compile != "none":
        for family in [f for f in args.compile_families.split(",") if f in specs]:
            after = specs[family]
            compiled = dict(after, net=copy.deepcopy(after["net"]))
            compile_blocks(compiled["net"], backend=args.compile)
            runner = after.get("runner", Runner)
            runs = {"eager": runner(after, old_recipe=False, batch=args.batch),
                    "compiled": runner(compiled, old_recipe=False, batch=args.batch)}
            eager = runs["eager"]
            for field in runner.INPUTS:  # the same inputs: outputs comparable
                setattr(runs["compiled"], field, getattr(eager, field))
            start = time.perf_counter()
            runs["compiled"].forward(), runs["compiled"].sample_step()
            compiled["net"].train()
            runs["compiled"].train_step(step=False)
            compiled["net"].eval()
            seconds = time.perf_counter() - start
            with torch.no_grad():
                diff = max_difference(runs["compiled"].forward(), runs["eager"].forward())
            print(f"\n{after['name']}: compiled ({args.compile}) in {seconds:.0f} s, |compiled - eager| = {diff:.2e}")
            r = measure(runs, repeats, fp32_only=True)
            print(f"  fp32 compiled / eager: forward {r['compiled']['fwd_fp32'] / r['eager']['fwd_fp32']:.2f}, "
                  f"sampling step {r['compiled']['step_fp32'] / r['eager']['step_fp32']:.2f}, "
                  f"training step {r['compiled']['train_fp32'] / r['eager']['train_fp32']:.2f} "
                  f"(eager {1000 * r['eager']['train_fp32']:.0f} ms, compiled {1000 * r['compiled']['train_fp32']:.0f} ms)",
                  flush=True)
            # sampling as FlowMatchingModule.step_function compiles it: the whole per-step function, one graph
            whole = copy.deepcopy(after["net"]).eval()
            step_fn, step_args = eager.step_function(whole)
            step = torch.compile(step_fn, backend=args.compile)
            start = time.perf_counter()
            with torch.no_grad():
                got = step(*step_args)
                seconds = time.perf_counter() - start
                diff = max_difference(got, eager.sample_step())
            print(f"  whole sampling step compiled in {seconds:.0f} s, |compiled - eager| = {diff:.2e}", flush=True)
            times = {"eager": [], "blocks": [], "whole": []}
            for _ in range(repeats):  # interleaved: the same load for the three
                for name, fn in (("eager", eager.sample_step), ("blocks", runs["compiled"].sample_step),
                                 ("whole", lambda: step(*step_args))):
                    with torch.no_grad():
                        times[name].append(clocked(fn, 0, 1))
            best = {name: min(values) for name, values in times.items()}
            print(f"  fp32 sampling step / eager: compiled blocks {best['blocks'] / best['eager']:.2f}, "
                  f"compiled whole step {best['whole'] / best['eager']:.2f} (eager {1000 * best['eager']:.0f} ms)",
                  flush=True)


def profile_forward(family: str, quick: bool, fp32_only: bool = False) -> None:
    """Where a forward's and a sampling step's time goes, fp32 vs bf16 autocast: self CPU time per aten op (top 12)."""
    from torch.profiler import ProfilerActivity, profile

    spec = FAMILIES[family]("avgen", quick)
    perturb(spec["net"])
    run = spec.get("runner", Runner)(spec, old_recipe=False, batch=2)
    run.net.eval()
    for (what, fn), bf16 in itertools.product((("forward", run.forward), ("sampling step", run.sample_step)),
                                              (False,) if fp32_only else (False, True)):
        fn(bf16)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(bf16)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{spec['name']}, {'bf16' if bf16 else 'fp32'} {what}: {total / 1e3:.0f} ms self CPU in total")
        for e in events[:12]:
            print(f"  {e.key:45s} {e.count:5d} calls {e.self_cpu_time_total / 1e3:8.1f} ms "
                  f"{100 * e.self_cpu_time_total / total:5.1f}%")


def print_tables(rows, peak, before: bool = False) -> None:
    """The tables so far; ``before``: the after/before table too (n/a for a network the old tree lacks)."""
    def ms(v: float) -> str:
        return f"{1000 * v:7.0f}"

    print(f"\n== absolute (ms; smp = compute seconds per generated second of audio: {SAMPLE_STEPS} Euler steps, batched CFG "
          f"(2 branches), 1 clip; Harmony: 40 steps, SyncCFG's 3 branches, audio + video generated together) ==")
    print(f"{'network':30s} {'Mparam':>6s} {'fwd32':>7s} {'fwd16':>7s} {'train32':>7s} {'train16':>7s} "
          f"{'smp32':>6s} {'smp16':>6s} {'aten/fwd':>8s}")
    for spec, params, _, r in rows:
        a = r["after"]
        per_second = spec.get("steps", SAMPLE_STEPS) / spec["seconds"]
        print(f"{spec['name']:30s} {params:6.1f} {ms(a['fwd_fp32'])} {ms(a['fwd_bf16'])} {ms(a['train_fp32'])} "
              f"{ms(a['train_bf16'])} {a['step_fp32'] * per_second:6.2f} {a['step_bf16'] * per_second:6.2f} "
              f"{a['aten_fwd']:8.0f}")

    print("\n== ratios and ceiling (training step = preprocess + forward + backward + AdamW; Harmony: the CTS loss, "
          "3 x batch rows) ==")
    print(f"{'network':30s} {'fwd16/32':>8s} {'trn16/32':>8s} {'smp16/32':>8s} "
          f"{'train GF/s 32':>14s} {'%ceil32':>7s} {'train GF/s 16':>14s} {'%ceil16':>7s}")
    for spec, _, train_flops, r in rows:
        a = r["after"]
        g32, g16 = train_flops / a["train_fp32"] / 1e9, train_flops / a["train_bf16"] / 1e9
        print(f"{spec['name']:30s} {a['fwd_bf16'] / a['fwd_fp32']:8.2f} {a['train_bf16'] / a['train_fp32']:8.2f} "
              f"{a['step_bf16'] / a['step_fp32']:8.2f} {g32:14.1f} {100 * g32 / peak['fp32']:6.0f}% "
              f"{g16:14.1f} {100 * g16 / peak['bf16']:6.0f}%")

    if before:
        print("\n== after / before issue 15 (same weights; before = the old recipe's all-True mask) ==")
        print(f"{'network':30s} {'fwd32':>6s} {'fwd16':>6s} {'train32':>7s} {'train16':>7s} {'smp32':>6s} {'smp16':>6s} "
              f"{'aten/fwd after/before':>22s}")
        for spec, _, _, r in rows:
            if "before" not in r:
                print(f"{spec['name']:30s} {'n/a (not in the tree before issue 15)':>40s}")
                continue
            a, b = r["after"], r["before"]
            q = lambda k: a[k] / b[k]  # noqa: E731
            print(f"{spec['name']:30s} {q('fwd_fp32'):6.2f} {q('fwd_bf16'):6.2f} {q('train_fp32'):7.2f} "
                  f"{q('train_bf16'):7.2f} {q('step_fp32'):6.2f} {q('step_bf16'):6.2f} "
                  f"{a['aten_fwd']:10.0f}/{b['aten_fwd']:<10.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
