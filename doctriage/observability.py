"""What a long-running doctriage process sets up before it starts work: its logging (plain or
JSON lines, credentials redacted) and, when `DOCTRIAGE_METRICS_PORT` is set, the Prometheus
endpoint.

Workers always use prometheus_client's multiprocess mode: a prefork worker's tasks run in
forked children, whose figures only reach the one endpoint (served from the main process)
through the files in PROMETHEUS_MULTIPROC_DIR. The folder is the one the environment names,
else a fresh temporary one (what compose uses); it is emptied at start. Other commands keep
their metrics in memory.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from doctriage.logging_setup import configure_from_settings
from workers import metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from doctriage.settings import Settings


def _leave_logging_to_us(**_: Any) -> None:
    """Celery's setup_logging receiver: its presence tells Celery not to configure logging."""


def prepare_worker(settings: Settings) -> WSGIServer | None:
    """Logging, then the metrics endpoint (if configured). Returns the HTTP server or None."""
    from celery.signals import setup_logging

    configure_from_settings(settings)
    setup_logging.connect(_leave_logging_to_us, weak=False)
    if settings.metrics_port is None:
        return None
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="doctriage-metrics-")
    metrics.enable_multiprocess(folder)
    return metrics.start_metrics_server(int(settings.metrics_port))
