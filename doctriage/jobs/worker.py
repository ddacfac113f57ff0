"""The worker job: check what a Celery worker needs (the store, a model for the model queues,
the services) and start it on the chosen queues, with the pool each kind of queue wants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from doctriage.jobs import JobError

if TYPE_CHECKING:  # the wiring loads on start: `doctriage worker --help` must not wait for it
    from doctriage.settings import Settings

# Concurrent classify tasks per model process: they feed ONE stage batcher, so more tasks in
# flight = fuller batches (documents of 1-3 pages would otherwise run batches of 1-3 pages).
MODEL_THREADS = 8


@dataclass(frozen=True)
class WorkerOptions:
    queues: list[str]  # known queue names, at least one
    concurrency: int | None = None  # None: MODEL_THREADS for a threads pool, else 1
    pool: str | None = None  # prefork, threads or solo; None: threads for the model queues
    beat: bool = False  # also run the reconcile schedule
    loglevel: str = "INFO"
    name: str | None = None  # None: doctriage-QUEUES@HOST


def start_worker(settings: Settings, opts: WorkerOptions) -> None:
    """Check, prepare logging and metrics, and run the worker (returns when it stops)."""
    from doctriage import preflight, wiring
    from workers.celery_app import CLASSIFY, FULL_DEPTH

    model_queues = bool({CLASSIFY, FULL_DEPTH} & set(opts.queues))
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
        app = wiring.configure_celery(settings, preload_model=model_queues)
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    from doctriage.observability import prepare_worker

    prepare_worker(settings)  # logging (JSON if configured) and the metrics endpoint
    app.worker_main(worker_argv(opts, model_queues))


def worker_argv(opts: WorkerOptions, model_queues: bool) -> list[str]:
    """Celery's worker arguments: threads for the model queues (one model per process, its
    batcher shared by the concurrent tasks), prefork for ingest (OCR is CPU-bound)."""
    pool = opts.pool or ("threads" if model_queues else "prefork")
    concurrency = opts.concurrency or (MODEL_THREADS if model_queues and pool == "threads" else 1)
    argv = ["worker", "-Q", ",".join(opts.queues), "-c", str(concurrency), "--pool", pool,
            "--loglevel", opts.loglevel, "-n", opts.name or f"doctriage-{'-'.join(opts.queues)}@%h"]
    if opts.beat:
        # The in-memory scheduler: Celery's default one keeps its state in a shelve file, which
        # is pickle. Losing the state on restart only means a run may happen once more, and every
        # scheduled task (reconcile, backlog) is idempotent.
        argv += ["--beat", "--scheduler", "celery.beat:Scheduler"]
    return argv
