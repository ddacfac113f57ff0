"""The runtime, built from Settings: option objects, the store, the artifact store, the model and
its runtime, the Celery configuration and its beat entries. The one place that reads settings for
workers/pipelines/classifier/db, so those packages stay free of doctriage.

Model resolution: a folder a user names (--model, DOCTRIAGE_MODEL_DIR) must be a bundle; else the
default bundle (`doctriage.default_model`). Only the embedded commands (`run`, embedded `watch`,
`retry`, `backlog`) may build a missing default bundle; workers never train: they fail at start-up
with one line naming the command that builds one (`build_default=False`).

`celery -A doctriage.wiring:celery worker -Q classify` gets a configured app (module attribute
`celery`, built on first access).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctriage.settings import Settings, get_settings
from pipelines.options import IngestOptions
from workers.allocator import tune_malloc

# Imported where used: classifier.predict and workers.steps load torch and transformers,
# celery and sqlalchemy take a second, and `doctriage status` or a bad argument must not wait
# for them (doctriage/cli.py).
if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker

    from classifier.live_policy import PolicyFeed
    from classifier.model import EarlyExitModel
    from classifier.predict import BatcherOptions, ClassifyRuntime
    from pipelines.artifacts import ArtifactStore
    from pipelines.s3 import S3Options
    from workers.celery_app import QueueConfig
    from workers.queue_config import RetryPolicy
    from workers.steps import RerouteOptions, StepContext


class WiringError(ValueError):
    """A setting or argument that cannot be used; the message is one line for the user."""


# --- settings -> the plain option objects of pipelines and workers ---------------------------


# The IngestOptions fields a DOCTRIAGE_ setting sets (the others keep IngestOptions' default).
INGEST_SETTINGS = tuple(f.name for f in fields(IngestOptions) if f.name in Settings.model_fields)


def ingest_options(settings: Settings, **overrides: object) -> IngestOptions:
    """IngestOptions from the settings; keyword overrides that are not None win (CLI flags)."""
    values: dict[str, object] = {name: getattr(settings, name) for name in INGEST_SETTINGS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return IngestOptions(**values)  # type: ignore[arg-type]


def s3_options(settings: Settings) -> S3Options:
    from pipelines.s3 import S3Options  # boto3: only when S3 options are really built

    return S3Options(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def batcher_options(settings: Settings) -> BatcherOptions:
    from classifier.predict import BatcherOptions

    return BatcherOptions(max_batch=settings.max_batch, max_delay_ms=settings.max_delay_ms)


def reroute_options(settings: Settings) -> RerouteOptions:
    from workers.steps import RerouteOptions

    return RerouteOptions(
        reroute_below=settings.reroute_below,
        audit_fraction=settings.audit_fraction,
        seed=settings.seed,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    from workers.queue_config import RetryPolicy

    return RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s,
                        backoff_max_s=settings.retry_backoff_max_s)


# --- the store, the artifacts, the step context ----------------------------------------------


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
    from pipelines.s3 import register_s3_opener
    from workers.steps import StepContext

    register_s3_opener(s3_options(settings))  # documents may live at s3:// URIs
    return StepContext(
        sessions=store(settings, migrate=migrate),
        artifacts=artifact_store(settings),
        ingest=ingest_options(settings),
        reroute=reroute_options(settings),
        retry=retry_policy(settings),
    )


# --- the model ---------------------------------------------------------------------------------


def bundle_folder(path: Path | str) -> Path:
    """The one check of a model folder a user names (--model, DOCTRIAGE_MODEL_DIR, evaluate's
    MODEL_DIR), made before anything heavy loads, so every command words it the same way."""
    path = Path(path)
    if not path.exists():
        raise WiringError(f"{path}: no such model folder")
    if not (path / "exits.json").is_file():
        raise WiringError(f"{path}: not a model bundle (no exits.json)")
    return path


def model_dir(settings: Settings, override: Path | None = None, *,
              build_default: bool = True) -> Path:
    """--model, else DOCTRIAGE_MODEL_DIR, else the default bundle. A missing default bundle is
    built (minutes) only with `build_default`; without it, a WiringError names the command."""
    chosen = override or settings.model_dir
    if chosen is not None:
        return bundle_folder(chosen)
    from doctriage import default_model

    found = default_model.existing_default_bundle(settings)
    if found is not None:
        return found
    if not build_default:
        raise WiringError(
            "no model bundle: DOCTRIAGE_MODEL_DIR is unset and no default bundle is installed;"
            f" build it with `python -m doctriage.default_model {settings.default_model_dir}`"
            " (or `doctriage train DATA --out DIR` and set DOCTRIAGE_MODEL_DIR=DIR)"
        )
    return default_model.ensure_default_bundle(settings)


def load_model(settings: Settings, override: Path | None = None, *,
               build_default: bool = True) -> EarlyExitModel:
    from classifier.bundle import BundleError, load_bundle

    path = model_dir(settings, override, build_default=build_default)
    try:
        model = load_bundle(path, settings.device)
    except BundleError as exc:
        raise WiringError(str(exc)) from None
    model.attention_impl = settings.attention
    return model


def policy_feed(settings: Settings, sessions: Callable[[], sessionmaker[Session]], *,
                once: bool = False) -> PolicyFeed:
    """The store as the runtime's source of exit policies, polled every
    DOCTRIAGE_POLICY_POLL_S (`once`: read at the first classify only, as `run` does)."""
    from classifier.live_policy import PolicyFeed
    from workers.policy_source import stored_policies

    return PolicyFeed(stored_policies(sessions), None if once else settings.policy_poll_s)


@dataclass(frozen=True)
class PressureInputs:
    """What load-adaptive exits read: `gauge()`, whether backlog pressure is on now, and
    `sessions()`, the store whose audit sample a pressure policy is derived from when the
    bundle has none (doctriage/pressure_policy.py)."""

    gauge: Callable[[], bool]
    sessions: Callable[[], sessionmaker[Session]] | None = None


def classify_runtime(settings: Settings, override: Path | None = None, *,
                     build_default: bool = True,
                     policies: PolicyFeed | None = None,
                     pressure: PressureInputs | None = None) -> ClassifyRuntime:
    """The model and its batchers; `policies` (policy_feed): where newer exit policies of its
    model version come from (None: the bundle's policy only); `pressure` (None: load-adaptive
    exits off): under backlog pressure the pressure policy decides."""
    from classifier.predict import ClassifyRuntime
    from doctriage.pressure_policy import pressure_mode
    from workers.metrics import BatcherMetrics

    if settings.malloc_tuning:
        tune_malloc()  # before the model's first allocations
    model = load_model(settings, override, build_default=build_default)
    mode = (pressure_mode(model, settings.pressure_budget, pressure.gauge, pressure.sessions)
            if pressure is not None else None)
    # Batch fill and queue depths go to the worker's metrics.
    return ClassifyRuntime(model, batcher_options(settings), hooks=BatcherMetrics,
                           policies=policies, pressure=mode)


def _pressure_inputs(settings: Settings, sessions: Callable[[], sessionmaker[Session]]
                     ) -> PressureInputs | None:
    gauge = pressure_gauge(settings)
    return None if gauge is None else PressureInputs(gauge, sessions)


def pressure_gauge(settings: Settings) -> Callable[[], bool] | None:
    """A classify worker's backlog-pressure gauge on the broker (workers/pressure.py): the
    classify queue deeper than DOCTRIAGE_PRESSURE_QUEUE_DEPTH messages, or a nightly backlog
    declaring it; None when load adaptation is off (DOCTRIAGE_PRESSURE_BUDGET=0)."""
    if settings.pressure_budget <= 0:
        return None
    from workers.backlog_runner import pressure_gauge as broker_gauge

    bound = settings.pressure_queue_depth
    return broker_gauge(bound if bound is not None else 2**62, settings.pressure_poll_s)


def current_model_version(settings: Settings, override: Path | None = None) -> str | None:
    """The version of the bundle a worker would load (--model, DOCTRIAGE_MODEL_DIR, else the
    default bundle: the shipped one), read from its exits.json without loading or building it;
    None when there is none."""
    from doctriage import default_model

    folder = override or settings.model_dir or default_model.existing_default_bundle(settings)
    if folder is None:
        return None
    try:
        return str(json.loads((Path(folder) / "exits.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- Celery ------------------------------------------------------------------------------------


def queue_config(settings: Settings, *, preload_model: bool = False) -> QueueConfig:
    from workers.celery_app import QueueConfig

    if not settings.broker_url:
        raise WiringError("no broker: set DOCTRIAGE_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    beat = backlog_beat(settings)
    return QueueConfig(
        broker_url=settings.broker_url,
        result_backend_url=settings.result_backend_url,
        visibility_timeout_s=settings.visibility_timeout_s,
        reconcile_every_s=settings.reconcile_every_s,
        stuck=settings.stuck_rules(),
        classify_chunk=settings.max_batch,
        preload_model=preload_model,
        task_events=settings.task_events,
        full_depth_yields=settings.full_depth_yields,
        backlog_priority=settings.backlog_priority,
        extra_beat={"backlog": beat} if beat else {},
    )


def backlog_beat(settings: Settings) -> dict[str, Any] | None:
    """The beat entry for the nightly backlog (settings.backlog_hour, settings.backlog_source),
    or None when no backlog source is configured. The model version is read when beat starts."""
    if not settings.backlog_source:
        return None
    from workers.backlog_runner import backlog_beat_entry

    return backlog_beat_entry(
        settings.backlog_hour,
        settings.backlog_source,
        model_version=current_model_version(settings),
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        grace_s=settings.stuck_after_s,
    )


def configure_celery(settings: Settings | None = None, *, preload_model: bool = False) -> Celery:
    """The Celery app configured from settings, with this process's resource factories
    installed (built lazily in each worker process, after fork). A worker never trains a model:
    one that consumes a model queue without a bundle stops at start-up (_refuse_modelless)."""
    from celery.signals import worker_init

    from workers import context
    from workers.celery_app import app, configure

    settings = settings or get_settings()
    configure(queue_config(settings, preload_model=preload_model))
    # The runtime polls the store through this process's step context (built after fork), and
    # reads backlog pressure from the broker (a connection of this process's own).
    def sessions() -> sessionmaker[Session]:
        return context.step_context().sessions

    context.install(lambda: step_context(settings),
                    lambda: classify_runtime(settings, build_default=False,
                                             policies=policy_feed(settings, sessions),
                                             pressure=_pressure_inputs(settings, sessions)))
    _celery_settings[:] = [settings]
    worker_init.connect(_refuse_modelless, weak=False, dispatch_uid="doctriage.model_check")
    return app


# The settings of the last configure_celery, for the worker_init check (a signal has no room).
_celery_settings: list[Settings] = []


def _refuse_modelless(sender: Any = None, **_: object) -> None:
    """A worker (also `celery -A doctriage.wiring:celery worker`) consuming classify or
    full_depth with no bundle: one line and exit 2 before it connects, not a failure per task.
    SystemExit, because Celery logs and swallows a signal handler's exceptions."""
    from workers.celery_app import CLASSIFY, FULL_DEPTH

    queues = set(sender.app.amqp.queues.consume_from) if sender is not None else set()
    if not _celery_settings or not queues & {CLASSIFY, FULL_DEPTH}:
        return
    try:
        model_dir(_celery_settings[0], build_default=False)
    except WiringError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Celery:
    if name == "celery":
        return configure_celery()
    raise AttributeError(name)
