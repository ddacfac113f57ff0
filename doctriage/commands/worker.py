"""`doctriage worker --queues ingest,classify [--concurrency N] [--beat]`: a Celery worker.

Classify/full_depth workers use the threads pool by default: one model per process, and the
concurrent tasks' pages share its stage batcher (that is what keeps batches full). Ingest and
ocr workers use prefork: OCR is CPU-bound, one process per core (`--queues ocr -c N`, with
OMP_THREAD_LIMIT=1 in the environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from doctriage.commands._common import fail, takes_arguments
from doctriage.jobs.worker import MODEL_THREADS


@dataclass(frozen=True)
class WorkerArguments:
    queues: Annotated[
        str,
        typer.Option("--queues", "-Q", help="Comma-separated queue names."),
    ] = "ingest,ocr,classify,full_depth,maintenance"
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="Processes, or threads for the threads pool "
                     f"(default {MODEL_THREADS} threads for the model queues, else 1)."),
    ] = None
    pool: Annotated[
        str | None, typer.Option("--pool", help="prefork, threads or solo (default by queue).")
    ] = None
    beat: Annotated[bool, typer.Option("--beat", help="Also run the reconcile schedule.")] = False
    loglevel: Annotated[str, typer.Option("--loglevel", help="Celery log level.")] = "INFO"
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Node name, unique per worker (default "
                     "doctriage-QUEUES@HOST; give one when running several on one host)."),
    ] = None


@takes_arguments(WorkerArguments)
def worker(args: WorkerArguments) -> None:
    """Start a Celery worker consuming the given queues."""
    from workers.celery_app import QUEUES

    chosen = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown or not chosen:
        raise fail(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}"
        )
    if args.concurrency is not None and args.concurrency < 1:
        raise fail("--concurrency must be at least 1")
    if args.pool is not None and args.pool not in ("prefork", "threads", "solo"):
        raise fail("--pool must be prefork, threads or solo")
    from doctriage.jobs import JobError
    from doctriage.jobs.worker import WorkerOptions, start_worker
    from doctriage.settings import get_settings

    opts = WorkerOptions(chosen, args.concurrency, args.pool, args.beat, args.loglevel, args.name)
    try:
        start_worker(get_settings(), opts)
    except JobError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
