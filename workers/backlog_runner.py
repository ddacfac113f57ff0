"""Where the backlog's claimed work goes: Celery tasks (with the queue depth the pacer reads)
or, with no broker, the steps in this process. Also the nightly Celery beat task and the beat
entry that schedules it (doctriage.wiring builds it from settings)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from amqp.exceptions import ChannelError

from pipelines.backlog import BacklogQuery, Pacer, run_backlog
from pipelines.backlog_scan import scan_source
from pipelines.s3 import S3Options
from workers import context, steps
from workers.celery_app import app
from workers.classify_runtime import ClassifyRuntime
from workers.failures import is_transient
from workers.steps import StepContext

log = logging.getLogger(__name__)

BACKLOG_TASK = "doctriage.backlog"


class CeleryEnqueue:
    """Sends claimed work as the same messages live drops produce."""

    def ingest(self, doc_ids: Sequence[int]) -> None:
        from workers.tasks import ingest

        for doc_id in doc_ids:
            ingest.delay(int(doc_id))

    def classify(self, page_ids: Sequence[int]) -> None:
        from workers.tasks import classify

        classify.delay([int(i) for i in page_ids])

    def full_depth(self, page_ids: Sequence[int]) -> None:
        from workers.tasks import full_depth

        full_depth.delay([int(i) for i in page_ids])


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


class EmbeddedEnqueue:
    """No broker: run the steps at once, in this process (the model is loaded on first use)."""

    def __init__(self, ctx: StepContext, runtime: Callable[[], ClassifyRuntime],
                 chunk: int = 64) -> None:
        self.ctx = ctx
        self._runtime_factory = runtime
        self._runtime: ClassifyRuntime | None = None
        self.chunk = chunk

    @property
    def runtime(self) -> ClassifyRuntime:
        if self._runtime is None:
            self._runtime = self._runtime_factory()
        return self._runtime

    def ingest(self, doc_ids: Sequence[int]) -> None:
        for doc_id in doc_ids:
            try:
                result = steps.ingest_document(self.ctx, int(doc_id))
            except Exception as exc:  # one bad document never stops the run
                log.warning("document %s failed: %s", doc_id, exc)
                steps.fail_document(self.ctx, int(doc_id), f"{type(exc).__name__}: {exc}",
                                    transient=is_transient(exc))
                continue
            if result.page_ids:
                self.classify(result.page_ids)

    def classify(self, page_ids: Sequence[int]) -> None:
        for start in range(0, len(page_ids), self.chunk):
            ids = page_ids[start:start + self.chunk]
            result = steps.classify_pages(self.ctx, self.runtime, ids)
            if result.rerouted:
                self.full_depth(result.rerouted)

    def full_depth(self, page_ids: Sequence[int]) -> None:
        for start in range(0, len(page_ids), self.chunk):
            steps.full_depth_pages(self.ctx, self.runtime, page_ids[start:start + self.chunk])


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
    ctx = context.step_context()
    scan = scan_source(ctx.sessions, source, S3Options(s3_endpoint_url, s3_region))
    enqueue = CeleryEnqueue()
    pacer = Pacer(depth=queue_depth(), max_in_queue=max_in_queue)
    for doc_id in scan.new_ids:
        pacer.admit("ingest")
        enqueue.ingest([doc_id])
    report = run_backlog(ctx.sessions, BacklogQuery(
        source_prefix=scan.prefix, model_version=model_version,
        reclassify_below=reclassify_below, limit=limit, grace_s=grace_s), enqueue, pacer)
    out = {"registered": len(scan.new_ids), "skipped": scan.skipped,
           "ingest": len(report.claimed.ingest), "classify": len(report.claimed.classify),
           "full_depth": len(report.claimed.full_depth), "complete": report.complete,
           "paced_s": round(report.pacer_wait_s, 1)}
    log.info("nightly backlog of %s: %s", source, out)
    return out
