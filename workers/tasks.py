"""Celery tasks: decode the message (ids only), call the step, hand what follows to the
orchestration seam (workers.orchestration's follow-on rules, sent through CeleryOrchestrator),
and re-raise transient errors for a retry with backoff. A permanent failure (a bug, or retries
exhausted) marks the document or pages FAILED with the reason."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from celery.exceptions import Ignore, Retry
from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval

from workers import context, loss_gauge, retrying, steps
from workers.celery_app import CheckedTask, app
from workers.failures import PERMANENT_TYPES, TRANSIENT_TYPES, is_transient
from workers.orchestration import after_classify, after_ingest, after_ocr, chunks
from workers.redaction import stored_error

log = logging.getLogger(__name__)

# Worth another try: the store, broker, artifact store or a worker shutting down, not the input.
# Celery's autoretry handles these types; RetryingTask adds what only workers.failures.is_transient
# can tell (an S3 ClientError by its code or HTTP status: SlowDown, ServiceUnavailable, 5xx).
TRANSIENT: tuple[type[BaseException], ...] = TRANSIENT_TYPES
RETRY = dict(autoretry_for=TRANSIENT, dont_autoretry_for=PERMANENT_TYPES,
             retry_backoff=2, retry_backoff_max=300, retry_jitter=True, max_retries=6)


@worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    """A forked child starts without its parent's resources and loads its own model."""
    context.reset()
    if app.conf.get("doctriage_preload_model"):
        context.classify_runtime()


def _reason(exc: BaseException) -> str:
    return stored_error(f"{type(exc).__name__}: {exc}")


class RetryingTask(CheckedTask):
    """A transient error (workers.failures.is_transient) is retried with the same exponential
    backoff as autoretry_for; once max_retries is spent, retry re-raises it and on_failure
    records the permanent failure."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (Ignore, Retry):
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            countdown = get_exponential_backoff_interval(
                factor=int(max(1.0, float(self.retry_backoff or 1))),
                retries=self.request.retries,
                maximum=int(self.retry_backoff_max or 600),
                full_jitter=bool(self.retry_jitter),
            )
            raise self.retry(exc=exc, countdown=countdown) from None


class DocumentTask(RetryingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        try:
            steps.fail_document(context.step_context(), int(args[0]), _reason(exc),
                                transient=is_transient(exc))
        except Exception:
            log.exception("could not mark document %s FAILED", args[0] if args else "?")


class PagesTask(RetryingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        try:
            steps.fail_pages(context.step_context(), [int(i) for i in args[0]], _reason(exc),
                             transient=is_transient(exc))
        except Exception:
            log.exception("could not mark pages FAILED")


_depth: tuple[int, Callable[[str], int | None]] | None = None


def _queue_depth() -> Callable[[str], int | None]:
    """Messages waiting in a queue, read over one broker connection per process."""
    global _depth
    if _depth is None or _depth[0] != os.getpid():
        from workers.backlog_runner import queue_depth

        _depth = (os.getpid(), queue_depth(app))
    return _depth[1]


class CeleryOrchestrator:
    """The orchestration seam over the broker: one ingest message per document, page ids in
    messages of ``chunk`` (default ``doctriage_classify_chunk`` = ``max_batch``: one batcher
    batch), sent at ``priority`` (0, the highest, for live work; the backlog's is lower: see
    `for_backlog`). Workers run the steps; the tasks below apply the follow-on rules."""

    def __init__(self, chunk: int | None = None, priority: int = 0) -> None:
        self._chunk = chunk
        self.priority = priority

    @classmethod
    def for_backlog(cls) -> CeleryOrchestrator:
        """Sends at the configured backlog priority (QueueConfig.backlog_priority)."""
        return cls(priority=int(app.conf.get("doctriage_backlog_priority") or 0))

    @property
    def chunk(self) -> int:
        return self._chunk or int(app.conf.get("doctriage_classify_chunk") or 16)

    def ingest(self, doc_ids: Sequence[int]) -> None:
        for doc_id in doc_ids:
            ingest.apply_async((int(doc_id),), priority=self.priority)

    def classify(self, page_ids: Sequence[int]) -> None:
        for ids in chunks(page_ids, self.chunk):
            classify.apply_async((ids,), priority=self.priority)

    def full_depth(self, page_ids: Sequence[int]) -> None:
        for ids in chunks(page_ids, self.chunk):
            full_depth.apply_async((ids,), priority=self.priority)

    def ocr(self, page_ids: Sequence[int]) -> None:
        # One page per message: a page costs seconds of tesseract, and prefork workers then
        # share the pages of one batch (and a redelivery repeats one page's OCR, not a batch's).
        for ids in chunks(page_ids, 1):
            ocr.apply_async((ids,), priority=self.priority)

    def drain(self) -> None:
        """Nothing to wait for: the messages are sent."""


def _following(task: Any) -> CeleryOrchestrator:
    """Where a task sends what follows its step: at the priority its own message came with,
    so a backlog document's pages stay behind live work all the way to full depth."""
    delivered = (task.request.delivery_info or {}).get("priority")
    return CeleryOrchestrator(priority=int(delivered or 0))


@app.task(name="doctriage.ingest", base=DocumentTask, **RETRY)
def ingest(doc_id: int) -> dict[str, Any]:
    result = steps.ingest_document(context.step_context(), int(doc_id))
    after_ingest(result, _following(ingest))
    return {"document": result.document_id, "pages": len(result.page_ids), "state": result.state}


@app.task(name="doctriage.classify", base=PagesTask, **RETRY)
def classify(page_ids: list[int]) -> dict[str, int]:
    result = steps.classify_pages(context.step_context(), context.classify_runtime(), page_ids)
    after_classify(result, _following(classify))
    return {
        "done": len(result.done), "rerouted": len(result.rerouted), "failed": len(result.failed)
    }


@app.task(name="doctriage.full_depth", base=PagesTask, **RETRY)
def full_depth(page_ids: list[int]) -> dict[str, int]:
    result = steps.full_depth_pages(context.step_context(), context.classify_runtime(), page_ids)
    return {"done": len(result.done), "failed": len(result.failed)}


@app.task(name="doctriage.ocr", base=PagesTask, **RETRY)
def ocr(page_ids: list[int]) -> dict[str, int]:
    """Deferred OCR (CPU workers, no model): tesseract, then the pages go back to classify."""
    result = steps.ocr_pages(context.step_context(), page_ids)
    after_ocr(result, _following(ocr))
    return {"classify": len(result.classify), "failed": len(result.failed),
            "skipped": len(result.skipped)}


@app.task(name="doctriage.reconcile", base=RetryingTask, **RETRY)
def reconcile(stuck_after_s: float = 900.0, **bounds: float) -> dict[str, int]:
    """`bounds`: the other steps.StuckRules fields (beat sends them; older beats did not)."""
    rules = steps.StuckRules(stuck_after_s=stuck_after_s, **bounds)
    plan = steps.reconcile(context.step_context(), rules, depth=_queue_depth())
    ctx = context.step_context()
    # Transiently FAILED documents whose backoff has passed: RECEIVED again, ingested again.
    retried = retrying.retry_transient_failures(ctx.sessions, ctx.retry)
    retried_pages = retrying.retry_transient_page_failures(ctx.sessions, ctx.retry)
    then = CeleryOrchestrator()
    then.ingest([*plan.documents, *retried])
    then.classify([*plan.classify, *retried_pages])
    then.full_depth(plan.full_depth)
    then.ocr(plan.ocr)
    loss_gauge.refresh_due(ctx.sessions)  # the early-exit loss gauge, at most once a minute
    return {"documents": len(plan.documents), "classify": len(plan.classify),
            "full_depth": len(plan.full_depth), "ocr": len(plan.ocr),
            "finished": len(plan.finished),
            "retried": len(retried), "retried_pages": len(retried_pages)}
