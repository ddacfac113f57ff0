"""`doctriage worker --queues ingest,classify [--concurrency N] [--beat]`: a Celery worker.

Classify/full_depth workers use the threads pool by default: one model per process, and the
concurrent tasks' pages share its stage batcher (that is what keeps batches full). Ingest
workers use prefork: OCR is CPU-bound, one process per core.
"""

from __future__ import annotations

from typing import Annotated

import typer

from doctriage.commands._common import fail

# Concurrent classify tasks per model process: they feed ONE stage batcher, so more tasks in
# flight = fuller batches (documents of 1-3 pages would otherwise run batches of 1-3 pages).
MODEL_THREADS = 8


def worker(
    queues: Annotated[
        str,
        typer.Option("--queues", "-Q", help="Comma-separated queue names."),
    ] = "ingest,classify,full_depth,maintenance",
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="Processes, or threads for the threads pool "
                     f"(default {MODEL_THREADS} threads for the model queues, else 1)."),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="prefork, threads or solo (default by queue).")
    ] = None,
    beat: Annotated[bool, typer.Option("--beat", help="Also run the reconcile schedule.")] = False,
    loglevel: Annotated[str, typer.Option("--loglevel", help="Celery log level.")] = "INFO",
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Node name, unique per worker (default "
                     "doctriage-QUEUES@HOST; give one when running several on one host)."),
    ] = None,
) -> None:
    """Start a Celery worker consuming the given queues."""
    from doctriage import preflight, wiring
    from doctriage.settings import get_settings
    from workers.celery_app import CLASSIFY, FULL_DEPTH, QUEUES

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown or not chosen:
        raise fail(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}"
        )
    if concurrency is not None and concurrency < 1:
        raise fail("--concurrency must be at least 1")
    if pool is not None and pool not in ("prefork", "threads", "solo"):
        raise fail("--pool must be prefork, threads or solo")
    model_queues = {CLASSIFY, FULL_DEPTH} & set(chosen)
    if pool is None:
        pool = "threads" if model_queues else "prefork"
    if concurrency is None:
        concurrency = MODEL_THREADS if model_queues and pool == "threads" else 1
    settings = get_settings()
    if model_queues and settings.malloc_tuning:
        from workers.allocator import tune_malloc

        tune_malloc()  # before Celery's pool threads exist, so they share the one arena
    try:
        wiring.store(settings)  # migrate once before the children start (and fail fast)
        if model_queues:
            # fail now, not on the first task, if there is no model: workers never train one
            wiring.model_dir(settings, build_default=False)
        # a dead broker would be retried forever, bad S3 settings fail every document later
        preflight.check_services(settings, broker=True)
        app = wiring.configure_celery(settings, preload_model=bool(model_queues))
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    argv = ["worker", "-Q", ",".join(chosen), "-c", str(concurrency), "--pool", pool,
            "--loglevel", loglevel, "-n", name or f"doctriage-{'-'.join(chosen)}@%h"]
    if beat:
        # The in-memory scheduler: Celery's default one keeps its state in a shelve file, which
        # is pickle. Losing the state on restart only means a run may happen once more, and every
        # scheduled task (reconcile, backlog) is idempotent.
        argv += ["--beat", "--scheduler", "celery.beat:Scheduler"]
    from doctriage.observability import prepare_worker

    prepare_worker(settings)  # logging (JSON if configured) and the metrics endpoint
    app.worker_main(argv)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
