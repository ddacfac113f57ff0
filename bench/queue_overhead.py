"""What does the distributed path cost per page over the embedded runner?

Same documents, same model; every repetition runs each mode once, in turn:
- embedded + SQLite      (`doctriage run`'s default),
- embedded + PostgreSQL  (isolates the store's share),
- distributed: Celery + Redis + PostgreSQL, one ingest worker (prefork, 1 process) and N classify
  worker processes (threads pool, as deployed; `--classify-procs 1,2` runs each N), started and
  warmed up on one document before the clock starts; timed from `submit` to every document
  final. `--pin-cpus` gives each worker its own core (ingest on core 0, classify k on core k), as
  one container per worker with a CPU set would; unpinned, the scheduler moves them across the
  same cores and each runs slower.

The figure is CPU seconds per page, because the distributed run overlaps ingest and classify on
several cores (its wall time is not at the embedded runner's throughput): worker processes +
submitter + Redis/PostgreSQL servers, against `doctriage run`'s own CPU for the run (its
summary's `cpu_seconds`: start-up and model loading excluded) + the servers'. The overhead is
paired within each repetition and the median reported. `--pick shortest` (default) takes the
shortest documents, the hard case for per-document costs; `--pick sample` a seeded draw of the
collection's own mix.

    python -m bench.queue_overhead MODEL DATA [--docs 120] [--repeat 3] [--pin-cpus]
        [--pick shortest|sample] [--seed 0] [--max-doc-pages 3] [--classify-procs 1,2]
        [--task-events on|off] [--device cuda] [--profile DIR] [--out FILE]

DATA: a folder (or realdocs-style folder with manifest.csv); PDFs are picked, and the text
layer is used (`--ocr-mode text`) so tesseract does not bury the queue's share. Prints JSON and
writes bench/results/queue_overhead.json (or --out).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis
from tqdm import tqdm

from bench import harness
from bench.cpu_time import self_cpu, servers_cpu, tree_cpu

ROOT = harness.REPO
POLL_S = 0.05  # the finish is seen at most this late: 0.2 ms/page at 250 pages
DOCTRIAGE = str(Path(sys.executable).parent / "doctriage")


@dataclass(frozen=True)
class Pick:
    """Which documents a run takes: `shortest` or `sample` (seeded), of at most max_pages."""

    how: str
    max_pages: int
    seed: int = 0

    @classmethod
    def of(cls, args: argparse.Namespace) -> Pick:
        return cls(args.pick, args.max_doc_pages, args.seed)


def pick_documents(data: Path, n: int, folder: Path, pick: Pick) -> list[Path]:
    """`shortest`: the n shortest PDFs of at most max_pages pages (the hard case: per-document
    costs shared by the fewest pages); `sample`: n PDFs drawn at random (seeded) from all
    sizes up to max_pages, i.e. the collection's own mix."""
    manifest = data / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["path"].endswith(".pdf")]
        rows = sorted((r for r in rows if int(r["pages"]) <= pick.max_pages),
                      key=lambda r: (int(r["pages"]), r["path"]))
        if pick.how == "sample":
            rows = random.Random(pick.seed).sample(rows, min(n, len(rows)))
        paths = [data / r["path"] for r in rows][:n]
    else:
        paths = sorted(p for p in data.rglob("*.pdf"))[:n]
    # Copies, not links: `doctriage run` skips a link that leaves its input folder.
    for i, p in enumerate(paths):
        shutil.copyfile(p, folder / f"{i:03d}-{p.name}")
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
            for ref in LocalSource([folder]):
                ids.append(register_document(s, ref.uri, sha256=ref.sha256)[0])
        for doc_id in ids:
            ingest.delay(doc_id)

    return submit


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
        return servers_cpu(cls.NAMES)

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


def embedded(docs: Path, env: dict[str, str]) -> dict:
    """`doctriage run` over the documents; its CPU is the run's own figure (the summary's
    cpu_seconds: its threads and tesseract children from registering the documents to the
    last stored answer), so CLI start-up and model loading are not in it, plus what the
    database servers spent meanwhile."""
    servers = ServerCPU()
    t0 = time.perf_counter()
    summary = json.loads(run_cli(["run", str(docs), "--json"], env))
    wall = time.perf_counter() - t0
    spent = servers.stop()
    run_cpu, pg_cpu, redis_cpu = summary["cpu_seconds"], spent["postgres"], spent["redis"]
    cpu = run_cpu + pg_cpu + redis_cpu
    n = summary["pages"]
    split = {"run": round(1000 * run_cpu / n, 2), "postgres": round(1000 * pg_cpu / n, 2),
             "redis": round(1000 * redis_cpu / n, 2)}
    return {"pages": summary["pages"], "run_s": summary["seconds"], "wall_s": round(wall, 2),
            "pages_per_s": summary["pages_per_s"], "cpu_s": round(cpu, 2),
            "cpu_ms_per_page": round(1000 * cpu / n, 2), "cpu_ms_per_page_by_part": split}


def py_spy() -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit('error: --profile needs py-spy: pip install -e ".[bench]"')
    return spy


def start_profilers(started: list[subprocess.Popen], folder: Path | None,
                    tag: str) -> list[subprocess.Popen]:
    """py-spy on each worker process tree for the timed window (--profile DIR): collapsed
    stacks in DIR/TAG-ingest.txt and DIR/TAG-classify.txt."""
    if folder is None:
        return []
    spy = py_spy()
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


@dataclass
class Distributed:
    """What every distributed run of one invocation shares; `procs` collects every worker
    started, so that the caller can stop them all whatever happens."""

    base: dict[str, str]
    broker: str
    warm: Path
    docs: Path
    n_docs: int
    pin_cpus: bool = False
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start_workers(self, env: dict[str, str], home: Path, n_procs: int
                      ) -> list[subprocess.Popen]:
        """As deployed (docs/operations.md): one prefork ingest process; each classify process
        is a threads pool (the default 8 concurrent tasks) feeding its own model's stage
        batcher."""
        started: list[subprocess.Popen] = []
        workers = [("ingest", ["-c", "1"])] + [("classify,full_depth", [])] * n_procs
        for k, (queues, extra) in enumerate(workers):
            log = open(home / f"worker{k}-{queues}.log", "wb")  # noqa: SIM115
            pin = ["taskset", "-c", str(k % (os.cpu_count() or 1))] if self.pin_cpus else []
            started.append(subprocess.Popen(
                [*pin, DOCTRIAGE, "worker", "--queues", queues, *extra, "--loglevel", "WARNING",
                 "--name", f"bench{k}@%h"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self.procs.extend(started)
        return started

    def run(self, home: Path, pg_url: str, n_procs: int, pages: int,
            profile: Path | None = None) -> dict:
        env = {**self.base, "DOCTRIAGE_HOME": str(home), "DOCTRIAGE_DATABASE_URL": pg_url,
               "DOCTRIAGE_BROKER_URL": self.broker}
        home.mkdir(parents=True, exist_ok=True)
        started = self.start_workers(env, home, n_procs)
        probe = StoreProbe(pg_url)
        try:
            submit = in_process_submitter(env)
            submit(self.warm)
            probe.wait_final(1, 300)
            time.sleep(1.0)  # let the warm-up's last writes settle before the CPU baseline
            spies = start_profilers(started, profile, f"distributed_{n_procs}proc")
            w0, m0, servers = tree_cpu([started[0].pid]), self_cpu(), ServerCPU()
            c0 = tree_cpu(p.pid for p in started[1:])
            t0 = time.perf_counter()
            submit(self.docs)
            submitted = self_cpu() - m0
            probe.wait_final(self.n_docs, 600)
            wall = time.perf_counter() - t0
            spent = servers.stop()
            stop_profilers(spies)
            parts = {"ingest_worker": tree_cpu([started[0].pid]) - w0,
                     "classify_worker": tree_cpu(p.pid for p in started[1:]) - c0, **spent,
                     "submitter": submitted}
        finally:
            probe.close()
            for p in started:
                harness.stop_process_group(p, 30)
        cpu = sum(parts.values())
        return {"classify_processes": n_procs, "pages": pages, "wall_s": round(wall, 2),
                "pages_per_s": round(pages / wall, 3), "cpu_s": round(cpu, 2),
                "cpu_ms_per_page": round(1000 * cpu / pages, 2),
                "cpu_ms_per_page_by_part": {k: round(1000 * v / pages, 2)
                                            for k, v in parts.items()}}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def summarize(runs: list[dict], procs_list: list[int]) -> dict:
    """Medians over the repetitions, and the overheads: distributed minus embedded CPU per
    page, paired within each repetition (same minute, same machine load) and then the median."""
    modes = ["embedded_sqlite", "embedded_postgres"] + [f"distributed_{k}proc" for k in procs_list]
    out: dict = {"cpu_ms_per_page": {m: [r[m]["cpu_ms_per_page"] for r in runs] for m in modes}}
    out["median_cpu_ms_per_page"] = {m: median(v) for m, v in out["cpu_ms_per_page"].items()}
    out["median_pages_per_s"] = {m: median([r[m]["pages"] / r[m]["wall_s"] for r in runs])
                                 for m in modes}
    over: dict = {"postgres_vs_sqlite": [r["embedded_postgres"]["cpu_ms_per_page"]
                                         - r["embedded_sqlite"]["cpu_ms_per_page"] for r in runs]}
    for k in procs_list:
        for name in ("sqlite", "postgres"):
            over[f"distributed_{k}proc_vs_embedded_{name}"] = [
                r[f"distributed_{k}proc"]["cpu_ms_per_page"]
                - r[f"embedded_{name}"]["cpu_ms_per_page"] for r in runs]
    out["overhead_cpu_ms_per_page_by_run"] = {k: [round(x, 2) for x in v] for k, v in over.items()}
    out["overhead_cpu_ms_per_page"] = {k: median(v) for k, v in over.items()}
    parts: dict = {}
    for m in modes:
        names = runs[0][m]["cpu_ms_per_page_by_part"]
        parts[m] = {n: median([r[m]["cpu_ms_per_page_by_part"][n] for r in runs]) for n in names}
    out["median_cpu_ms_per_page_by_part"] = parts
    if 1 in procs_list and len(procs_list) > 1:
        out["classify_scaling_vs_1proc"] = {
            str(k): median([r["distributed_1proc"]["wall_s"] / r[f"distributed_{k}proc"]["wall_s"]
                            for r in runs]) for k in procs_list}
    return out


def arguments() -> argparse.ArgumentParser:
    # One OpenMP/torch thread per process in every mode: not a choice here.
    ap = harness.parser(__doc__, "queue_overhead",
                        harness.Common(threads=False, device=True, seed=0, model="positional"))
    ap.add_argument("data", type=Path)
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--pick", choices=("shortest", "sample"), default="shortest",
                    help="shortest (default): the shortest documents, the hard case for "
                         "per-document costs; sample: a seeded random draw, the collection's mix")
    ap.add_argument("--max-doc-pages", type=int, default=3,
                    help="pick documents of at most this many pages")
    ap.add_argument("--repeat", type=int, default=3,
                    help="repetitions; every mode runs once per repetition, in turn")
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
    ap.add_argument("--task-events", choices=("on", "off"), default="off",
                    help="Celery task events from start-up (DOCTRIAGE_TASK_EVENTS): off by "
                         "default, as deployed (Flower switches them on itself)")
    ap.add_argument("--pin-cpus", action="store_true",
                    help="pin each worker to its own core (taskset: ingest on core 0, classify "
                         "process k on core k), as one core per worker container would")
    return ap


def stage_documents(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, int]:
    """(warm-up folder, timed documents folder, timed documents): the first picked document
    only warms the workers up."""
    warm, docs = tmp / "warm", tmp / "docs"
    warm.mkdir()
    docs.mkdir()
    picked = pick_documents(args.data, args.docs + 1, docs, Pick.of(args))
    if len(picked) < 2:
        raise harness.BadInput(f"{args.data}: fewer than 2 PDFs of at most "
                               f"{args.max_doc_pages} pages (one warms the workers up)")
    first = sorted(docs.iterdir())[0]
    first.rename(warm / first.name)  # the warm-up document, not timed
    return warm, docs, len(picked) - 1


def base_env(args: argparse.Namespace) -> dict[str, str]:
    """One OpenMP thread per process in every mode (torch included), so the modes compare the
    same work and no spinning OpenMP thread competes with the other worker for a core."""
    return {**os.environ, "DOCTRIAGE_MODEL_DIR": str(args.model.resolve()),
            "OMP_THREAD_LIMIT": "1", "DOCTRIAGE_AUDIT_FRACTION": "0",
            "DOCTRIAGE_OCR_MODE": args.ocr_mode,
            "DOCTRIAGE_TASK_EVENTS": str(args.task_events == "on").lower(),
            "DOCTRIAGE_DEVICE": args.device}


class Stores:
    """The bench's Redis DB (must be empty) and the PostgreSQL databases it creates: each mode
    gets a fresh one, all dropped at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.pg = args.pg
        self.broker = f"{args.redis}/{args.redis_db}"
        self.redis = redis.Redis.from_url(self.broker)
        if self.redis.dbsize():
            raise harness.BadInput(
                f"Redis DB {args.redis_db} is in use; pick another with --redis-db")
        self.admin = psycopg2.connect(args.pg)
        self.admin.autocommit = True
        self.dbs: list[str] = []

    def fresh_db(self) -> str:
        self.dbs.append(f"bench_qo_{uuid.uuid4().hex[:8]}")
        self.admin.cursor().execute(f'CREATE DATABASE "{self.dbs[-1]}"')
        return self.pg.rsplit("/", 1)[0] + "/" + self.dbs[-1]

    def clean(self) -> None:
        self.redis.flushdb()
        for name in self.dbs:
            self.admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def repetition(rep: int, args: argparse.Namespace, tmp: Path, stores: Stores,
               dist: Distributed) -> dict:
    """Every mode once: 1. embedded + SQLite (`doctriage run`'s default), 2. embedded +
    PostgreSQL, 3. distributed, once per classify process count."""
    run: dict = {}
    home = {"DOCTRIAGE_HOME": str(tmp / f"sqlite{rep}")}
    run["embedded_sqlite"] = embedded(dist.docs, dist.base | home)
    home = {"DOCTRIAGE_HOME": str(tmp / f"pg{rep}"), "DOCTRIAGE_DATABASE_URL": stores.fresh_db()}
    run["embedded_postgres"] = embedded(dist.docs, dist.base | home)
    for n_procs in classify_procs(args):
        run[f"distributed_{n_procs}proc"] = dist.run(
            tmp / f"dist{n_procs}-{rep}", stores.fresh_db(), n_procs,
            run["embedded_sqlite"]["pages"], args.profile if rep == 0 else None)
        stores.redis.flushdb()
    return run


def classify_procs(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.classify_procs.split(",")]


def main() -> int:
    args = arguments().parse_args()
    harness.resolve_model(args.model)
    if not args.data.is_dir():
        raise harness.BadInput(f"{args.data}: no such folder")
    if args.profile:
        py_spy()  # fail now, not after the first runs
    bench_run = harness.start(args, malloc=False)
    tmp = Path(tempfile.mkdtemp(prefix="queue-overhead-"))
    warm, docs, n_docs = stage_documents(args, tmp)
    report: dict = {"documents": n_docs, "pick": args.pick,
                    "max_doc_pages": args.max_doc_pages, "model": str(args.model),
                    "ocr_mode": args.ocr_mode, "task_events": args.task_events,
                    "device": args.device,
                    "repeat": args.repeat, "omp_thread_limit": 1,
                    "pin_cpus": args.pin_cpus}
    stores = Stores(args)
    # n_docs + 1: the warm-up document is in the store too when the timed ones are counted.
    dist = Distributed(base_env(args), stores.broker, warm, docs, n_docs + 1, args.pin_cpus)
    runs: list[dict] = []
    try:
        for rep in tqdm(range(args.repeat), desc="repetitions", file=sys.stderr, disable=None):
            runs.append(repetition(rep, args, tmp, stores, dist))
    finally:
        for p in dist.procs:
            harness.stop_process_group(p, 30)
        stores.clean()
    report["pages"] = runs[0]["embedded_sqlite"]["pages"]
    report |= summarize(runs, classify_procs(args))
    report["runs"] = runs
    report["cpu_cores"] = os.cpu_count()
    note = ("CPU-ms per page: worker processes + submitter + PostgreSQL/Redis servers "
            "(distributed, from submit to every document final, polled every "
            f"{POLL_S} s) against `doctriage run`'s own CPU + the servers' (embedded); "
            "overheads are paired within each repetition, then the median")
    harness.write_result(report, args.out, bench_run, note=note)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
