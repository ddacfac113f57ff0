"""What does the distributed path cost per page over the embedded runner?

Same documents, same model, three runs:
- embedded + SQLite      (`doctriage run`'s default),
- embedded + PostgreSQL  (isolates the store's share),
- distributed: Celery + Redis + PostgreSQL, one ingest worker and one classify worker as
  subprocesses (started and warmed up on one document before the clock starts); timed from
  `submit` to every document final.

    python bench/queue_overhead.py MODEL DATA [--docs 12] [--redis redis://127.0.0.1:6379]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

DATA: a folder (or realdocs-style folder with manifest.csv); born-digital PDFs are picked so
OCR does not dominate. Prints JSON and writes bench/results/queue_overhead.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DOCTRIAGE = str(Path(sys.executable).parent / "doctriage")


def pick_documents(data: Path, n: int, folder: Path) -> list[Path]:
    manifest = data / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["path"].endswith(".pdf")]
        rows.sort(key=lambda r: (int(r["pages"]), r["path"]))
        paths = [data / r["path"] for r in rows if int(r["pages"]) <= 3][:n]
    else:
        paths = sorted(p for p in data.rglob("*.pdf"))[:n]
    for i, p in enumerate(paths):
        (folder / f"{i:03d}-{p.name}").symlink_to(p.resolve())
    return paths


def doc_states(url: str) -> tuple[list[str], int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as c:
        states = [r[0] for r in c.execute(text("select state from documents"))]
        pages = c.execute(text("select count(*) from pages")).scalar_one()
    engine.dispose()
    return states, int(pages)


def wait_final(url: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states, pages = doc_states(url)
        if len(states) >= expected and all(s in ("DONE", "FAILED") for s in states):
            return pages
        time.sleep(0.2)
    raise SystemExit(f"error: distributed run not finished in {timeout}s")


def run_cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([DOCTRIAGE, *args], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def in_process_submitter(env: dict[str, str]):
    """`doctriage submit` without the CLI's start-up: register and enqueue from this process."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("DOCTRIAGE_")})
    sys.path.insert(0, str(ROOT))
    from db.repository import register_document
    from db.session import session_scope
    from doctriage import wiring
    from doctriage.settings import get_settings
    from pipelines.sources import LocalSource
    from workers.tasks import ingest

    get_settings.cache_clear()
    settings = get_settings()
    wiring.configure_celery(settings)
    sessions = wiring.store(settings)

    def submit(folder: Path) -> None:
        ids = []
        with session_scope(sessions) as s:
            for uri, sha in LocalSource([folder]):
                ids.append(register_document(s, uri, sha256=sha)[0])
        for doc_id in ids:
            ingest.delay(doc_id)

    return submit


def embedded(docs: Path, env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    summary = json.loads(run_cli(["run", str(docs), "--json"], env))
    wall = time.perf_counter() - t0
    return {"pages": summary["pages"], "run_s": summary["seconds"], "wall_s": round(wall, 2),
            "pages_per_s": summary["pages_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=14)
    ap.add_argument("--ocr-mode", default="text",
                    help="text (default): no OCR, so the queue/store overhead is not buried "
                         "under tesseract time; auto: the real ingest")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="queue-overhead-"))
    warm, docs = tmp / "warm", tmp / "docs"
    warm.mkdir()
    docs.mkdir()
    picked = pick_documents(args.data, args.docs + 1, docs)
    first = sorted(docs.iterdir())[0]
    first.rename(warm / first.name)  # the warm-up document, not timed

    base = {**os.environ, "DOCTRIAGE_MODEL_DIR": str(args.model.resolve()), "OMP_THREAD_LIMIT": "1",
            "DOCTRIAGE_AUDIT_FRACTION": "0", "DOCTRIAGE_OCR_MODE": args.ocr_mode}
    report: dict = {"documents": len(picked) - 1, "model": str(args.model),
                    "ocr_mode": args.ocr_mode}

    # 1. embedded + SQLite
    env = {**base, "DOCTRIAGE_HOME": str(tmp / "sqlite")}
    run_cli(["run", str(warm), "--json"], env)
    report["embedded_sqlite"] = embedded(docs, env)

    r = redis.Redis.from_url(f"{args.redis}/{args.redis_db}")
    if r.dbsize():
        raise SystemExit(f"error: Redis DB {args.redis_db} is in use; pick another with --redis-db")
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    dbs = [f"bench_qo_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in dbs:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
    pg_urls = [args.pg.rsplit("/", 1)[0] + "/" + name for name in dbs]
    procs: list[subprocess.Popen] = []
    try:
        # 2. embedded + PostgreSQL
        env = {**base, "DOCTRIAGE_HOME": str(tmp / "pg"), "DOCTRIAGE_DATABASE_URL": pg_urls[0]}
        run_cli(["run", str(warm), "--json"], env)
        report["embedded_postgres"] = embedded(docs, env)

        # 3. distributed
        env = {**base, "DOCTRIAGE_HOME": str(tmp / "dist"), "DOCTRIAGE_DATABASE_URL": pg_urls[1],
               "DOCTRIAGE_BROKER_URL": f"{args.redis}/{args.redis_db}"}
        for queues in ("ingest", "classify,full_depth"):
            log = open(tmp / f"{queues}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(
                [DOCTRIAGE, "worker", "--queues", queues, "-c", "1", "--loglevel", "WARNING"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        submit = in_process_submitter(env)
        submit(warm)
        wait_final(pg_urls[1], 1, 300)
        t0 = time.perf_counter()
        submit(docs)
        wait_final(pg_urls[1], len(picked), 600)
        wall = time.perf_counter() - t0
        pages = report["embedded_sqlite"]["pages"]
        report["distributed"] = {"pages": pages, "wall_s": round(wall, 2),
                                 "pages_per_s": round(pages / wall, 3)}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        r.flushdb()
        for name in dbs:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    n = report["embedded_sqlite"]["pages"]
    e_s = report["embedded_sqlite"]["run_s"]
    report["overhead_ms_per_page"] = {
        "postgres_vs_sqlite": round(1000 * (report["embedded_postgres"]["run_s"] - e_s) / n, 1),
        "distributed_vs_embedded_sqlite": round(
            1000 * (report["distributed"]["wall_s"] - e_s) / n, 1),
    }
    report["note"] = ("distributed: submit (register + enqueue) to every document final; the two "
                      "workers share the machine's cores with each other (and other jobs)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "queue_overhead.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
