"""How fast are pages ingested, and how many realdocs pages need OCR?

    nice -n 10 python -m bench.ingest [--realdocs DIR] [--ocr-per-source 2] [--out FILE]

Prints JSON and writes bench/results/ingest.json (or --out):
- text_layer: per-page time (render at 100 dpi + words + reading order + the OCR decision) over
  every realdocs page decided `text_layer` in auto mode; median ms and pages/s.
- ocr: per-page time over a sample of pages decided `ocr` (the first page of the first
  `--ocr-per-source` documents of each source that has such pages), OCR at 200 dpi included.
- ocr_share: pages decided `ocr` in auto mode / all pages (decided without OCRing: plan_pages).
- renderers / text_extractors: the measurements behind choosing pypdfium2 (a few PDFs).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench import harness
from pipelines.pages import IngestOptions, iter_pages, plan_pages


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def p90(xs: list[float]) -> float | None:
    return round(statistics.quantiles(xs, n=10)[-1], 1) if len(xs) > 1 else None


def pps(ms: float | None) -> float | None:
    return round(1000 / ms, 2) if ms else None


def plan_all(rows: list[dict[str, str]], root: Path, opts: IngestOptions) -> list[dict]:
    out = []
    for row in tqdm(rows, desc="decide (no OCR)", unit="doc", file=sys.stderr, disable=None):
        for page in plan_pages(root / row["path"], options=opts):
            out.append(
                {
                    "path": row["path"],
                    "source": row["source"],
                    "page": page.number,
                    "text_source": page.text_source,
                    "reason": page.reason,
                    "coverage": page.coverage,
                    "ms": page.ms,
                    "words": len(page.words),
                }
            )
    return out


def ocr_sample(planned: list[dict], root: Path, opts: IngestOptions, per_source: int) -> list[dict]:
    firsts: dict[str, list[str]] = collections.defaultdict(list)
    for p in planned:
        if p["page"] == 1 and p["text_source"] == "ocr" and len(firsts[p["source"]]) < per_source:
            firsts[p["source"]].append(p["path"])
    picks = [path for paths in firsts.values() for path in paths]
    out = []
    for path in tqdm(picks, desc="OCR sample", unit="page", file=sys.stderr, disable=None):
        page = next(iter_pages(root / path, options=opts))
        out.append({"path": path, "ms": page.ms, "words": len(page.words), "conf": page.ocr_conf})
    return out


def compare_renderers(pdfs: list[Path]) -> dict:
    """pypdfium2 vs pdf2image (poppler) at 100 dpi; our text layer vs pdftotext vs pdfplumber
    (pdfplumber is no dependency of the project: left out where it is not installed)."""
    import pypdfium2 as pdfium
    from pdf2image import convert_from_path

    from pipelines.textlayer import extract_words

    try:
        import pdfplumber
    except ImportError:
        pdfplumber = None
    t: dict[str, list[float]] = collections.defaultdict(list)
    for path in pdfs:
        doc = pdfium.PdfDocument(str(path))
        with (pdfplumber.open(str(path)) if pdfplumber else contextlib.nullcontext()) as plumber:
            for i in range(min(2, len(doc))):
                page = doc[i]
                s = time.perf_counter()
                page.render(scale=100 / 72).to_pil().convert("RGB")
                t["render_pypdfium2"].append((time.perf_counter() - s) * 1000)
                s = time.perf_counter()
                convert_from_path(str(path), dpi=100, first_page=i + 1, last_page=i + 1)
                t["render_pdf2image"].append((time.perf_counter() - s) * 1000)
                s = time.perf_counter()
                extract_words(page)
                t["text_pypdfium2_ours"].append((time.perf_counter() - s) * 1000)
                s = time.perf_counter()
                subprocess.run(
                    ["pdftotext", "-bbox", "-f", str(i + 1), "-l", str(i + 1), str(path), "-"],
                    capture_output=True,
                    check=False,
                )
                t["text_pdftotext_bbox"].append((time.perf_counter() - s) * 1000)
                if plumber is not None:
                    s = time.perf_counter()
                    plumber.pages[i].extract_words()
                    t["text_pdfplumber"].append((time.perf_counter() - s) * 1000)
                page.close()
        doc.close()
    return {k: {"median_ms": median(v), "n": len(v)} for k, v in t.items()}


def main() -> int:
    ap = harness.parser(__doc__, "ingest", harness.Common(threads=False))
    default_root = os.environ.get(
        "DOCTRIAGE_REALDOCS", str(harness.REPO.parent / "shared" / "datasets" / "realdocs")
    )
    ap.add_argument("--realdocs", type=Path, default=Path(default_root),
                    help="a realdocs-style folder (manifest.csv with path, source)")
    ap.add_argument("--ocr-per-source", type=int, default=2)
    args = ap.parse_args()
    if not (args.realdocs / "manifest.csv").exists():
        raise harness.BadInput(f"{args.realdocs}: no manifest.csv (set --realdocs or "
                               "DOCTRIAGE_REALDOCS)")
    run = harness.start(args, malloc=False)
    with open(args.realdocs / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    opts = IngestOptions()
    started = time.time()
    planned = plan_all(rows, args.realdocs, opts)
    sample = ocr_sample(planned, args.realdocs, opts, args.ocr_per_source)
    pdfs = [args.realdocs / r["path"] for r in rows if r["path"].endswith(".pdf")][::40]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs (loaded)",
        "options": {
            "dpi": opts.dpi,
            "ocr_dpi": opts.ocr_dpi,
            "min_text_coverage": opts.min_text_coverage,
        },
        "documents": len(rows),
        "pages": len(planned),
        "text_layer": text_layer_figures(planned),
        "ocr": ocr_figures(sample, args.ocr_per_source),
        "ocr_share": ocr_share(planned),
        "renderers_and_text_extractors": compare_renderers(pdfs),
        "seconds": round(time.time() - started, 1),
    }
    harness.write_result(result, args.out, run)
    return 0


def text_layer_figures(planned: list[dict]) -> dict:
    text_ms = [p["ms"] for p in planned if p["text_source"] == "text_layer"]
    return {
        "pages": len(text_ms),
        "median_ms": median(text_ms),
        "p90_ms": p90(text_ms),
        "pages_per_s": pps(median(text_ms)),
    }


def ocr_figures(sample: list[dict], per_source: int) -> dict:
    ocr_ms = [s["ms"] for s in sample]
    return {
        "sampled_pages": len(sample),
        "sample": f"first page of the first {per_source} documents per source with OCR pages",
        "median_ms": median(ocr_ms),
        "pages_per_s": pps(median(ocr_ms)),
        "median_words": median([s["words"] for s in sample]),
        "pages": sample,
    }


def ocr_share(planned: list[dict]) -> dict:
    """How many pages need OCR, per source, and why."""
    ocr_pages = [p for p in planned if p["text_source"] == "ocr"]
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for p in planned:
        by_source[p["source"]][p["text_source"]] += 1
    return {
        "pages_needing_ocr": len(ocr_pages),
        "share": round(len(ocr_pages) / len(planned), 4),
        "by_source": {s: dict(c) for s, c in sorted(by_source.items())},
        "reasons": dict(collections.Counter(p["reason"] for p in planned)),
    }


if __name__ == "__main__":
    harness.run_main(main)
