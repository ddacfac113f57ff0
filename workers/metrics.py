"""Prometheus metrics of a worker: what it processed, how full its batches were, how long tasks
took, what failed and why. Exposed by `start_metrics_server(port)` on `/metrics`.

Multi-process: a prefork worker runs its tasks in forked children, and a metric living in a
child's memory would be invisible to a server in the parent. So `doctriage worker` calls
`enable_multiprocess(dir)` first: every process writes its values to memory-mapped files in
that folder and the one HTTP server, in the worker's main process, sums them
(prometheus_client's multiprocess mode). A thread-pool worker is one process and could do
without, but uses the same path so there is one way to run. Without `enable_multiprocess` the
metrics live in the process's default registry (embedded runs, tests).

The metric objects are created on first use, not at import, so that `enable_multiprocess` can
still choose the storage after this module was imported.

Label values are kept low-cardinality on purpose: classes, exit stages, pass names, task names
and exception *type* names - never ids, URIs or messages.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

_lock = threading.Lock()
_metrics: _Metrics | None = None

# Batch fill is a fraction of max_batch: ten buckets resolve "half-empty" from "full".
FILL_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# From a 10 ms classify batch on a GPU to a 2000-page OCR ingest.
TASK_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
PAGE_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 60)


@dataclass(frozen=True)
class _Metrics:
    pages_classified: Counter
    confidence: Histogram
    pages_rerouted: Counter
    pages_ingested: Counter
    ocr_pages: Counter
    page_ingest_seconds: Histogram
    batch_fill: Histogram
    batch_seconds: Histogram
    queue_depth: Gauge
    task_seconds: Histogram
    failures: Counter
    retries: Counter
    loss: Gauge
    loss_pages: Gauge


def _build() -> _Metrics:
    return _Metrics(
        pages_classified=Counter(
            "doctriage_pages_classified", "Pages classified, by class, exit stage and pass.",
            ["label", "exit_stage", "pass_name"]),
        confidence=Histogram(
            "doctriage_confidence", "Calibrated confidence of each answer, by pass.",
            ["pass_name"], buckets=CONFIDENCE_BUCKETS),
        pages_rerouted=Counter(
            "doctriage_pages_rerouted",
            "Early answers sent to the full-depth pass (low confidence or audit sample). "
            "Re-route rate = rate(this) / rate(pages_classified{pass_name=\"early\"})."),
        pages_ingested=Counter(
            "doctriage_pages_ingested", "Pages ingested, by where the words came from.",
            ["text_source"]),
        ocr_pages=Counter(
            "doctriage_ocr_pages",
            "Pages that needed OCR, by outcome: run (tesseract ran: ingest with OCR not "
            "deferred, or the ocr step) or avoided (the OCR-free exit answered; never OCRed). "
            "Share avoided = rate(avoided) / (rate(avoided) + rate(run)).",
            ["outcome"]),
        page_ingest_seconds=Histogram(
            "doctriage_page_ingest_seconds", "Time to raster and read one page, by text source.",
            ["text_source"], buckets=PAGE_SECONDS_BUCKETS),
        batch_fill=Histogram(
            "doctriage_batch_fill", "Stage-batcher batch size as a fraction of max_batch.",
            ["batcher", "stage"], buckets=FILL_BUCKETS),
        batch_seconds=Histogram(
            "doctriage_batch_seconds", "Compute time of one stage-batcher batch.",
            ["batcher", "stage"], buckets=PAGE_SECONDS_BUCKETS),
        # livesum: the sum over the worker's live processes (a dead child's queue is no queue).
        queue_depth=Gauge(
            "doctriage_stage_queue_depth", "Pages waiting in a stage-batcher queue.",
            ["batcher", "stage"], multiprocess_mode="livesum"),
        task_seconds=Histogram(
            "doctriage_task_seconds", "Celery task run time, by task and outcome.",
            ["task", "outcome"], buckets=TASK_SECONDS_BUCKETS),
        failures=Counter(
            "doctriage_failures", "Failures, by where (task or step) and reason (error type).",
            ["where", "reason"]),
        retries=Counter(
            "doctriage_task_retries", "Task retries, by task and reason (error type).",
            ["task", "reason"]),
        # Set by the reconciler from the store (workers/loss_gauge.py): the newest value counts.
        loss=Gauge(
            "doctriage_early_exit_loss",
            "Share of early answers that full depth answers differently, estimated from the "
            "audit sample of the last day: bound=estimate, and the 95% Wilson interval's "
            "lower and upper bounds (NaN without sampled pages).",
            ["bound"], multiprocess_mode="mostrecent"),
        loss_pages=Gauge(
            "doctriage_early_exit_loss_sample_pages",
            "Audit-sampled pages (with both answers) behind doctriage_early_exit_loss.",
            multiprocess_mode="mostrecent"),
    )


def metrics() -> _Metrics:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _build()
        return _metrics


# -- storage and the endpoint ------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def enable_multiprocess(path: str | Path) -> Path:
    """Switch this process (and the children it forks) to file-backed metrics in `path`,
    emptied first: files left by an earlier run would be summed into this one's figures.
    Metrics this process already recorded in memory (say, while building the default model
    before the worker started) are dropped: they would never reach the endpoint."""
    global _metrics
    with _lock:
        if _metrics is not None:
            for collector in vars(_metrics).values():
                prometheus_client.REGISTRY.unregister(collector)
            _metrics = None
        folder = Path(path)
        if folder.exists():
            for child in folder.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        # prometheus_client picks the value storage at import; re-pick it now the env is set.
        values.ValueClass = values.get_value_class()
        return folder


def registry() -> CollectorRegistry:
    """What the endpoint serves: every process's files in multiprocess mode, else this one."""
    if multiprocess_dir() is None:
        return prometheus_client.REGISTRY
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104 - a container port
    """Serve /metrics on `port` from a daemon thread; returns the server (`.shutdown()`)."""
    metrics()  # declare every metric, so a scrape before the first task already lists them
    server, _thread = prometheus_client.start_http_server(port, addr=addr, registry=registry())
    return server


def mark_process_dead(pid: int) -> None:
    """A prefork child exited: drop its live gauges (its counters stay counted)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# -- recording (called by the steps, the stage batcher and the Celery signal handlers) ---------

_SAFE_REASON = re.compile(r"[^A-Za-z0-9_.:-]+")


def reason_of(exc: BaseException | str) -> str:
    """A bounded label value: the exception type name (or a short category string)."""
    text = type(exc).__name__ if isinstance(exc, BaseException) else str(exc)
    return _SAFE_REASON.sub("_", text)[:60] or "unknown"


def record_answers(answers: Iterable[Any], pass_name: str) -> None:
    """Answers with .label, .exit_stage, .confidence (PagePrediction or stored predictions)."""
    m = metrics()
    for a in answers:
        m.pages_classified.labels(str(a.label), str(a.exit_stage), pass_name).inc()
        m.confidence.labels(pass_name).observe(float(a.confidence))


def record_rerouted(count: int) -> None:
    if count:
        metrics().pages_rerouted.inc(count)


def record_ocr(outcome: str, count: int = 1) -> None:
    """`count` pages whose OCR was "run" or "avoided"."""
    if count:
        metrics().ocr_pages.labels(outcome).inc(count)


def record_ingested_page(text_source: str, seconds: float) -> None:
    m = metrics()
    if text_source == "ocr":  # tesseract ran during the ingest (OCR not deferred)
        m.ocr_pages.labels("run").inc()
    m.pages_ingested.labels(text_source).inc()
    m.page_ingest_seconds.labels(text_source).observe(max(0.0, seconds))


def set_queue_depths(batcher: str, depths: Sequence[int]) -> None:
    m = metrics()
    for stage, depth in enumerate(depths):
        m.queue_depth.labels(batcher, str(stage)).set(depth)


class BatcherMetrics:
    """Hooks for a stage batcher (classifier.stage_batcher.BatcherHooks): its batches and queue
    depths recorded under `batcher=name` ("early" or "full"). Passed in by doctriage.wiring,
    so the classifier never imports prometheus."""

    def __init__(self, name: str) -> None:
        self.name = name

    def queued(self, depths: list[int]) -> None:
        set_queue_depths(self.name, depths)

    def batch_done(self, stage: int, size: int, max_batch: int, seconds: float,
                   depths: list[int]) -> None:
        """One batch (its fill and time) and every stage queue's depth right after it."""
        m, labels = metrics(), (self.name, str(stage))
        m.batch_fill.labels(*labels).observe(size / max_batch if max_batch else 0.0)
        m.batch_seconds.labels(*labels).observe(max(0.0, seconds))
        set_queue_depths(self.name, depths)


def record_task(task: str, seconds: float, outcome: str) -> None:
    metrics().task_seconds.labels(task, outcome).observe(max(0.0, seconds))


def record_failure(where: str, reason: BaseException | str, count: int = 1) -> None:
    if count:
        metrics().failures.labels(where, reason_of(reason)).inc(count)


def record_retry(task: str, reason: BaseException | str) -> None:
    metrics().retries.labels(task, reason_of(reason)).inc()


def record_loss_estimate(pages: int, estimate: float | None, lower: float | None,
                         upper: float | None) -> None:
    """The early-exit loss estimate (db.audit_loss) as gauges; None (no pages) is NaN."""
    m = metrics()
    for bound, value in (("estimate", estimate), ("lower", lower), ("upper", upper)):
        m.loss.labels(bound).set(float("nan") if value is None else value)
    m.loss_pages.set(pages)
