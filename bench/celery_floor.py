"""What does one Celery task cost through Redis, before doctriage does any work in it?

The floor under bench/queue_overhead.py's figure: a no-op task (its message an id list like a
classify task's) through the same broker settings as doctriage's workers (the app is configured
by workers.celery_app.configure: JSON, late acks, prefetch 1, no results, task events off), once
per worker pool: prefork (the ingest worker's), threads (the classify worker's) and solo. The
worker runs on one core and this process publishes from the other (`--pin-cpus`), so what each
side spends is separable.

Per task: the worker's CPU (main process + prefork children), Redis's, and the publisher's
(what `ingest.delay(...)` costs the submitter or an ingest worker publishing classify work).
Medians of `--repeat` rounds; every round is listed.

    python -m bench.celery_floor [--tasks 2000] [--repeat 3] [--pin-cpus] [--pools solo]

Needs Redis (`--redis`, DB `--redis-db`, which must be empty). Prints JSON and writes
bench/results/celery_floor.json (or --out).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import redis
from celery import Celery

from bench import harness
from bench.cpu_time import named_cpu, self_cpu, tree_cpu
from workers.celery_app import MAINTENANCE, QueueConfig, configure

POOLS = {"prefork": 1, "threads": 8, "solo": 1}  # concurrency as doctriage deploys each pool

# The worker subprocess imports this module (`celery -A bench.celery_floor`) and finds the app
# here.
app = Celery("celery_floor")
configure(QueueConfig(broker_url=os.environ.get("FLOOR_BROKER", "redis://127.0.0.1:6379/13")),
          target=app)


@app.task(name="floor.noop")
def noop(ids: list[int]) -> None:
    return None

# How to read the result (written into it).
NOTE = ("a no-op task through doctriage's broker settings: what Celery + Redis "
        "cost per message before any step runs (worker, Redis server, publisher)")


def _drained(r: redis.Redis) -> bool:
    # kombu's Redis transport: the queue is a list; a delivered, unacknowledged message waits
    # in the `unacked` hash until the worker acks it (late acks: after the task ran).
    return r.llen(MAINTENANCE) == 0 and r.hlen("unacked") == 0


def measure(pool: str, tasks: int, repeat: int, broker: str, pin: bool) -> list[dict]:
    r = redis.Redis.from_url(broker)
    cores = os.cpu_count() or 1
    pin_worker = ["taskset", "-c", str(1 % cores)] if pin else []
    if pin:
        os.sched_setaffinity(0, {0})
    env = {**os.environ, "FLOOR_BROKER": broker}
    worker = subprocess.Popen(
        [*pin_worker, sys.executable, "-m", "celery", "-A", "bench.celery_floor", "worker",
         "-Q", MAINTENANCE, "--pool", pool, "-c", str(POOLS[pool]), "--loglevel", "WARNING"],
        cwd=harness.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = []
    try:
        noop.delay([0, 1])  # warm: the worker is up once it has run one
        deadline = time.monotonic() + 60
        while not _drained(r) or tree_cpu([worker.pid]) == 0:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"error: the {pool} worker did not start")
            time.sleep(0.1)
        time.sleep(1.0)
        for _ in range(repeat):
            w0, r0, p0 = tree_cpu([worker.pid]), named_cpu("redis"), self_cpu()
            t0 = time.perf_counter()
            for i in range(tasks):
                noop.delay([i, i + 1])
            published = self_cpu() - p0
            while not _drained(r):
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            rounds.append({
                "worker_cpu_ms_per_task": round(1000 * (tree_cpu([worker.pid]) - w0) / tasks, 3),
                "redis_cpu_ms_per_task": round(1000 * (named_cpu("redis") - r0) / tasks, 3),
                "publish_cpu_ms_per_task": round(1000 * published / tasks, 3),
                "tasks_per_s": round(tasks / wall, 1),
            })
    finally:
        worker.terminate()
        worker.wait(30)
        r.flushdb()
    return rounds


def main() -> int:
    ap = harness.parser(__doc__, "celery_floor", harness.Common(threads=False))
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pools", default="prefork,threads,solo")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=13)
    ap.add_argument("--pin-cpus", action="store_true",
                    help="worker on core 1, this publisher on core 0")
    args = ap.parse_args()
    pools = [p for p in args.pools.split(",") if p]
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise harness.BadInput(f"unknown pool {(unknown or [''])[0]!r} (use {', '.join(POOLS)})")
    broker = f"{args.redis}/{args.redis_db}"
    if redis.Redis.from_url(broker).dbsize():
        raise harness.BadInput(f"Redis DB {args.redis_db} is in use; pick another with --redis-db")
    run = harness.start(args, malloc=False)
    report: dict = {"tasks": args.tasks, "repeat": args.repeat, "pin_cpus": args.pin_cpus,
                    "cpu_cores": os.cpu_count(), "pools": {}}
    for pool in pools:
        rounds = measure(pool, args.tasks, args.repeat, broker, args.pin_cpus)
        keys = rounds[0].keys()
        report["pools"][pool] = {
            "concurrency": POOLS[pool],
            **{f"median_{k}": round(statistics.median(r[k] for r in rounds), 3) for k in keys},
            "rounds": rounds,
        }
    harness.write_result(report, args.out, run, note=NOTE)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
