"""Documents that FAILED for a transient reason (workers.failures.is_transient: S3, the store or
the broker down or slow) are tried again later, bounded: after `max_attempts` failed ingests a
document stays FAILED. The reconcile task (and the embedded watcher, which has no reconciler)
calls `retry_transient_failures` each sweep and enqueues what it returns for ingest.

The wait before the next try grows with the failures so far (base * 2^(n-1), capped) and carries
a jitter seeded by the document and attempt: documents that failed together in one outage come
back spread out, and every sweep (and every test) computes the same due time for a document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow
from db.retries import (
    FailedDocument,
    FailedPage,
    reset_failed,
    reset_failed_pages,
    transient_candidates,
    transient_page_candidates,
)
from db.session import session_scope
from db.states import FailureKind
from workers.queue_config import RetryPolicy


def backoff(doc_id: int, failures: int, options: RetryPolicy) -> timedelta:
    """Wait after the `failures`-th failure: base * 2^(failures-1), capped, times a seeded
    jitter in [0.5, 1) ("equal jitter": spread out, never immediately)."""
    exponent = min(max(failures - 1, 0), 32)  # 2^32 x 30 s is far past any cap
    full = min(options.backoff_max_s, options.backoff_s * 2**exponent)
    digest = hashlib.sha256(f"{doc_id}:{failures}".encode()).digest()
    jitter = 0.5 + 0.5 * int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=full * jitter)


def retry_transient_failures(sessions: sessionmaker[Session], options: RetryPolicy,
                             now: datetime | None = None, *, limit: int = 1000) -> list[int]:
    """Move the transiently FAILED documents whose backoff has passed back to RECEIVED and
    return their ids, for the caller to enqueue for ingest. Pages an earlier try wrote stay:
    the next ingest upserts them. The move is one conditional UPDATE ... RETURNING, so when two
    reconcilers run at once each document goes to exactly one of them."""

    def take(s: Session, now: datetime, earliest: datetime) -> list[int]:
        candidates = transient_candidates(
            s, max_attempts=options.max_attempts, updated_before=earliest, limit=limit
        )
        # The same guards again in the UPDATE: a row another sweep took (or that failed again)
        # since the SELECT is left alone.
        return reset_failed(s, _due(candidates, now, options), kinds=(FailureKind.TRANSIENT,),
                            max_attempts=options.max_attempts, updated_before=earliest)

    return _sweep(sessions, options, now, take)


def retry_transient_page_failures(sessions: sessionmaker[Session], options: RetryPolicy,
                                  now: datetime | None = None, *, limit: int = 1000) -> list[int]:
    """The same for pages (a classify task whose retries ran out while the artifact store was
    down): due ones go back to PENDING, their documents from DONE to INGESTED; returns the page
    ids, for the caller to enqueue for classify. Its early prediction, if one was stored, is
    kept (ON CONFLICT DO NOTHING): the pass decides the page's route again from the same answer."""

    def take(s: Session, now: datetime, earliest: datetime) -> list[int]:
        candidates = transient_page_candidates(
            s, max_attempts=options.max_attempts, updated_before=earliest, limit=limit
        )
        # Seeded by the page id, like documents by theirs (a page and a document may share an
        # id: the same jitter for both is harmless).
        return reset_failed_pages(s, _due(candidates, now, options),
                                  max_attempts=options.max_attempts, updated_before=earliest)

    return _sweep(sessions, options, now, take)


def _sweep(sessions: sessionmaker[Session], options: RetryPolicy, now: datetime | None,
           take: Callable[[Session, datetime, datetime], list[int]]) -> list[int]:
    """One retry sweep: nothing when retries are off; else `take(session, now, earliest)` in
    one transaction, `earliest` being the newest failure time that could be due by now."""
    if options.max_attempts <= 0:
        return []
    now = now or utcnow()
    with session_scope(sessions) as s:
        return take(s, now, _earliest(now, options))


def _due(candidates: Sequence[FailedDocument | FailedPage], now: datetime,
         options: RetryPolicy) -> list[int]:
    """The candidates whose own backoff has passed."""
    return [c.id for c in candidates
            if c.updated_at <= now - backoff(c.id, c.failed_attempts, options)]


def _earliest(now: datetime, options: RetryPolicy) -> datetime:
    """Nothing is due before the shortest possible wait (base x 0.5) has passed."""
    return now - timedelta(seconds=min(options.backoff_s, options.backoff_max_s) * 0.5)
