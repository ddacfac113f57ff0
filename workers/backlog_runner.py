"""The backlog on Celery: the queue depth the pacer reads, the nightly beat task and the beat
entry that schedules it (doctriage.wiring builds it from settings), and backlog pressure on the
broker (workers/pressure.py): the classify workers' gauge (the classify queue's depth, and the
flag a running nightly backlog sets). Claimed work goes through the orchestration seam
(workers.orchestration; workers.tasks.CeleryOrchestrator here)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from amqp.exceptions import ChannelError

from pipelines.s3 import S3Options
from workers import context
from workers.celery_app import CLASSIFY, app
from workers.intake.backlog import BacklogQuery, Pacer, run_backlog, send_new
from workers.intake.registration import scan_source
from workers.pressure import BrokerFlag, PressureGauge

log = logging.getLogger(__name__)

BACKLOG_TASK = "doctriage.backlog"


def queue_depth(target: Any = app) -> Callable[[str], int | None]:
    """Messages waiting in a broker queue (one connection, reused). None when it cannot be
    read: the pacer then falls back to its rate cap alone."""
    state: dict[str, Any] = {}

    def depth(queue: str) -> int | None:
        try:
            if "channel" not in state:
                state["conn"] = target.connection_for_read()
                state["channel"] = state["conn"].default_channel
            return int(state["channel"].queue_declare(queue=queue, passive=True).message_count)
        except ChannelError as exc:
            if "NOT_FOUND" in str(exc):  # never declared yet (no worker bound it): empty
                return 0
            log.warning("cannot read the depth of queue %s: %s", queue, exc)
            state.clear()
            return None
        except Exception as exc:
            log.warning("cannot read the depth of queue %s: %s", queue, exc)
            state.clear()
            return None

    return depth


def broker_flag(target: Any = app, ttl_s: float = 120.0) -> BrokerFlag | None:
    """The declared-pressure flag on a Redis broker (None on another broker: a backlog then
    makes pressure through the classify queue's depth alone). One client, made on first use."""
    url = str(target.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://")):
        return None
    made: list[Any] = []

    def client() -> Any:
        if not made:
            import redis

            made.append(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))
        return made[0]

    return BrokerFlag(client, ttl_s)


def pressure_gauge(bound: int, every_s: float, target: Any = app) -> PressureGauge:
    """A classify worker's gauge: the classify queue deeper than `bound` messages, or a
    nightly backlog running (its broker flag)."""
    depth = queue_depth(target)  # a connection of its own: gauges run on the tasks' threads
    flag = broker_flag(target)
    return PressureGauge(lambda: depth(CLASSIFY), bound, every_s,
                         declared=flag if flag is not None else (lambda: False))


def backlog_beat_entry(hour: int, source: str, **kwargs: Any) -> dict[str, Any]:
    """The beat schedule entry: the backlog of ``source`` every day at ``hour``:00 (UTC, the
    app's timezone). ``kwargs`` go to the task (see ``nightly_backlog``)."""
    from celery.schedules import crontab

    return {
        "task": BACKLOG_TASK,
        "schedule": crontab(hour=hour, minute=0),
        "kwargs": {"source": source, **kwargs},
    }


@app.task(name=BACKLOG_TASK)
def nightly_backlog(source: str, model_version: str | None = None,
                    reclassify_below: float | None = None, s3_endpoint_url: str | None = None,
                    s3_region: str = "us-east-1", max_in_queue: int = 64,
                    grace_s: float = 900.0, limit: int | None = None) -> dict[str, Any]:
    """Scan ``source`` for unregistered objects, then claim and enqueue its backlog, paced by
    the depth of the live queues. Safe to run twice: claims are state changes."""
    from workers.tasks import CeleryOrchestrator  # here: workers.tasks imports this module

    ctx = context.step_context()
    scan = scan_source(ctx.sessions, source, S3Options(s3_endpoint_url, s3_region))
    enqueue = CeleryOrchestrator.for_backlog()
    pacer = Pacer(depth=declaring(queue_depth(), broker_flag()), max_in_queue=max_in_queue)
    send_new(scan.new_ids, enqueue, pacer)
    report = run_backlog(ctx.sessions, BacklogQuery(
        source_prefix=scan.prefix, model_version=model_version,
        reclassify_below=reclassify_below, limit=limit, grace_s=grace_s), enqueue, pacer)
    out = {"registered": len(scan.new_ids), "skipped": scan.skipped,
           "ingest": len(report.claimed.ingest), "classify": len(report.claimed.classify),
           "full_depth": len(report.claimed.full_depth), "ocr": len(report.claimed.ocr),
           "complete": report.complete,
           "paced_s": round(report.pacer_wait_s, 1)}
    log.info("nightly backlog of %s: %s", source, out)
    return out


def declaring(depth: Callable[[str], int | None],
              flag: BrokerFlag | None) -> Callable[[str], int | None]:
    """The pacer's depth reader, declaring backlog pressure on the broker as it goes (each
    message the backlog sends asks it): the classify workers switch to the pressure policy
    while the backlog is being sent, and the flag lapses its time-to-live after the last."""
    if flag is None:
        return depth

    def read(queue: str) -> int | None:
        try:
            flag.keep_declared()
        except Exception as exc:  # the broker down: the send will say so
            log.warning("cannot declare backlog pressure: %s", exc)
        return depth(queue)

    return read
