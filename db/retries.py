"""FAILED documents, found and put back to RECEIVED for another ingest: the reconciler's bounded
retry of transient failures (workers.retrying) and the operator's `doctriage retry`. Functions
take a Session and never commit, like db.repository."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from db.models import Document, Page, utcnow
from db.states import DocumentState, FailureKind, PageState

T = TypeVar("T", bound=tuple[Any, ...])

# Ids per UPDATE: far below SQLite's bound-parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class FailedDocument:
    id: int
    source_uri: str
    failure_kind: str | None
    failed_attempts: int
    error: str | None
    updated_at: datetime


def _failed() -> Select[tuple[int, str, str | None, int, str | None, datetime]]:
    return select(
        Document.id, Document.source_uri, Document.failure_kind, Document.failed_attempts,
        Document.error, Document.updated_at,
    ).where(Document.state == DocumentState.FAILED.value)


def _retry_due(q: Select[T], row: type[Document] | type[Page], max_attempts: int,
               updated_before: datetime, limit: int | None) -> Select[T]:
    """`q` narrowed to the transient failures of `row`'s table with attempts left, untouched
    since `updated_before`, oldest first: those whose backoff may have passed."""
    return q.where(
        row.failure_kind == FailureKind.TRANSIENT.value,
        row.failed_attempts < max_attempts,
        row.updated_at < updated_before,
    ).order_by(row.updated_at, row.id).limit(limit)


def failure_counts(s: Session) -> dict[str, int]:
    """FAILED documents by failure kind, zero-filled (`doctriage status`)."""
    out = {k.value: 0 for k in FailureKind}
    q = select(Document.failure_kind, func.count()).where(
        Document.state == DocumentState.FAILED.value
    ).group_by(Document.failure_kind)
    for kind, n in s.execute(q):
        out[kind or "unknown"] = int(n)
    return out


def transient_candidates(
    s: Session, *, max_attempts: int, updated_before: datetime, limit: int | None = None
) -> list[FailedDocument]:
    """FAILED for a transient reason, fewer than `max_attempts` failures, untouched since
    `updated_before`: the documents whose backoff may have passed, oldest first."""
    q = _retry_due(_failed(), Document, max_attempts, updated_before, limit)
    return [FailedDocument(*row) for row in s.execute(q)]


def failed_documents(
    s: Session,
    *,
    kinds: Iterable[FailureKind | str] | None = None,
    since: datetime | None = None,
    reason: str | None = None,
) -> list[FailedDocument]:
    """FAILED documents of these kinds (None: any), failed at or after `since`, whose error
    contains `reason` (case-insensitive), in id order."""
    q = _failed()
    if kinds is not None:
        q = q.where(Document.failure_kind.in_([FailureKind(k).value for k in kinds]))
    if since is not None:
        q = q.where(Document.updated_at >= since)
    if reason:
        q = q.where(func.lower(Document.error).contains(reason.lower(), autoescape=True))
    return [FailedDocument(*row) for row in s.execute(q.order_by(Document.id))]


def reset_failed(
    s: Session,
    doc_ids: Sequence[int],
    *,
    kinds: Iterable[FailureKind | str] | None = None,
    max_attempts: int | None = None,
    updated_before: datetime | None = None,
) -> list[int]:
    """FAILED -> RECEIVED (error and kind cleared; `attempts` and `failed_attempts` kept) for
    those of `doc_ids` that still match the guards; returns the ids that moved. One conditional
    UPDATE ... RETURNING per chunk: of two callers racing for a document, one gets it."""
    table = Document.__table__
    moved: list[int] = []
    ids = sorted(set(doc_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        stmt = (
            update(table)
            .where(table.c.id.in_(chunk), table.c.state == DocumentState.FAILED.value)
            .values(state=DocumentState.RECEIVED.value, error=None, failure_kind=None,
                    updated_at=utcnow())
            .returning(table.c.id)
        )
        if kinds is not None:
            stmt = stmt.where(table.c.failure_kind.in_([FailureKind(k).value for k in kinds]))
        if max_attempts is not None:
            stmt = stmt.where(table.c.failed_attempts < max_attempts)
        if updated_before is not None:
            stmt = stmt.where(table.c.updated_at < updated_before)
        moved.extend(int(i) for i in s.execute(stmt).scalars())
    return sorted(moved)


# --- pages: a classify task whose retries ran out while the artifact store was down -----------


@dataclass(frozen=True)
class FailedPage:
    id: int
    document_id: int
    failed_attempts: int
    updated_at: datetime


def transient_page_candidates(
    s: Session, *, max_attempts: int, updated_before: datetime, limit: int | None = None
) -> list[FailedPage]:
    """Pages FAILED for a transient reason, as transient_candidates for documents."""
    failed = select(Page.id, Page.document_id, Page.failed_attempts, Page.updated_at).where(
        Page.state == PageState.FAILED.value)
    q = _retry_due(failed, Page, max_attempts, updated_before, limit)
    return [FailedPage(*row) for row in s.execute(q)]


def reset_failed_pages(
    s: Session, page_ids: Sequence[int], *, max_attempts: int, updated_before: datetime
) -> list[int]:
    """Transiently FAILED pages -> PENDING (for classify), guarded like reset_failed; their
    documents, which went DONE when the pages failed, go back to INGESTED so that the classify
    step finishes them again. Returns the page ids that moved."""
    pages, docs = Page.__table__, Document.__table__
    now = utcnow()
    moved: list[tuple[int, int]] = []
    ids = sorted(set(page_ids))
    for start in range(0, len(ids), _CHUNK):
        stmt = (
            update(pages)
            .where(pages.c.id.in_(ids[start : start + _CHUNK]),
                   pages.c.state == PageState.FAILED.value,
                   pages.c.failure_kind == FailureKind.TRANSIENT.value,
                   pages.c.failed_attempts < max_attempts,
                   pages.c.updated_at < updated_before)
            .values(state=PageState.PENDING.value, error=None, failure_kind=None, updated_at=now)
            .returning(pages.c.id, pages.c.document_id)
        )
        moved.extend((int(i), int(d)) for i, d in s.execute(stmt))
    doc_ids = sorted({d for _, d in moved})
    for start in range(0, len(doc_ids), _CHUNK):
        s.execute(update(docs)
                  .where(docs.c.id.in_(doc_ids[start : start + _CHUNK]),
                         docs.c.state == DocumentState.DONE.value)
                  .values(state=DocumentState.INGESTED.value, updated_at=now))
    return sorted(i for i, _ in moved)
