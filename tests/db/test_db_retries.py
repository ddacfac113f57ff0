"""Transiently FAILED documents come back, bounded (workers.retrying, db.retries), on SQLite and
PostgreSQL: the failure's kind is stored, a document whose backoff has passed goes back to
RECEIVED exactly once, and nothing else moves. The clock is an argument: no test sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from racekit import run_at_once
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document, Page
from db.repository import (
    PageRecord,
    finish_documents,
    mark_document,
    mark_pages,
    register_document,
    upsert_pages,
)
from db.retries import failed_documents, reset_failed
from db.session import make_engine, session_factory, session_scope
from db.states import DocumentState, FailureKind, PageState
from workers.retrying import (
    RetryPolicy,
    backoff,
    retry_transient_failures,
    retry_transient_page_failures,
)

OPTS = RetryPolicy(max_attempts=3, backoff_s=30.0, backoff_max_s=600.0)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _failed(factory: sessionmaker[Session], name: str, kind: FailureKind | None,
            failures: int = 1, at: datetime = NOW - timedelta(hours=1),
            error: str = "EndpointConnectionError: Could not connect") -> int:
    """A document that failed `failures` times, the last one at `at`."""
    with session_scope(factory) as s:
        doc_id, _ = register_document(s, f"file:///in/{name}.pdf", sha256=name)
        for _ in range(failures):
            mark_document(s, doc_id, DocumentState.INGESTING)
            mark_document(s, doc_id, DocumentState.FAILED, error=error, failure_kind=kind)
        s.execute(update(Document).where(Document.id == doc_id).values(updated_at=at))
    return doc_id


def _row(factory: sessionmaker[Session], doc_id: int) -> Document:
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        return doc


def test_failing_records_the_kind_and_counts_failed_attempts(factory) -> None:
    transient = _failed(factory, "t", FailureKind.TRANSIENT, failures=2)
    permanent = _failed(factory, "p", FailureKind.PERMANENT)
    unsaid = _failed(factory, "u", None)  # an old caller: permanent, never retried by itself
    t, p, u = (_row(factory, i) for i in (transient, permanent, unsaid))
    assert (t.state, t.failure_kind, t.failed_attempts, t.attempts) == ("FAILED", "transient", 2, 2)
    assert (p.failure_kind, p.failed_attempts) == ("permanent", 1)
    assert u.failure_kind == "permanent"
    with session_scope(factory) as s:  # any other state clears the kind, keeps the count
        mark_document(s, transient, DocumentState.INGESTING)
    t = _row(factory, transient)
    assert (t.state, t.failure_kind, t.failed_attempts) == ("INGESTING", None, 2)


def test_the_check_constraint_refuses_an_unknown_kind(factory) -> None:
    doc_id = _failed(factory, "x", FailureKind.TRANSIENT)
    with pytest.raises(IntegrityError), session_scope(factory) as s:
        s.execute(update(Document).where(Document.id == doc_id).values(failure_kind="maybe"))


def test_backoff_grows_is_capped_and_jittered() -> None:
    for n in range(1, 12):
        full = min(OPTS.backoff_max_s, OPTS.backoff_s * 2 ** (n - 1))
        waits = {backoff(doc_id, n, OPTS).total_seconds() for doc_id in range(1, 50)}
        assert all(full * 0.5 <= w < full for w in waits), (n, waits)
        assert len(waits) > 40  # spread: documents failed together do not come back together
    assert backoff(7, 2, OPTS) == backoff(7, 2, OPTS)  # the same due time at every sweep


def test_a_transient_failure_past_its_backoff_goes_back_to_received(factory) -> None:
    failed_at = NOW - timedelta(minutes=5)
    old = _failed(factory, "old", FailureKind.TRANSIENT, failures=2, at=failed_at)
    fresh = _failed(factory, "fresh", FailureKind.TRANSIENT, at=NOW - timedelta(seconds=10))
    permanent = _failed(factory, "perm", FailureKind.PERMANENT, at=failed_at)
    spent = _failed(factory, "spent", FailureKind.TRANSIENT, failures=3, at=failed_at)
    done = _failed(factory, "done", FailureKind.TRANSIENT, at=failed_at)
    with session_scope(factory) as s:
        mark_document(s, done, DocumentState.DONE)

    assert retry_transient_failures(factory, OPTS, NOW) == [old]
    d = _row(factory, old)
    assert (d.state, d.error, d.failure_kind, d.failed_attempts) == ("RECEIVED", None, None, 2)
    assert d.updated_at > failed_at  # the stuck-document sweep will not take it at once
    for doc_id, state in ((fresh, "FAILED"), (permanent, "FAILED"), (spent, "FAILED"),
                          (done, "DONE")):
        assert _row(factory, doc_id).state == state
    assert retry_transient_failures(factory, OPTS, NOW) == []  # taken once
    # Later, the fresh one's backoff (15-30 s after one failure) has passed too.
    assert retry_transient_failures(factory, OPTS, NOW + timedelta(seconds=25)) == [fresh]


def test_each_document_waits_for_its_own_backoff(factory) -> None:
    failed_at = NOW - timedelta(minutes=10)
    ids = [_failed(factory, f"d{i}", FailureKind.TRANSIENT, failures=1 + i % 2, at=failed_at)
           for i in range(20)]
    due = {i: failed_at + backoff(i, _row(factory, i).failed_attempts, OPTS) for i in ids}
    taken: list[int] = []
    for t in sorted(set(due.values())):
        just_before = retry_transient_failures(factory, OPTS, t - timedelta(milliseconds=5))
        assert not set(just_before) & {i for i, when in due.items() if when >= t}
        taken += just_before
        taken += retry_transient_failures(factory, OPTS, t + timedelta(milliseconds=5))
    assert sorted(taken) == sorted(ids)


def test_max_attempts_zero_turns_the_retry_off(factory) -> None:
    _failed(factory, "a", FailureKind.TRANSIENT)
    assert retry_transient_failures(factory, RetryPolicy(max_attempts=0), NOW) == []


def test_concurrent_sweeps_never_both_take_a_document(engine: Engine, factory) -> None:
    ids = [_failed(factory, f"c{i}", FailureKind.TRANSIENT) for i in range(60)]
    engines = [make_engine(engine.url.render_as_string(hide_password=False)) for _ in range(4)]
    try:
        results = run_at_once(
            [partial(retry_transient_failures, session_factory(e), OPTS, NOW) for e in engines]
        )
    finally:
        for e in engines:
            e.dispose()
    taken = [i for r in results for i in r]
    assert sorted(taken) == sorted(ids)  # every document once: none twice, none lost


def test_operator_selection_and_reset(factory) -> None:
    t1 = _failed(factory, "t1", FailureKind.TRANSIENT, at=NOW - timedelta(days=2))
    t2 = _failed(factory, "t2", FailureKind.TRANSIENT, at=NOW,
                 error="ClientError: SlowDown (503)")
    p1 = _failed(factory, "p1", FailureKind.PERMANENT, at=NOW, error="p1.pdf: truncated PDF")
    with session_scope(factory) as s:
        ids = lambda **kw: [d.id for d in failed_documents(s, **kw)]  # noqa: E731
        assert ids(kinds=[FailureKind.TRANSIENT]) == [t1, t2]
        assert ids() == [t1, t2, p1]
        assert ids(since=NOW - timedelta(hours=1)) == [t2, p1]
        assert ids(reason="slowdown") == [t2]
        assert ids(reason="%") == []  # a LIKE wildcard is text here
        assert reset_failed(s, [t1, p1], kinds=[FailureKind.TRANSIENT]) == [t1]
        assert reset_failed(s, [t1, p1]) == [p1]  # any kind; t1 is no longer FAILED
    assert {_row(factory, i).state for i in (t1, p1)} == {"RECEIVED"}
    assert _row(factory, p1).failed_attempts == 1  # kept


def test_transient_page_failures_go_back_to_pending_and_reopen_their_document(factory) -> None:
    with session_scope(factory) as s:
        doc_id, _ = register_document(s, "file:///in/p.pdf", sha256="p")
        mark_document(s, doc_id, DocumentState.INGESTED, page_count=3)
        ids = upsert_pages(s, doc_id, [PageRecord(n, "text_layer", 5, f"k{n}", 10, 10)
                                       for n in (1, 2, 3)])
        mark_pages(s, ids[:1], PageState.DONE)
        mark_pages(s, ids[1:2], PageState.FAILED, error="EndpointConnectionError: x",
                   failure_kind=FailureKind.TRANSIENT)
        mark_pages(s, ids[2:], PageState.FAILED, error="page artifact unreadable: gone")
        assert finish_documents(s, [doc_id]) == [doc_id]  # every page final: DONE
    with session_scope(factory) as s:
        s.execute(update(Page).values(updated_at=NOW - timedelta(hours=1)))
        kinds = {p.id: (p.failure_kind, p.failed_attempts) for p in s.query(Page)}
    assert kinds == {ids[0]: (None, 0), ids[1]: ("transient", 1), ids[2]: ("permanent", 1)}

    assert retry_transient_page_failures(factory, OPTS, NOW) == [ids[1]]
    assert retry_transient_page_failures(factory, OPTS, NOW) == []  # taken once
    with session_scope(factory) as s:
        states = {p.id: p.state for p in s.query(Page)}
        assert states == {ids[0]: "DONE", ids[1]: "PENDING", ids[2]: "FAILED"}
        assert s.get(Document, doc_id).state == "INGESTED"  # finished again after classify
