"""One settings object for the whole application.

Defaults are the embedded setup: a SQLite file, a local artifact folder, an in-process queue and
the default model bundle, all under ``DOCTRIAGE_HOME``. Every field can be set from the
environment as ``DOCTRIAGE_<FIELD>`` (e.g. ``DOCTRIAGE_DATABASE_URL``, ``DOCTRIAGE_BROKER_URL``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.options import IngestOptions
from workers.queue_config import RetryPolicy, StuckRules, queue_defaults

# One source of defaults: the ingest budgets are pipelines.options.IngestOptions' (which says
# how each was chosen), the broker's and reconciler's workers.queue_config.QueueConfig's.
_INGEST = IngestOptions()
_QUEUE = queue_defaults()
_RETRY = RetryPolicy()
_STUCK = StuckRules()
# The looser budget of the policy used under backlog pressure (DOCTRIAGE_PRESSURE_BUDGET, and
# what `train` fits it at): 2 points of pages may differ from full depth while a backlog is
# worked off.
PRESSURE_BUDGET = 0.02


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCTRIAGE_", extra="ignore")

    # Where the embedded setup keeps its store, artifacts and default model.
    home: Path = Field(default_factory=lambda: Path.home() / ".doctriage")

    # Store and queue. None means the embedded default under `home` / the in-process queue.
    database_url: str | None = None
    broker_url: str | None = None
    result_backend_url: str | None = None

    # Artifacts (page words/boxes/raster): a local folder, or s3://bucket/prefix.
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    # Model: a bundle directory; None means the default bundle (built on first use).
    model_dir: Path | None = None
    device: str = "cpu"
    # Encoder attention: "eager" is transformers' own layers (bit-exact, the default); "fused"
    # runs one scaled_dot_product_attention kernel per layer: 2.9x full-depth pages/s for the
    # base size in bf16 on an H200 (bench/results/gpu_check.json), equal to float tolerance.
    attention: Literal["eager", "fused"] = "eager"

    # Ingestion.
    ocr_mode: Literal["auto", "ocr", "text"] = _INGEST.ocr_mode
    # Deferred OCR (on by default; DOCTRIAGE_DEFER_OCR=0 turns it off): ingest does not run
    # tesseract; a page that needs OCR first meets the model's OCR-free exit and is OCRed (the
    # ocr step / queue) only when that exit does not settle it.
    defer_ocr: bool = _INGEST.defer_ocr
    dpi: int = _INGEST.dpi
    ocr_dpi: int = _INGEST.ocr_dpi
    ocr_timeout_s: float = _INGEST.ocr_timeout_s
    max_pages: int = _INGEST.max_pages
    max_page_pixels: int = _INGEST.max_page_pixels
    max_page_words: int = _INGEST.max_page_words
    max_file_bytes: int = _INGEST.max_file_bytes
    # Budgets per image, page and document.
    max_image_pixels: int = _INGEST.max_image_pixels
    max_page_objects: int = _INGEST.max_page_objects
    max_parse_mb: int = _INGEST.max_parse_mb
    max_artifact_bytes: int = _INGEST.max_artifact_bytes
    max_ingest_s: float = _INGEST.max_ingest_s
    # Local folders: a symlink whose target lies outside the folder is recorded SKIPPED and
    # never opened; DOCTRIAGE_FOLLOW_SYMLINKS=true reads it like any other file.
    follow_symlinks: bool = False
    ocr_lang: str = _INGEST.ocr_lang
    ocr_psm: int = _INGEST.ocr_psm
    min_ocr_conf: float = _INGEST.min_ocr_conf
    min_text_coverage: float = _INGEST.min_text_coverage

    # Classification and the stage batcher.
    max_batch: int = 16
    max_delay_ms: float = 20.0
    reroute_below: float = 0.6
    audit_fraction: float = 0.02
    seed: int = 0
    # Classify workers read the store's newest exit policy of their model version (`doctriage
    # thresholds tune --apply`) at most this often, at a classify call; `run` reads it once.
    policy_poll_s: float = 30.0
    # Load-adaptive exits (workers/pressure.py): while the classify queue holds more than
    # pressure_queue_depth messages (None: never by depth), or a backlog run declares it,
    # classify workers decide with the bundle's pressure policy, fitted at pressure_budget (a
    # share of pages whose early answer may differ from full depth; 0 turns load adaptation
    # off). The gauge is read at most every pressure_poll_s.
    pressure_budget: float = PRESSURE_BUDGET
    pressure_queue_depth: int | None = 8
    pressure_poll_s: float = 1.0
    # Workers take full-depth work only when their other queues (classify) are empty.
    full_depth_yields: bool = _QUEUE["full_depth_yields"]
    # Backlog messages are sent at this Celery priority (0 highest, 9 lowest), so live work
    # goes first; what a backlog page's step sends next inherits it (workers/tasks.py). Redis
    # has the levels 0, 3, 6, 9 (kombu rounds down: 2 is 0).
    backlog_priority: int = Field(default=_QUEUE["backlog_priority"], ge=0, le=9)
    # glibc malloc settings for model processes (workers/allocator.py): keep freed tensors'
    # memory for reuse; roughly doubles CPU throughput. Off: DOCTRIAGE_MALLOC_TUNING=false.
    malloc_tuning: bool = True

    # Operations.
    # Recovery (ARCHITECTURE.md, "Recovery"): the reconciler runs every reconcile_every_s and
    # re-enqueues what nobody can be working on. A RECEIVED/PENDING/REROUTED row whose queue is
    # empty has lost its message: lost_after_s; while the queue holds messages: stuck_after_s.
    # INGESTING beats every 5 s between pages: ingest_stuck_after_s of silence (None: the
    # slowest page, ocr_timeout_s + 30 s, at least 60 s). CLASSIFYING: max(classify_stuck_after_s,
    # 4 x p99 measured page latency).
    # visibility_timeout_s: Redis re-delivers an unacknowledged message after it; it should
    # exceed the longest task (an ingest: max_ingest_s, 600 s) plus the longest retry countdown
    # (300 s).
    visibility_timeout_s: int = _QUEUE["visibility_timeout_s"]
    reconcile_every_s: float = _QUEUE["reconcile_every_s"]
    stuck_after_s: float = _STUCK.stuck_after_s
    lost_after_s: float = _STUCK.lost_after_s
    ingest_stuck_after_s: float | None = None
    classify_stuck_after_s: float = _STUCK.classify_after_s
    # A page being OCRed by the ocr step is taken back after this (None: ocr_timeout_s + 30 s).
    ocr_stuck_after_s: float | None = None
    # Documents FAILED for a transient reason (S3, the store or broker unreachable) go back to
    # ingest after retry_backoff_s x 2^(failures-1) (jittered, capped at retry_backoff_max_s),
    # until max_attempts ingests have failed; `doctriage retry` re-runs any of them by hand.
    max_attempts: int = _RETRY.max_attempts
    retry_backoff_s: float = _RETRY.backoff_s
    retry_backoff_max_s: float = _RETRY.backoff_max_s
    backlog_hour: int = 2
    backlog_source: str | None = None
    metrics_port: int | None = None
    log_json: bool = False
    # Celery task events from the start (and task-sent events from producers): four Redis
    # publishes per task, 3-6 CPU-ms per page on 1-3-page documents (bench/queue_overhead.py).
    # Off by default: Flower switches workers' events on itself (its enable_events option).
    task_events: bool = _QUEUE["task_events"]
    log_level: str = "INFO"
    # `doctriage review`: required to serve on a host other than loopback, then asked of every
    # request (ARCHITECTURE.md, "Review page"); a SecretStr so no repr or log shows it.
    review_token: SecretStr | None = None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'doctriage.db'}"

    @property
    def resolved_artifact_url(self) -> str:
        return self.artifact_url or str(self.home / "artifacts")

    def stuck_rules(self) -> StuckRules:
        """The reconciler's bounds. Unset, the ingest and OCR ones follow the OCR time-out:
        ingest heartbeats come between pages, so silence must outlast the slowest page (OCR,
        plus rendering at ocr_dpi and the artifact); one page's OCR is bounded by the time-out,
        and rendering it again takes well under 30 s."""
        return StuckRules(
            stuck_after_s=self.stuck_after_s,
            lost_after_s=self.lost_after_s,
            ingest_after_s=self.ingest_stuck_after_s or max(60.0, self.ocr_timeout_s + 30.0),
            classify_after_s=self.classify_stuck_after_s,
            ocr_after_s=self.ocr_stuck_after_s or self.ocr_timeout_s + 30.0,
        )

    @property
    def default_model_dir(self) -> Path:
        return self.home / "models" / "default"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.default_model_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
