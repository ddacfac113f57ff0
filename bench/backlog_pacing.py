"""Does the nightly backlog starve live drops? Measured on the real Redis broker.

A backlog of N never-ingested documents (a seeded SQLite store) is enqueued by
`workers.intake.backlog.run_backlog` through the real Celery producer (`doctriage.ingest`
messages on the `ingest` queue) while live drops arrive every `--live-every-ms`. A consumer
thread plays an ingest worker: it takes messages in broker order (BRPOP on the queue's list, as
kombu's Redis transport does) and spends `--service-ms` on each. Reported: how long live
messages waited in the queue (p50/p95/max) and how long the whole backlog took, without pacing
(everything enqueued at once) and with the depth-capped pacer (`--max-in-queue`).

    python -m bench.backlog_pacing [--docs 1500] [--service-ms 4] [--max-in-queue 32]
        [--broker redis://127.0.0.1:6379/11] [--out FILE]

Prints JSON and writes bench/results/backlog_pacing.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import update

from bench import harness
from db.models import Document
from db.repository import register_document
from db.session import make_engine, migrate, session_factory, session_scope
from workers.backlog_runner import queue_depth
from workers.celery_app import QueueConfig, app, configure
from workers.intake.backlog import BacklogQuery, Pacer, run_backlog
from workers.tasks import CeleryOrchestrator

LIVE_BASE = 10_000_000


def seed(n: int, folder: Path) -> Any:
    engine = make_engine(f"sqlite:///{folder / 'bench.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        for i in range(n):
            register_document(s, f"s3://bench/in/{i:06d}.pdf", etag=str(i))
        s.execute(update(Document).values(updated_at=datetime.now(UTC) - timedelta(days=1)))
    return sessions


class Traffic:
    """Live messages sent every --live-every-ms and one consumer that takes every message
    (backlog and live alike) in --service-ms: how long each live message waited."""

    def __init__(self, args: argparse.Namespace, r: redis.Redis) -> None:
        self.args, self.r = args, r
        self.sent: dict[int, float] = {}
        self.waits: list[float] = []
        self.backlog_consumed = 0
        self.backlog_done_at: float | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._consume),
                         threading.Thread(target=self._live)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _consume(self) -> None:
        while not self._stop.is_set() or self.r.llen("ingest"):
            item = self.r.brpop("ingest", timeout=0.2)
            if item is None:
                continue
            msg = json.loads(item[1])
            doc_id = int(msg["headers"]["argsrepr"].strip("(),"))
            if doc_id >= LIVE_BASE:
                self.waits.append(time.perf_counter() - self.sent[doc_id])
            else:
                self.backlog_consumed += 1
                if self.backlog_consumed == self.args.docs:
                    self.backlog_done_at = time.perf_counter()
            time.sleep(self.args.service_ms / 1000)

    def _live(self) -> None:
        from workers.tasks import ingest

        i = 0
        while not self._stop.is_set():
            doc_id = LIVE_BASE + i
            self.sent[doc_id] = time.perf_counter()
            ingest.delay(doc_id)
            i += 1
            time.sleep(self.args.live_every_ms / 1000)

    def wait_backlog(self, since: float, timeout: float = 300) -> None:
        while self.backlog_done_at is None and time.perf_counter() - since < timeout:
            time.sleep(0.05)


def one_run(args: argparse.Namespace, paced: bool, r: redis.Redis) -> dict:
    r.delete("ingest")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = seed(args.docs, Path(tmp))
        with Traffic(args, r) as traffic:
            time.sleep(0.5)  # live traffic in steady state first
            pacer = Pacer(depth=queue_depth(app), max_in_queue=args.max_in_queue, poll_s=0.01) \
                if paced else Pacer()
            t0 = time.perf_counter()
            report = run_backlog(sessions, BacklogQuery(grace_s=60), CeleryOrchestrator(),
                                 pacer, chunk_docs=200)
            enqueued_s = time.perf_counter() - t0
            traffic.wait_backlog(t0)
            time.sleep(0.5)  # live traffic after the backlog
    waits_ms = sorted(w * 1000 for w in traffic.waits)
    done_at = traffic.backlog_done_at
    return {
        "paced": paced,
        "backlog_docs": len(report.claimed.ingest),
        "enqueue_s": round(enqueued_s, 2),
        "backlog_drained_s": round(done_at - t0, 2) if done_at is not None else None,
        "live_messages": len(waits_ms),
        "live_wait_ms_p50": round(statistics.median(waits_ms), 1),
        "live_wait_ms_p95": round(waits_ms[int(0.95 * (len(waits_ms) - 1))], 1),
        "live_wait_ms_max": round(waits_ms[-1], 1),
        "pacer_wait_s": round(report.pacer_wait_s, 2),
    }


def main() -> int:
    p = harness.parser(__doc__, "backlog_pacing", harness.Common(threads=False))
    p.add_argument("--docs", type=int, default=1500)
    p.add_argument("--service-ms", type=float, default=4.0)
    p.add_argument("--live-every-ms", type=float, default=50.0)
    p.add_argument("--max-in-queue", type=int, default=32)
    p.add_argument("--broker", default="redis://127.0.0.1:6379/11")
    args = p.parse_args()
    if min(args.docs, args.max_in_queue) < 1:
        raise harness.BadInput("--docs and --max-in-queue must be positive")
    run = harness.start(args, malloc=False)
    configure(QueueConfig(broker_url=args.broker))
    r = redis.Redis.from_url(args.broker)
    runs = [one_run(args, False, r), one_run(args, True, r)]
    out = {
        "bench": "backlog_pacing",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": runs,
        "note": "2-core machine shared with other jobs; consumer is a simulated worker",
    }
    harness.write_result(out, args.out, run)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
