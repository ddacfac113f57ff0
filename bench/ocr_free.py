"""The exit before OCR, end to end: pages per CPU-second and accuracy of three pipelines over the
same held-out documents (issue 19's goals).

- deferred: `run`'s embedded pipeline as shipped (DOCTRIAGE_DEFER_OCR on): ingest reads text
  layers only; a page that needs OCR meets the OCR-free exit first and is OCR'd (in the process
  pool) only when that exit does not answer it; early exit, re-routes and the audit sample on.
- ocr_all_full_depth: the same embedded pipeline with OCR at ingest for every page that needs
  it (DOCTRIAGE_DEFER_OCR=0) and early exit off (every page through every layer; no re-route).
- naive: pdf2image (200 dpi) + tesseract on every page + the model at full depth, one page at
  a time (bench/pipeline.py's baseline).

Documents: the bundle's own held-out split (its metadata's validation or test documents), so
none was trained on; `--per-class` of them per label (sha256 order, at most `--max-pages`
pages each), `--sources` keeps only
those sources (e.g. `rvl-cdip,sroie,funsd`: the scanned ones). CPU seconds are the whole
process tree's (this process, tesseract, the OCR pool behind its forkserver), read with psutil
before and after each run, so OCR done in other processes is counted. Accuracy is against the
manifest's document labels, over every page, and over the pages that needed OCR.

    python -m bench.ocr_free --model DIR [DATA] [--split val] [--per-class 4]
        [--max-pages 4] [--sources a,b] [--variants deferred,ocr_all_full_depth,naive] [--threads 1]
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness
from bench.cpu_time import tree_cpu
from bench.pipeline import DEFAULT_DATA, final_answers, naive_with_ocr_threads

VARIANTS = ("deferred", "ocr_all_full_depth", "naive")


def held_out_rows(args: Any, model: Any, sources: set[str] | None) -> list[dict[str, str]]:
    """Manifest rows of the bundle's held-out documents (`args.split`) of at most
    `args.max_pages` pages, `args.per_class` per label, from `sources` (None: all)."""
    meta = getattr(model, "metadata", {}).get("data_split", {})
    keys = set(meta.get(f"{args.split}_documents") or [])
    if not keys:
        raise harness.BadInput(f"the bundle records no {args.split} documents (train it on DATA)")
    with open(args.data / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["path"] in keys
                and int(r.get("pages") or 1) <= args.max_pages
                and (sources is None or r.get("source", "") in sources)]
    taken: Counter[str] = Counter()
    picked = []
    for r in sorted(rows, key=lambda r: r["sha256"]):
        if taken[r["label"]] < args.per_class:
            picked.append(r)
            taken[r["label"]] += 1
    return picked


def run_embedded_variant(paths: list[Path], model: Any, home: Path, *, deferred: bool) -> dict:
    """One embedded run in a fresh store; its answers and which pages needed OCR."""
    os.environ["DOCTRIAGE_HOME"] = str(home)
    from classifier.policy import NeverExit
    from classifier.predict import ClassifyRuntime
    from doctriage import wiring
    from doctriage.settings import Settings
    from pipelines.sources import LocalSource
    from workers.embedded import run_embedded

    settings = Settings(home=home, device="cpu", database_url=None, artifact_url=None)
    ctx = wiring.step_context(settings)
    ctx = dataclasses.replace(ctx, ingest=dataclasses.replace(ctx.ingest, defer_ocr=deferred))
    runtime = ClassifyRuntime(model, wiring.batcher_options(settings))
    if not deferred:  # the baseline: every page through every layer, nothing re-routed
        runtime.use_policy(NeverExit(model.num_stages), "never-exit")
        ctx = dataclasses.replace(ctx, reroute=dataclasses.replace(
            ctx.reroute, reroute_below=0.0, audit_fraction=0.0))
    documents = list(LocalSource(paths))  # hashing the files: registering, outside the clock
    cpu0, t0 = tree_cpu([os.getpid()]), time.perf_counter()
    summary = run_embedded(ctx, runtime, documents)
    wall, cpu = time.perf_counter() - t0, tree_cpu([os.getpid()]) - cpu0
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "pages": summary.pages,
            "exit_stage_histogram": summary.exit_stage_histogram,
            "pages_rerouted_full_depth": summary.pages_rerouted,
            "_answers": final_answers(ctx, model.version)}


def run_naive_variant(paths: list[Path], model: Any) -> dict:
    """bench/pipeline.py's naive run, tesseract on one thread as the embedded OCR runs."""
    naive = naive_with_ocr_threads(paths, model, "1")
    return {"wall_s": naive["wall_s"], "cpu_s": round(sum(naive["cpu_s"].values()), 2),
            "pages": naive["pages"], "failed_documents": naive["failed_documents"],
            "_answers": {k: (v, "") for k, v in naive["_labels"].items()}}


def scored(result: dict, truth: dict[str, str], needed_ocr: set[tuple[str, int]]) -> dict:
    """The run's accuracy (all pages, pages that needed OCR) and pages per CPU-second."""
    answers = result.pop("_answers")
    right = {k: truth[k[0]] == label for k, (label, _) in answers.items()}
    ocr_keys = [k for k in right if k in needed_ocr]
    sources = Counter(source for _, source in answers.values() if source)
    return {
        **result,
        "pages_per_cpu_s": round(result["pages"] / result["cpu_s"], 3) if result["cpu_s"] else None,
        "accuracy": round(sum(right.values()) / len(right), 4) if right else None,
        "accuracy_pages_needing_ocr": (round(sum(right[k] for k in ocr_keys) / len(ocr_keys), 4)
                                       if ocr_keys else None),
        "pages_by_text_source": dict(sorted(sources.items())),
    }


def arguments() -> Any:
    ap = harness.parser(__doc__, "ocr_free", harness.Common(model="option"))
    ap.add_argument("data", type=Path, nargs="?", default=DEFAULT_DATA)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--per-class", type=int, default=4, help="held-out documents per label")
    ap.add_argument("--max-pages", type=int, default=4, help="skip longer documents")
    ap.add_argument("--sources", default=None, help="only these manifest sources (a,b,...)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    return ap


def main() -> int:
    args = arguments().parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        raise harness.BadInput(f"--variants: choose from {', '.join(VARIANTS)}")
    if not (args.data / "manifest.csv").exists():
        raise harness.BadInput(f"{args.data}: no manifest.csv")
    model_dir = harness.resolve_model(args.model)
    run = harness.start(args)
    from classifier.bundle import load_bundle

    model = load_bundle(model_dir)
    sources = set(args.sources.split(",")) if args.sources else None
    rows = held_out_rows(args, model, sources)
    if not rows:
        raise harness.BadInput("no held-out documents picked")
    paths = [args.data / r["path"] for r in rows]
    truth = {Path(r["path"]).name: r["label"] for r in rows}
    raw: dict[str, dict] = {}
    for name in variants:
        if name == "naive":
            raw[name] = run_naive_variant(paths, model)
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-ocr-free-{name}-") as tmp:
            raw[name] = run_embedded_variant(paths, model, Path(tmp) / "home",
                                             deferred=name == "deferred")
    # Pages that needed OCR: those the deferred run found without a text layer.
    needed = {k for r in raw.values() for k, (_, src) in r["_answers"].items()
              if src in ("ocr", "ocr_avoided", "awaiting_ocr")}
    results = {name: scored(r, truth, needed) for name, r in raw.items()}
    result = {
        "model": str(model_dir), "model_version": model.version,
        "ocr_free_exit": getattr(model, "ocr_free", None),
        "documents": len(rows), "split": args.split, "sources": sorted(sources or []),
        "documents_by_label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "pages_needing_ocr": len(needed),
        **results,
        "ratios": ratios(results),
    }
    harness.write_result(result, args.out, run, note=(
        "cpu_s: the whole process tree's user+system seconds (OCR pool and tesseract "
        "included); ratios are pages per CPU-second of deferred over each baseline"))
    return 0


def ratios(results: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mine = results.get("deferred")
    for base in ("ocr_all_full_depth", "naive"):
        other = results.get(base)
        if mine and other and other.get("pages_per_cpu_s") and mine.get("pages_per_cpu_s"):
            out[f"deferred_over_{base}"] = {
                "pages_per_cpu_s": round(mine["pages_per_cpu_s"] / other["pages_per_cpu_s"], 2),
                "accuracy_points": round(100 * (mine["accuracy"] - other["accuracy"]), 2),
            }
    return out


if __name__ == "__main__":
    harness.run_main(main)
