"""The retry job: put FAILED documents back to RECEIVED and ingest them again, through the
queue when a broker is configured, else in this process (the embedded runner's steps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from doctriage import preflight, wiring
from doctriage.jobs import JobError
from pipelines.errors import one_line

if TYPE_CHECKING:
    from doctriage.settings import Settings


@dataclass(frozen=True)
class RetryOptions:
    kind: str = "transient"  # transient, permanent or all
    since: datetime | None = None  # failed at or after
    reason: str | None = None  # the error contains this text (any case)
    dry_run: bool = False  # list what would be retried; change nothing


def retry_failed(settings: Settings, opts: RetryOptions, say: Callable[[str], None]) -> None:
    """Find the FAILED documents opts selects, tell `say` about each, and (unless a dry run)
    reset them and ingest them again."""
    try:
        sessions = wiring.store(settings)
        if not opts.dry_run:  # a dry run reads the store only
            preflight.check_services(settings, broker=bool(settings.broker_url))
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    from db.retries import failed_documents, reset_failed
    from db.session import session_scope
    from db.states import FailureKind

    kinds = None if opts.kind == "all" else (FailureKind(opts.kind),)
    with session_scope(sessions) as s:
        found = failed_documents(s, kinds=kinds, since=opts.since, reason=opts.reason)
    verb = "would retry" if opts.dry_run else "retry"
    for d in found:
        say(f"{verb} {d.id} {one_line(d.source_uri)}: {d.failure_kind or 'unknown'}, "
            f"{d.failed_attempts} failed so far: {one_line(d.error or '')}")
    if opts.dry_run or not found:
        say(f"retry: {len(found)} FAILED documents match"
            + (" (dry run: nothing changed)" if opts.dry_run else ""))
        return
    with session_scope(sessions) as s:  # the same filter again: a row that moved is left alone
        ids = reset_failed(s, [d.id for d in found], kinds=kinds)
    _ingest_again(settings, ids, len(found), say)


def _ingest_again(settings: Settings, ids: list[int], found: int,
                  say: Callable[[str], None]) -> None:
    """To the queue with a broker; else the steps in this process, each document's end state
    told."""
    if settings.broker_url:
        _enqueue(settings, ids)
        say(f"retry: {len(ids)} of {found} documents back to RECEIVED and queued for ingest")
        return
    states = _run_here(settings, ids)
    for doc_id in ids:
        say(f"document {doc_id}: {states.get(doc_id, '?')}")
    done = sum(st == "DONE" for st in states.values())
    say(f"retry: {len(ids)} of {found} documents re-run in this process: {done} DONE, "
        f"{sum(st == 'FAILED' for st in states.values())} FAILED")


def _enqueue(settings: Settings, ids: list[int]) -> None:
    try:
        wiring.configure_celery(settings)
        from workers.tasks import CeleryOrchestrator

        CeleryOrchestrator().ingest(ids)
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    except Exception as exc:  # the broker is down: the reconciler takes the RECEIVED rows later
        raise JobError(f"cannot enqueue: {' '.join(str(exc).split())}") from None


def _run_here(settings: Settings, ids: list[int]) -> dict[int, str]:
    """No broker: ingest, classify and full-depth each document in this process."""
    try:
        ctx = wiring.step_context(settings)
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    from db.models import Document
    from db.session import session_scope
    from workers.orchestration import InProcessOrchestrator

    run = InProcessOrchestrator(ctx, runtime_factory=lambda: wiring.classify_runtime(
        settings, policies=wiring.policy_feed(settings, lambda: ctx.sessions)))
    run.ingest(ids)
    run.drain()
    with session_scope(ctx.sessions) as s:
        return {i: doc.state for i in ids if (doc := s.get(Document, i)) is not None}
