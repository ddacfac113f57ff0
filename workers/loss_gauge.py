"""The early-exit loss gauge (`doctriage_early_exit_loss`, workers/metrics.py): beat's reconciler
refreshes it from the store, so the maintenance worker's metrics endpoint serves the same
estimate as `doctriage audit loss --since <a day ago>` without anyone running the command.

At most once a minute per process (the reconciler runs every 10 s; the query reads the whole
day's audit sample), over the audit sample of the last day."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.audit import AuditFilter
from db.audit_loss import loss
from db.models import utcnow
from db.session import session_scope
from workers import metrics

log = logging.getLogger(__name__)

WINDOW = timedelta(days=1)
REFRESH_S = 60.0
_last_refresh: float | None = None


def refresh(sessions: sessionmaker[Session], *, now: datetime | None = None,
            window: timedelta = WINDOW) -> dict[str, Any]:
    """Estimate the loss over the audit sample of [now - window, now] and set the gauges."""
    until = now or utcnow()
    with session_scope(sessions) as s:
        total = loss(s, AuditFilter(since=until - window, until=until))["total"]
    metrics.record_loss_estimate(total["pages"], total["estimate"], total["lower"],
                                 total["upper"])
    return total


def refresh_due(sessions: sessionmaker[Session], *, every_s: float = REFRESH_S,
                clock: Any = time.monotonic) -> dict[str, Any] | None:
    """`refresh` unless this process did it less than `every_s` ago. A store error is logged and
    leaves the gauges as they were: the reconcile sweep that calls this goes on."""
    global _last_refresh
    now = clock()
    if _last_refresh is not None and now - _last_refresh < every_s:
        return None
    _last_refresh = now
    try:
        return refresh(sessions)
    except SQLAlchemyError as exc:
        log.warning("early-exit loss gauge not refreshed: %s", str(exc).splitlines()[0])
        return None
