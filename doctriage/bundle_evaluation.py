"""Evaluate a model bundle on a DATA folder (`doctriage evaluate`, the default bundle's demo
accuracy, bench/early_exit.py): the training run's split, the pages, classifier.evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from classifier.bundle import load_bundle
from classifier.evaluation import evaluate
from classifier.model import EarlyExitModel
from doctriage.bundle_data import encode_pages, load_split_pages, stderr_line
from pipelines.dataset import DatasetError, DocumentEntry, read_documents, split_documents
from pipelines.options import IngestOptions


def select_documents(
    model: EarlyExitModel, docs: list[DocumentEntry], split: str
) -> list[DocumentEntry]:
    """`all`, or the training run's `val`/`train` documents (stored in the bundle)."""
    if split == "all":
        return docs
    info = getattr(model, "metadata", {}).get("data_split")
    if not info:
        raise DatasetError("this bundle records no training split; use --split all")
    val_keys = set(info.get("val_documents") or [])
    if not val_keys:
        _, val = split_documents(docs, info["val_fraction"], info["seed"])
        val_keys = {d.key for d in val}
    chosen = [d for d in docs if (d.key in val_keys) == (split == "val")]
    if not chosen:
        raise DatasetError(f"no documents of DATA fall in the training run's {split!r} split")
    return chosen


def evaluate_bundle(
    model_dir: Path,
    data_dir: Path,
    *,
    split: str = "all",
    batch_size: int = 16,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
    device: str = "cpu",
    ingest: IngestOptions | None = None,
    timing_rounds: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = stderr_line,
) -> dict:
    model = load_bundle(model_dir, device=device)
    docs = select_documents(model, read_documents(data_dir), split)
    unknown = sorted({d.label for d in docs} - set(model.label_names))
    if unknown:
        raise DatasetError(f"DATA has labels the model does not know: {', '.join(unknown)}")
    pages = load_split_pages(
        docs,
        cache_dir or model_dir / "page-cache",
        model.preprocessing.image_size,
        ingest or IngestOptions(),
        workers,
        progress,
        log,
    )
    if not pages:
        raise DatasetError(f"{data_dir}: no readable pages")
    inputs = encode_pages(model, pages, progress)
    by_key = {d.key: d.label for d in docs}
    labels = torch.tensor([model.label_names.index(by_key[p.doc_key]) for p in pages])
    report = evaluate(
        model, inputs, labels, batch_size=batch_size, out_dir=out_dir, timing_rounds=timing_rounds
    )
    report["split"] = split
    report["documents"] = len(docs)
    report["device"] = device
    return report
