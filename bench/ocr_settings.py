"""Classification-grade OCR: held-out accuracy and OCR cost per page at several OCR resolutions
and tesseract page segmentation modes, on the pages that need OCR.

    python -m bench.ocr_settings MODEL_DIR DATA [--split val] [--dpis 100,150,200]
        [--psms 3,6,11] [--workers 2] [--budget 0.5] [--limit N] [--out FILE]

For every setting, each document of the split that has a page read by OCR (under the default
ingest options) is ingested again with that OCR dpi and mode; its OCR pages are classified by the
model (full depth and the bundle's early-exit policy). `cpu_ms_per_page` is the CPU time to
produce an OCR page in a worker process (render + tesseract, OMP_THREAD_LIMIT=1; this process's
and its children's rusage, so a busy machine does not inflate it as it does the wall-clock
`ms_per_page`): the part of a scanned page's cost these settings move. The reference is the
shipped default (200 dpi, mode 3); `cheapest_within_budget` is the setting with the least CPU
per page whose full-depth accuracy is within --budget points of it.
"""

from __future__ import annotations

import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness
from pipelines.dataset import DocumentEntry, PageCache, model_raster
from pipelines.options import IngestOptions
from pipelines.page_content import Page

REFERENCE = (200, 3)


def main() -> int:
    ap = harness.parser(__doc__, "ocr_settings", harness.Common(model="positional"))
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="val", choices=["all", "val", "train", "test"])
    ap.add_argument("--dpis", default="100,150,200")
    ap.add_argument("--psms", default="3,6,11")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.5, help="points of accuracy")
    ap.add_argument("--limit", type=int, default=None, help="at most this many documents")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".doctriage/cache/pages")
    args = ap.parse_args()
    harness.resolve_model(args.model)
    run = harness.start(args)
    settings = [(int(d), int(p)) for d in args.dpis.split(",") for p in args.psms.split(",")]
    if REFERENCE not in settings:
        raise harness.BadInput(f"the settings must include the reference {REFERENCE}")
    model, docs = _scanned_documents(args)
    rows = [_measure(model, docs, dpi, psm, args.workers) for dpi, psm in settings]
    result = {"model": str(args.model), "model_version": model.version, "data": str(args.data),
              "split": args.split, "documents": len(docs), "settings": rows,
              **_verdict(rows, args.budget)}
    harness.write_result(result, args.out, run, note=(
        "cpu_ms_per_page: CPU time (rusage, self + tesseract children) to produce one OCR page "
        "in a worker process, ms_per_page its wall time; accuracy on the same documents' OCR "
        "pages under each setting"))
    return 0


def _scanned_documents(args: Any) -> tuple[Any, list[DocumentEntry]]:
    """The model, and the split's documents with at least one page read by OCR today."""
    from classifier.bundle import load_bundle
    from doctriage.bundle_evaluation import select_documents
    from pipelines.dataset import read_documents

    model = load_bundle(args.model)
    docs = select_documents(model, read_documents(args.data), args.split)
    cache = PageCache(args.cache_dir, model.preprocessing.image_size, IngestOptions())
    pages, _ = cache.load(docs, workers=args.workers)
    ocr_keys = {p.doc_key for p in pages if p.text_source == "ocr"}
    chosen = [d for d in docs if d.key in ocr_keys]
    return model, chosen[: args.limit] if args.limit else chosen


def _measure(model: Any, docs: list[DocumentEntry], dpi: int, psm: int,
             workers: int) -> dict[str, Any]:
    import torch

    from classifier.predict import predict_pages

    opts = replace(IngestOptions(), ocr_dpi=dpi, ocr_psm=psm)
    size = model.preprocessing.image_size
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(_ocr_pages, docs, [opts] * len(docs), [size] * len(docs)))
    wall = time.monotonic() - started
    pages = [p for doc_pages in read for p, _, _ in doc_pages]
    ms = [m for doc_pages in read for _, m, _ in doc_pages]
    cpu_ms = [c for doc_pages in read for _, _, c in doc_pages]
    label_of = {d.key: d.label for d in docs}
    truth = [label_of[p.doc_key] for p in pages]
    with torch.inference_mode():
        full = predict_pages(model, pages, early_exit=False)
        early = predict_pages(model, pages)
    return {
        "ocr_dpi": dpi, "psm": psm, "pages": len(pages), "wall_s": round(wall, 1),
        "cpu_ms_per_page": round(statistics.mean(cpu_ms), 1) if cpu_ms else None,
        "ms_per_page": round(statistics.mean(ms), 1) if ms else None,
        "ms_per_page_median": round(statistics.median(ms), 1) if ms else None,
        "words_per_page": round(float(np.mean([len(p.words) for p in pages])), 1),
        "full_depth_accuracy": _accuracy(full, truth),
        "early_exit_accuracy": _accuracy(early, truth),
    }


def _ocr_pages(doc: DocumentEntry, opts: IngestOptions,
               size: int) -> list[tuple[Page, float, float]]:
    """The document's OCR pages under `opts` (rasters already at the model's size, so only
    small images cross the process boundary), each with the wall ms and the CPU ms (this
    process + its tesseract children: steady on a busy machine) it took to produce."""
    from pipelines.errors import DocumentError
    from pipelines.pages import iter_pages

    out = []
    cpu = _cpu_s()
    try:
        for page in iter_pages(doc.path, name=doc.key, options=opts):
            now = _cpu_s()
            if page.text_source == "ocr":
                out.append((replace(page, image=model_raster(page.image, size)), page.ms,
                            1000 * (now - cpu)))
            cpu = now
    except DocumentError:
        return []  # not read under this setting (an OCR time-out): left out of its row
    return out


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _accuracy(answers: list[Any], truth: list[str]) -> float:
    return float(np.mean([a.label == t for a, t in zip(answers, truth, strict=True)])) \
        if truth else 0.0


def _verdict(rows: list[dict[str, Any]], budget_points: float) -> dict[str, Any]:
    ref = next(r for r in rows if (r["ocr_dpi"], r["psm"]) == REFERENCE)
    floor = ref["full_depth_accuracy"] - budget_points / 100
    within = [r for r in rows if r["full_depth_accuracy"] >= floor - 1e-12]
    best = min(within, key=lambda r: r["cpu_ms_per_page"] or 0.0)
    return {"reference": {"ocr_dpi": REFERENCE[0], "psm": REFERENCE[1]},
            "budget_points": budget_points,
            "cheapest_within_budget": {"ocr_dpi": best["ocr_dpi"], "psm": best["psm"],
                                       "cpu_ms_per_page": best["cpu_ms_per_page"],
                                       "cpu_saving_vs_reference": round(
                                           ref["cpu_ms_per_page"] / best["cpu_ms_per_page"], 2)
                                       if best["cpu_ms_per_page"] else None}}


if __name__ == "__main__":
    harness.run_main(main)
