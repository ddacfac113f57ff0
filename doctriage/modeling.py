"""Train and evaluate model bundles from a DATA folder: the glue between pipelines.dataset (pages,
split, cache) and classifier (model, training, calibration, evaluation). Used by
`doctriage train`, `doctriage evaluate`, the default bundle builder and bench/early_exit.py."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LayoutLMv3Config

from classifier.bundle import from_checkpoint, load_bundle, save_bundle
from classifier.calibrate import calibrate_model
from classifier.config import NAMED_SIZES, exit_layers_for
from classifier.evaluation import evaluate
from classifier.factory import new_model
from classifier.model import EarlyExitModel
from classifier.tokenizer import load_tokenizer, train_tokenizer
from classifier.training import TrainOptions, all_logits, set_seed, train
from pipelines.dataset import (
    CachedPage,
    DatasetError,
    DocumentEntry,
    load_pages,
    read_documents,
    split_documents,
)
from pipelines.options import IngestOptions


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_split_pages(
    docs: Sequence[DocumentEntry],
    cache_dir: Path,
    image_size: int,
    ingest: IngestOptions,
    workers: int,
    progress: bool,
    log: Callable[[str], None],
) -> list[CachedPage]:
    # disable=None: tqdm draws only on a terminal, so redirected logs get no '\r' fragments
    bar = tqdm(total=len(docs), desc="pages (ingest/cache)", unit="doc",
               disable=None if progress else True)

    def tick(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    pages, errors = load_pages(docs, cache_dir, image_size, ingest, workers=workers, progress=tick)
    bar.close()
    for err in errors:
        log(f"skipped unreadable document: {err}")
    return pages


def encode_pages(
    model: EarlyExitModel, pages: Sequence[CachedPage], progress: bool, chunk: int = 64
) -> dict[str, torch.Tensor]:
    parts = []
    bar_off = None if progress and pages else True  # None: on a terminal only
    for s in tqdm(range(0, len(pages), chunk), desc="encode", disable=bar_off):
        parts.append(model.encode(pages[s : s + chunk]))
    if not parts:
        raise DatasetError("no pages to encode")
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def train_bundle(
    data_dir: Path,
    out_dir: Path,
    *,
    config: str = "small",
    backbone: Path | None = None,
    placements: str = "every",
    strategy: str = "joint",
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 5e-4,
    max_minutes: float | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    resume: bool = False,
    budget_points: float = 0.5,
    cache_dir: Path | None = None,
    workers: int = 1,
    ingest: IngestOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
    weights_dtype: str = "float32",
    extra_metadata: dict | None = None,
) -> dict:
    """Train, calibrate and save a bundle in `out_dir`; returns the training report.
    `weights_dtype` "float16" or "int8" stores the weights at 1/2 or 1/4 of the size (they load
    back as float32; classifier/weight_storage.py);
    `extra_metadata` is merged into the bundle's metadata (e.g. the default bundle's recipe)."""
    started = time.monotonic()
    ingest = ingest or IngestOptions()
    cache_dir = cache_dir or out_dir / "page-cache"
    if config not in NAMED_SIZES and backbone is None:
        raise DatasetError(f"unknown --config {config!r}; choose from {', '.join(NAMED_SIZES)}")
    if backbone is None:
        exit_layers_for(placements, NAMED_SIZES[config].layers)  # fail before any ingest
    docs = read_documents(data_dir)
    train_docs, val_docs = split_documents(docs, val_fraction, seed)
    labels = sorted({d.label for d in docs})
    label_index = {name: i for i, name in enumerate(labels)}
    checkpoint = out_dir / "checkpoint"
    set_seed(seed)

    if backbone is not None:
        layers = exit_layers_for(
            placements, LayoutLMv3Config.from_pretrained(str(backbone)).num_hidden_layers
        )
        model = from_checkpoint(backbone, labels, layers)
        image_size = model.preprocessing.image_size
    else:
        size = NAMED_SIZES[config]
        image_size = size.image_size
    log(
        f"data: {len(docs)} documents ({len(train_docs)} train, {len(val_docs)} validation), "
        f"{len(labels)} classes"
    )
    t0 = time.monotonic()
    train_pages = load_split_pages(
        train_docs, cache_dir, image_size, ingest, workers, progress, log
    )
    val_pages = load_split_pages(val_docs, cache_dir, image_size, ingest, workers, progress, log)
    ingest_s = time.monotonic() - t0
    if not train_pages:
        raise DatasetError(f"{data_dir}: no readable training pages")

    if backbone is None:
        size = NAMED_SIZES[config]
        if resume and (checkpoint / "tokenizer.json").exists():
            tokenizer = load_tokenizer(checkpoint)
        else:
            tokenizer = train_tokenizer((" ".join(p.words) for p in train_pages), size.vocab_size)
        set_seed(seed)
        model = new_model(config, placements, labels, tokenizer)
    checkpoint.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(str(checkpoint))

    train_inputs = encode_pages(model, train_pages, progress)
    by_key = {d.key: label_index[d.label] for d in docs}
    y_train = torch.tensor([by_key[p.doc_key] for p in train_pages])
    val_inputs = encode_pages(model, val_pages, progress) if val_pages else None
    y_val = torch.tensor([by_key[p.doc_key] for p in val_pages]) if val_pages else None
    log(f"pages: {len(train_pages)} train, {len(val_pages)} validation (ingest {ingest_s:.0f} s)")

    options = TrainOptions(
        strategy=strategy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_minutes=max_minutes,
        seed=seed,
        progress=progress,
    )
    result = train(
        model,
        train_inputs,
        y_train,
        val_inputs,
        y_val,
        options,
        checkpoint_dir=checkpoint,
        resume=resume,
        log=log,
    )

    if val_inputs is not None and y_val is not None:
        calibration = calibrate_model(
            model, all_logits(model, val_inputs, 32), y_val, budget=budget_points / 100
        )
    else:
        calibration = {"note": "no validation pages: temperatures 1, early exit disabled"}
        log("warning: no validation pages; early exit stays disabled (thresholds 1.0)")
    model.metadata = {
        "config": config if backbone is None else f"checkpoint:{backbone.name}",
        "data_split": {
            "seed": seed,
            "val_fraction": val_fraction,
            "val_documents": sorted(d.key for d in val_docs),
            "train_documents": len(train_docs),
        },
        "training": {
            "strategy": strategy,
            "epochs_done": result.epochs_done,
            "stopped_by_max_minutes": result.stopped_early,
            "train_seconds": round(result.seconds, 1),
            "history": result.history,
            "batch_size": batch_size,
            "lr": lr,
            "placements": placements,
        },
        "calibration": calibration,
        **(extra_metadata or {}),
    }
    save_bundle(
        model,
        out_dir,
        name=config if backbone is None else "layoutlmv3",
        weights_dtype=getattr(torch, weights_dtype),
    )
    report = {
        "bundle": str(out_dir),
        "version": model.version,
        "labels": labels,
        "exit_layers": model.exit_layers,
        "train_pages": len(train_pages),
        "val_pages": len(val_pages),
        "ingest_seconds": round(ingest_s, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        **model.metadata,
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    return report


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
    log: Callable[[str], None] = _stderr,
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
