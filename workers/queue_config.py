"""How the Celery app is configured: the broker, the reconciler's schedule, bounds and retry
policy, task events. Plain data (no Celery import), so that doctriage.settings takes its
defaults from here without loading Celery."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class StuckRules:
    """When the reconciler takes a row back (ARCHITECTURE.md, "Recovery"): only when nobody can
    be working on it, so healthy work is never run twice.

    - Waiting rows (RECEIVED documents, PENDING and REROUTED pages) have a message in their
      step's queue. An empty queue means it is lost: `lost_after_s`. A queue holding messages
      (or one whose depth cannot be read) may still hold theirs: `stuck_after_s`.
    - INGESTING: the ingest beats (HEARTBEAT_S) between pages; `ingest_after_s` of silence
      means its worker died.
    - CLASSIFYING pages, and REROUTED ones a full-depth batch holds: a batch takes seconds, so
      `max(classify_after_s, step_factor x p99 page latency measured over recent predictions)`.
    - OCR_QUEUED pages wait in the ocr queue (as PENDING ones do); OCRING ones a worker is
      reading: one page's OCR is bounded by the OCR time-out, so `ocr_after_s` (the settings'
      default: ocr_timeout_s + 30 s) of silence means its worker died.
    """

    stuck_after_s: float = 900.0
    lost_after_s: float = 30.0
    ingest_after_s: float = 90.0
    classify_after_s: float = 30.0
    step_factor: float = 4.0
    ocr_after_s: float = 90.0

    @classmethod
    def uniform(cls, seconds: float) -> StuckRules:
        """One bound for every state, whatever the queues hold."""
        return cls(seconds, seconds, seconds, seconds, 0.0, seconds)


@dataclass(frozen=True)
class QueueConfig:
    broker_url: str
    result_backend_url: str | None = None
    # Redis re-delivers an unacknowledged message after this long: it should exceed the longest
    # task (an ingest, bounded by max_ingest_s) plus the longest retry countdown (300 s). A
    # task still running then is handed out again, which is safe (idempotent claims and upserts)
    # but wasted. A dead worker's work comes back sooner through the reconciler.
    visibility_timeout_s: int = 900
    reconcile_every_s: float = 10.0
    # The reconciler's bounds (sent with every sweep the beat schedules).
    stuck: StuckRules = field(default_factory=StuckRules)
    # Page ids per classify message: one batcher batch, so a task writes one transaction.
    classify_chunk: int = 16
    # Load the model when a prefork child starts (classify workers), not on the first task.
    preload_model: bool = False
    # Task events (sent/received/started/succeeded) for Flower and `celery events`; Flower
    # also turns workers' events on at run time (remote control `enable_events`).
    task_events: bool = False
    # A worker asks its queues for work with full_depth last (celery_app.FullDepthLast): the
    # full-depth pass yields to live classify work and drains when classify is idle.
    full_depth_yields: bool = True
    # The Celery priority of the backlog's messages and of every message its work leads to
    # (ingest -> classify -> ocr -> full depth): Redis serves each priority level of every queue
    # before the next level, and live work is sent at 0 (the highest), so a live drop's pages,
    # its full-depth pass included, go ahead of a backlog already queued. 0: no difference.
    backlog_priority: int = 6
    # More beat entries by name (the nightly backlog: workers.backlog_runner.backlog_beat_entry).
    extra_beat: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, the reconciler retries what failed for a transient reason
    (workers.retrying)."""

    max_attempts: int = 5  # failed ingests after which a transient failure is final
    backoff_s: float = 30.0  # wait after the first failure
    backoff_max_s: float = 1800.0


def queue_defaults() -> dict[str, Any]:
    """The defaults above by field name (doctriage.settings' defaults for the same settings)."""
    return {f.name: f.default for f in fields(QueueConfig) if f.default is not MISSING}
