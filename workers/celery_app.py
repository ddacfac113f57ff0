"""The Celery app: broker settings, queues and routes (all in this one place) and the beat
schedule. Tasks live in workers/tasks.py; they are thin wrappers around workers/steps.py.

The app is configured by `configure(QueueConfig(...))`, which doctriage.wiring calls from the
settings (workers never read doctriage settings themselves). Start workers with
`doctriage worker --queues ...` or `celery -A doctriage.wiring:celery worker -Q ...`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from celery import Celery, Task
from celery.exceptions import InvalidTaskError
from celery.worker.request import Request
from kombu import Exchange, Queue
from kombu.utils.scheduling import round_robin_cycle

from workers.queue_config import QueueConfig

INGEST, CLASSIFY, FULL_DEPTH, MAINTENANCE = "ingest", "classify", "full_depth", "maintenance"
OCR = "ocr"  # deferred OCR: CPU workers, prefork, one process per core
QUEUES: tuple[str, ...] = (INGEST, CLASSIFY, FULL_DEPTH, MAINTENANCE, OCR)

# Task name -> queue. The only routing table: producers never name a queue themselves.
ROUTES: dict[str, dict[str, str]] = {
    "doctriage.ingest": {"queue": INGEST},
    "doctriage.classify": {"queue": CLASSIFY},
    "doctriage.full_depth": {"queue": FULL_DEPTH},
    "doctriage.ocr": {"queue": OCR},
    "doctriage.reconcile": {"queue": MAINTENANCE},
    "doctriage.backlog": {"queue": MAINTENANCE},
}


class FullDepthLast(round_robin_cycle):
    """The order a worker's Redis consumer asks its queues in (kombu's queue_order_strategy;
    BRPOP takes from the first non-empty key): round robin, as kombu's default, except that
    full_depth always comes last. A worker consuming classify and full_depth therefore runs a
    full-depth batch only when its other queues are empty: the full-depth pass (audit and
    re-routed pages, all layers) yields to live classify work and drains when classify is
    idle. Nothing is lost: the messages wait in Redis, the pages stay REROUTED in the store."""

    def consume(self, n: int) -> list[str]:
        items = list(self.items[:n])
        return [q for q in items if q != FULL_DEPTH] + [q for q in items if q == FULL_DEPTH]


QUEUE_ORDER = f"{__name__}:FullDepthLast"


class CheckedRequest(Request):
    """Celery unpacks a message body into (args, kwargs, embed) in the worker's consumer itself:
    one malformed body (a JSON object, a short list) stopped the whole worker, and the restored,
    never-acked message then stopped the next one. As InvalidTaskError the consumer logs it and
    discards that message instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(f"malformed task message body ({exc})") from None


class CheckedTask(Task):
    Request = CheckedRequest


app = Celery(
    "doctriage", task_cls=CheckedTask,
    include=["workers.tasks", "workers.backlog_runner", "workers.task_signals"],
)


def _forget_connections_if_moved(target: Celery, broker_url: str) -> None:
    """A process configured again for another broker must not go on publishing through the
    connections its app pooled for the old one (the app caches its pool, and its producer pool,
    on first use and never looks at broker_url again)."""
    if target._pool is None or target.conf.broker_url == broker_url:
        return
    # Forgotten, not closed: kombu's global registry (kombu.pools) hands the same pool out again
    # to whoever asks for that broker later.
    target._pool = None
    target.amqp._producer_pool = None


def configure(config: QueueConfig, target: Celery = app) -> Celery:
    _forget_connections_if_moved(target, config.broker_url)
    target.conf.update(
        broker_url=config.broker_url,
        result_backend=config.result_backend_url,
        task_ignore_result=config.result_backend_url is None,
        # JSON only: a message never carries pickle (nor pixels: ids only).
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Ack after the step ran, one message at a time per process: a crash re-delivers it,
        # and a long OCR task never sits on a prefetched backlog another worker could take.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": config.visibility_timeout_s,
            "queue_order_strategy": QUEUE_ORDER if config.full_depth_yields else "round_robin"},
        result_backend_transport_options={"visibility_timeout": config.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Each queue has its own direct exchange and routing key. A bare Queue(name) inherits the
        # default queue's exchange *and key*, so every queue would be bound to the same key and a
        # message routed to one would land in all of them.
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue=MAINTENANCE,
        task_routes=ROUTES,
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        # Task events for Flower (and `celery events`): received/started/succeeded/failed.
        worker_send_task_events=config.task_events,
        task_send_sent_event=config.task_events,
        beat_schedule={
            "reconcile": {
                "task": "doctriage.reconcile",
                "schedule": config.reconcile_every_s,
                "kwargs": asdict(config.stuck),
                # A sweep that waited three periods is stale (newer ones follow): dropped, so a
                # maintenance worker back from an outage does not run hundreds of them.
                "options": {"expires": 3 * config.reconcile_every_s},
            },
            **config.extra_beat,
        },
        doctriage_classify_chunk=config.classify_chunk,
        doctriage_backlog_priority=config.backlog_priority,
        doctriage_preload_model=config.preload_model,
    )
    return target
