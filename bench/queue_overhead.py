"""What does the distributed path cost per page over the embedded runner?

Same documents, same model, three runs:
- embedded + SQLite      (`doctriage run`'s default),
- embedded + PostgreSQL  (isolates the store's share),
- distributed: Celery + Redis + PostgreSQL, one ingest worker and a classify worker of N
  processes (prefork when N > 1; `--classify-procs 1,2` runs each N), as subprocesses started
  and warmed up on one document before the clock starts; timed from `submit` to every document
  final.

Overhead per page at the same model and batch size: (distributed wall - embedded wall) / pages,
and, since the distributed run overlaps ingest and classify on several cores (so its wall time
is not at the embedded runner's throughput), the CPU seconds per page each path spends: worker
processes + submitter + Redis/PostgreSQL servers against `doctriage run`'s CPU less its start-up.
Use enough pages (`--docs 120` picks ~230 pages) that worker start-up and the final poll do
not dominate.

    python bench/queue_overhead.py MODEL DATA [--docs 12] [--redis redis://127.0.0.1:6379]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--classify-procs 1,2]

DATA: a folder (or realdocs-style folder with manifest.csv); born-digital PDFs are picked so
OCR does not dominate. Prints JSON and writes bench/results/queue_overhead.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.05  # the finish is seen at most this late: 0.2 ms/page at 250 pages
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


class StoreProbe:
    """Polls the store for the run's end over ONE connection: a new connection per poll (a
    PostgreSQL backend forked every 50 ms) cost the server ~1 ms of CPU each, which the
    server-CPU figure then counted as the distributed path's overhead."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"),
                                    pool_size=1)

    def states(self) -> tuple[list[str], int]:
        from sqlalchemy import text

        with self.engine.connect() as c:
            states = [r[0] for r in c.execute(text("select state from documents"))]
            pages = c.execute(text("select count(*) from pages")).scalar_one()
        return states, int(pages)

    def wait_final(self, expected: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states, pages = self.states()
            if len(states) >= expected and all(s in ("DONE", "FAILED") for s in states):
                return pages
            time.sleep(POLL_S)
        raise SystemExit(f"error: distributed run not finished in {timeout}s")

    def close(self) -> None:
        self.engine.dispose()


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


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def tree_cpu(procs: list[subprocess.Popen]) -> float:
    """CPU seconds of the worker processes and their (prefork) children so far."""
    total = 0.0
    for p in procs:
        try:
            root = psutil.Process(p.pid)
            for q in [root, *root.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


class ServerCPU:
    """CPU seconds the Redis and PostgreSQL servers spend during a run (machine-wide: other
    jobs' use of the same servers counts too). Sampled every 0.25 s while it runs: a
    PostgreSQL backend exits with its client (`doctriage run`'s does before the run could be
    measured), and its CPU time would be lost with a before/after reading."""

    NAMES = ("postgres", "redis")

    def __init__(self) -> None:
        self.baseline = self._snapshot()
        self.last = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @classmethod
    def _snapshot(cls) -> dict[tuple[int, str], float]:
        out = {}
        for q in psutil.process_iter(["name"]):
            name = q.info["name"] or ""
            kind = next((k for k in cls.NAMES if name.startswith(k)), None)
            if kind:
                try:
                    t = q.cpu_times()
                    out[(q.pid, kind)] = t.user + t.system
                except psutil.NoSuchProcess:
                    continue
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for key, t in self._snapshot().items():
                self.last[key] = max(t, self.last.get(key, 0.0))

    def stop(self) -> dict[str, float]:
        """Seconds per server kind since this object was made."""
        self._stop.set()
        self._thread.join()
        for key, t in self._snapshot().items():
            self.last[key] = max(t, self.last.get(key, 0.0))
        spent = dict.fromkeys(self.NAMES, 0.0)
        for (pid, kind), t in self.last.items():
            spent[kind] += t - self.baseline.get((pid, kind), 0.0)
        return spent


def embedded(docs: Path, warm: Path, env: dict[str, str]) -> dict:
    c0 = children_cpu()
    run_cli(["run", str(warm), "--json"], env)  # already done: start-up cost only
    startup_cpu = children_cpu() - c0
    c0, servers = children_cpu(), ServerCPU()
    t0 = time.perf_counter()
    summary = json.loads(run_cli(["run", str(docs), "--json"], env))
    wall = time.perf_counter() - t0
    run_cpu = children_cpu() - c0 - startup_cpu
    spent = servers.stop()
    pg_cpu, redis_cpu = spent["postgres"], spent["redis"]
    cpu = run_cpu + pg_cpu + redis_cpu
    n = summary["pages"]
    split = {"run": round(1000 * run_cpu / n, 2), "postgres": round(1000 * pg_cpu / n, 2),
             "redis": round(1000 * redis_cpu / n, 2)}
    return {"pages": summary["pages"], "run_s": summary["seconds"], "wall_s": round(wall, 2),
            "pages_per_s": summary["pages_per_s"], "startup_cpu_s": round(startup_cpu, 2),
            "cpu_s": round(cpu, 2), "cpu_ms_per_page": round(1000 * cpu / n, 2),
            "cpu_ms_per_page_by_part": split}


def start_profilers(started: list[subprocess.Popen], folder: Path | None,
                    tag: str) -> list[subprocess.Popen]:
    """py-spy on each worker process tree for the timed window (--profile DIR): collapsed
    stacks in DIR/TAG-ingest.txt and DIR/TAG-classify.txt."""
    if folder is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    names = ["ingest"] + [f"classify{k}" for k in range(1, len(started))]
    return [subprocess.Popen([spy, "record", "--pid", str(p.pid), "--subprocesses", "--rate",
                              "100", "--nonblocking", "--format", "raw", "-o",
                              str(folder / f"{tag}-{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for p, name in zip(started, names, strict=True)]


def stop_profilers(spies: list[subprocess.Popen]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for spy in spies:
        spy.wait(60)


def distributed(home: Path, base: dict[str, str], pg_url: str, broker: str, n_procs: int,
                warm: Path, docs: Path, pages: int, n_docs: int,
                procs: list[subprocess.Popen], profile: Path | None = None) -> dict:
    env = {**base, "DOCTRIAGE_HOME": str(home), "DOCTRIAGE_DATABASE_URL": pg_url,
           "DOCTRIAGE_BROKER_URL": broker}
    home.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    # As deployed (docs/operations.md): one prefork ingest process; each classify process is a
    # threads pool (the default 8 concurrent tasks) feeding its own model's stage batcher.
    workers = [("ingest", ["-c", "1"])] + [("classify,full_depth", [])] * n_procs
    for k, (queues, extra) in enumerate(workers):
        log = open(home / f"worker{k}-{queues}.log", "wb")  # noqa: SIM115
        started.append(subprocess.Popen(
            [DOCTRIAGE, "worker", "--queues", queues, *extra, "--loglevel", "WARNING",
             "--name", f"bench{k}@%h"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    procs.extend(started)
    probe = StoreProbe(pg_url)
    try:
        submit = in_process_submitter(env)
        submit(warm)
        probe.wait_final(1, 300)
        time.sleep(1.0)  # let the warm-up's last writes settle before the CPU baseline
        spies = start_profilers(started, profile, f"distributed_{n_procs}proc")
        w0, m0, servers = tree_cpu(started[:1]), self_cpu(), ServerCPU()
        c0 = tree_cpu(started[1:])
        t0 = time.perf_counter()
        submit(docs)
        submitted = self_cpu() - m0
        probe.wait_final(n_docs, 600)
        wall = time.perf_counter() - t0
        spent = servers.stop()
        stop_profilers(spies)
        parts = {"ingest_worker": tree_cpu(started[:1]) - w0,
                 "classify_worker": tree_cpu(started[1:]) - c0, **spent, "submitter": submitted}
        split = {k: round(1000 * v / pages, 2) for k, v in parts.items()}
        cpu = sum(parts.values())
    finally:
        probe.close()
        for p in started:
            stop(p)
    return {"classify_processes": n_procs, "pages": pages, "wall_s": round(wall, 2),
            "pages_per_s": round(pages / wall, 3), "cpu_s": round(cpu, 2),
            "cpu_ms_per_page": round(1000 * cpu / pages, 2), "cpu_ms_per_page_by_part": split}


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--classify-procs", default="1",
                    help="comma-separated classify worker process counts, one distributed run "
                         "each (e.g. 1,2 for the scaling)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=14)
    ap.add_argument("--ocr-mode", default="text",
                    help="text (default): no OCR, so the queue/store overhead is not buried "
                         "under tesseract time; auto: the real ingest")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record py-spy profiles of the workers during the timed window here")
    ap.add_argument("--task-events", choices=("on", "off"), default="on",
                    help="Celery task events for Flower (DOCTRIAGE_TASK_EVENTS): on by default")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="queue-overhead-"))
    warm, docs = tmp / "warm", tmp / "docs"
    warm.mkdir()
    docs.mkdir()
    picked = pick_documents(args.data, args.docs + 1, docs)
    first = sorted(docs.iterdir())[0]
    first.rename(warm / first.name)  # the warm-up document, not timed

    base = {**os.environ, "DOCTRIAGE_MODEL_DIR": str(args.model.resolve()), "OMP_THREAD_LIMIT": "1",
            "DOCTRIAGE_AUDIT_FRACTION": "0", "DOCTRIAGE_OCR_MODE": args.ocr_mode,
            "DOCTRIAGE_TASK_EVENTS": str(args.task_events == "on").lower()}
    report: dict = {"documents": len(picked) - 1, "model": str(args.model),
                    "ocr_mode": args.ocr_mode, "task_events": args.task_events}

    # 1. embedded + SQLite
    env = {**base, "DOCTRIAGE_HOME": str(tmp / "sqlite")}
    run_cli(["run", str(warm), "--json"], env)
    report["embedded_sqlite"] = embedded(docs, warm, env)

    r = redis.Redis.from_url(f"{args.redis}/{args.redis_db}")
    if r.dbsize():
        raise SystemExit(f"error: Redis DB {args.redis_db} is in use; pick another with --redis-db")
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    procs_list = [int(x) for x in args.classify_procs.split(",")]
    dbs = [f"bench_qo_{uuid.uuid4().hex[:8]}" for _ in range(1 + len(procs_list))]
    for name in dbs:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
    pg_urls = [args.pg.rsplit("/", 1)[0] + "/" + name for name in dbs]
    procs: list[subprocess.Popen] = []
    try:
        # 2. embedded + PostgreSQL
        env = {**base, "DOCTRIAGE_HOME": str(tmp / "pg"), "DOCTRIAGE_DATABASE_URL": pg_urls[0]}
        run_cli(["run", str(warm), "--json"], env)
        report["embedded_postgres"] = embedded(docs, warm, env)

        # 3. distributed, once per classify process count
        for k, n_procs in enumerate(procs_list, start=1):
            report[f"distributed_{n_procs}proc"] = distributed(
                tmp / f"dist{n_procs}", base, pg_urls[k], f"{args.redis}/{args.redis_db}",
                n_procs, warm, docs, report["embedded_sqlite"]["pages"], len(picked), procs,
                args.profile)
            r.flushdb()
    finally:
        for p in procs:
            stop(p)
        r.flushdb()
        for name in dbs:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    n = report["embedded_sqlite"]["pages"]
    e_s = report["embedded_sqlite"]["run_s"]
    p_s = report["embedded_postgres"]["run_s"]
    over = {"postgres_vs_sqlite": round(1000 * (p_s - e_s) / n, 2)}
    for n_procs in procs_list:
        d_s = report[f"distributed_{n_procs}proc"]["wall_s"]
        over[f"distributed_{n_procs}proc_vs_embedded_sqlite"] = round(1000 * (d_s - e_s) / n, 2)
        over[f"distributed_{n_procs}proc_vs_embedded_postgres"] = round(1000 * (d_s - p_s) / n, 2)
    report["overhead_ms_per_page"] = over
    e_c = report["embedded_sqlite"]["cpu_ms_per_page"]
    p_c = report["embedded_postgres"]["cpu_ms_per_page"]
    report["overhead_cpu_ms_per_page"] = {"postgres_vs_sqlite": round(p_c - e_c, 2)} | {
        f"distributed_{k}proc_vs_embedded_{name}": round(
            report[f"distributed_{k}proc"]["cpu_ms_per_page"] - base_c, 2)
        for k in procs_list for name, base_c in (("sqlite", e_c), ("postgres", p_c))}
    if 1 in procs_list and len(procs_list) > 1:
        one = report["distributed_1proc"]["wall_s"]
        report["classify_scaling_vs_1proc"] = {
            str(k): round(one / report[f"distributed_{k}proc"]["wall_s"], 3) for k in procs_list}
    report["cpu_cores"] = os.cpu_count()
    report["note"] = ("distributed: submit (register + enqueue) to every document final, polled "
                      f"every {POLL_S} s; the workers share the machine's cores with each other "
                      "(and other jobs); embedded: `doctriage run`'s own seconds (register + "
                      "ingest + classify), CLI start-up excluded")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "queue_overhead.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
