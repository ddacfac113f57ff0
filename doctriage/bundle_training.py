"""Train a model bundle from a DATA folder (`doctriage train`, the default bundle's recipe): the
document-level split and the page cache (pipelines.dataset), a new model or a LayoutLMv3
checkpoint, classifier.training, calibration, and the bundle with its metadata and report.

The model itself (the nn.Module) is classifier.model; this module is the glue around it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LayoutLMv3Config

from classifier.bundle import from_checkpoint, save_bundle
from classifier.calibrate import calibrate_model, calibrate_ocr_free
from classifier.config import NAMED_SIZES, exit_layers_for
from classifier.factory import new_model
from classifier.model import EarlyExitModel
from classifier.raster_exit import RasterExit
from classifier.raster_training import train_raster_exit
from classifier.textless import ocr_free_logits
from classifier.thresholds import PRESSURE_DELTA, ThresholdRule
from classifier.tokenizer import load_tokenizer, train_tokenizer
from classifier.training import (
    TrainOptions,
    TrainResult,
    all_logits,
    resolve_precision,
    set_seed,
    train,
)
from doctriage.bundle_data import PageLoading, encode_pages, load_split_pages, stderr_line
from doctriage.settings import PRESSURE_BUDGET
from pipelines.dataset import (
    DatasetError,
    DocumentEntry,
    read_documents,
    scan_copies,
    split_documents,
)
from pipelines.options import IngestOptions
from pipelines.page_content import Page


@dataclass(frozen=True)
class BundleTrainOptions:
    """Everything one training run takes. `training` is the optimisation itself (strategy,
    epochs, batch size, lr, time cap, seed, progress bars); the rest is about the bundle."""

    data_dir: Path
    out_dir: Path
    training: TrainOptions = field(default_factory=TrainOptions)
    config: str = "small"  # a named size (classifier.config.NAMED_SIZES), unless `backbone`
    backbone: Path | None = None  # a LayoutLMv3 checkpoint folder instead of `config`
    placements: str = "every"
    # Channels of the raster exit's first block (classifier/raster_exit.py): the OCR-free exit
    # a scanned page may leave by before OCR. 0: no raster exit.
    raster_width: int = 0
    val_fraction: float = 0.2
    # Share of documents (per class) held out of training AND threshold choice: what
    # `evaluate --split test` scores the early-exit budget on. 0: none (train/val only).
    test_fraction: float = 0.0
    resume: bool = False  # continue from out_dir/checkpoint (the last finished epoch)
    # allowed early-vs-full disagreement, in points of pages (point selection: accuracy lost)
    budget_points: float = 0.5
    # the pressure policy's looser budget (DOCTRIAGE_PRESSURE_BUDGET's default), same selection
    pressure_budget_points: float = 100 * PRESSURE_BUDGET
    # how thresholds are chosen (classifier.thresholds): "ucb" (an upper confidence bound at
    # confidence 1 - delta holds the budget) or "point" (the validation estimate does)
    threshold_selection: str = "ucb"
    delta: float = 0.1
    # the pressure policy's ucb bound: 95% (classifier.thresholds.PRESSURE_DELTA says why)
    pressure_delta: float = PRESSURE_DELTA
    cache_dir: Path | None = None  # the page cache (default: out_dir/page-cache)
    workers: int = 1  # processes ingesting uncached documents
    # Share of born-digital training PDFs that also train as a simulated scan (OCR'd), so each
    # class is seen both ways and the model cannot learn "scanned means this class".
    scan_copies: float = 0.0
    ingest: IngestOptions = field(default_factory=IngestOptions)
    # "float16" or "int8" stores the weights at 1/2 or 1/4 of the size (they load back as
    # float32; classifier/weight_storage.py)
    weights_dtype: str = "float32"
    # merged into the bundle's metadata (e.g. the default bundle's recipe)
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoint"

    @property
    def bundle_name(self) -> str:
        return self.config if self.backbone is None else "layoutlmv3"


@dataclass
class _Split:
    """The documents of DATA, split by document, and their readable pages."""

    docs: list[DocumentEntry]
    train_docs: list[DocumentEntry]
    val_docs: list[DocumentEntry]
    labels: list[str]
    scan_docs: list[DocumentEntry] = field(default_factory=list)  # training scan copies
    test_docs: list[DocumentEntry] = field(default_factory=list)  # neither trained nor tuned on
    train_pages: list[Page] = field(default_factory=list)
    val_pages: list[Page] = field(default_factory=list)
    ingest_s: float = 0.0

    def targets(self, pages: list[Page]) -> torch.Tensor:
        index = {name: i for i, name in enumerate(self.labels)}
        by_key = {d.key: index[d.label] for d in [*self.docs, *self.scan_docs]}
        return torch.tensor([by_key[p.doc_key] for p in pages])


def train_bundle(options: BundleTrainOptions, *,
                 log: Callable[[str], None] = stderr_line) -> dict[str, Any]:
    """Train, calibrate and save a bundle in `options.out_dir`; returns the training report."""
    started = time.monotonic()
    _check(options)
    split = _split(options, log)
    set_seed(options.training.seed)
    # a checkpoint's model is built before the pages (its image size decides their raster)
    model = None
    if options.backbone is not None:
        model = _from_backbone(options, split.labels)
    image_size = (model.preprocessing.image_size if model is not None
                  else NAMED_SIZES[options.config].image_size)
    _load_pages(options, split, image_size, log)
    if model is None:
        model = _new_model(options, split)
    options.checkpoint.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(str(options.checkpoint))

    progress = options.training.progress
    train_inputs = encode_pages(model, split.train_pages, progress)
    val_inputs = encode_pages(model, split.val_pages, progress) if split.val_pages else None
    y_val = split.targets(split.val_pages) if split.val_pages else None
    log(f"pages: {len(split.train_pages)} train, {len(split.val_pages)} validation "
        f"(ingest {split.ingest_s:.0f} s)")
    result = train(model, train_inputs, split.targets(split.train_pages), val_inputs, y_val,
                   options.training, checkpoint_dir=options.checkpoint, resume=options.resume,
                   log=log)
    if model.raster_exit is not None:
        t0 = time.monotonic()
        train_raster_exit(model, train_inputs["pixel_values"], split.targets(split.train_pages),
                          options.training, log=log)
        log(f"raster exit: {options.training.raster_epochs} epochs of its own in "
            f"{time.monotonic() - t0:.0f} s")
    if val_inputs is not None and y_val is not None:
        rule = ThresholdRule(options.budget_points / 100, options.threshold_selection,
                             options.delta)
        val_logits = all_logits(model, val_inputs, 32)
        pressure = ThresholdRule(options.pressure_budget_points / 100,
                                 options.threshold_selection, options.pressure_delta)
        calibration = calibrate_model(model, val_logits, y_val, rule, pressure)
        _log_selection(calibration["threshold_selection"], log)
        # only a model with a raster exit, or taught word-less pages, gets an OCR-free exit
        if model.raster_exit is not None or options.training.text_dropout > 0:
            calibration["ocr_free"] = _calibrate_ocr_free(
                model, split, (val_inputs, val_logits, y_val), rule, log)
    else:
        calibration = {"note": "no validation pages: temperatures 1, early exit disabled"}
        log("warning: no validation pages; early exit stays disabled (thresholds 1.0)")
    model.metadata = _metadata(options, split, result, calibration)
    save_bundle(model, options.out_dir, name=options.bundle_name,
                weights_dtype=getattr(torch, options.weights_dtype))
    return _write_report(options, model, split, time.monotonic() - started)


def _calibrate_ocr_free(model: EarlyExitModel, split: _Split,
                        val: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor],
                        rule: ThresholdRule, log: Callable[[str], None]) -> dict[str, Any]:
    """The OCR-free exit, calibrated on the validation pages that needed OCR against their
    full-depth answers with OCR (`val`: inputs, every exit's logits, labels)."""
    inputs, logits, labels = val
    rows = torch.tensor([i for i, p in enumerate(split.val_pages) if p.text_source == "ocr"],
                        dtype=torch.long)
    sub = {k: v.index_select(0, rows) for k, v in inputs.items()}
    record = calibrate_ocr_free(model, ocr_free_logits(model, sub),
                                logits.index_select(0, rows)[:, -1].argmax(-1),
                                labels.index_select(0, rows), rule)
    if record.get("threshold") is not None:
        log(f"OCR-free exit: threshold {record['threshold']:.4g}, OCR avoided on "
            f"{100 * record['ocr_avoided_share']:.1f}% of {record['validation_pages']} "
            "validation pages that needed it")
    else:
        log(f"OCR-free exit: none ({record.get('note', '')})")
    return record


def _log_selection(record: dict[str, Any], log: Callable[[str], None]) -> None:
    """One line on how the thresholds were chosen; a warning when early exit is off."""
    log(f"thresholds ({record['selection']}, delta {record['delta']:g}): validation "
        f"disagreement {100 * record['validation_disagreement']:.2f}%, upper bound "
        f"{100 * record['validation_disagreement_ucb']:.2f}% (budget "
        f"{100 * record['budget']:.2f}%)")
    if record["fallback"]:
        log(f"warning: {record['note']}")


def _check(options: BundleTrainOptions) -> None:
    """Fail on an unknown size or placement before any ingest."""
    if options.backbone is not None:
        return
    if options.config not in NAMED_SIZES:
        raise DatasetError(
            f"unknown --config {options.config!r}; choose from {', '.join(NAMED_SIZES)}"
        )
    exit_layers_for(options.placements, NAMED_SIZES[options.config].layers)


def _split(options: BundleTrainOptions, log: Callable[[str], None]) -> _Split:
    docs = read_documents(options.data_dir)
    seed = options.training.seed
    rest, test_docs = docs, []
    if options.test_fraction > 0:  # the test share first (its own seed), then train/val
        rest, test_docs = split_documents(docs, options.test_fraction, seed + 1)
    val_share = options.val_fraction / (1 - options.test_fraction)
    train_docs, val_docs = split_documents(rest, val_share, seed)
    split = _Split(docs, train_docs, val_docs, sorted({d.label for d in docs}),
                   test_docs=test_docs)
    log(f"data: {len(docs)} documents ({len(train_docs)} train, {len(val_docs)} validation"
        + (f", {len(test_docs)} test" if test_docs else "") + f"), {len(split.labels)} classes")
    return split


def _load_pages(options: BundleTrainOptions, split: _Split, image_size: int,
                log: Callable[[str], None]) -> None:
    cache = options.cache_dir or options.out_dir / "page-cache"
    progress = options.training.progress
    t0 = time.monotonic()
    loading = PageLoading(cache, image_size, options.ingest, options.workers, progress, log)
    split.train_pages = load_split_pages(split.train_docs, loading)
    if options.scan_copies > 0:
        split.scan_docs = scan_copies(split.train_docs, split.train_pages, options.scan_copies,
                                      options.training.seed)
        log(f"scan copies: {len(split.scan_docs)} born-digital training documents also train "
            "as simulated scans (rendered, damaged, OCR'd; cached like the originals)")
        split.train_pages += load_split_pages(split.scan_docs, loading)
    split.val_pages = load_split_pages(split.val_docs, loading)
    split.ingest_s = time.monotonic() - t0
    if not split.train_pages:
        raise DatasetError(f"{options.data_dir}: no readable training pages")


def _from_backbone(options: BundleTrainOptions, labels: list[str]) -> EarlyExitModel:
    assert options.backbone is not None
    layers = LayoutLMv3Config.from_pretrained(str(options.backbone)).num_hidden_layers
    model = from_checkpoint(options.backbone, labels, exit_layers_for(options.placements, layers))
    if options.raster_width:  # new heads on the checkpoint's backbone, the raster exit among them
        model.raster_exit = RasterExit(len(labels), options.raster_width)
    return model


def _new_model(options: BundleTrainOptions, split: _Split) -> EarlyExitModel:
    """A named size with a BPE vocabulary trained on the training pages (or the checkpoint's,
    when resuming)."""
    if options.resume and (options.checkpoint / "tokenizer.json").exists():
        tokenizer = load_tokenizer(options.checkpoint)
    else:
        tokenizer = train_tokenizer((" ".join(p.words) for p in split.train_pages),
                                    NAMED_SIZES[options.config].vocab_size)
    set_seed(options.training.seed)
    return new_model(options.config, options.placements, split.labels, tokenizer,
                     raster_width=options.raster_width)


def _metadata(options: BundleTrainOptions, split: _Split, result: TrainResult,
              calibration: dict[str, Any]) -> dict[str, Any]:
    training = options.training
    return {
        "config": options.config if options.backbone is None
        else f"checkpoint:{options.backbone.name}",
        "data_split": {
            "seed": training.seed,
            "val_fraction": options.val_fraction,
            "val_documents": sorted(d.key for d in split.val_docs),
            "test_fraction": options.test_fraction,
            "test_documents": sorted(d.key for d in split.test_docs),
            "train_documents": len(split.train_docs),
            "scan_copies": {"share": options.scan_copies, "documents": len(split.scan_docs)},
        },
        "training": {
            "strategy": training.strategy,
            "epochs_done": result.epochs_done,
            "stopped_by_max_minutes": result.stopped_early,
            "train_seconds": round(result.seconds, 1),
            "history": result.history,
            "batch_size": training.batch_size,
            "lr": training.lr,
            "placements": options.placements,
            "text_dropout": training.text_dropout,
            "precision": resolve_precision(training.precision),
        },
        "calibration": calibration,
        **options.extra_metadata,
    }


def _write_report(options: BundleTrainOptions, model: EarlyExitModel, split: _Split,
                  seconds: float) -> dict[str, Any]:
    report = {
        "bundle": str(options.out_dir),
        "version": model.version,
        "labels": split.labels,
        "exit_layers": model.exit_layers,
        "train_pages": len(split.train_pages),
        "val_pages": len(split.val_pages),
        "ingest_seconds": round(split.ingest_s, 1),
        "total_seconds": round(seconds, 1),
        **model.metadata,
    }
    (options.out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    return report
