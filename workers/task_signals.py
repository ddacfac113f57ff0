"""Celery signal handlers that every task gets without touching its body: task run time and
outcome, failures and retries by reason (workers.metrics), the task's document/page ids in the
log context (workers.log_context), and a prefork child's metrics marked dead when it exits.

Loaded by the Celery app's `include` list, so only worker processes connect them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_process_shutdown,
)

from workers import log_context, metrics

_lock = threading.Lock()
# task id -> (start time, log-context token); a thread-pool worker runs several at once.
_running: dict[str, tuple[float, Any]] = {}


def _ids_of(task_name: str, args: Any) -> dict[str, Any]:
    """The ids a task's message carries (tasks take ids only: see workers/tasks.py)."""
    if not args:
        return {}
    first = args[0]
    if task_name == "doctriage.ingest":
        return {"document_id": first}
    if task_name in ("doctriage.classify", "doctriage.full_depth") and isinstance(first, list):
        return {"page_ids": first}
    return {}


@task_prerun.connect
def _started(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    name = getattr(task, "name", "?")
    token = log_context.bind(task_id=task_id, task=name, **_ids_of(name, args))
    with _lock:
        _running[str(task_id)] = (time.perf_counter(), token)


@task_postrun.connect
def _finished(task_id: str | None = None, task: Any = None, state: str | None = None,
              **_: Any) -> None:
    with _lock:
        started = _running.pop(str(task_id), None)
    if started is None:
        return
    t0, token = started
    metrics.record_task(getattr(task, "name", "?"), time.perf_counter() - t0,
                        (state or "unknown").lower())
    with contextlib.suppress(ValueError):  # set in another context (should not happen)
        log_context.unbind(token)


@task_failure.connect
def _failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    metrics.record_failure(getattr(sender, "name", "?"), exception or "unknown")


@task_retry.connect
def _retried(sender: Any = None, reason: Any = None, **_: Any) -> None:
    exc = reason if isinstance(reason, BaseException) else str(reason or "unknown")
    metrics.record_retry(getattr(sender, "name", "?"), exc)


@worker_process_shutdown.connect
def _child_exits(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())
