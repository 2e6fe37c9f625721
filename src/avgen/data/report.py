"""What the data pipeline skipped, padded, cut or ignored, counted once per item, and reported at the
end of a run.

Datasets note each problem on the sample it concerns (or, for a skipped row, on the sample that
replaced it) with :func:`add_event`: ``sample.meta["data_events"]`` is a list of
``(reason, item_id, detail)`` tuples. The events travel with the batch (``AVBatch.meta``), so
problems found in DataLoader worker processes reach the main process, where
:class:`DataReportCallback` collects them into a :class:`DataReport` (keyed by reason, de-duplicated
by item, so a row that fails in every epoch counts once). Problems found at setup in the main
process (rows whose files are missing or unreadable) are read from the datamodules directly.

Reasons (``REASONS``): ``skipped`` (a row that could not be used; the detail says why),
``video_padded`` (a video shorter than its audio, last frame repeated), ``downmixed`` (multi-channel
audio averaged to mono), ``text_cut:<field>`` (a text longer than its encoder's token limit, cut by
the encoder), ``ignored:<field>`` (a text the model does not consume, e.g. a transcript given to
FoleyGenEx) and ``filler`` (an evaluation batch whose every row failed, filled with the next usable
row so that no batch is empty).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import lightning as L
import torch

from avgen.data.batch import TEXT_FIELDS

log = logging.getLogger(__name__)

EVENT_KEY = "data_events"
REASONS: dict[str, str] = {
    "skipped": "rows skipped (could not be used)",
    "video_padded": "videos shorter than their audio (last frame repeated)",
    "downmixed": "multi-channel audio files averaged to mono",
    "filler": "evaluation batches whose rows all failed, filled with the next usable row",
}
# Attribute names under which the models keep their text encoders, and the batch fields each encodes.
# A module may instead define ``text_encoders() -> {field: encoder}`` itself.
KNOWN_TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "text_encoder": ("caption",),  # FoleyGenEx (CLIP text tower)
    "env_text_encoder": ("caption", "offscreen_caption"),  # OmniSonic (FLAN-T5)
    "speech_encoder": ("transcript",),  # OmniSonic (SpeechT5 + Durator)
}


def describe(reason: str) -> str:
    """A reader's description of a reason key."""
    if reason.startswith("text_cut:"):
        return f"{reason.split(':', 1)[1]} texts longer than the text encoder's limit (cut by the encoder)"
    if reason.startswith("ignored:"):
        return f"{reason.split(':', 1)[1]} texts present but not used by this model"
    return REASONS.get(reason, reason)


def add_event(meta: dict[str, Any], reason: str, item: str, detail: str = "") -> None:
    """Note a data problem on a sample's ``meta`` (travels with the batch to the main process)."""
    meta.setdefault(EVENT_KEY, []).append((str(reason), str(item), str(detail)))


def events_of(meta: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [tuple(e) for e in meta.get(EVENT_KEY, ())]  # type: ignore[misc]


@dataclass
class DataReport:
    """Problems keyed by reason, each item counted once (the first detail seen is kept).

    Plain dicts only, so it pickles (worker processes, ``all_gather_object`` under DDP).
    """

    items: dict[str, dict[str, str]] = field(default_factory=dict)

    def record(self, reason: str, item: str, detail: str = "") -> bool:
        """Record one problem; False when this item was already counted for this reason."""
        bucket = self.items.setdefault(reason, {})
        if item in bucket:
            return False
        bucket[item] = detail
        return True

    def record_events(self, events: Iterable[Sequence[str]]) -> None:
        for reason, item, detail in events:
            self.record(reason, item, detail)

    def record_batch_meta(self, metas: Iterable[dict[str, Any]]) -> None:
        for meta in metas:
            if isinstance(meta, dict):
                self.record_events(events_of(meta))

    def merge(self, other: "DataReport") -> None:
        for reason, bucket in other.items.items():
            for item, detail in bucket.items():
                self.record(reason, item, detail)

    def count(self, reason: str) -> int:
        return len(self.items.get(reason, {}))

    def counts(self) -> dict[str, int]:
        return {reason: len(bucket) for reason, bucket in sorted(self.items.items())}

    def __bool__(self) -> bool:
        return any(self.items.values())

    def summary_lines(self, examples: int = 3) -> list[str]:
        lines = []
        for reason, bucket in sorted(self.items.items()):
            shown = ", ".join(f"{item} ({detail})" if detail else item for item, detail in list(bucket.items())[:examples])
            more = f", and {len(bucket) - examples} more" if len(bucket) > examples else ""
            lines.append(f"{len(bucket)} {describe(reason)}: {shown}{more}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts(), "items": self.items}


def setup_events(datamodule: Any) -> list[tuple[str, str, str]]:
    """Problems datamodules found at setup in this process (rows dropped before training began)."""
    events: list[tuple[str, str, str]] = []
    seen: set[int] = set()

    def visit(dm: Any) -> None:
        if dm is None or id(dm) in seen:
            return
        seen.add(id(dm))
        datasets = getattr(dm, "datasets", None)
        for ds in datasets.values() if isinstance(datasets, dict) else ():
            if callable(getattr(ds, "setup_events", None)):
                events.extend(ds.setup_events())
        sources = getattr(dm, "sources", None)
        if callable(sources):
            for source in sources():
                visit(source)

    visit(datamodule)
    return events


def text_encoders(module: Any) -> dict[str, Any]:
    """``{batch text field: encoder}`` of a model: its ``text_encoders()`` or the known attribute names."""
    own = getattr(module, "text_encoders", None)
    if callable(own):
        return dict(own())
    found: dict[str, Any] = {}
    for attribute, fields in KNOWN_TEXT_ENCODERS.items():
        encoder = getattr(module, attribute, None)
        if encoder is not None:
            for name in fields:
                found[name] = encoder
    return found


@dataclass
class TextSpec:
    """What a model does with texts: each field's token limit and which fields it reads at all.

    Installed on the datasets (``text_spec``) so rows are checked when they are loaded, naming the
    row: a text over an ``error`` limit is a bad row (skipped or raised by the dataset's
    ``on_error``); over a ``cut``/``truncate`` limit it is a counted ``text_cut:<field>`` warning.
    """

    limits: dict[str, Any]  # field -> avgen.conditioning._common.TextLimit
    consumed: tuple[str, ...]
    model: str = ""

    def check(self, texts: dict[str, str | None], item: str, meta: dict[str, Any]) -> str | None:
        """Note cut/ignored texts on ``meta``; return why the row is unusable (None when it is usable)."""
        for name in TEXT_FIELDS:
            text = texts.get(name)
            if not text:
                continue
            if name not in self.consumed:
                add_event(meta, f"ignored:{name}", item, f"{self.model} does not read {name}")
                continue
            limit = self.limits.get(name)
            if limit is None:
                continue
            tokens = limit.count(text)
            if tokens <= limit.max_tokens:
                continue
            if limit.policy == "error":
                return (f"{name} has {tokens} tokens, more than the {limit.encoder}'s limit of {limit.max_tokens} "
                        f"({text[:60]!r}{'...' if len(text) > 60 else ''})")
            add_event(meta, f"text_cut:{name}", item, f"{tokens} > {limit.max_tokens} tokens")
        return None


def text_spec(module: Any) -> TextSpec | None:
    """The :class:`TextSpec` of a model, or None when it has no text encoder avgen knows of."""
    encoders = text_encoders(module)
    if not encoders:
        return None
    limits = {}
    for name, encoder in encoders.items():
        make = getattr(encoder, "text_limit", None)
        limit = make() if callable(make) else None
        if limit is not None:
            limits[name] = limit
    return TextSpec(limits, tuple(encoders), type(module).__name__)


def install_text_spec(datamodule: Any, spec: TextSpec | None) -> int:
    """Give ``spec`` to every datamodule (and its built datasets) that checks texts; returns how many."""
    installed, seen = 0, set()

    def visit(dm: Any) -> None:
        nonlocal installed
        if dm is None or id(dm) in seen:
            return
        seen.add(id(dm))
        if hasattr(dm, "text_spec"):
            dm.text_spec = spec
            installed += 1
            for ds in getattr(dm, "datasets", {}).values():
                if hasattr(ds, "text_spec"):
                    ds.text_spec = spec
        sources = getattr(dm, "sources", None)
        if callable(sources):
            for source in sources():
                visit(source)

    visit(datamodule)
    return installed


class DataReportCallback(L.Callback):
    """Collects the data events of every batch and reports them at the end of fit / test / predict.

    Also installs the model's :class:`TextSpec` on the datamodules at setup (text limits and the
    fields the model reads), and writes ``data_report.json`` into the run's log directory.

    Args:
        check_texts: install the model's text limits on the datasets (rows checked at load time).
        examples: item ids shown per reason in the summary.
    """

    def __init__(self, check_texts: bool = True, examples: int = 3) -> None:
        super().__init__()
        self.check_texts, self.examples = bool(check_texts), int(examples)
        self.report = DataReport()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.report = DataReport()
        if self.check_texts and trainer.datamodule is not None:
            install_text_spec(trainer.datamodule, text_spec(pl_module))

    def _collect(self, batch: Any) -> None:
        metas = getattr(batch, "meta", None)
        if metas:
            self.report.record_batch_meta(metas)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._collect(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._collect(batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._collect(batch)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._collect(batch)

    def gathered(self, trainer: L.Trainer) -> DataReport:
        """This rank's report plus setup events, merged over every rank under DDP."""
        report = DataReport()
        report.merge(self.report)
        report.record_events(setup_events(trainer.datamodule))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, report)
            for part in parts:
                report.merge(part)
        return report

    def _finish(self, trainer: L.Trainer, stage: str) -> None:
        report = self.gathered(trainer)
        log_dir = trainer.log_dir  # a collective under DDP (broadcast from rank 0): every rank asks
        if not trainer.is_global_zero:
            return
        if report:
            log.warning("data report (%s): %s", stage, "; ".join(report.summary_lines(self.examples)))
        else:
            log.info("data report (%s): nothing skipped, padded, cut or ignored", stage)
        if log_dir and stage != "predict":  # generation is not a run: no files beside the wavs
            path = Path(log_dir) / "data_report.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"stage": stage, **report.to_dict()}, indent=1))
            except OSError as e:  # a read-only log dir must not fail the run at its very end
                log.warning("could not write %s: %s", path, e)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, "test")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, "predict")


__all__ = [
    "EVENT_KEY", "REASONS", "DataReport", "DataReportCallback", "TextSpec", "add_event", "events_of",
    "install_text_spec", "setup_events", "text_encoders", "text_spec",
]
