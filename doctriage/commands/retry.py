"""`doctriage retry [--failed-since DATE] [--reason TEXT] [--kind transient|permanent|all]
[--dry-run]`: put FAILED documents back to RECEIVED and ingest them again: through the queue
when a broker is configured, else in this process (the embedded runner's steps)."""

from __future__ import annotations

from typing import Annotated

import typer

from doctriage.commands._common import fail, parse_date, quiet_workers_logs

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
    from doctriage.jobs import JobError
    from doctriage.jobs.retry import RetryOptions, retry_failed
    from doctriage.settings import get_settings

    try:
        retry_failed(get_settings(), RetryOptions(kind, since, reason, dry_run), say=typer.echo)
    except JobError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)
