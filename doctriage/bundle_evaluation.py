"""Evaluate a model bundle on a DATA folder (`doctriage evaluate`, the default bundle's demo
accuracy, bench/early_exit.py): the training run's split, the pages, classifier.evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from classifier.bundle import load_bundle
from classifier.evaluation import evaluate
from classifier.model import EarlyExitModel
from classifier.training import Inputs
from doctriage.bundle_data import PageLoading, encode_pages, load_split_pages, stderr_line
from pipelines.dataset import (
    DatasetError,
    DocumentEntry,
    read_documents,
    scan_copies,
    split_documents,
)
from pipelines.options import IngestOptions
from pipelines.page_content import Page


def select_documents(
    model: EarlyExitModel, docs: list[DocumentEntry], split: str
) -> list[DocumentEntry]:
    """`all`, or the training run's `val`/`train`/`test` documents (stored in the bundle):
    test ones were used for neither training nor threshold choice."""
    if split == "all":
        return docs
    info = getattr(model, "metadata", {}).get("data_split")
    if not info:
        raise DatasetError("this bundle records no training split; use --split all")
    val_keys = set(info.get("val_documents") or [])
    if not val_keys:
        _, val = split_documents(docs, info["val_fraction"], info["seed"])
        val_keys = {d.key for d in val}
    test_keys = set(info.get("test_documents") or [])
    if split == "test" and not test_keys:
        raise DatasetError("this bundle was trained without a test split (train --test-fraction)")
    keys = {"val": val_keys, "test": test_keys}.get(split)
    chosen = [d for d in docs if (d.key in keys if keys is not None
                                  else d.key not in val_keys | test_keys)]
    if not chosen:
        raise DatasetError(f"no documents of DATA fall in the training run's {split!r} split")
    return chosen


@dataclass(frozen=True)
class EvaluationOptions:
    """How to evaluate a bundle; the defaults are `doctriage evaluate`'s."""

    split: str = "all"  # all, or the training run's val/train documents
    batch_size: int = 16
    out_dir: Path | None = None  # the PNG plots
    cache_dir: Path | None = None  # page cache (None: the bundle's page-cache folder)
    workers: int = 1
    device: str = "cpu"
    ingest: IngestOptions = field(default_factory=IngestOptions)
    timing_rounds: int = 2  # 0: no wall-time measurement
    # Also score simulated scans of the born-digital PDFs evaluated, beside their originals.
    scan_copies: bool = False
    progress: bool = True
    log: Callable[[str], None] = stderr_line


@dataclass
class LabelledPages:
    """DATA's chosen documents, their readable pages encoded for the model, and each page's
    label index and tags (its document's source, its text source)."""

    docs: list[DocumentEntry]
    inputs: Inputs
    labels: torch.Tensor
    groups: dict[str, list[str]]
    pages: list[Page]
    loading: PageLoading  # where more of DATA's pages come from (scan copies)


def labelled_pages(
    model: EarlyExitModel, model_dir: Path, data_dir: Path, opts: EvaluationOptions
) -> LabelledPages:
    """The documents of `opts.split`, read through the page cache and encoded."""
    docs = select_documents(model, read_documents(data_dir), opts.split)
    unknown = sorted({d.label for d in docs} - set(model.label_names))
    if unknown:
        raise DatasetError(f"DATA has labels the model does not know: {', '.join(unknown)}")
    loading = PageLoading(opts.cache_dir or model_dir / "page-cache",
                          model.preprocessing.image_size, opts.ingest, opts.workers,
                          opts.progress, opts.log)
    pages = load_split_pages(docs, loading)
    if not pages:
        raise DatasetError(f"{data_dir}: no readable pages")
    by_key = {d.key: d for d in docs}
    return LabelledPages(
        docs,
        encode_pages(model, pages, opts.progress),
        torch.tensor([model.label_names.index(by_key[p.doc_key].label) for p in pages]),
        {"source": [by_key[p.doc_key].source for p in pages],
         "text_source": [p.text_source for p in pages]},
        pages,
        loading,
    )


def evaluate_bundle(
    model_dir: Path, data_dir: Path, opts: EvaluationOptions | None = None
) -> dict:
    """Per-exit accuracy/ECE, the early-exit policy and its measured speed-up on DATA's pages,
    broken down by class, source and text source."""
    opts = opts or EvaluationOptions()
    model = load_bundle(model_dir, device=opts.device)
    data = labelled_pages(model, model_dir, data_dir, opts)
    report = evaluate(model, data.inputs, data.labels, batch_size=opts.batch_size,
                      out_dir=opts.out_dir, timing_rounds=opts.timing_rounds, groups=data.groups)
    # how the bundle's thresholds were chosen (None: a bundle from before the record)
    report["threshold_selection"] = (
        getattr(model, "metadata", {}).get("calibration", {}).get("threshold_selection"))
    report["split"] = opts.split
    report["documents"] = len(data.docs)
    report["device"] = opts.device
    report["ocr_free"] = ocr_free_figures(model, data)
    if opts.scan_copies:
        report["scan_copies"] = scan_copy_figures(model, data.docs, data.pages, data.loading,
                                                  opts.batch_size)
    return report


def ocr_free_figures(model: EarlyExitModel, data: LabelledPages) -> dict[str, Any]:
    """The OCR-free exit on the evaluated pages that needed OCR: how many it answers without
    OCR, and the accuracy of a pipeline that answers those from the raster and the rest at full
    depth with their OCR words, next to full depth with OCR on every one."""
    from classifier.textless import ocr_free_logits
    from classifier.training import all_logits

    rows = torch.tensor([i for i, p in enumerate(data.pages) if p.text_source == "ocr"],
                        dtype=torch.long)
    if not len(rows):
        return {"pages": 0}
    sub = {k: v.index_select(0, rows) for k, v in data.inputs.items()}
    labels = data.labels.index_select(0, rows)
    spec = model.ocr_free or {}
    conf, pred = torch.softmax(
        ocr_free_logits(model, sub) / float(spec.get("temperature", 1.0)), -1).max(-1)
    full = all_logits(model, sub)[:, -1].argmax(-1)
    exits = conf >= float(spec.get("threshold", float("inf")))
    answered = torch.where(exits, pred, full)

    def share(mask: torch.Tensor) -> float:
        return float(mask.double().mean())

    return {"pages": len(rows), "exit": spec or None, "ocr_avoided_share": share(exits),
            "ocr_free_pass_accuracy": share(pred == labels),
            "accuracy_with_ocr_free_exit": share(answered == labels),
            "full_depth_accuracy_with_ocr": share(full == labels),
            "disagreement_with_full_depth": share(exits & (pred != full))}


def scan_copy_figures(model: EarlyExitModel, docs: list[DocumentEntry], pages: list[Page],
                      loading: PageLoading, batch_size: int) -> dict[str, Any]:
    """Accuracy on simulated scans of the born-digital PDFs among `docs` next to the same
    documents as they are: how much the model leans on how a document arrived."""
    copies = scan_copies(docs, pages, 1.0, seed=0)
    if not copies:
        return {"documents": 0, "note": "no born-digital PDF among the documents evaluated"}
    keys = {c.original_key for c in copies}
    originals = [p for p in pages if p.doc_key in keys]
    scanned = load_split_pages(copies, loading)
    label_of = {d.key: d.label for d in [*docs, *copies]}

    def score(subset: list[Page]) -> dict[str, Any]:
        labels = torch.tensor([model.label_names.index(label_of[p.doc_key]) for p in subset])
        inputs = encode_pages(model, subset, False)
        got = evaluate(model, inputs, labels, batch_size=batch_size, timing_rounds=0)
        return {"pages": len(subset), "full_depth_accuracy": got["full_depth"]["accuracy"],
                "early_exit_accuracy": got["early_exit"]["accuracy"]}

    figures = {"documents": len(copies), "originals": score(originals),
               "scanned": score(scanned) if scanned else None}
    if figures["scanned"]:
        figures["full_depth_gap_points"] = 100 * (figures["originals"]["full_depth_accuracy"]
                                                  - figures["scanned"]["full_depth_accuracy"])
    return figures
