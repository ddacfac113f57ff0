"""The backlog job: register what a source holds that the store lacks, then claim and enqueue
the work under it (to the queues with a broker, run in this process without one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctriage import preflight, wiring
from doctriage.jobs import JobError

if TYPE_CHECKING:  # loaded by the job once it runs: boto3, Celery and the steps are heavy
    from sqlalchemy.orm import Session, sessionmaker

    from doctriage.settings import Settings
    from workers.intake.backlog import BacklogQuery, BacklogReport, Pacer
    from workers.orchestration import Orchestrator


@dataclass(frozen=True)
class BacklogOptions:
    source: str  # s3://BUCKET/PREFIX or a local folder
    since: datetime | None = None
    until: datetime | None = None
    reclassify_below: float | None = None
    model_version: str | None = None  # None: the current model's
    limit: int | None = None
    max_in_queue: int = 64  # backlog messages allowed ahead of live work in a queue
    rate: float | None = None  # at most this many messages/s
    scan: bool = True  # list the source for unregistered objects first
    model: Path | None = None  # the bundle when the work runs in this process


def run_backlog_job(settings: Settings, opts: BacklogOptions) -> dict[str, Any]:
    """Scan (optionally), claim and enqueue the backlog of opts.source; the report as a dict."""
    try:  # the store and the services first: a bad setting fails before the modules below load
        sessions = wiring.store(settings)
        # the broker it enqueues to; S3 it lists, and writes artifacts to when embedded
        preflight.check_services(settings, broker=bool(settings.broker_url),
                                 artifacts=not settings.broker_url, sources=[opts.source])
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    # the S3 and queue modules (boto3, Celery, the steps) load once the arguments pass
    from pipelines.s3 import S3UriError
    from workers.intake.backlog import BacklogQuery
    from workers.intake.registration import source_prefix

    try:
        prefix = source_prefix(opts.source)
        enqueue, pacer = _orchestrator(settings, opts)
    except (S3UriError, wiring.WiringError) as exc:
        raise JobError(str(exc)) from None
    version = opts.model_version or wiring.current_model_version(settings, opts.model)
    registered, skipped = _scan(settings, sessions, opts.source, enqueue, pacer) if opts.scan \
        else (0, 0)
    query = BacklogQuery(source_prefix=prefix, since=opts.since, until=opts.until,
                         model_version=version, reclassify_below=opts.reclassify_below,
                         limit=opts.limit, grace_s=settings.stuck_after_s)
    report = _claim_and_enqueue(settings, sessions, query, enqueue, pacer)
    return {
        "source": opts.source, "registered": registered, "skipped": skipped,
        "model_version": version, "documents": report.claimed.documents,
        "ingest": len(report.claimed.ingest), "classify_pages": len(report.claimed.classify),
        "full_depth_pages": len(report.claimed.full_depth),
        "ocr_then_full_depth_pages": len(report.claimed.ocr), "messages": pacer.messages,
        "complete": report.complete, "resumed_after": report.resumed_from,
        "seconds": round(report.seconds, 2), "paced_s": round(report.pacer_wait_s, 2),
        "mode": "celery" if settings.broker_url else "embedded",
    }


def _claim_and_enqueue(settings: Settings, sessions: sessionmaker[Session], query: BacklogQuery,
                       enqueue: Orchestrator, pacer: Pacer) -> BacklogReport:
    """run_backlog with a progress bar over the documents in scope (drawn only on a terminal)."""
    from tqdm import tqdm

    from db.session import session_scope
    from workers.intake.backlog import count_in_scope, run_backlog

    with session_scope(sessions) as s:
        total = count_in_scope(s, query)
    with tqdm(total=total, desc="backlog", unit="doc", leave=False, disable=None) as bar:
        return run_backlog(sessions, query, enqueue, pacer, message_pages=settings.max_batch,
                           on_progress=bar.update)


def _scan(settings: Settings, sessions: sessionmaker[Session], source: str,
          enqueue: Orchestrator, pacer: Pacer) -> tuple[int, int]:
    """Register what SOURCE holds that the store lacks and send it to ingest: (new, skipped)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from tqdm import tqdm

    from pipelines.s3 import register_s3_opener
    from workers.intake.backlog import send_new
    from workers.intake.registration import scan_source

    register_s3_opener(wiring.s3_options(settings))
    try:
        found = scan_source(sessions, source, wiring.s3_options(settings))
    except (BotoCoreError, ClientError) as exc:
        raise JobError(f"cannot list {source}: {' '.join(str(exc).split())}") from None
    # disable=None: drawn only on a terminal
    with tqdm(total=len(found.new_ids), desc="new documents", unit="doc", leave=False,
              disable=None) as bar:
        send_new(found.new_ids, enqueue, pacer, on_progress=bar.update)
    return len(found.new_ids), found.skipped


def _orchestrator(settings: Settings, opts: BacklogOptions) -> tuple[Orchestrator, Pacer]:
    """Where the backlog's work goes: the queues, paced by their depth, with a broker; the steps
    in this process without one (nothing to starve: only the rate cap)."""
    from workers.backlog_runner import broker_flag, declaring, queue_depth
    from workers.intake.backlog import Pacer
    from workers.orchestration import InProcessOrchestrator

    if settings.broker_url:
        celery = wiring.configure_celery(settings)
        from workers.tasks import CeleryOrchestrator

        # Sending, it declares backlog pressure to the classify workers (a broker flag).
        pacer = Pacer(depth=declaring(queue_depth(celery), broker_flag(celery)),
                      max_in_queue=opts.max_in_queue, max_rate=opts.rate)
        # Its messages go behind live work (DOCTRIAGE_BACKLOG_PRIORITY).
        return CeleryOrchestrator.for_backlog(), pacer
    ctx = wiring.step_context(settings)
    # In process, the backlog run is the work: it declares backlog pressure throughout (the
    # pressure policy decides its early exits; DOCTRIAGE_PRESSURE_BUDGET=0 turns that off).
    return (InProcessOrchestrator(
        ctx, runtime_factory=lambda: wiring.classify_runtime(
            settings, opts.model,
            policies=wiring.policy_feed(settings, lambda: ctx.sessions),
            pressure=wiring.PressureInputs(lambda: True, lambda: ctx.sessions))),
        Pacer(max_rate=opts.rate))
