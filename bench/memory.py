"""Peak memory: one long document through the embedded runner, and a large backlog held in the
stage batcher. Each scenario runs in its own subprocess so their peaks never mix.

- ingest: a generated --pages page PDF (reportlab, text layer, a few drawn shapes) through
  `workers.embedded.run_embedded` with a fresh SQLite store under a temp DOCTRIAGE_HOME: ingest
  (pages stream into artifacts), early-exit classification, full-depth re-routing, storage.
  Goal: peak RSS < 1.5 GB.
- backlog: --backlog encoded pages (what `StageBatcher.submit` takes: one encoded-input dict per
  page) submitted to an early-exit stage batcher at once, then `drain()`; RSS after submitting
  (the backlog held) and the peak while draining, the size of one page's encoded inputs and of
  its hidden state between exits (`StageState`), and the most pages ever parked with a state.
  With the bundle's policy most pages may leave at the first exits, so a second run,
  backlog_never_exit (--walk-backlog pages), keeps every page to the final stage: the worst
  case for parked hidden states.

Peak RSS is sampled every 10 ms by a thread (psutil; tesseract children included separately)
and cross-checked with getrusage's ru_maxrss.

    python -m bench.memory [--pages 500] [--backlog 5000] [--model DIR]
        [--walk-backlog 1000] [--device cuda] [--threads N] [--seed 0]
        [--only ingest|backlog|backlog_never_exit] [--out FILE]

Prints JSON and writes bench/results/memory.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness

GOAL_INGEST_BYTES = 1.5e9
MIB = 1024 * 1024


class PeakSampler:
    """Samples this process's RSS (and its children's, e.g. tesseract) in a daemon thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.proc.memory_info().rss
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            kids = 0
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # gone between listing and reading
                    kids += child.memory_info().rss
            self.peak_children = max(self.peak_children, kids)
            self._stop.wait(self.interval_s)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

# How to read the result (written into it).
NOTE = ("each scenario in its own process; RSS sampled every 10 ms (psutil) and "
        "ru_maxrss; the backlog's pages are copies of --distinct encoded pages")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def nbytes(t: Any) -> int:
    """Bytes of a tensor's own elements (a row view would report its whole batch's storage)."""
    return 0 if t is None else t.numel() * t.element_size()


def mib(n: float) -> float:
    return round(n / MIB, 1)


# -- documents -------------------------------------------------------------------------------


def make_pdf(path: Path, pages: int, seed: int = 0) -> Path:
    """A text-layer PDF: a heading, ~40 lines of varied words and a table-like grid per page."""
    import random

    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    vocab = ["invoice", "total", "amount", "due", "agreement", "party", "confidential",
             "receipt", "date", "signature", "experience", "education", "skills", "abstract",
             "results", "method", "table", "figure", "budget", "memo", "report",
             "specification", "questionnaire", "news", "letter", "email", "form"]
    c = canvas.Canvas(str(path), pagesize=letter)
    h = letter[1]
    for n in range(1, pages + 1):
        c.setFont("Helvetica-Bold", 16)
        c.drawString(72, h - 72, f"Document section {n}: {rng.choice(vocab).title()}")
        c.setFont("Helvetica", 10)
        y = h - 100
        for _ in range(40):
            c.drawString(72, y, " ".join(rng.choice(vocab) for _ in range(rng.randint(6, 12))))
            y -= 14
        for i in range(4):  # a small grid, so pages are not all text
            c.rect(72 + i * 110, 60, 100, 60)
        c.showPage()
    c.save()
    return path


# -- scenarios (each in its own subprocess) --------------------------------------------------


def scenario_ingest(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(args.home)
    os.environ["DOCTRIAGE_HOME"] = str(home)
    from classifier.bundle import load_bundle
    from classifier.predict import ClassifyRuntime
    from doctriage import wiring
    from doctriage.settings import Settings
    from pipelines.sources import LocalSource
    from workers.embedded import run_embedded

    sampler = PeakSampler()
    with sampler:
        settings = Settings(home=home, device=args.device, database_url=None, artifact_url=None)
        ctx = wiring.step_context(settings)
        runtime = ClassifyRuntime(load_bundle(args.model, args.device),
                                  wiring.batcher_options(settings))
        ready = sampler.rss()
        summary = run_embedded(ctx, runtime, list(LocalSource([Path(args.pdf)])))
    gpu = gpu_peak(args.device)
    return {
        "pages": summary.pages,
        "documents_by_state": summary.documents_by_state,
        "pages_rerouted_full_depth": summary.pages_rerouted,
        "seconds": summary.seconds,
        "pages_per_s": summary.pages_per_s,
        "rss_model_loaded_mib": mib(ready),
        "peak_rss_mib": mib(sampler.peak),
        "peak_rss_children_mib": mib(sampler.peak_children),
        "ru_maxrss_mib": mib(maxrss_bytes()),
        "goal_mib": mib(GOAL_INGEST_BYTES),
        "meets_goal": max(sampler.peak, maxrss_bytes()) + sampler.peak_children
        < GOAL_INGEST_BYTES,
        **gpu,
    }


def scenario_backlog(args: argparse.Namespace) -> dict[str, Any]:
    return backlog_run(args, args.backlog, never_exit=False)


def scenario_backlog_never_exit(args: argparse.Namespace) -> dict[str, Any]:
    """Worst case for parked states: no page exits before the final stage, so every page
    carries its hidden state through every queue."""
    return backlog_run(args, args.walk_backlog, never_exit=True)


def encoded_rows(model: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Distinct real pages (text layer of the generated PDF), encoded once, 16 at a time; only
    these pages' rasters are ever in memory."""
    from classifier.predict import split_rows
    from pipelines.options import IngestOptions
    from pipelines.pages import iter_pages

    pages = iter_pages(args.pdf, options=IngestOptions(ocr_mode="text"))
    distinct = list(itertools.islice(pages, args.distinct))
    pages.close()
    rows: list[dict[str, Any]] = []
    for start in range(0, len(distinct), 16):
        rows.extend(split_rows(model.encode(distinct[start : start + 16])))
    return rows


def parked_state_bytes(model: Any, row: dict[str, Any]) -> tuple[dict[str, int], int]:
    """What one parked page costs, per tensor past the first layer, and in all at stage 0:
    `select` copies its rows out of the batch's tensors. A page past the first layer carries
    the attention bias (the larger state); one parked at stage 0 carries its boxes instead."""
    import torch

    from classifier.state import StageState

    with torch.inference_mode():
        state = model.embed(row)
        past_first = model.advance(state)[1]
    state_bytes = {name: nbytes(getattr(past_first, name)) for name in StageState._TENSORS}
    stage0_bytes = sum(nbytes(getattr(state, name)) for name in StageState._TENSORS)
    return state_bytes, stage0_bytes


def backlog_run(args: argparse.Namespace, size: int, *, never_exit: bool) -> dict[str, Any]:
    from classifier.bundle import load_bundle
    from classifier.policy import NeverExit
    from classifier.predict import make_decider, model_policy
    from classifier.stage_batcher import StageBatcher

    sampler = PeakSampler()
    with sampler:
        model = load_bundle(args.model, args.device)
        # The backlog holds copies of the distinct pages' rows (real memory: `clone`), as a
        # backlog of similar pages would.
        rows = encoded_rows(model, args)
        ready = sampler.rss()
        backlog = [{k: v.clone() for k, v in rows[i % len(rows)].items()}
                   for i in range(size)]
        input_bytes = sum(nbytes(v) for v in backlog[0].values())
        policy = NeverExit(model.num_stages) if never_exit else model_policy(model)
        batcher = StageBatcher(model, make_decider(model, policy),
                               max_batch=args.max_batch, early_exit=True)
        futures = batcher.submit(backlog, list(range(len(backlog))))
        del backlog  # the batcher holds the only references now
        held = sampler.rss()
        t0 = time.perf_counter()
        batcher.drain()
        drain_s = time.perf_counter() - t0
        exits = [f.result().exit_stage for f in futures]
        state_bytes, stage0_bytes = parked_state_bytes(model, rows[0])
        after = sampler.rss()
    per_state = sum(state_bytes.values())
    hist: dict[str, int] = {}
    for s in exits:
        hist[str(s)] = hist.get(str(s), 0) + 1
    return {
        "backlog_pages": size,
        "policy": "never exit before the final stage" if never_exit else "the bundle's",
        "distinct_pages": len(rows),
        "max_batch": args.max_batch,
        "schedule": batcher.schedule,
        "drain_s": round(drain_s, 2),
        "pages_per_s": round(size / drain_s, 1) if drain_s else None,
        "exit_stage_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "rss_model_loaded_mib": mib(ready),
        "rss_backlog_held_mib": mib(held),
        "rss_after_drain_mib": mib(after),
        "peak_rss_mib": mib(sampler.peak),
        "ru_maxrss_mib": mib(maxrss_bytes()),
        "encoded_input_kib_per_page": round(input_bytes / 1024, 1),
        "backlog_inputs_mib": mib(input_bytes * size),
        "stage_state_kib_per_page": round(per_state / 1024, 1),
        "stage0_state_kib_per_page": round(stage0_bytes / 1024, 1),
        "stage_state_kib_per_page_by_tensor": {k: round(v / 1024, 1)
                                                for k, v in state_bytes.items()},
        "peak_pages_parked_with_state": batcher.peak_parked,
        "peak_parked_state_mib": mib(batcher.peak_parked * per_state),
        "if_whole_backlog_parked_mib": mib(size * per_state),
        "batcher": batcher.stats_dict(),
        **gpu_peak(args.device),
    }


def gpu_peak(device: str) -> dict[str, float]:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return {"gpu_peak_allocated_mib": mib(torch.cuda.max_memory_allocated())}
    return {}


SCENARIOS = {"ingest": scenario_ingest, "backlog": scenario_backlog,
             "backlog_never_exit": scenario_backlog_never_exit}


def run_child(name: str, args: argparse.Namespace, pdf: Path, home: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.memory", "--child", name, "--pdf", str(pdf),
           "--home", str(home),
           "--model", str(args.model), "--device", args.device,
           "--backlog", str(args.backlog), "--walk-backlog", str(args.walk_backlog),
           "--distinct", str(args.distinct),
           "--max-batch", str(args.max_batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=harness.REPO)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"error: scenario {name} failed: {tail[0]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = harness.parser(__doc__, "memory", harness.Common(device=True, seed=0, model="option"))
    ap.add_argument("--pages", type=int, default=500, help="pages of the generated PDF")
    ap.add_argument("--backlog", type=int, default=5000, help="pages held in the stage batcher")
    ap.add_argument("--walk-backlog", type=int, default=1000,
                    help="pages in the never-exit backlog (every page runs every layer: slow "
                         "on CPU; the parked-state bound does not depend on the backlog size)")
    ap.add_argument("--distinct", type=int, default=64,
                    help="distinct encoded pages the backlog is copied from")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--only", choices=sorted(SCENARIOS), default=None)
    ap.add_argument("--child", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    ap.add_argument("--pdf", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run = harness.start(args)  # as the workers run: freed memory stays in the heap
        print(json.dumps({**SCENARIOS[args.child](args), "malloc": run.malloc}))
        return 0
    if min(args.pages, args.backlog, args.walk_backlog, args.distinct, args.max_batch) < 1:
        raise harness.BadInput("--pages, --backlog, --walk-backlog, --distinct, --max-batch "
                               "must be positive")
    args.model = harness.resolve_model(args.model)
    run = harness.Run(malloc="tuned in each scenario's process")  # torch: only there too
    started = time.time()
    result: dict[str, Any] = {
        "model": str(args.model),
        "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.node()}",
        "pages": args.pages,
        "backlog": args.backlog,
    }
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        pdf = make_pdf(Path(tmp) / f"generated-{args.pages}p.pdf", args.pages, args.seed)
        result["pdf_mib"] = mib(pdf.stat().st_size)
        for name in SCENARIOS:
            if args.only in (None, name):
                result[name] = run_child(name, args, pdf, Path(tmp) / f"home-{name}")
    result["seconds"] = round(time.time() - started, 1)
    harness.write_result(result, args.out, run, note=NOTE)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
