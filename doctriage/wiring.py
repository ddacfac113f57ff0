"""Builds the workflow's parts from Settings: option objects, the store, the artifact store,
the model and its runtime, the Celery configuration. The one place that reads settings for
workers/pipelines/classifier/db, so those packages stay free of doctriage.

`celery -A doctriage.wiring:celery worker -Q classify` gets a configured app (module attribute
`celery`, built on first access).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctriage.options import ingest_options
from doctriage.settings import Settings, get_settings
from workers.allocator import tune_malloc

# Imported where used: workers.classify_runtime and workers.steps load torch and transformers,
# and `doctriage status` or a bad argument must not wait for them (doctriage/cli.py).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from pipelines.artifacts import ArtifactStore
    from workers.classify_runtime import BatcherOptions, ClassifyRuntime
    from workers.retrying import RetryOptions
    from workers.steps import RerouteOptions, StepContext


class WiringError(ValueError):
    """A setting or argument that cannot be used; the message is one line for the user."""


def batcher_options(settings: Settings) -> BatcherOptions:
    from workers.classify_runtime import BatcherOptions

    return BatcherOptions(max_batch=settings.max_batch, max_delay_ms=settings.max_delay_ms)


def reroute_options(settings: Settings) -> RerouteOptions:
    from workers.steps import RerouteOptions

    return RerouteOptions(
        reroute_below=settings.reroute_below,
        audit_fraction=settings.audit_fraction,
        seed=settings.seed,
    )


def retry_options(settings: Settings) -> RetryOptions:
    from workers.retrying import RetryOptions

    return RetryOptions(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s,
                        backoff_max_s=settings.retry_backoff_max_s)


def store(settings: Settings, *, migrate: bool = True) -> sessionmaker[Session]:
    """A session factory on the configured database, migrated to the current schema. A database
    URL that cannot be used (malformed, an unknown scheme or driver, a server that cannot be
    reached) is a WiringError with a one-line message, whichever command is starting."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from db.session import make_engine, session_factory
    from db.session import migrate as run_migrations

    url = settings.resolved_database_url
    try:
        engine = make_engine(url)
        if migrate:
            run_migrations(engine)
    except NoSuchModuleError:
        raise WiringError(
            f"DOCTRIAGE_DATABASE_URL: unsupported database {_scheme(url)!r}"
            " (use postgresql://... or sqlite:///...)"
        ) from None
    except ArgumentError:
        # the value is not echoed: a malformed URL may still hold a password
        raise WiringError(
            "DOCTRIAGE_DATABASE_URL is not a database URL"
            " (e.g. postgresql://user@host:5432/doctriage or sqlite:///path/doctriage.db)"
        ) from None
    except (SQLAlchemyError, ImportError, OSError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise WiringError(f"cannot open the database {_shown(url)}: {reason}") from None
    return session_factory(engine)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else url.split(":", 1)[0]


def _shown(url: str) -> str:
    """The URL with its password masked, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def artifact_store(settings: Settings) -> ArtifactStore:
    from pipelines.artifacts import open_artifact_store

    url = settings.resolved_artifact_url
    if url.startswith("s3://"):
        from pipelines.s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(url, endpoint_url=settings.s3_endpoint_url,
                                        region=settings.s3_region)
    return open_artifact_store(url)


def step_context(settings: Settings, *, migrate: bool = True) -> StepContext:
    from doctriage.s3_wiring import s3_options
    from pipelines.s3 import register_s3_opener
    from workers.steps import StepContext

    register_s3_opener(s3_options(settings))  # documents may live at s3:// URIs
    return StepContext(
        sessions=store(settings, migrate=migrate),
        artifacts=artifact_store(settings),
        ingest=ingest_options(settings),
        reroute=reroute_options(settings),
        retry=retry_options(settings),
    )


def bundle_folder(path: Path | str) -> Path:
    """The one check of a model folder a user names (--model, DOCTRIAGE_MODEL_DIR, evaluate's
    MODEL_DIR), made before anything heavy loads, so every command words it the same way."""
    path = Path(path)
    if not path.exists():
        raise WiringError(f"{path}: no such model folder")
    if not (path / "exits.json").is_file():
        raise WiringError(f"{path}: not a model bundle (no exits.json)")
    return path


def model_dir(settings: Settings, override: Path | None = None) -> Path:
    """--model, else DOCTRIAGE_MODEL_DIR, else the default bundle (built on first use)."""
    chosen = override or settings.model_dir
    if chosen is not None:
        return bundle_folder(chosen)
    try:
        from doctriage.default_model import ensure_default_bundle
    except ImportError:
        raise WiringError("no default model available: pass --model DIR") from None
    return Path(ensure_default_bundle(settings))


def load_model(settings: Settings, override: Path | None = None) -> Any:
    from classifier.bundle import BundleError, load_bundle

    path = model_dir(settings, override)
    try:
        model = load_bundle(path, settings.device)
    except BundleError as exc:
        raise WiringError(str(exc)) from None
    model.attention_impl = settings.attention
    return model


def classify_runtime(settings: Settings, override: Path | None = None) -> ClassifyRuntime:
    from workers.classify_runtime import ClassifyRuntime

    if settings.malloc_tuning:
        tune_malloc()  # before the model's first allocations
    return ClassifyRuntime(load_model(settings, override), batcher_options(settings))


def queue_config(settings: Settings, *, preload_model: bool = False) -> Any:
    from workers.celery_app import QueueConfig

    if not settings.broker_url:
        raise WiringError("no broker: set DOCTRIAGE_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    return QueueConfig(
        broker_url=settings.broker_url,
        result_backend_url=settings.result_backend_url,
        visibility_timeout_s=settings.visibility_timeout_s,
        reconcile_every_s=settings.reconcile_every_s,
        stuck_after_s=settings.stuck_after_s,
        lost_after_s=settings.lost_after_s,
        ingest_stuck_after_s=settings.resolved_ingest_stuck_after_s,
        classify_stuck_after_s=settings.classify_stuck_after_s,
        classify_chunk=settings.max_batch,
        preload_model=preload_model,
        task_events=settings.task_events,
        extra_beat=_backlog_beat(settings),
    )


def _backlog_beat(settings: Settings) -> dict[str, Any]:
    from doctriage.s3_wiring import backlog_beat

    entry = backlog_beat(settings)
    return {"backlog": entry} if entry else {}


def configure_celery(settings: Settings | None = None, *, preload_model: bool = False) -> Any:
    """The Celery app configured from settings, with this process's resource factories
    installed (built lazily in each worker process, after fork)."""
    from workers import context
    from workers.celery_app import app, configure

    settings = settings or get_settings()
    configure(queue_config(settings, preload_model=preload_model))
    context.install(lambda: step_context(settings), lambda: classify_runtime(settings))
    return app


def __getattr__(name: str) -> Any:
    if name == "celery":
        return configure_celery()
    raise AttributeError(name)
