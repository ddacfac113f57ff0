"""`doctriage train --from-store`: fine-tune the current bundle on the store's human-labelled
pages (plus a DATA folder if given), and write the new bundle only if it is at least as accurate
as the old one on labelled pages that neither trained nor calibrated it.

The labelled pages (db.labelled_pages; words, boxes and raster from their artifacts) are split
by document, seeded and stratified by each document's most frequent label: held out (scored
only), calibration (temperatures and thresholds, as `train` fits them on its validation pages,
beside a DATA folder's validation documents) and fine-tune (with a DATA folder's training
documents). The fine-tune is classifier.training's loop from the old weights (few epochs, small
learning rate). Both bundles are scored as served: the new one is saved, loaded back, then
scored, and moved to `out_dir` only when it wins (a bundle already there is replaced)."""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from classifier.bundle import load_bundle, save_bundle
from classifier.calibrate import calibrate_model, calibrate_ocr_free
from classifier.model import EarlyExitModel
from classifier.policy import NeverExit
from classifier.predict import predict_pages
from classifier.textless import ocr_free_logits
from classifier.thresholds import ThresholdRule
from classifier.training import TrainOptions, all_logits, set_seed, train
from db.labelled_pages import LabelledPage, labelled_pages
from db.session import session_scope
from doctriage.bundle_data import PageLoading, encode_pages, load_split_pages, stderr_line
from pipelines.artifacts import ArtifactNotFound, ArtifactStore, decode_page
from pipelines.dataset import DatasetError, DocumentEntry, read_documents, split_documents
from pipelines.options import IngestOptions
from pipelines.page_content import Page

# Fewest labelled pages worth a fine-tune, and fewest documents: one at least in each part.
MIN_PAGES = 10
MIN_DOCUMENTS = 3
# A fine-tune, not a training: few epochs at a small learning rate from the bundle's weights.
FINE_TUNE = TrainOptions(epochs=5, lr=1e-4, batch_size=8)


class StoreDataError(DatasetError):
    """The store's labelled pages cannot be used (too few, unknown labels): one line."""


@dataclass(frozen=True)
class StoreTrainOptions:
    bundle: Path  # the current bundle (the one the settings point at)
    out_dir: Path  # where the new bundle goes, only if it wins
    data_dir: Path | None = None  # a DATA folder trained on beside the labelled pages
    training: TrainOptions = field(default_factory=lambda: copy.copy(FINE_TUNE))
    held_out_fraction: float = 0.3  # share of labelled documents scored only
    val_fraction: float = 0.2  # of the rest (and of DATA's documents): calibration
    budget_points: float = 0.5
    threshold_selection: str = "ucb"
    delta: float = 0.1
    cache_dir: Path | None = None  # DATA's page cache (default: out_dir's parent/page-cache)
    workers: int = 1
    ingest: IngestOptions = field(default_factory=IngestOptions)
    weights_dtype: str = "float32"  # int8 rounding could undo a small learning rate's steps


@dataclass
class _Part:
    """Pages and their label names."""

    pages: list[Page] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, pages: Sequence[Page], labels: Sequence[str]) -> None:
        self.pages.extend(pages)
        self.labels.extend(labels)

    def targets(self, model: EarlyExitModel) -> torch.Tensor:
        index = {name: i for i, name in enumerate(model.label_names)}
        return torch.tensor([index[label] for label in self.labels], dtype=torch.long)


@dataclass
class _Parts:
    fine_tune: _Part = field(default_factory=_Part)
    calibration: _Part = field(default_factory=_Part)
    held_out: _Part = field(default_factory=_Part)
    held_out_documents: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreTrainResult:
    report: dict[str, Any]
    promoted: bool
    reason: str  # one line: why it was written, or why not


def fine_tune_from_store(options: StoreTrainOptions, sessions: sessionmaker[Session],
                         artifacts: ArtifactStore, *,
                         log: Callable[[str], None] = stderr_line) -> StoreTrainResult:
    """Fine-tune, score old and new on the held-out labelled pages, promote only a winner."""
    started = time.monotonic()
    _check_out(options.out_dir, options.bundle)
    old = load_bundle(options.bundle)
    with session_scope(sessions) as s:
        rows = labelled_pages(s)
    parts = _split_labelled(_read_pages(rows, artifacts, log), old.label_names, options, log)
    if options.data_dir is not None:
        _add_folder(options, old, parts, log)
    before = score(old, parts.held_out)
    model = load_bundle(options.bundle)  # the copy that trains
    history, calibration = _fine_tune(model, parts, options, log)
    model.metadata = _metadata(old, options, parts, history, calibration)
    options.out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{options.out_dir.name}.new-",
                                    dir=options.out_dir.parent))
    try:
        save_bundle(model, staging, name=_bundle_name(old.version),
                    weights_dtype=getattr(torch, options.weights_dtype))
        after = score(load_bundle(staging), parts.held_out)  # scored as it will be served
        promoted, reason = _verdict(before, after)
        report = {
            "current_bundle": str(options.bundle),
            "new_version": model.version,
            "out": str(options.out_dir) if promoted else None,
            "promoted": promoted,
            "reason": reason,
            "pages": parts.counts,
            "held_out_documents": len(parts.held_out_documents),
            "old": before,
            "new": after,
            "calibration": _calibration_summary(model.metadata["calibration"]),
            "epochs": [{k: v for k, v in h.items() if k != "phase"} for h in history],
            "seconds": round(time.monotonic() - started, 1),
        }
        if promoted:
            _promote(staging, options.out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return StoreTrainResult(report, promoted, reason)


def score(model: EarlyExitModel, part: _Part, batch_size: int = 16) -> dict[str, Any]:
    """Accuracy on `part` at full depth and early exit (the serving engine, the bundle's policy),
    overall and per labelled class, and the mean encoder layers early exit ran."""
    full = predict_pages(model, part.pages, early_exit=False, batch_size=batch_size)
    early = predict_pages(model, part.pages, batch_size=batch_size)
    by_class: dict[str, dict[str, Any]] = {}
    for label in sorted(set(part.labels)):
        rows = [i for i, name in enumerate(part.labels) if name == label]
        by_class[label] = {
            "pages": len(rows),
            "full_depth_accuracy": _accuracy([full[i].label for i in rows], [label] * len(rows)),
            "early_exit_accuracy": _accuracy([early[i].label for i in rows], [label] * len(rows)),
        }
    return {
        "version": model.version,
        "pages": len(part.labels),
        "full_depth_accuracy": _accuracy([a.label for a in full], part.labels),
        "early_exit_accuracy": _accuracy([a.label for a in early], part.labels),
        "mean_layers": round(sum(a.exit_layer for a in early) / max(1, len(early)), 3),
        "by_class": by_class,
    }


def _accuracy(answers: Sequence[str], truth: Sequence[str]) -> float:
    return round(sum(a == t for a, t in zip(answers, truth, strict=True)) / len(truth), 4)


def _verdict(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, str]:
    """The new bundle wins when it is at least as accurate at full depth AND with early exit."""
    lines = []
    for key, name in (("full_depth_accuracy", "full-depth"), ("early_exit_accuracy", "early-exit")):
        if after[key] < before[key]:
            lines.append(f"{name} accuracy {100 * after[key]:.1f}% < {100 * before[key]:.1f}%")
    pages = before["pages"]
    if lines:
        return False, (f"not written: the fine-tuned bundle is less accurate on the {pages} "
                       f"held-out labelled pages ({'; '.join(lines)})")
    return True, (f"written: on the {pages} held-out labelled pages, early-exit accuracy "
                  f"{100 * before['early_exit_accuracy']:.1f}% -> "
                  f"{100 * after['early_exit_accuracy']:.1f}%, full-depth "
                  f"{100 * before['full_depth_accuracy']:.1f}% -> "
                  f"{100 * after['full_depth_accuracy']:.1f}%")


# --- the labelled pages ---------------------------------------------------------------------


def _read_pages(rows: Sequence[LabelledPage], artifacts: ArtifactStore,
                log: Callable[[str], None]) -> list[tuple[LabelledPage, Page]]:
    """Each labelled page with its decoded artifact; pages whose artifact is gone are logged."""
    out = []
    for row in rows:
        try:
            if not row.artifact_ref:
                raise ArtifactNotFound("no artifact reference")
            page = decode_page(artifacts.get(row.artifact_ref))
        except (ArtifactNotFound, ValueError, KeyError) as exc:
            log(f"skipped labelled page {row.page_id}: artifact unreadable ({exc})")
            continue
        page.doc_key = _doc_key(row.document_id)
        out.append((row, page))
    return out


def _doc_key(document_id: int) -> str:
    return f"store:{document_id}"


def _split_labelled(labelled: list[tuple[LabelledPage, Page]], known: Sequence[str],
                    options: StoreTrainOptions, log: Callable[[str], None]) -> _Parts:
    unknown = sorted({row.label for row, _ in labelled} - set(known))
    if unknown:
        raise StoreDataError(
            f"human labels unknown to the bundle: {', '.join(map(repr, unknown[:5]))}"
            f"{' ...' if len(unknown) > 5 else ''} (it knows {len(known)} classes; relabel "
            "those pages or train a new bundle with `doctriage train DATA`)")
    by_doc: dict[int, list[tuple[LabelledPage, Page]]] = {}
    for row, page in labelled:
        by_doc.setdefault(row.document_id, []).append((row, page))
    if len(labelled) < MIN_PAGES or len(by_doc) < MIN_DOCUMENTS:
        raise StoreDataError(
            f"too few human-labelled pages: {len(labelled)} in {len(by_doc)} documents; at least "
            f"{MIN_PAGES} pages in {MIN_DOCUMENTS} documents are needed")
    # a document's most frequent label stratifies the split (ties: the first in name order)
    docs = [DocumentEntry(_doc_key(doc_id), Path(), _majority([r.label for r, _ in pages]))
            for doc_id, pages in by_doc.items()]
    seed = options.training.seed
    rest, held = split_documents(docs, options.held_out_fraction, seed + 1)
    tune, cal = split_documents(rest, options.val_fraction, seed)
    if not held or not tune:
        raise StoreDataError(
            f"too few labelled documents to hold some out: {len(docs)} documents gave "
            f"{len(tune)} to fine-tune and {len(held)} to hold out")
    parts = _Parts()
    for target, entries in ((parts.fine_tune, tune), (parts.calibration, cal),
                            (parts.held_out, held)):
        for entry in entries:
            pages = by_doc[int(entry.key.removeprefix("store:"))]
            target.add([p for _, p in pages], [r.label for r, _ in pages])
    parts.held_out_documents = sorted(int(d.key.removeprefix("store:")) for d in held)
    # fine_tune and calibration grow by DATA's pages when a folder is named (_add_folder)
    parts.counts = {"labelled": len(labelled), "fine_tune": len(parts.fine_tune.pages),
                    "calibration": len(parts.calibration.pages),
                    "held_out": len(parts.held_out.pages)}
    log(f"labelled pages: {len(labelled)} in {len(docs)} documents: "
        f"{len(parts.fine_tune.pages)} fine-tune, {len(parts.calibration.pages)} calibration, "
        f"{len(parts.held_out.pages)} held out")
    return parts


def _majority(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def _add_folder(options: StoreTrainOptions, model: EarlyExitModel, parts: _Parts,
                log: Callable[[str], None]) -> None:
    """DATA's training documents join the fine-tune pages, its validation ones calibration."""
    assert options.data_dir is not None
    docs = read_documents(options.data_dir)
    unknown = sorted({d.label for d in docs} - set(model.label_names))
    if unknown:
        raise StoreDataError(f"{options.data_dir}: classes unknown to the bundle: "
                             f"{', '.join(map(repr, unknown[:5]))}")
    train_docs, val_docs = split_documents(docs, options.val_fraction, options.training.seed)
    cache = options.cache_dir or options.out_dir.parent / "page-cache"
    loading = PageLoading(cache, model.preprocessing.image_size, options.ingest, options.workers,
                          options.training.progress, log)
    label_of = {d.key: d.label for d in docs}
    for target, chosen in ((parts.fine_tune, train_docs), (parts.calibration, val_docs)):
        pages = load_split_pages(chosen, loading)
        target.add(pages, [label_of[p.doc_key] for p in pages])
    parts.counts.update(folder_documents=len(docs), fine_tune=len(parts.fine_tune.pages),
                        calibration=len(parts.calibration.pages))
    log(f"{options.data_dir}: {len(train_docs)} documents fine-tune, {len(val_docs)} calibrate")


# --- fine-tune and calibration ----------------------------------------------------------------


def _fine_tune(model: EarlyExitModel, parts: _Parts, options: StoreTrainOptions,
               log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """classifier.training's loop from the bundle's weights, then temperatures and thresholds
    on the calibration pages (none: early exit off, as `train` leaves a bundle without
    validation pages). Returns the epochs' history and the calibration record."""
    progress = options.training.progress
    set_seed(options.training.seed)
    inputs = encode_pages(model, parts.fine_tune.pages, progress)
    cal = parts.calibration
    cal_inputs = encode_pages(model, cal.pages, progress) if cal.pages else None
    y_cal = cal.targets(model) if cal.pages else None
    result = train(model, inputs, parts.fine_tune.targets(model), cal_inputs, y_cal,
                   options.training, log=log)
    if cal_inputs is None or y_cal is None:
        model.temperatures.fill_(1.0)
        model.thresholds = [1.01] * model.num_stages  # as calibration's fallback: no exit
        model.policy_spec = NeverExit(model.num_stages).to_json()
        model.ocr_free = None
        log("warning: no calibration pages; early exit disabled (full depth)")
        return result.history, {"note": "no calibration pages: early exit disabled"}
    rule = ThresholdRule(options.budget_points / 100, options.threshold_selection, options.delta)
    logits = all_logits(model, cal_inputs, 32)
    record = calibrate_model(model, logits, y_cal, rule)
    selection = record["threshold_selection"]
    log(f"thresholds ({selection['selection']}): calibration disagreement "
        f"{100 * selection['validation_disagreement']:.2f}%, upper bound "
        f"{100 * selection['validation_disagreement_ucb']:.2f}% (budget "
        f"{100 * selection['budget']:.2f}%) on {len(y_cal)} pages")
    if selection["fallback"]:
        log(f"warning: {selection['note']}")
    if model.ocr_free:
        record["ocr_free"] = _recalibrate_ocr_free(model, cal, (cal_inputs, logits, y_cal),
                                                   rule, log)
    return result.history, record


def _recalibrate_ocr_free(
    model: EarlyExitModel, cal: _Part,
    scored: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor],
    rule: ThresholdRule, log: Callable[[str], None],
) -> dict[str, Any]:
    """The OCR-free exit's temperature and threshold on the calibration pages that needed OCR
    (`scored`: their inputs, every exit's logits, labels); with none, the exit is dropped (its
    old calibration no longer describes the weights)."""
    inputs, logits, labels = scored
    rows = torch.tensor([i for i, p in enumerate(cal.pages) if p.text_source == "ocr"],
                        dtype=torch.long)
    if not len(rows):
        model.ocr_free = None
        log("OCR-free exit dropped: no calibration page needed OCR")
        return {"note": "dropped: no calibration page needed OCR"}
    sub = {k: v.index_select(0, rows) for k, v in inputs.items()}
    return calibrate_ocr_free(model, ocr_free_logits(model, sub),
                              logits.index_select(0, rows)[:, -1].argmax(-1),
                              labels.index_select(0, rows), rule)


def _metadata(old: EarlyExitModel, options: StoreTrainOptions, parts: _Parts,
              history: list[dict[str, Any]], calibration: dict[str, Any]) -> dict[str, Any]:
    """The old bundle's metadata, less what no longer holds, plus the fine-tune's record."""
    kept = {k: v for k, v in old.metadata.items() if k not in ("calibration", "demo_accuracy")}
    training = options.training
    return {
        **kept,
        "calibration": calibration,
        "fine_tune": {
            "from_version": old.version,
            "source": "human labels in the store" + (
                f" + {options.data_dir}" if options.data_dir else ""),
            "pages": parts.counts,
            "held_out_documents": parts.held_out_documents,
            "seed": training.seed,
            "epochs": training.epochs,
            "lr": training.lr,
            "batch_size": training.batch_size,
            "history": history,
        },
    }


def _calibration_summary(record: dict[str, Any]) -> dict[str, Any]:
    selection = record.get("threshold_selection") or {}
    return {
        "pages": record.get("validation_pages"),
        "selection": selection.get("selection"),
        "fallback": selection.get("fallback"),
        "note": selection.get("note") or record.get("note"),
    }


def _bundle_name(version: str) -> str:
    """A version is NAME-<sha256 prefix>; the fine-tuned bundle keeps the name."""
    name, _, digest = version.rpartition("-")
    return name if name and digest else version


# --- the out folder -----------------------------------------------------------------------------


def _check_out(out: Path, bundle: Path) -> None:
    """--out may be new, empty, or a bundle (replaced only by a winner); nothing else is
    overwritten."""
    if out.exists() and out.resolve() != bundle.resolve():
        if not out.is_dir():
            raise StoreDataError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / "exits.json").is_file():
            raise StoreDataError(f"--out {out}: a folder that is not a model bundle; refusing "
                                 "to replace it")


def _promote(staging: Path, out: Path) -> None:
    """Move the new bundle to `out`; a bundle there is swapped out by renames (same folder,
    so a reader sees the old bundle or the new one), then removed."""
    if not out.exists():
        staging.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    retired.rmdir()
    out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired, ignore_errors=True)
