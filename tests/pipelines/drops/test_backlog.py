"""The backlog on a seeded store with mixed states: the right set is claimed and enqueued, a
re-run enqueues nothing, an interrupted run resumes, --limit is honoured, and the pacer holds
back while the queue is deep."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from db.models import Document, Page
from db.repository import (
    PageRecord,
    PredictionRecord,
    mark_document,
    mark_pages,
    record_predictions,
    register_document,
    upsert_pages,
)
from db.session import session_scope
from db.states import DocumentState, PageState
from workers.intake.backlog import BacklogQuery, Pacer, run_backlog

OLD = datetime(2026, 1, 10, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.ingested: list[int] = []
        self.classified: list[int] = []
        self.deep: list[int] = []
        self.ocred: list[int] = []
        self.messages = 0

    def ingest(self, doc_ids: Sequence[int]) -> None:
        self.ingested += doc_ids
        self.messages += 1

    def classify(self, page_ids: Sequence[int]) -> None:
        self.classified += page_ids
        self.messages += 1

    def full_depth(self, page_ids: Sequence[int]) -> None:
        self.deep += page_ids
        self.messages += 1

    def ocr(self, page_ids: Sequence[int]) -> None:
        self.ocred += page_ids
        self.messages += 1

    def drain(self) -> None:
        pass


def _doc(s: Any, uri: str, state: DocumentState, pages: int = 0,
         page_state: PageState = PageState.DONE, **how: Any) -> tuple[int, list[int]]:
    """A document and its pages in these states; `how`: preds (per page, (version, pass,
    confidence) rows), created and touched (timestamps, default OLD)."""
    preds: Sequence[Any] = how.get("preds", ())
    created: datetime = how.get("created", OLD)
    touched: datetime = how.get("touched", OLD)
    doc_id, _ = register_document(s, uri, etag=uri)
    page_ids = upsert_pages(s, doc_id, [PageRecord(n, "text_layer", 3, None, 10, 10)
                                        for n in range(1, pages + 1)])
    mark_pages(s, page_ids, page_state)
    mark_document(s, doc_id, state)
    rows = []
    for i, page_preds in enumerate(preds):
        for version, pass_name, conf in page_preds:
            rows.append(PredictionRecord(page_ids[i], version, pass_name, "invoice", conf,
                                         0, 2, [conf], 1.0))
    record_predictions(s, rows)
    s.execute(update(Document).where(Document.id == doc_id)
              .values(created_at=created, updated_at=touched))
    s.execute(update(Page).where(Page.document_id == doc_id).values(updated_at=touched))
    return doc_id, page_ids


@pytest.fixture
def seeded(any_store: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    ids: dict[str, Any] = {}
    with session_scope(any_store) as s:
        src = "s3://drops/in/"
        ids["received_old"] = _doc(s, src + "a.pdf", DocumentState.RECEIVED)
        ids["received_live"] = _doc(s, src + "b.pdf", DocumentState.RECEIVED, touched=now)
        ids["old_version"] = _doc(s, src + "c.pdf", DocumentState.DONE, 2,
                                  preds=[[("v1", "early", 0.9)], [("v1", "early", 0.95)]])
        ids["current"] = _doc(s, src + "d.pdf", DocumentState.DONE, 1,
                              preds=[[("v2", "early", 0.97)]])
        ids["low_conf"] = _doc(s, src + "e.pdf", DocumentState.DONE, 3, preds=[
            [("v2", "early", 0.3)],
            [("v2", "early", 0.3), ("v2", "full", 0.8)],
            [("v2", "early", 0.9)],
        ])
        ids["pending_old"] = _doc(s, src + "f.pdf", DocumentState.INGESTED, 2,
                                  page_state=PageState.PENDING)
        ids["pending_live"] = _doc(s, src + "g.pdf", DocumentState.INGESTED, 1,
                                   page_state=PageState.PENDING, touched=now)
        ids["failed"] = _doc(s, src + "h.pdf", DocumentState.FAILED)
        ids["skipped"] = _doc(s, src + "i/", DocumentState.SKIPPED)
        ids["other_source"] = _doc(s, "s3://drops/elsewhere/j.pdf", DocumentState.DONE, 1,
                                   preds=[[("v1", "early", 0.9)]])
        ids["too_old"] = _doc(s, src + "k.pdf", DocumentState.DONE, 1,
                              preds=[[("v1", "early", 0.9)]], created=OLD - timedelta(days=30))
    return ids


def _query(**kw: Any) -> BacklogQuery:
    base = dict(source_prefix="s3://drops/in/", since=OLD - timedelta(days=1),
                model_version="v2", reclassify_below=0.5)
    base.update(kw)
    return BacklogQuery(**base)


def test_backlog_enqueues_the_right_set_once(any_store: Any, seeded: dict[str, Any]) -> None:
    rec = Recorder()
    report = run_backlog(any_store, _query(), rec, chunk_docs=3, message_pages=16)
    assert report.complete
    assert rec.ingested == [seeded["received_old"][0]]
    assert sorted(rec.classified) == sorted(seeded["old_version"][1] + seeded["pending_old"][1])
    assert rec.deep == [seeded["low_conf"][1][0]]
    assert report.claimed.documents == 4

    with session_scope(any_store) as s:
        assert s.get(Document, seeded["old_version"][0]).state == DocumentState.INGESTED
        assert s.get(Document, seeded["low_conf"][0]).state == DocumentState.INGESTED
        assert s.get(Page, seeded["low_conf"][1][0]).state == PageState.REROUTED
        assert {s.get(Page, p).state for p in seeded["old_version"][1]} == {PageState.PENDING}

    again = Recorder()
    second = run_backlog(any_store, _query(), again)
    assert second.complete and again.messages == 0 and second.claimed.documents == 0


def test_backlog_without_version_or_threshold_only_picks_unprocessed(
    any_store: Any, seeded: dict[str, Any]
) -> None:
    rec = Recorder()
    run_backlog(any_store, BacklogQuery(source_prefix="s3://drops/"), rec)
    assert rec.ingested == [seeded["received_old"][0]]
    assert sorted(rec.classified) == sorted(seeded["pending_old"][1]) and rec.deep == []


def test_interrupted_backlog_resumes_where_it_stopped(
    any_store: Any, seeded: dict[str, Any]
) -> None:
    rec = Recorder()
    chunks = iter([False, True])  # stop after the first chunk
    first = run_backlog(any_store, _query(), rec, chunk_docs=3, stop=lambda: next(chunks, True))
    assert not first.complete and first.scanned == 3
    rest = Recorder()
    second = run_backlog(any_store, _query(), rest, chunk_docs=3)
    assert second.complete and second.resumed_from > 0
    everything = Recorder()
    run_backlog(any_store, _query(), everything)
    assert everything.messages == 0
    assert sorted(rec.classified + rest.classified) == sorted(
        seeded["old_version"][1] + seeded["pending_old"][1])
    assert rec.ingested + rest.ingested == [seeded["received_old"][0]]


def test_limit_counts_documents_and_the_next_run_continues(
    any_store: Any, seeded: dict[str, Any]
) -> None:
    runs = []
    for _ in range(6):
        rec = Recorder()
        report = run_backlog(any_store, _query(limit=1), rec)
        runs.append(report.claimed.documents)
        if report.complete and report.claimed.documents == 0:
            break
    assert runs[:4] == [1, 1, 1, 1] and sum(runs) == 4


def test_pacer_waits_while_the_queue_is_deep() -> None:
    depths = iter([10, 9, 8, 3])
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    pacer = Pacer(depth=lambda q: next(depths, 0), max_in_queue=4, poll_s=0.5, sleep=sleep,
                  clock=lambda: clock[0], max_rate=2.0)
    pacer.admit("classify")
    assert slept == [0.5, 0.5, 0.5]
    pacer.admit("classify")  # queue is short now; the rate cap spaces messages 0.5 s apart
    assert pacer.messages == 2 and pacer.waited_s == pytest.approx(1.5 + 0.5)
