"""End to end: the embedded runner vs the pipeline a user would write by hand, same documents.

- embedded: `workers.embedded.run_embedded` (what `doctriage run` calls) with a fresh SQLite store
  and artifact folder under a temp DOCTRIAGE_HOME: pypdfium2 raster at 100 dpi, the PDF text layer
  where it covers the page and tesseract only where it does not, the stage batcher with early
  exit, full-depth re-routing of low-confidence pages, everything stored.
- naive: pdf2image.convert_from_path (200 dpi, its default) -> pytesseract.image_to_data on EVERY
  page -> the same model at full depth (`full_forward_logits`), one page at a time; nothing
  stored.

Documents: a stratified subset of DATA (a realdocs-style folder with manifest.csv): --per-class
documents of each label, round-robin over the label's sources, in sha256 order (deterministic),
at most --max-pages pages each. Both variants see the same files and the same loaded model.

The embedded run's time is split into rasterising, text layer, text-source decision, OCR,
classification (encode + batcher) and storage (store transactions + page artifacts) by sampling
its stack (bench/sampler.py: nothing it runs is wrapped or replaced); pages and their ingest
time by text source come through the step context's page source (`StepContext.iter_pages`).

    python -m bench.pipeline [DATA] [--model DIR] [--per-class 2] [--max-pages 4]
        [--limit-docs N] [--device cuda] [--threads N] [--out FILE]

Prints JSON and writes bench/results/pipeline.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import harness
from bench.cpu_time import CpuClock
from bench.sampler import PartSampler

DEFAULT_DATA = Path(os.environ.get("DOCTRIAGE_REALDOCS",
                                   harness.REPO.parent / "shared/datasets/realdocs"))


class Timers:
    """Accumulated seconds per named part of the naive run (a script of our own: timed inline)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


def pick_documents(data: Path, per_class: int, max_pages: int, limit: int | None) -> list[dict]:
    """Stratified by document: per label, round-robin over its sources, sha256 order."""
    manifest = data / "manifest.csv"
    if not manifest.exists():
        raise harness.BadInput(f"{data}: no manifest.csv (expected a realdocs-style folder)")
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["pages"]) <= max_pages]
    by_label: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(rows, key=lambda r: r["sha256"]):
        by_label[r["label"]][r.get("source", "")].append(r)
    picked: list[dict] = []
    for label in sorted(by_label):
        sources = [by_label[label][s] for s in sorted(by_label[label])]
        taken = 0
        while taken < per_class and any(sources):
            for rows_of_source in sources:
                if rows_of_source and taken < per_class:
                    picked.append(rows_of_source.pop(0))
                    taken += 1
    # Interleave labels (first of each label, then second, ...) so --limit-docs mixes classes.
    rank: Counter[str] = Counter()
    keyed = []
    for r in picked:
        keyed.append((rank[r["label"]], r["label"], r))
        rank[r["label"]] += 1
    picked = [r for _, _, r in sorted(keyed, key=lambda k: (k[0], k[1]))]
    return picked[:limit] if limit else picked


# -- embedded --------------------------------------------------------------------------------


def split_rules(artifacts: Any) -> dict[str, list[Any]]:
    """The parts of the embedded run and the code that makes each up: the functions the steps
    call, the store's client (db/ and SQLAlchemy) and the artifact store in use."""
    import sqlalchemy

    import db
    from classifier.predict import ClassifyRuntime
    from pipelines import artifacts as art
    from pipelines import coverage, images, ocr, pdf, reading_order, textlayer

    store = type(artifacts)
    return {
        "rasterise": [pdf.render, images.vision_raster, images.ocr_raster],
        "text_layer": [textlayer.extract_words, pdf.image_area, reading_order.sort_reading_order],
        "text_source_decision": [coverage.decide],
        "ocr": [ocr.ocr_image],
        "classification": [ClassifyRuntime.classify],
        "storage": [art.encode_page, art.decode_page, store.put, store.get,
                    Path(db.__file__).parent, Path(sqlalchemy.__file__).parent],
    }


def run_embedded_timed(paths: list[Path], model: Any, device: str, home: Path,
                       sample_s: float) -> dict:
    """The real embedded path, its time split by sampling, its pages counted as they come."""
    os.environ["DOCTRIAGE_HOME"] = str(home)
    from classifier.predict import ClassifyRuntime
    from doctriage import wiring
    from doctriage.settings import Settings
    from pipelines.pages import iter_pages
    from pipelines.sources import LocalSource
    from workers.embedded import run_embedded

    settings = Settings(home=home, device=device, database_url=None, artifact_url=None)
    page_ms: dict[str, list[float]] = defaultdict(list)

    def page_source(stream: Any, *, name: str, options: Any) -> Iterator[Any]:
        for page in iter_pages(stream, name=name, options=options):
            page_ms[page.text_source].append(page.ms)
            yield page

    ctx = dataclasses.replace(wiring.step_context(settings), iter_pages=page_source)
    runtime = ClassifyRuntime(model, wiring.batcher_options(settings))
    warm_up_runtime(runtime)
    source = LocalSource(paths)
    documents = list(source)  # sha256 of each file: part of registering, outside the clock
    with CpuClock() as cpu, PartSampler(split_rules(ctx.artifacts), sample_s) as sampler:
        summary = run_embedded(ctx, runtime, documents)
    wall = summary.seconds
    parts = {k: round(sampler.seconds.get(k, 0.0), 3)
             for k in sorted(split_rules(ctx.artifacts))}
    parts["other"] = round(max(0.0, wall - sum(sampler.seconds.values())), 3)
    n = summary.pages
    labels = final_labels(ctx, model.version)
    return {
        "pages": n,
        "documents_by_state": summary.documents_by_state,
        "failed_documents": summary.failed_documents,
        "wall_s": wall,
        "pages_per_s": round(n / wall, 3) if wall else 0.0,
        "cpu_s": cpu.cpu_s(),
        "split_s": parts,
        "split_share": {k: round(v / wall, 3) for k, v in parts.items()} if wall else {},
        "split_how": f"stack samples every {sample_s * 1000:g} ms ({sampler.samples} taken)",
        "pages_by_text_source": {k: len(v) for k, v in sorted(page_ms.items())},
        "ingest_ms_per_page_by_text_source": {
            k: round(sum(v) / len(v), 1) for k, v in sorted(page_ms.items())
        },
        "exit_stage_histogram": summary.exit_stage_histogram,
        "pages_rerouted_full_depth": summary.pages_rerouted,
        "batcher": summary.batcher,
        "_labels": labels,
    }


def warm_up_runtime(runtime: Any) -> None:
    """One page through both batchers so first-call costs are not timed."""
    from PIL import Image

    from classifier.inputs import PageInput

    page = PageInput(words=["warm", "up"], boxes=[(10, 10, 100, 30), (110, 10, 200, 30)],
                     image=Image.new("RGB", (850, 1100), "white"))
    runtime.classify([page], early_exit=True)
    runtime.classify([page], early_exit=False)


def final_labels(ctx: Any, version: str) -> dict[tuple[str, int], str]:
    return {k: label for k, (label, _) in final_answers(ctx, version).items()}


def final_answers(ctx: Any, version: str) -> dict[tuple[str, int], tuple[str, str]]:
    """(file name, page number) -> (final label, the page's text source): the full pass's
    label where one ran."""
    from sqlalchemy import select

    from db.models import Document, Page, Prediction
    from db.session import session_scope
    from pipelines.sources import uri_to_path

    out: dict[tuple[str, int], tuple[str, str, str]] = {}
    with session_scope(ctx.sessions) as s:
        rows = s.execute(
            select(Document.source_uri, Page.number, Page.text_source, Prediction.pass_name,
                   Prediction.label)
            .join(Page, Page.document_id == Document.id)
            .join(Prediction, Prediction.page_id == Page.id)
            .where(Prediction.model_version == version)
        ).all()
    for uri, number, source, pass_name, label in rows:
        key = (uri_to_path(uri).name, int(number))
        if key not in out or pass_name == "full":
            out[key] = (pass_name, label, source)
    return {k: (v[1], v[2]) for k, v in out.items()}


# -- naive baseline --------------------------------------------------------------------------


def run_naive(paths: list[Path], model: Any) -> dict:
    t = Timers()
    labels: dict[tuple[str, int], str] = {}
    failed: list[str] = []
    with CpuClock() as cpu:
        pages = naive_pass(paths, model, t, labels, failed)
    wall = cpu.wall_s
    parts = {k: round(v, 3) for k, v in sorted(t.seconds.items())}
    parts["other"] = round(max(0.0, wall - sum(t.seconds.values())), 3)
    return {
        "pages": pages,
        "failed_documents": failed,
        "wall_s": round(wall, 3),
        "pages_per_s": round(pages / wall, 3) if wall else 0.0,
        "cpu_s": cpu.cpu_s(),
        "split_s": parts,
        "_labels": labels,
    }


def naive_pass(paths: list[Path], model: Any, t: Timers, labels: dict[tuple[str, int], str],
               failed: list[str]) -> int:
    """What a user's script would do, page by page; answers into `labels`; returns the pages
    classified."""
    import pytesseract
    import torch
    from pdf2image import convert_from_path
    from PIL import Image

    from classifier.inputs import PageInput

    pages = 0
    for path in paths:
        try:
            with t.span("rasterise"):
                if path.suffix.lower() == ".pdf":
                    rasters = convert_from_path(str(path))  # 200 dpi, every page at once
                else:
                    with Image.open(path) as im:
                        rasters = [im.convert("RGB")]
        except Exception as exc:  # what the user's script would do: skip the file, go on
            failed.append(f"{path.name}: {exc}")
            continue
        for number, image in enumerate(rasters, start=1):
            with t.span("ocr"):
                data = pytesseract.image_to_data(image, output_type=pytesseract.Output.DICT)
            words, boxes = [], []
            w, h = image.size
            for i, text in enumerate(data["text"]):
                if text.strip():
                    x, y, bw, bh = (data[k][i] for k in ("left", "top", "width", "height"))
                    words.append(text)
                    boxes.append((int(1000 * x / w), int(1000 * y / h),
                                  int(1000 * (x + bw) / w), int(1000 * (y + bh) / h)))
            with t.span("classification"), torch.inference_mode():
                logits = model.full_forward_logits(model.encode([PageInput(words, boxes, image)]))
                labels[(path.name, number)] = model.label_names[int(logits.argmax(-1)[0])]
            pages += 1
    return pages


def projection(emb: dict, naive: dict) -> dict | None:
    """Per-page costs measured here, re-weighted to the whole realdocs mix's OCR share as
    measured by bench/ingest.py (bench/results/ingest.json). An estimate, labelled as such."""
    ingest = harness.RESULTS / "ingest.json"
    if not ingest.exists() or not emb["pages"] or not naive["pages"]:
        return None
    full = json.loads(ingest.read_text())
    total, text_pages = full.get("pages"), full.get("text_layer", {}).get("pages")
    ms = emb["ingest_ms_per_page_by_text_source"]
    if not total or text_pages is None or "ocr" not in ms or "text_layer" not in ms:
        return None
    ocr_share = 1 - text_pages / total
    split = emb["split_s"]
    rest = (split.get("classification", 0) + split.get("storage", 0) + split.get("other", 0))
    per_page = (ms["text_layer"] * (1 - ocr_share) + ms["ocr"] * ocr_share) / 1000 \
        + rest / emb["pages"]
    naive_per_page = naive["wall_s"] / naive["pages"]
    return {
        "ocr_share_full_realdocs": round(ocr_share, 3),
        "embedded_pages_per_s": round(1 / per_page, 3),
        "naive_pages_per_s": round(1 / naive_per_page, 3),
        "ratio": round(naive_per_page / per_page, 2),
        "how": "embedded: this run's ingest ms per page by text source re-weighted to the OCR "
               "share of all realdocs pages (bench/results/ingest.json) + this run's "
               "classification/storage/other per page; naive: this run's s per page (it OCRs "
               "every page, so its cost barely depends on the mix)",
    }


def arguments() -> argparse.ArgumentParser:
    ap = harness.parser(__doc__, "pipeline", harness.Common(device=True, model="option"))
    ap.add_argument("data", type=Path, nargs="?", default=DEFAULT_DATA)
    ap.add_argument("--per-class", type=int, default=2, help="documents per label")
    ap.add_argument("--max-pages", type=int, default=4, help="skip longer documents")
    ap.add_argument("--limit-docs", type=int, default=None)
    ap.add_argument("--naive-ocr-threads", default="1",
                    help="OMP_THREAD_LIMIT for the naive run's tesseract ('' = tesseract's "
                         "default). 1 by default, as the embedded run uses: on a loaded "
                         "machine tesseract's threads are slower, so this favours the baseline")
    # 5 ms: no CPU cost to see (1 ms cost ~3% of a core), and thousands of samples in a run of
    # realdocs; the shares agree with the old wrapped timers' within half a point.
    ap.add_argument("--sample-ms", type=float, default=5.0,
                    help="how often the embedded run's stack is sampled for its time split "
                         "(a tiny run wants less, e.g. 0.5)")
    return ap


def main() -> int:
    args = arguments().parse_args()
    if not args.data.is_dir():
        raise harness.BadInput(f"{args.data}: no such folder")
    model_dir = harness.resolve_model(args.model)
    picked = pick_documents(args.data, args.per_class, args.max_pages, args.limit_docs)
    if not picked:
        raise harness.BadInput("no documents picked")
    run = harness.start(args)
    from classifier.bundle import BundleError, load_bundle

    try:
        model = load_bundle(model_dir, args.device)
    except BundleError as exc:
        raise harness.BadInput(str(exc)) from None
    paths = [args.data / r["path"] for r in picked]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        emb = run_embedded_timed(paths, model, args.device, Path(tmp) / "home",
                                 args.sample_ms / 1000)
    naive = naive_with_ocr_threads(paths, model, args.naive_ocr_threads)
    result = {
        "data": str(args.data),
        "model": str(model_dir),
        "model_version": model.version,
        "device": args.device,
        "threads": run.conditions()["torch_threads"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.node()}",
        "malloc": run.malloc,
        **selection(args, picked),
        **comparison(emb, naive),
        "seconds": round(time.time() - started, 1),
        "note": "wall-clock figures; cpu_s (this process + tesseract children) is the steadier "
                "figure when the machine is shared",
    }
    harness.write_result(result, args.out, run)
    return 0


def selection(args: argparse.Namespace, picked: list[dict[str, str]]) -> dict[str, Any]:
    """Which documents ran, and how they were picked."""
    return {
        "documents": len(picked),
        "documents_by_label": dict(sorted(Counter(r["label"] for r in picked).items())),
        "documents_by_source": dict(sorted(Counter(r.get("source", "")
                                                   for r in picked).items())),
        "selection": f"{args.per_class} per label, round-robin over sources, sha256 order, "
                     f"<= {args.max_pages} pages"
                     + (f", first {args.limit_docs}" if args.limit_docs else ""),
    }


def comparison(emb: dict, naive: dict) -> dict[str, Any]:
    """Both runs, their speed ratio, whether they gave the same labels, and the projection to
    the whole realdocs mix."""
    emb_labels, naive_labels = emb.pop("_labels"), naive.pop("_labels")
    common = set(emb_labels) & set(naive_labels)
    agree = sum(emb_labels[k] == naive_labels[k] for k in common)
    return {
        "embedded": emb,
        "naive": naive,
        "ratio_pages_per_s": round(emb["pages_per_s"] / naive["pages_per_s"], 2)
        if naive["pages_per_s"] else None,
        "goal_ratio": 3.0,
        "label_agreement": {"pages": len(common),
                            "same_label": round(agree / len(common), 3) if common else None},
        "projection_full_realdocs_mix": projection(emb, naive),
    }


def naive_with_ocr_threads(paths: list[Path], model: Any, ocr_threads: str) -> dict:
    """The naive run with tesseract's OpenMP threads set (the environment restored after)."""
    saved_limit = os.environ.pop("OMP_THREAD_LIMIT", None)
    if ocr_threads:
        os.environ["OMP_THREAD_LIMIT"] = ocr_threads
    try:
        naive = run_naive(paths, model)
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)
        if saved_limit is not None:
            os.environ["OMP_THREAD_LIMIT"] = saved_limit
    naive["ocr_threads"] = ocr_threads or "tesseract default"
    return naive


if __name__ == "__main__":
    harness.run_main(main)
