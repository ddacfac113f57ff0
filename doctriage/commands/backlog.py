"""`doctriage backlog SOURCE [--since DATE] [--until DATE] [--reclassify-below CONF]
[--model-version V] [--limit N]`: register what SOURCE holds that the store does not know yet,
then enqueue everything under it that is not classified, classified by another model version,
or below a confidence. Paced so live drops are not starved; resumable; a second run right after
enqueues nothing. With no broker configured the work runs in this process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from doctriage.commands._common import fail, quiet_workers_logs

if TYPE_CHECKING:  # loaded by the command once its arguments pass
    from doctriage.settings import Settings
    from workers.intake.backlog import Pacer
    from workers.orchestration import Orchestrator


def _date(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{flag} {value!r}: not a date (YYYY-MM-DD or ISO 8601)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@quiet_workers_logs
def backlog(
    source: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX or a local folder.")],
    since: Annotated[str | None, typer.Option(help="Documents received on/after DATE.")] = None,
    until: Annotated[str | None, typer.Option(help="Documents received before DATE.")] = None,
    reclassify_below: Annotated[float | None, typer.Option(
        "--reclassify-below", help="Re-route early answers below this confidence to full depth."
    )] = None,
    model_version: Annotated[str | None, typer.Option(
        "--model-version",
        help="Reclassify pages with no prediction by this version (default: the current model's)."
    )] = None,
    limit: Annotated[int | None, typer.Option(help="At most N documents this run.")] = None,
    max_in_queue: Annotated[int, typer.Option(
        help="Backlog messages allowed ahead of live work in a queue.")] = 64,
    rate: Annotated[float | None, typer.Option(help="At most this many messages/s.")] = None,
    scan: Annotated[bool, typer.Option(help="List SOURCE for unregistered objects first.")] = True,
    model: Annotated[Path | None, typer.Option("--model", help="Model bundle (embedded).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Find and enqueue the backlog of SOURCE."""
    from doctriage import preflight, wiring
    from doctriage.settings import get_settings
    from doctriage.wiring import current_model_version

    settings = get_settings()
    start, end = _date(since, "--since"), _date(until, "--until")
    if start and end and start >= end:
        raise fail("--since must be before --until")
    if reclassify_below is not None and not 0.0 < reclassify_below <= 1.0:
        raise fail("--reclassify-below must be in (0, 1]")
    if limit is not None and limit < 1:
        raise fail("--limit must be at least 1")
    if not source.startswith("s3://") and not Path(source).exists():
        raise fail(f"no such folder: {source}")
    try:  # the store and the services first: a bad setting fails before the modules below load
        sessions = wiring.store(settings)
        # the broker it enqueues to; S3 it lists, and writes artifacts to when embedded
        preflight.check_services(settings, broker=bool(settings.broker_url),
                                 artifacts=not settings.broker_url, sources=[source])
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    # the S3 and queue modules (boto3, Celery, the steps) load once the arguments pass
    from tqdm import tqdm

    from pipelines.s3 import S3UriError
    from workers.intake.backlog import BacklogQuery, count_in_scope, run_backlog
    from workers.intake.registration import source_prefix

    try:
        prefix = source_prefix(source)
        enqueue, pacer = _orchestrator(settings, model, max_in_queue, rate)
    except (S3UriError, wiring.WiringError) as exc:
        raise fail(str(exc)) from None
    version = model_version or current_model_version(settings, model)

    registered, skipped = _scan(settings, sessions, source, enqueue, pacer) if scan else (0, 0)

    query = BacklogQuery(source_prefix=prefix, since=start, until=end, model_version=version,
                         reclassify_below=reclassify_below, limit=limit,
                         grace_s=settings.stuck_after_s)
    from db.session import session_scope

    with session_scope(sessions) as s:
        total = count_in_scope(s, query)
    with tqdm(total=total, desc="backlog", unit="doc", leave=False, disable=None) as bar:
        report = run_backlog(sessions, query, enqueue, pacer, message_pages=settings.max_batch,
                             on_progress=bar.update)
    out = {
        "source": source, "registered": registered, "skipped": skipped,
        "model_version": version, "documents": report.claimed.documents,
        "ingest": len(report.claimed.ingest), "classify_pages": len(report.claimed.classify),
        "full_depth_pages": len(report.claimed.full_depth), "messages": pacer.messages,
        "complete": report.complete, "resumed_after": report.resumed_from,
        "seconds": round(report.seconds, 2), "paced_s": round(report.pacer_wait_s, 2),
        "mode": "celery" if settings.broker_url else "embedded",
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"backlog {source}: {registered} new objects registered ({skipped} skipped); "
        f"{out['documents']} documents with work: {out['ingest']} to ingest, "
        f"{out['classify_pages']} pages to classify, {out['full_depth_pages']} to full depth "
        f"({'complete' if report.complete else 'stopped at --limit; the next run resumes'})"
    )


def _scan(settings: Settings, sessions: Any, source: str, enqueue: Orchestrator,
          pacer: Pacer) -> tuple[int, int]:
    """Register what SOURCE holds that the store lacks and send it to ingest: (new, skipped)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from tqdm import tqdm

    from doctriage.wiring import s3_options
    from pipelines.s3 import register_s3_opener
    from workers.intake.backlog import send_new
    from workers.intake.registration import scan_source

    register_s3_opener(s3_options(settings))
    try:
        found = scan_source(sessions, source, s3_options(settings))
    except (BotoCoreError, ClientError) as exc:
        raise fail(f"cannot list {source}: {' '.join(str(exc).split())}") from None
    # disable=None: drawn only on a terminal
    with tqdm(total=len(found.new_ids), desc="new documents", unit="doc", leave=False,
              disable=None) as bar:
        send_new(found.new_ids, enqueue, pacer, on_progress=bar.update)
    return len(found.new_ids), found.skipped


def _orchestrator(settings: Settings, model: Path | None, max_in_queue: int,
                  rate: float | None) -> tuple[Orchestrator, Pacer]:
    """Where the backlog's work goes: the queues, paced by their depth, with a broker; the steps
    in this process without one (nothing to starve: only the rate cap)."""
    from doctriage import wiring
    from workers.backlog_runner import queue_depth
    from workers.intake.backlog import Pacer
    from workers.orchestration import InProcessOrchestrator

    if settings.broker_url:
        celery = wiring.configure_celery(settings)
        from workers.tasks import CeleryOrchestrator

        return CeleryOrchestrator(), Pacer(depth=queue_depth(celery), max_in_queue=max_in_queue,
                                           max_rate=rate)
    ctx = wiring.step_context(settings)
    return (InProcessOrchestrator(
        ctx, runtime_factory=lambda: wiring.classify_runtime(settings, model)),
        Pacer(max_rate=rate))


def register(app: typer.Typer) -> None:
    app.command("backlog")(backlog)
