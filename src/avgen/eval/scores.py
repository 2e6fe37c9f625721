"""The built-in metrics of ``avgen compare`` / ``avgen evaluate`` and their back-ends, registered at import.

Each ``score_*`` turns one model's generated set (:class:`~avgen.eval.registry.ScoreContext`) into a
number with the DDP-synchronised torchmetrics reductions of :mod:`avgen.eval`; back-ends come from
their ``--<name>`` flags. Other modules (PaSST, VGGish, CREPE, speaker, SyncNet, Synchformer,
ImageBind) register theirs the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from avgen.eval.backends import BackendUnavailable, MelStatsBackend
from avgen.eval.registry import BackendSpec, MetricSpec, ScoreContext, register_backend, register_metric

NAN = float("nan")


# ---------------------------------------------------------------------------------- back-ends
def _needs(name: str, value: str | None, fix: str, what: str) -> str:
    if not value:
        raise BackendUnavailable(name, f"no {what} weights given", fix)
    return value


def _clap(value: str | None):
    from avgen.eval.backends import ClapBackend

    return ClapBackend(_needs("clap", value, "--clap <ClapModel directory or hub name>", "CLAP"))


def _panns(value: str | None):
    from avgen.eval.panns import PannsBackend

    return PannsBackend(_needs("panns", value, "--panns <path of Cnn14_16k_mAP=0.438.pth from zenodo.org/record/3987831>", "PANNs Cnn14"))


def _whisper(value: str | None):
    from avgen.eval.whisper import WhisperBackend

    return WhisperBackend(_needs("whisper", value, "--whisper <WhisperForConditionalGeneration directory or hub name, "
                                                   "e.g. openai/whisper-large-v3>", "Whisper"))


register_backend(BackendSpec("melstats", lambda value: MelStatsBackend()))
register_backend(BackendSpec("clap", _clap, "CLAP weights (ClapModel directory or hub name) for clap_a / clap_t"))
register_backend(BackendSpec("panns", _panns, "PANNs Cnn14 16 kHz checkpoint (Cnn14_16k_mAP=0.438.pth) for fd_panns / kl_panns / is_panns"))
register_backend(BackendSpec("whisper", _whisper, "Whisper weights (WhisperForConditionalGeneration + processor "
                                                  "directory or hub name) for wer / cer"))


# ---------------------------------------------------------------------------------- shared score functions
def frechet_score(ctx: ScoreContext) -> float:
    """Frechet distance of the back-end's embeddings of the generated set to the whole reference set."""
    from avgen.eval import FrechetDistance

    gen = ctx.embeddings("generated", ctx.ids)
    ref = ctx.embeddings("reference", list(ctx.reference))
    if len(gen) < 2 or len(ref) < 2:
        return NAN
    metric = FrechetDistance(ctx.backend.dim)
    metric.update(torch.as_tensor(np.stack(list(ref.values()))), real=True)
    metric.update(torch.as_tensor(np.stack(list(gen.values()))))
    return float(metric.compute())


def paired_kl_score(ctx: ScoreContext) -> float:
    """KL(ground truth || generated) of the back-end's class softmax, mean over the paired clips."""
    from avgen.eval import PairedKL

    paired = ctx.paired
    if not paired:
        return NAN
    gen = ctx.embeddings("generated", paired, kind="logits")
    ref = ctx.embeddings("reference", paired, kind="logits")
    kl = PairedKL()
    kl.update(torch.as_tensor(np.stack([ref[i] for i in paired])), torch.as_tensor(np.stack([gen[i] for i in paired])))
    return float(kl.compute())


def inception_score(ctx: ScoreContext) -> float:
    """Inception score of the back-end's logits over the generated set (10 splits, fewer for < 10 clips)."""
    from avgen.eval import InceptionScore

    if len(ctx.ids) < 2:
        return NAN
    gen = ctx.embeddings("generated", ctx.ids, kind="logits")
    metric = InceptionScore(splits=min(10, len(gen)))
    metric.update(torch.as_tensor(np.stack([gen[i] for i in ctx.ids])))
    return float(metric.compute()[0])


def _error_rate(ctx: ScoreContext, kind: str) -> float:
    from avgen.eval import CharErrorRate, WordErrorRate

    spoken = [i for i in ctx.ids if ctx.samples[i].get("transcript")]
    if not spoken:
        return NAN
    heard = ctx.transcripts(spoken)
    rate = WordErrorRate(normalizer="english") if kind == "wer" else CharErrorRate(normalizer="english")
    rate.update([heard[i] for i in spoken], [ctx.samples[i]["transcript"] for i in spoken])
    return float(rate.compute()) if int(rate.total) else NAN


def clap_audio_score(ctx: ScoreContext) -> float:
    paired = ctx.paired
    if not paired:
        return NAN
    gen, ref = ctx.embeddings("generated", paired), ctx.embeddings("reference", paired)
    return float(np.mean([np.dot(gen[i], ref[i]) for i in paired]))


def clap_text_score(ctx: ScoreContext) -> float:
    captioned = [i for i in ctx.ids if ctx.samples[i].get("caption")]
    if not captioned:
        return NAN
    gen = ctx.embeddings("generated", captioned)
    text = ctx.backend.embed_text([ctx.samples[i]["caption"] for i in captioned]).cpu().numpy()
    return float(np.mean([np.dot(gen[i], t) for i, t in zip(captioned, text)]))


def _onset_sync(ctx: ScoreContext) -> tuple[float, float]:
    """(accuracy, AP) of CondFoleyGen's onset sync over the paired clips, computed once per model."""
    if "onset_sync" not in ctx.memo:
        from avgen.data.media import resample
        from avgen.eval import OnsetSync

        paired = ctx.paired
        sync = OnsetSync(sample_rate=16000)
        for i in paired:
            gen, gen_rate = ctx.audio("generated", i)
            ref, ref_rate = ctx.audio("reference", i)
            if gen_rate != ref_rate:  # another system's rate: onsets are compared at the reference's
                gen = torch.from_numpy(resample(gen.double().numpy(), gen_rate, ref_rate).astype(np.float32))
            sync.sample_rate = ref_rate
            sync.update([gen], [ref])
        accuracy, ap = sync.compute() if paired else (torch.tensor(NAN), torch.tensor(NAN))
        ctx.memo["onset_sync"] = (float(accuracy), float(ap))
    return ctx.memo["onset_sync"]


def onset_offset_score(ctx: ScoreContext) -> float:
    from avgen.eval.oracle import onset_offset

    values = []
    for i in ctx.ids:
        onsets = [e["onset"] for e in ctx.samples[i]["meta"].get("events", []) if "onset" in e]
        if onsets:
            wav, rate = ctx.audio("generated", i)
            values.append(onset_offset(wav, rate, onsets))
    return float(np.mean(values)) if values else NAN


def event_class_score(ctx: ScoreContext) -> float:
    from avgen.eval.oracle import event_class_accuracy

    scored = [i for i in ctx.ids if int(ctx.samples[i]["meta"].get("class", -1)) >= 0]
    if not scored:
        return NAN
    loaded = [ctx.audio("generated", i) for i in scored]
    rates = {r for _, r in loaded}
    return event_class_accuracy([w for w, _ in loaded], rates.pop(), [ctx.samples[i]["meta"] for i in scored]) if len(rates) == 1 else NAN


for spec in [
    MetricSpec("fd_melstats", False, "Frechet distance of log-mel band statistics to the reference set (weight-free)",
               "melstats", frechet_score),
    MetricSpec("fd_panns", False, "Frechet distance of PANNs Cnn14 (16 kHz) 2048-d embeddings to the reference set (MMAudio FD_PANNs)",
               "panns", frechet_score),
    MetricSpec("kl_panns", False, "KL(ground truth || generated) of the PANNs AudioSet class softmax, mean over pairs (MMAudio KL_PANNs)",
               "panns", paired_kl_score),
    MetricSpec("is_panns", True, "Inception score of PANNs logits, 10 splits (fewer when fewer than 10 clips), seed 2020",
               "panns", inception_score),
    MetricSpec("wer", False, "word error rate of a Whisper transcript of the generated speech against the text (Whisper English normaliser)",
               "whisper", lambda ctx: _error_rate(ctx, "wer")),
    MetricSpec("cer", False, "character error rate of the same transcripts", "whisper", lambda ctx: _error_rate(ctx, "cer")),
    MetricSpec("clap_a", True, "CLAP cosine similarity of generated and ground-truth audio (FoleyGenEx CLAP_A)", "clap", clap_audio_score),
    MetricSpec("clap_t", True, "CLAP cosine similarity of the caption and the generated audio (CLAP_T)", "clap", clap_text_score),
    MetricSpec("onset_acc", True, "CondFoleyGen onset accuracy: same number of onsets as the ground truth", None,
               lambda ctx: _onset_sync(ctx)[0]),
    MetricSpec("onset_ap", True, "CondFoleyGen onset AP against the ground-truth onsets (0.1 s tolerance)", None,
               lambda ctx: _onset_sync(ctx)[1]),
    MetricSpec("onset_offset", False, "ToyWorld oracle: mean |true - detected| onset distance in seconds", None, onset_offset_score),
    MetricSpec("event_class_acc", True, "ToyWorld oracle: the sound class recognised from the audio", None, event_class_score),
]:
    register_metric(spec)
