"""UniHAGen training-data synthesis (OmniSonic §4.1 "Dataset and Benchmark" and appendix A.1).

Mixtures are built on the fly from any two map-style datasets of :class:`~avgen.data.batch.Sample`
(ToyWorld, manifests, ...): *environment* sources (video + caption + environmental audio; VGGSound in
the paper) and *speech* sources (audio + transcript, with a talking-face video where available; LRS3
and CommonVoice in the paper). Per mixture one scenario is drawn:

* ``s1``: on-screen environment (its video and caption) + off-screen speech (transcript);
* ``s2``: on-screen speech (the talking-face video and its transcript) + off-screen environment
  (its caption becomes ``offscreen_caption``); the on-screen caption is ``""`` (Fig. 2: the placeholder
  that makes OmniSonic route the visual tokens to the transcript's cross-attention, Eq. 6);
* ``s3``: on-screen environment + off-screen environment + off-screen speech.

Mixing (the paper: "mixed at randomly sampled SNR levels", level definition unstated): the on-screen
source is the reference and every off-screen source is scaled so that
``10 log10(P_onscreen / P_offscreen) = snr`` with ``snr ~ U(snr_db)`` drawn independently per
off-screen source, powers being mean squares over the on-screen clip's valid samples. The sum is then
scaled down as a whole when its peak exceeds ``peak`` (which keeps every SNR). Off-screen clips are
cropped at a random offset when longer than the on-screen clip, zero-padded when shorter.

Speech filters for the environmental pool (§4.1: "For VGGSound, we exclude all speech-related
categories and remove samples whose captions contain speech-related keywords (e.g. speech, voice,
say, etc.)"):

* category filter: a clip whose label (the first of ``meta["label"]``, ``meta["class_name"]``,
  ``meta["category"]``, see ``category_fields``) or caption contains one of ``speech_categories`` as a
  whole phrase (case-insensitive) is excluded. The paper names no list; the default
  :data:`DEFAULT_SPEECH_CATEGORIES` are the VGGSound class names whose sound is people (or a parrot,
  or a radio) talking. Singing classes are not in it (the paper's filter targets speech); add them
  when lyrics should count as speech.
* keyword filter: a clip whose caption contains a word *starting with* one of ``speech_keywords``
  (case-insensitive; "say" matches "says", "saying") is excluded.

When the environment dataset exposes its rows without decoding media (a
:class:`~avgen.data.manifest.ManifestDataset`: ``rows`` with ``texts`` and ``meta``), both filters
run once at construction over every row: the excluded clips are counted per reason in
``filter_counts``, logged, and never drawn. Other datasets (ToyWorld, ...) are filtered per draw (the
mixer redraws; ``filter_counts`` counts the rejected draws of this process). Stage 1 (A.1, "trained only on speech data, where environmental sound-related
conditions are kept empty"): ``stage="speech"`` yields the speech sources unmixed with both captions
``""``.

Every mixture is a pure function of (seed, split, index). ``meta`` keeps the sources' ground truth
(events and words, shifted by the crop offset, with their on/off-screen flag) and, under
``meta["unihagen"]``, the scenario, source ids, crop offsets, drawn SNRs and gains.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from avgen.data.batch import Sample, collate
from avgen.data.composite import CompositeDataModule
from avgen.data.report import EVENT_KEY
from avgen.data.sampling import train_loader

log = logging.getLogger(__name__)

UNIHAGEN_SCENARIOS: tuple[str, ...] = ("s1", "s2", "s3")
# Task names (Sample.task) matching ToyWorld's OmniSonic scenarios.
TASKS: dict[str, str] = {"s1": "omnisonic_s1", "s2": "omnisonic_s2", "s3": "omnisonic_s3", "speech": "speech"}
DEFAULT_SPEECH_KEYWORDS: tuple[str, ...] = (
    "speech", "speak", "voice", "say", "said", "talk", "conversation", "narrat", "whisper", "shout",
)
# §4.1 "we exclude all speech-related categories" of VGGSound. The paper lists none: these are the
# VGGSound class names (vggsound.csv, lower case) whose content is voices talking.
DEFAULT_SPEECH_CATEGORIES: tuple[str, ...] = (
    "male speech, man speaking", "female speech, woman speaking", "child speech, kid speaking",
    "people whispering", "people babbling", "baby babbling", "people crowd", "people shouting",
    "people battle cry", "police radio chatter", "parrot talking",
)
# Where a source's class label is looked up in Sample.meta / a manifest row's meta (first present wins).
CATEGORY_FIELDS: tuple[str, ...] = ("label", "class_name", "category")
STAGES = ("full", "speech")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 3}
_SILENCE = 1e-10  # mean-square power below which a clip counts as silent (no SNR defined)


def speech_keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """A case-insensitive regex matching any word that starts with one of ``keywords``."""
    words = [k.strip() for k in keywords if k.strip()]
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(k) for k in words) + r")", re.IGNORECASE)


def speech_category_pattern(categories: Sequence[str]) -> re.Pattern[str] | None:
    """A case-insensitive regex matching any of ``categories`` as a whole phrase (any whitespace)."""
    names = [" ".join(c.split()) for c in categories if c.strip()]
    if not names:
        return None
    phrases = [r"\s+".join(re.escape(word) for word in name.split(" ")) for name in names]
    return re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)", re.IGNORECASE)


def source_label(meta: dict[str, Any], fields: Sequence[str] = CATEGORY_FIELDS) -> str | None:
    """The class label of a source: the first non-empty string among ``meta[field]``."""
    for name in fields:
        value = meta.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def is_speech_like(caption: str | None, keywords: Sequence[str] = DEFAULT_SPEECH_KEYWORDS) -> bool:
    """True when ``caption`` contains a word starting with one of ``keywords`` (the §4.1 filter)."""
    pattern = speech_keyword_pattern(keywords)
    return bool(caption) and pattern is not None and pattern.search(caption) is not None


def scale_to_snr(reference_power: float, source: Tensor, snr_db: float, valid: int) -> tuple[Tensor, float]:
    """Scale ``source`` so that 10 log10(reference_power / P_scaled) = ``snr_db`` (powers over the
    first ``valid`` samples). Returns the scaled source and the gain."""
    power = float(source[:valid].double().pow(2).mean())
    if power < _SILENCE:
        raise ValueError("scale_to_snr: the source is silent over the valid samples; no SNR can be set")
    gain = float(np.sqrt(reference_power / (power * 10.0 ** (snr_db / 10.0))))
    return source * gain, gain


def _fit_length(audio: Tensor, length: int, rng: np.random.Generator) -> tuple[Tensor, int]:
    """Random crop (when longer) or zero-pad (when shorter) to ``length``; returns (clip, offset)."""
    n = audio.shape[0]
    if n > length:
        offset = int(rng.integers(n - length + 1))
        return audio[offset : offset + length], offset
    return torch.nn.functional.pad(audio, (0, length - n)), 0


def _shift_meta(meta: dict[str, Any], offset_s: float, length_s: float, onscreen: bool) -> tuple[list, list]:
    """Events / words of a source moved onto the mixture's timeline and flagged on/off-screen."""
    events = [
        {**e, "onset": round(float(e["onset"]) - offset_s, 6), "onscreen": onscreen}
        for e in meta.get("events", [])
        if 0.0 <= float(e["onset"]) - offset_s < length_s
    ]
    words = [
        {**w, "start": round(float(w["start"]) - offset_s, 6), "end": round(float(w["end"]) - offset_s, 6),
         "onscreen": onscreen}
        for w in meta.get("words", [])
        if float(w["end"]) - offset_s > 0.0 and float(w["start"]) - offset_s < length_s
    ]
    return events, words


class UniHAGenMixer(Dataset):
    """A map-style dataset of UniHAGen mixtures drawn from environment and speech source datasets.

    Args:
        environment_sources: dataset of environmental Samples (audio + caption; video for the
            on-screen role). May be None with ``stage="speech"``.
        speech_sources: dataset of speech Samples (audio + transcript; video for the on-screen role).
        scenarios: subset of ``("s1", "s2", "s3")`` to draw from.
        snr_db: (low, high) range of the uniform SNR draw in dB (paper: unstated; config option).
        speech_keywords: the caption keyword filter for environmental clips (empty: no filter).
        speech_categories: the category filter for environmental clips (class names matched as whole
            phrases in the label or caption; empty: no filter).
        category_fields: the ``meta`` keys holding a source's class label, first present wins.
        seed: base seed; a mixture is a pure function of (seed, split, index).
        size: number of mixtures (default: the larger source dataset).
        scenario_weights: draw probabilities of ``scenarios`` (default uniform).
        stage: ``"full"`` (UniHAGen mixtures) or ``"speech"`` (stage 1: speech only, captions empty).
        peak: peak limit of the mixture (the whole mix is scaled down above it); None disables.
        split: split name mixed into the seed (train/val/test/predict).
        max_draws: redraws allowed per source role before a clear error (filtered or unusable clips).
        onscreen_speech_sources: dataset of talking-face speech clips (LRS3 in the paper) to draw
            S2's on-screen speech from. Without it, S2 draws from the speech clips that have a video:
            ``speech_sources.video_indices()`` when the dataset offers it (manifests do), so the draw
            never lands on an audio-only clip however rare videos are (LRS3 : CommonVoice is about
            33K : 1.67M); otherwise it redraws up to ``max_draws`` times.
    """

    def __init__(
        self,
        environment_sources: Optional[Dataset],
        speech_sources: Dataset,
        scenarios: Sequence[str] = UNIHAGEN_SCENARIOS,
        snr_db: Sequence[float] = (-5.0, 20.0),
        speech_keywords: Sequence[str] = DEFAULT_SPEECH_KEYWORDS,
        speech_categories: Sequence[str] = DEFAULT_SPEECH_CATEGORIES,
        category_fields: Sequence[str] = CATEGORY_FIELDS,
        seed: int = 0,
        size: int | None = None,
        scenario_weights: Sequence[float] | None = None,
        stage: str = "full",
        peak: float | None = 0.95,
        split: str = "train",
        max_draws: int = 64,
        onscreen_speech_sources: Optional[Dataset] = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"UniHAGen: stage must be one of {STAGES}, got {stage!r}")
        unknown = set(scenarios) - set(UNIHAGEN_SCENARIOS)
        if unknown or not scenarios:
            raise ValueError(f"UniHAGen: scenarios must be a non-empty subset of {UNIHAGEN_SCENARIOS}, got {list(scenarios)}")
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(f"UniHAGen: snr_db must be (low, high) with low <= high, got {list(snr_db)}")
        if stage == "full" and environment_sources is None:
            raise ValueError("UniHAGen: stage='full' needs environment_sources (only stage='speech' works without)")
        if split not in SPLIT_IDS:
            raise ValueError(f"UniHAGen: split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        if scenario_weights is not None:
            w = np.asarray(scenario_weights, dtype=np.float64)
            if w.shape != (len(scenarios),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"UniHAGen: scenario_weights must be {len(scenarios)} non-negative numbers, got {list(scenario_weights)}")
            self.scenario_probs = w / w.sum()
        else:
            self.scenario_probs = np.full(len(scenarios), 1.0 / len(scenarios))
        self.environment, self.speech = environment_sources, speech_sources
        self.scenarios, self.snr_db = tuple(scenarios), (float(snr_db[0]), float(snr_db[1]))
        self.keywords = tuple(speech_keywords)
        self._pattern = speech_keyword_pattern(self.keywords)
        self.categories, self.category_fields = tuple(speech_categories), tuple(category_fields)
        self._category_pattern = speech_category_pattern(self.categories)
        self.filter_counts: Counter[str] = Counter()
        self.seed, self.stage, self.peak, self.split = int(seed), stage, peak, split
        self.max_draws = int(max_draws)
        self.onscreen_speech = onscreen_speech_sources
        self._speech_with_video: list[int] | None = None
        if onscreen_speech_sources is None and stage == "full" and "s2" in self.scenarios:
            index = getattr(speech_sources, "video_indices", None)
            if callable(index):
                self._speech_with_video = list(index())
                if not self._speech_with_video:
                    raise ValueError(
                        "UniHAGen: scenario s2 needs on-screen speech, but no speech clip has a video. Add a "
                        "'video' column to the talking-face rows of the speech manifest, pass "
                        "onscreen_speech (a datamodule of talking-face clips), or drop s2 from scenarios"
                    )
        elif onscreen_speech_sources is not None and len(onscreen_speech_sources) == 0:
            raise ValueError("UniHAGen: the onscreen_speech dataset is empty")
        sizes = [len(speech_sources)] + ([len(environment_sources)] if environment_sources is not None else [])
        if min(sizes) == 0:
            raise ValueError(f"UniHAGen: empty source dataset (sizes {sizes})")
        self.size = int(size) if size is not None else max(sizes)
        # Indices of the environment clips that pass the speech filters (None: filtered per draw).
        self.environment_pool = self._screen_rows(environment_sources) if stage == "full" else None

    def __len__(self) -> int:
        return self.size

    # -- source selection -------------------------------------------------------------------
    def filtered(self, caption: str | None) -> bool:
        """True when an environmental caption is speech-like (the clip is dropped)."""
        return bool(caption) and self._pattern is not None and self._pattern.search(caption) is not None

    def speech_reason(self, caption: str | None, meta: dict[str, Any]) -> str | None:
        """Why an environmental clip is excluded: ``"speech_category"``, ``"speech_keyword"`` or None."""
        if self._category_pattern is not None:
            for text in (source_label(meta, self.category_fields), caption):
                if text and self._category_pattern.search(text):
                    return "speech_category"
        return "speech_keyword" if self.filtered(caption) else None

    def _screen_rows(self, dataset: Dataset | None) -> list[int] | None:
        """Apply the speech filters once to a dataset that exposes its rows (a manifest), counted and logged."""
        rows = getattr(dataset, "rows", None)
        if dataset is None or not isinstance(rows, list) or len(rows) != len(dataset):
            return None
        pool = []
        for i, row in enumerate(rows):
            texts, meta = getattr(row, "texts", {}) or {}, getattr(row, "meta", {}) or {}
            reason = self.speech_reason(texts.get("caption"), meta)
            if reason is None:
                pool.append(i)
            else:
                self.filter_counts[reason] += 1
        name = getattr(dataset, "manifest", type(dataset).__name__)
        log.info(
            "UniHAGen (%s): the environmental pool of %s keeps %d of %d clips (%d speech categories, %d speech "
            "keywords excluded)", self.split, name, len(pool), len(rows), self.filter_counts["speech_category"],
            self.filter_counts["speech_keyword"],
        )
        if not pool:
            raise ValueError(
                f"UniHAGen: every one of the {len(rows)} environmental clips of {name} is speech-related "
                f"({dict(self.filter_counts)}); check the labels/captions or relax speech_categories / speech_keywords"
            )
        return pool

    def _reject(self, s: Sample | None, kind: str, onscreen: bool) -> str | None:
        """Why sample ``s`` cannot serve as a ``kind`` source (None: usable)."""
        if s is None:
            return "failed to load"
        if s.audio is None:
            return "has no audio"
        if float(s.audio.double().pow(2).mean()) < _SILENCE:
            return "is silent"
        if onscreen and not s.has_video:
            return "has no video (needed on screen)"
        if kind == "environment" and self.environment_pool is None:
            reason = self.speech_reason(s.caption, s.meta)
            if reason is not None:
                self.filter_counts[reason] += 1
                what = "label/caption is a speech category" if reason == "speech_category" else "caption is speech-like"
                return f"{what} ({reason.replace('_', ' ')} filter; caption {s.caption!r})"
        if kind == "speech" and not s.transcript:
            return "has no transcript"
        return None

    def _draw(
        self, kind: str, onscreen: bool, rng: np.random.Generator, first: int | None = None, exclude: Sequence[str] = ()
    ) -> Sample:
        dataset = self.environment if kind == "environment" else self.speech
        assert dataset is not None
        # Indices to draw from (None: all of ``dataset``): the screened environment rows, or for S2's
        # on-screen speech the clips with a video (or a dedicated on-screen speech dataset).
        pool: Sequence[int] | None = self.environment_pool if kind == "environment" else None
        if kind == "speech" and onscreen:
            if self.onscreen_speech is not None:
                dataset = self.onscreen_speech
            elif self._speech_with_video is not None:
                pool = self._speech_with_video
        size = len(pool) if pool is not None else len(dataset)
        reason, sid = "", ""
        for attempt in range(self.max_draws):
            k = first % size if (attempt == 0 and first is not None) else int(rng.integers(size))
            i = pool[k] if pool is not None else k
            s = dataset[i]
            reason = self._reject(s, kind, onscreen)
            if reason is None and s.id in exclude:
                reason = "is already in this mixture"
            if reason is None:
                return s
            sid = s.id if s is not None else f"index {i}"
        role = ("on-screen " if onscreen else "off-screen ") + kind
        raise RuntimeError(
            f"UniHAGen: no usable {role} source in {self.max_draws} draws (last: {sid} {reason}). Check that the "
            f"{kind} dataset carries audio{' and video' if onscreen else ''}"
            f"{', labels/captions outside the speech filters' if kind == 'environment' else ', transcripts'} "
            "(or relax speech_keywords / speech_categories, or raise max_draws)."
        )

    # -- mixing -------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(f"UniHAGen index {index} out of range for {self.size} mixtures")
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], int(index)])
        if self.stage == "speech":
            return self._speech_only(self._draw("speech", False, rng, first=index))
        scenario = self.scenarios[int(rng.choice(len(self.scenarios), p=self.scenario_probs))]
        if scenario == "s2":
            visible = self._draw("speech", True, rng, first=index)
            offscreen = [("environment", self._draw("environment", False, rng))]
        else:
            visible = self._draw("environment", True, rng, first=index)
            offscreen = [("speech", self._draw("speech", False, rng))]
            if scenario == "s3":
                offscreen.insert(0, ("environment", self._draw("environment", False, rng, exclude=(visible.id,))))
        return self.compose(scenario, visible, offscreen, rng, index)

    def compose(
        self, scenario: str, visible: Sample, offscreen: list[tuple[str, Sample]], rng: np.random.Generator, index: int = 0
    ) -> Sample:
        """Mix ``visible`` (on screen) with ``offscreen`` [(kind, Sample)] into one training Sample."""
        for _, s in offscreen:
            if s.sample_rate != visible.sample_rate:
                raise ValueError(
                    f"UniHAGen: {s.id} is at {s.sample_rate} Hz but {visible.id} at {visible.sample_rate} Hz; "
                    "set the same sample_rate on both source datamodules"
                )
        sr = visible.sample_rate
        reference = visible.audio.float()
        length = reference.shape[0]
        valid = min(int(visible.audio_length), length) if visible.audio_length is not None else length
        ref_power = float(reference[:valid].double().pow(2).mean())
        if ref_power < _SILENCE:
            raise ValueError(f"UniHAGen: the on-screen source {visible.id} is silent; no SNR can be defined")
        mixture = reference.clone()
        visible_kind = "speech" if scenario == "s2" else "environment"
        events, words = _shift_meta(visible.meta, 0.0, length / sr, onscreen=True)
        info: dict[str, Any] = {
            "scenario": scenario, "onscreen": {"id": visible.id, "kind": visible_kind},
            "offscreen": [], "snr_db": [], "gains": [], "offsets": [],
        }
        offscreen_caption, transcript = None, visible.transcript if scenario == "s2" else None
        for kind, s in offscreen:
            clip, offset = _fit_length(s.audio.float(), length, rng)
            if float(clip[:valid].double().pow(2).mean()) < _SILENCE:  # the crop fell on silence: take the start
                clip, offset = _fit_length(s.audio.float()[:length], length, rng)
            snr = float(rng.uniform(*self.snr_db))
            if float(clip[:valid].double().pow(2).mean()) < _SILENCE:
                raise ValueError(
                    f"UniHAGen: off-screen source {s.id} is silent over the first {valid} samples of {visible.id}; "
                    "no SNR can be set. Remove or trim the silent clip in its dataset."
                )
            scaled, gain = scale_to_snr(ref_power, clip, snr, valid)
            mixture = mixture + scaled
            e, w = _shift_meta(s.meta, offset / sr, length / sr, onscreen=False)
            events += e
            words += w
            info["offscreen"].append({"id": s.id, "kind": kind})
            info["snr_db"].append(snr)
            info["gains"].append(gain)
            info["offsets"].append(offset)
            if kind == "environment":
                offscreen_caption = s.caption
            else:
                transcript = s.transcript
        scale = 1.0
        top = float(mixture.abs().max())
        if self.peak is not None and top > self.peak:
            scale = self.peak / top
            mixture = mixture * scale
        info["mix_scale"] = scale
        events.sort(key=lambda e: (e["onset"], not e["onscreen"]))
        words.sort(key=lambda w: w["start"])
        env_meta = visible.meta if visible_kind == "environment" else {}
        off_env = next((s.meta for k, s in offscreen if k == "environment"), {})
        speech_meta = visible.meta if visible_kind == "speech" else next((s.meta for k, s in offscreen if k == "speech"), {})
        meta = {
            "scenario": TASKS[scenario],
            "events": events,
            "words": words,
            "class": env_meta.get("class", -1),
            "class_name": env_meta.get("class_name", ""),
            "adverbs": dict(env_meta.get("adverbs", {})),
            "offscreen_adverbs": dict(off_env.get("adverbs", {})),
            "voice": speech_meta.get("voice", ""),
            "unihagen": info,
        }
        sources = [visible] + [s for _, s in offscreen]
        data_events = [e for s in sources for e in s.meta.get(EVENT_KEY, ())]
        if data_events:  # problems found while loading the sources, for the data report
            meta[EVENT_KEY] = data_events
        return Sample(
            id=f"unihagen_{self.split}_s{self.seed}_{int(index):06d}",
            sample_rate=sr,
            audio=mixture,
            audio_length=visible.audio_length,
            video_semantic=visible.video_semantic,
            video_sync=visible.video_sync,
            semantic_features=visible.semantic_features,
            sync_features=visible.sync_features,
            caption=visible.caption if visible_kind == "environment" else "",
            offscreen_caption=offscreen_caption or "",
            transcript=transcript or "",
            task=TASKS[scenario],
            seconds_start=visible.seconds_start,
            seconds_total=visible.seconds_total,
            meta=meta,
        )

    def _speech_only(self, s: Sample) -> Sample:
        """Stage 1: a speech sample as is, environmental captions empty, no reference audio."""
        meta = {**s.meta, "scenario": TASKS["speech"], "unihagen": {"scenario": "speech", "onscreen": {"id": s.id}}}
        return Sample(
            id=s.id, sample_rate=s.sample_rate, audio=s.audio, audio_length=s.audio_length, latents=s.latents,
            video_semantic=s.video_semantic, video_sync=s.video_sync, semantic_features=s.semantic_features,
            sync_features=s.sync_features, caption="", offscreen_caption="", transcript=s.transcript,
            task=TASKS["speech"], seconds_start=s.seconds_start, seconds_total=s.seconds_total, meta=meta,
        )


class UniHAGenDataModule(CompositeDataModule):
    """UniHAGen mixtures of two source datamodules, configurable from YAML::

        data:
          class_path: avgen.data.UniHAGenDataModule
          init_args:
            batch_size: 8
            snr_db: [-5, 20]
            environment: {class_path: avgen.data.ToyWorldDataModule, init_args: {scenarios: [vta]}}
            speech: {class_path: avgen.data.ToyWorldDataModule, init_args: {scenarios: [speech], seed: 1}}

    Every split mixes the matching splits of the two datamodules (val/test/predict deterministic, in
    order; train shuffled by (seed, epoch) and resumable mid-epoch, :mod:`avgen.data.sampling`). ``stage: speech`` (stage 1) needs no environment.

    Args:
        speech, environment: LightningDataModules whose ``<split>_dataloader().dataset`` yields Samples.
        batch_size, num_workers, seed: loader settings and the mixing seed.
        scenarios, snr_db, speech_keywords, speech_categories, category_fields, scenario_weights, stage,
            peak: see :class:`UniHAGenMixer`.
        train_size, val_size, test_size, predict_size: mixtures per split (None: the larger source split).
        onscreen_speech: optional datamodule of talking-face speech clips for S2's on-screen role
            (see ``onscreen_speech_sources`` of :class:`UniHAGenMixer`).
    """

    def __init__(
        self,
        speech: L.LightningDataModule,
        environment: Optional[L.LightningDataModule] = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        scenarios: list[str] = ["s1", "s2", "s3"],  # noqa: B006 (jsonargparse needs the literal default)
        snr_db: list[float] = [-5.0, 20.0],  # noqa: B006
        speech_keywords: list[str] = list(DEFAULT_SPEECH_KEYWORDS),  # noqa: B006
        speech_categories: list[str] = list(DEFAULT_SPEECH_CATEGORIES),  # noqa: B006
        category_fields: list[str] = list(CATEGORY_FIELDS),  # noqa: B006
        scenario_weights: Optional[list[float]] = None,
        stage: str = "full",
        peak: Optional[float] = 0.95,
        train_size: Optional[int] = None,
        val_size: Optional[int] = None,
        test_size: Optional[int] = None,
        predict_size: Optional[int] = None,
        onscreen_speech: Optional[L.LightningDataModule] = None,
    ) -> None:
        super().__init__()
        self.speech, self.environment, self.onscreen_speech = speech, environment, onscreen_speech
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.mixer_kwargs: dict[str, Any] = dict(
            scenarios=list(scenarios), snr_db=list(snr_db), speech_keywords=list(speech_keywords),
            speech_categories=list(speech_categories), category_fields=list(category_fields), scenario_weights=scenario_weights, stage=stage, peak=peak, seed=self.seed,
        )
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "predict": predict_size}
        UniHAGenMixer(_Probe() if environment is not None else None, _Probe(), **self.mixer_kwargs)  # validates options early
        self.save_hyperparameters(ignore=["speech", "environment", "onscreen_speech"])

    def primary_source(self) -> L.LightningDataModule:
        return self.speech

    def sources(self) -> list[L.LightningDataModule]:
        return [self.speech] + [dm for dm in (self.environment, self.onscreen_speech) if dm is not None]

    def prepare_data(self) -> None:
        for dm in self.sources():
            dm.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        named = {"speech": self.speech, "environment": self.environment, "onscreen_speech": self.onscreen_speech}
        named = {name: dm for name, dm in named.items() if dm is not None}
        if len(named) > 1:
            self.check_same_media(named)
        for dm in self.sources():
            if dm.trainer is None and self.trainer is not None:
                dm.trainer = self.trainer
            dm.setup(stage)

    @staticmethod
    def _dataset(dm: L.LightningDataModule, split: str, who: str) -> Dataset | None:
        loader = getattr(dm, f"{split}_dataloader")()
        if isinstance(loader, list) and not loader:
            return None
        if not isinstance(loader, DataLoader):
            raise ValueError(f"UniHAGenDataModule: {who}.{split}_dataloader() returned {type(loader).__name__}, "
                             "expected one DataLoader over a map-style dataset of Samples")
        return loader.dataset

    def dataset(self, split: str) -> UniHAGenMixer | None:
        speech = self._dataset(self.speech, split, "speech")
        env = self._dataset(self.environment, split, "environment") if self.environment is not None else None
        if speech is None or (self.environment is not None and env is None and self.mixer_kwargs["stage"] == "full"):
            return None
        onscreen = None
        if self.onscreen_speech is not None:
            onscreen = self._dataset(self.onscreen_speech, split, "onscreen_speech")
        return UniHAGenMixer(env, speech, size=self.sizes[split], split=split, onscreen_speech_sources=onscreen,
                             **self.mixer_kwargs)

    def _loader(self, split: str) -> DataLoader | list:
        dataset = self.dataset(split)
        if dataset is None:
            return []
        options = dict(num_workers=self.num_workers, collate_fn=collate, persistent_workers=self.num_workers > 0)
        if split == "train":  # shuffled by (seed, epoch), resumable mid-epoch (avgen.data.sampling)
            return train_loader(self, dataset, batch_size=self.batch_size, seed=self.seed, **options)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **options)

    def train_dataloader(self) -> DataLoader | list:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("predict")


class _Probe(Dataset):
    """A one-item placeholder dataset used only to validate the mixer options at construction."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:  # pragma: no cover - never read
        raise IndexError(index)


__all__ = [
    "UniHAGenMixer", "UniHAGenDataModule", "UNIHAGEN_SCENARIOS", "DEFAULT_SPEECH_KEYWORDS",
    "DEFAULT_SPEECH_CATEGORIES", "CATEGORY_FIELDS", "is_speech_like", "source_label", "speech_category_pattern", "speech_keyword_pattern", "scale_to_snr",
]
