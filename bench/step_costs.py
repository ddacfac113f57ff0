"""Where does the distributed path's per-document cost go, before Celery?

bench/queue_overhead.py measures the whole distributed path against `doctriage run`. This script
takes Celery and Redis out: it calls the workflow's steps in one process, the way each path
calls them, on the same documents and model:
- `per_document`: ingest a document, classify its pages, run the full-depth pass over its
  re-routed ones (what the ingest, classify and full_depth tasks do, one document each);
- `chunked`: ingest every document, then classify in chunks of 64 pages and run the full-depth
  pass in chunks of 64 (what the embedded runner does);
each on SQLite and on PostgreSQL. Per page: this process's CPU for ingest and for classify
(the model, the artifacts and the store client), and the PostgreSQL server's. The differences
split queue_overhead's figure into the store's share and the per-document calls' share; what is
left is Celery and Redis (bench/celery_floor.py measures that floor per task).

    python -m bench.step_costs MODEL DATA [--docs 120] [--pick shortest|sample] [--seed 0]
        [--max-doc-pages 3] [--repeat 3] [--pin-cpu] [--device cuda] [--out FILE]

Text layer only (`ocr_mode=text`) and one thread, as in queue_overhead. Prints JSON and writes
bench/results/step_costs.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2

from bench import harness
from bench.cpu_time import named_cpu, self_cpu
from bench.queue_overhead import Pick, pick_documents

CHUNK = 64  # the embedded runner's classify call: max_batch 16 x 4 batches


def run_once(url: str, mode: str, docs: list[Path], model: object) -> dict:
    """Register, ingest and classify `docs` on a fresh store; CPU-ms per page by phase."""
    from classifier.predict import ClassifyRuntime
    from db.repository import register_document
    from db.session import make_engine, migrate, session_factory, session_scope
    from pipelines.artifacts import LocalArtifactStore
    from pipelines.options import IngestOptions
    from pipelines.sources import path_to_uri, sha256_file
    from workers import steps

    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with tempfile.TemporaryDirectory() as art:
        ctx = steps.StepContext(sessions=sessions, artifacts=LocalArtifactStore(art),
                                ingest=IngestOptions(ocr_mode="text"))
        runtime = ClassifyRuntime(model)  # drain mode: the caller's thread runs the batches
        with session_scope(sessions) as s:
            ids = [register_document(s, path_to_uri(p), sha256=sha256_file(p))[0]
                   for p in docs]
        pages_of: list[list[int]] = []
        ingest = timed(engine, lambda: pages_of.extend(steps.ingest_document(ctx, d).page_ids
                                                       for d in ids))
        classify_all = classify_per_document if mode == "per_document" else classify_chunked
        classify = timed(engine, lambda: classify_all(ctx, runtime, pages_of))
    engine.dispose()
    n = sum(len(p) for p in pages_of)
    ms = lambda sec: round(1000 * sec / n, 2)  # noqa: E731
    return {"pages": n, "documents": len(ids),
            "ingest_client": ms(ingest[0]), "ingest_postgres": ms(ingest[1]),
            "classify_client": ms(classify[0]), "classify_postgres": ms(classify[1]),
            "total": ms(ingest[0] + ingest[1] + classify[0] + classify[1])}


def timed(engine: Any, phase: Callable[[], None]) -> tuple[float, float]:
    """(this process's CPU seconds, the PostgreSQL server's) while `phase` runs; SQLite has no
    server to count."""
    def server() -> float:
        return named_cpu("postgres") if engine.dialect.name == "postgresql" else 0.0

    c0, p0 = self_cpu(), server()
    phase()
    return self_cpu() - c0, server() - p0


def classify_per_document(ctx: Any, runtime: Any, pages_of: list[list[int]]) -> None:
    """As the Celery tasks call the steps: one document's pages at a time."""
    from workers import steps

    for page_ids in pages_of:
        rerouted = steps.classify_pages(ctx, runtime, page_ids).rerouted
        if rerouted:
            steps.full_depth_pages(ctx, runtime, rerouted)


def classify_chunked(ctx: Any, runtime: Any, pages_of: list[list[int]]) -> None:
    """As the embedded runner calls them: every page in CHUNK-page calls, then the re-routed."""
    from sqlalchemy import select

    from db.models import Page
    from db.session import session_scope
    from db.states import PageState
    from workers import steps

    flat = [p for page_ids in pages_of for p in page_ids]
    for i in range(0, len(flat), CHUNK):
        steps.classify_pages(ctx, runtime, flat[i : i + CHUNK])
    with session_scope(ctx.sessions) as s:
        q = select(Page.id).where(Page.state == PageState.REROUTED.value)
        rerouted = [int(i) for i in s.execute(q.order_by(Page.id)).scalars()]
    for i in range(0, len(rerouted), CHUNK):
        steps.full_depth_pages(ctx, runtime, rerouted[i : i + CHUNK])


def arguments() -> argparse.ArgumentParser:
    # One torch thread, as in queue_overhead: not a choice here.
    ap = harness.parser(__doc__, "step_costs",
                        harness.Common(threads=False, device=True, seed=0, model="positional"))
    ap.add_argument("data", type=Path)
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--pick", choices=("shortest", "sample"), default="shortest")
    ap.add_argument("--max-doc-pages", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--pin-cpu", action="store_true", help="run on core 0 only")
    return ap


@contextlib.contextmanager
def fresh_store(store: str, pg: str, admin: Any) -> Iterator[str]:
    """The URL of an empty store: a new SQLite file, or a PostgreSQL database dropped after."""
    if store == "sqlite":
        yield f"sqlite:///{tempfile.mkdtemp(prefix='step-costs-db-')}/store.db"
        return
    name = f"bench_sc_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(args: argparse.Namespace, docs: list[Path], model: object) -> dict[str, list[dict]]:
    """Every (mode, store) once per repetition, in turn; runs by "MODE_STORE"."""
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    # Untimed warm-up: the first ingest imports the page pipeline, the first batch warms torch.
    with fresh_store("sqlite", args.pg, admin) as url:
        run_once(url, "chunked", docs[:4], model)
    modes = [(store, mode) for mode in ("chunked", "per_document")
             for store in ("sqlite", "postgres")]
    runs: dict[str, list[dict]] = {f"{m}_{s}": [] for s, m in modes}
    for _ in range(args.repeat):
        for store, mode in modes:
            with fresh_store(store, args.pg, admin) as url:
                runs[f"{mode}_{store}"].append(run_once(url, mode, docs, model))
    return runs


def main() -> int:
    args = arguments().parse_args()
    harness.resolve_model(args.model)
    if args.pin_cpu:
        os.sched_setaffinity(0, {0})
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    run = harness.start(args, malloc=False)  # glibc's malloc, as this bench always measured
    import torch

    from classifier.bundle import load_bundle

    torch.set_num_threads(1)
    model = load_bundle(args.model, args.device)
    folder = Path(tempfile.mkdtemp(prefix="step-costs-"))
    pick_documents(args.data, args.docs, folder, Pick.of(args))
    docs = sorted(folder.iterdir())
    runs = measure(args, docs, model)
    keys = ("ingest_client", "ingest_postgres", "classify_client", "classify_postgres", "total")
    medians = {k: {f: round(statistics.median(r[f] for r in v), 2) for f in keys}
               for k, v in runs.items()}
    base = medians["chunked_sqlite"]["total"]
    report = {
        "documents": len(docs), "pages": runs["chunked_sqlite"][0]["pages"], "pick": args.pick,
        "max_doc_pages": args.max_doc_pages, "repeat": args.repeat, "model": str(args.model),
        "device": args.device,
        "median_cpu_ms_per_page": medians,
        "over_chunked_sqlite": {k: round(v["total"] - base, 2) for k, v in medians.items()},
        "runs": runs,
        "note": ("CPU-ms per page: this process (client) and the PostgreSQL server, steps called "
                 "in-process: per_document = as the Celery tasks call them, chunked = as the "
                 "embedded runner does; no Celery, no Redis"),
    }
    harness.write_result(report, args.out, run)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
