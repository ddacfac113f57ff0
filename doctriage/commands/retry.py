"""`doctriage retry [--failed-since DATE] [--reason TEXT] [--kind transient|permanent|all]
[--dry-run]`: put FAILED documents back to RECEIVED and ingest them again: through the queue
when a broker is configured, else in this process (the embedded runner's steps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from doctriage.commands._common import fail, parse_date, quiet_workers_logs
from pipelines.errors import one_line

if TYPE_CHECKING:
    from doctriage.settings import Settings

KINDS = ("transient", "permanent", "all")


@quiet_workers_logs
def retry(
    failed_since: Annotated[str | None, typer.Option(
        "--failed-since", metavar="DATE",
        help="Only documents that failed at or after DATE (UTC, ISO 8601).")]
    = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Only documents whose error contains this text (any case).")] = None,
    kind: Annotated[str, typer.Option(
        "--kind", metavar="KIND",
        help="transient (the default: an outside service failed), permanent, or all.")]
    = "transient",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be retried; change nothing.")] = False,
) -> None:
    """Retry FAILED documents: back to RECEIVED (attempt counts kept), then ingested again."""
    if kind not in KINDS:
        raise fail(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
    since = parse_date(failed_since, "--failed-since")
    from doctriage import preflight, wiring
    from doctriage.settings import get_settings

    settings = get_settings()
    try:
        sessions = wiring.store(settings)
        if not dry_run:  # a dry run reads the store only
            preflight.check_services(settings, broker=bool(settings.broker_url))
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    from db.retries import failed_documents, reset_failed
    from db.session import session_scope
    from db.states import FailureKind

    kinds = None if kind == "all" else (FailureKind(kind),)
    with session_scope(sessions) as s:
        found = failed_documents(s, kinds=kinds, since=since, reason=reason)
    verb = "would retry" if dry_run else "retry"
    for d in found:
        typer.echo(f"{verb} {d.id} {one_line(d.source_uri)}: {d.failure_kind or 'unknown'}, "
                   f"{d.failed_attempts} failed so far: {one_line(d.error or '')}")
    if dry_run or not found:
        typer.echo(f"retry: {len(found)} FAILED documents match"
                   + (" (dry run: nothing changed)" if dry_run else ""))
        return
    with session_scope(sessions) as s:  # the same filter again: a row that moved is left alone
        ids = reset_failed(s, [d.id for d in found], kinds=kinds)
    if settings.broker_url:
        _enqueue(settings, ids)
        typer.echo(f"retry: {len(ids)} of {len(found)} documents back to RECEIVED and queued "
                   "for ingest")
        return
    states = _run_here(settings, ids)
    for doc_id in ids:
        typer.echo(f"document {doc_id}: {states.get(doc_id, '?')}")
    done = sum(st == "DONE" for st in states.values())
    typer.echo(f"retry: {len(ids)} of {len(found)} documents re-run in this process: {done} DONE, "
               f"{sum(st == 'FAILED' for st in states.values())} FAILED")


def _enqueue(settings: Settings, ids: list[int]) -> None:
    from doctriage import wiring

    try:
        wiring.configure_celery(settings)
        from workers.tasks import CeleryOrchestrator

        CeleryOrchestrator().ingest(ids)
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # the broker is down: the reconciler takes the RECEIVED rows later
        raise fail(f"cannot enqueue: {' '.join(str(exc).split())}") from None


def _run_here(settings: Settings, ids: list[int]) -> dict[int, str]:
    """No broker: ingest, classify and full-depth each document in this process."""
    from doctriage import wiring

    try:
        ctx = wiring.step_context(settings)
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    from db.models import Document
    from db.session import session_scope
    from workers.orchestration import InProcessOrchestrator

    run = InProcessOrchestrator(ctx, runtime_factory=lambda: wiring.classify_runtime(settings))
    run.ingest(ids)
    run.drain()
    with session_scope(ctx.sessions) as s:
        return {i: doc.state for i in ids if (doc := s.get(Document, i)) is not None}


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)
