"""Repository behaviour on SQLite and PostgreSQL: idempotent writes, atomic batches, stuck
queries, final labels."""

from __future__ import annotations

import threading
import time
from datetime import UTC, timedelta

import pytest
from racekit import run_at_once
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.models import Document, Page, Prediction
from db.session import session_scope
from db.states import DocumentState, PageState, Pass


def _count(factory: sessionmaker[Session], model: type) -> int:
    with session_scope(factory) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def _doc_with_pages(factory: sessionmaker[Session], n: int = 3, uri: str = "file:///a.pdf"):
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, uri, sha256="f" * 64)
        records = [
            repo.PageRecord(i, "ocr", 10 * i, f"art/{i}", 850, 1100) for i in range(1, n + 1)
        ]
        page_ids = repo.upsert_pages(s, doc_id, records)
    return doc_id, page_ids


def _pred(page_id: int = 0, pass_name: str = "early", **kw) -> repo.PredictionRecord:
    fields = {
        "page_id": page_id,
        "model_version": "v1",
        "pass_name": pass_name,
        "label": "invoice",
        "confidence": 0.5,
        "exit_stage": 1,
        "exit_layer": 4,
        "trail": [0.3, 0.5],
        "latency_ms": 12.5,
    } | kw
    return repo.PredictionRecord(**fields)


def test_same_document_twice_is_one_row(factory) -> None:
    with session_scope(factory) as s:
        first = repo.register_document(s, "s3://bucket/a.pdf", etag="e1")
    with session_scope(factory) as s:
        again = repo.register_document(s, "s3://bucket/a.pdf", etag="e1")
        same_tx = repo.register_document(s, "s3://bucket/a.pdf", etag="e1")
    assert first[1] is True
    assert again == (first[0], False) == same_tx
    # No version at all: still one row (NULLs would not collide in a unique index).
    with session_scope(factory) as s:
        bare = [repo.register_document(s, "file:///b.pdf") for _ in range(2)]
    assert bare[0][1] is True and bare[1] == (bare[0][0], False)
    # A new version of the same object is a new document.
    with session_scope(factory) as s:
        newer = repo.register_document(s, "s3://bucket/a.pdf", etag="e2")
        by_sha = repo.register_document(s, "s3://bucket/a.pdf", sha256="ab" * 32)
    assert newer[1] and by_sha[1] and len({first[0], newer[0], by_sha[0]}) == 3
    assert _count(factory, Document) == 4
    with session_scope(factory) as s:
        doc = repo.get_document(s, first[0])
        assert doc.state == DocumentState.RECEIVED and doc.version_key == "e1"
        assert doc.created_at.tzinfo is UTC


def test_concurrent_register_document_yields_one_row(factory) -> None:
    """Eight sessions register the same object at once: one row, one `created`."""
    n = 8

    def register() -> tuple[int, bool]:
        with session_scope(factory) as s:
            registered = repo.register_document(s, "s3://bucket/race.pdf", etag="x")
            time.sleep(0.05)  # hold the transaction open so the others overlap it
        return registered

    results = run_at_once([register] * n)
    assert len(results) == n
    assert len({doc_id for doc_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _count(factory, Document) == 1


def test_upsert_pages_is_idempotent_and_keeps_state(factory) -> None:
    doc_id, page_ids = _doc_with_pages(factory, 3)
    with session_scope(factory) as s:
        repo.mark_pages(s, [page_ids[0]], PageState.DONE)
        again = repo.upsert_pages(
            s,
            doc_id,
            [
                repo.PageRecord(3, "text_layer", 7, "art/3b", 1, 2),
                repo.PageRecord(1, "ocr", 0, "x", 3, 4),
            ],
        )
    assert again == [page_ids[2], page_ids[0]]
    assert _count(factory, Page) == 3
    with session_scope(factory) as s:
        pages = repo.pages_for_document(s, doc_id)
        assert [p.number for p in pages] == [1, 2, 3]
        assert pages[0].state == PageState.DONE  # a re-ingest never resets progress
        assert (pages[2].text_source, pages[2].artifact_ref, pages[2].word_count) == (
            "text_layer",
            "art/3b",
            7,
        )
        assert repo.upsert_pages(s, doc_id, []) == []


def test_redelivered_predictions_write_nothing_twice(factory) -> None:
    _, page_ids = _doc_with_pages(factory, 3)
    batch = [_pred(p) for p in page_ids]
    with session_scope(factory) as s:
        assert repo.record_predictions(s, batch) == 3
    with session_scope(factory) as s:
        assert repo.record_predictions(s, batch) == 0
        # A batch overlapping the stored rows inserts only the new ones.
        mixed = [*batch, _pred(page_ids[0], "full", confidence=0.9, exit_stage=3, exit_layer=12)]
        assert repo.record_predictions(s, mixed) == 1
        assert repo.record_predictions(s, []) == 0
    assert _count(factory, Prediction) == 4
    with session_scope(factory) as s:
        rows = repo.predictions_for_page(s, page_ids[0])
        assert [(r.pass_name, r.trail) for r in rows] == [
            ("early", [0.3, 0.5]),
            ("full", [0.3, 0.5]),
        ]


@pytest.mark.parametrize(
    "bad",
    [
        {"page_id": 999_999},  # no such page (foreign key)
        {"confidence": 1.5},  # out of range (check constraint)
        {"pass_name": "medium"},  # not a pass (check constraint)
    ],
    ids=["unknown-page", "confidence", "pass"],
)
def test_prediction_batch_is_one_transaction(factory, bad) -> None:
    _, page_ids = _doc_with_pages(factory, 3)
    last = {"page_id": page_ids[2]} | bad
    batch = [_pred(page_ids[0]), _pred(page_ids[1]), _pred(**last)]
    with pytest.raises(IntegrityError), session_scope(factory) as s:
        repo.record_predictions(s, batch)
    assert _count(factory, Prediction) == 0


def test_mark_claims_and_attempts(factory) -> None:
    doc_id, page_ids = _doc_with_pages(factory, 2)
    with session_scope(factory) as s:
        assert repo.mark_document(
            s, doc_id, DocumentState.INGESTING, only_from=[DocumentState.RECEIVED]
        )
        # A second claimant finds it taken.
        assert not repo.mark_document(s, doc_id, "INGESTING", only_from=[DocumentState.RECEIVED])
        assert repo.mark_document(s, doc_id, DocumentState.INGESTED, page_count=2)
        assert (
            repo.mark_pages(s, page_ids, PageState.CLASSIFYING, only_from=[PageState.PENDING]) == 2
        )
        assert (
            repo.mark_pages(s, page_ids, PageState.CLASSIFYING, only_from=[PageState.PENDING]) == 0
        )
        assert repo.finish_documents(s, [doc_id]) == []  # pages still open
        repo.mark_pages(s, page_ids[:1], PageState.DONE)
        repo.mark_pages(s, page_ids[1:], PageState.FAILED, error="boom")
        assert repo.finish_documents(s) == [doc_id]
    with session_scope(factory) as s:
        doc = repo.get_document(s, doc_id)
        assert (doc.state, doc.page_count, doc.attempts, doc.error) == ("DONE", 2, 1, None)
        page = repo.get_page(s, page_ids[1])
        assert (page.state, page.error, page.attempts) == ("FAILED", "boom", 1)
        with pytest.raises(ValueError):
            repo.mark_document(s, doc_id, "NOT_A_STATE")
    with session_scope(factory) as s:  # a move that does not name page_count keeps it
        assert repo.mark_document(s, doc_id, DocumentState.FAILED, error="retries exhausted")
        assert repo.get_document(s, doc_id).page_count == 2


def test_claim_document_takes_a_received_or_abandoned_document(factory) -> None:
    """The ingest step's claim: one statement moves the document to INGESTING, counts an
    attempt and hands back where to read it; an ingested or unknown document is not claimed."""
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "s3://bucket/c.pdf", etag="e9")
    with session_scope(factory) as s:
        claimed = repo.claim_document(s, doc_id)
        assert claimed == repo.ClaimedDocument(doc_id, "s3://bucket/c.pdf", "e9")
    with session_scope(factory) as s:  # an INGESTING one whose worker died: claimed again
        assert repo.claim_document(s, doc_id) is not None
        assert repo.get_document(s, doc_id).attempts == 2
        repo.mark_document(s, doc_id, DocumentState.INGESTED, page_count=1)
    with session_scope(factory) as s:
        assert repo.claim_document(s, doc_id) is None
        assert repo.claim_document(s, doc_id + 1000) is None
        doc = repo.get_document(s, doc_id)
        assert (doc.state, doc.attempts, doc.page_count) == ("INGESTED", 2, 1)


def test_claim_pages_takes_only_claimable_pages_once(factory) -> None:
    """The classify step's claim: one statement moves the claimable pages to CLASSIFYING,
    counts an attempt and hands back what the step needs; a page in another state is left."""
    doc_id, page_ids = _doc_with_pages(factory, 3)
    with session_scope(factory) as s:
        repo.mark_pages(s, page_ids[2:], PageState.DONE)
        claimed = repo.claim_pages(s, [*page_ids, 999_999], only_from=[PageState.PENDING])
        assert [c.id for c in claimed] == page_ids[:2]
        assert {c.document_id for c in claimed} == {doc_id}
        refs = {p.id: p.artifact_ref for p in repo.pages_for_document(s, doc_id)}
        assert all(c.artifact_ref == refs[c.id] for c in claimed)
        assert repo.claim_pages(s, page_ids, only_from=[PageState.PENDING]) == []
    with session_scope(factory) as s:
        pages = repo.pages_for_document(s, doc_id)
        assert [(p.state, p.attempts) for p in pages] == [
            ("CLASSIFYING", 1), ("CLASSIFYING", 1), ("DONE", 0)]


def test_two_tasks_finishing_one_document_at_once_mark_it_done(factory, backend) -> None:
    """Two classify tasks of one document (more pages than a message carries) store their last
    pages at the same time: whichever checks second must see the first one's pages, or the
    document stays INGESTED until the reconciler's next sweep."""
    if backend == "sqlite":
        pytest.skip("SQLite runs one writing transaction at a time (BEGIN IMMEDIATE)")
    doc_id, page_ids = _doc_with_pages(factory, 2)
    with session_scope(factory) as s:
        repo.mark_document(s, doc_id, DocumentState.INGESTED, page_count=2)
        repo.mark_pages(s, page_ids, PageState.CLASSIFYING)
    first, second = factory(), factory()
    repo.mark_pages(first, page_ids[:1], PageState.DONE)
    repo.mark_pages(second, page_ids[1:], PageState.DONE)
    assert repo.finish_documents(first, [doc_id]) == []  # the second's page is not committed
    result: list[list[int]] = []
    worker = threading.Thread(target=lambda: result.append(repo.finish_documents(second, [doc_id])))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive()  # waits for the first to commit
    first.commit()
    worker.join(10)
    second.commit()
    first.close()
    second.close()
    assert result == [[doc_id]]
    with session_scope(factory) as s:
        assert repo.get_document(s, doc_id).state == DocumentState.DONE


def test_reclaim_takes_back_only_stale_unfinished_rows(factory) -> None:
    doc_old, pages_old = _doc_with_pages(factory, 3, "file:///old.pdf")
    _, pages_new = _doc_with_pages(factory, 1, "file:///new.pdf")
    with session_scope(factory) as s:
        repo.mark_pages(s, pages_old[:1], PageState.CLASSIFYING)
        repo.mark_pages(s, pages_old[1:2], PageState.DONE)
        long_ago = repo.utcnow() - timedelta(hours=2)
        s.execute(update(Document).where(Document.id == doc_old).values(updated_at=long_ago))
        s.execute(update(Page).where(Page.id.in_(pages_old)).values(updated_at=long_ago))
    before = repo.utcnow() - timedelta(minutes=15)
    docs = (DocumentState.RECEIVED, DocumentState.INGESTING)
    unfinished = (PageState.PENDING, PageState.CLASSIFYING, PageState.REROUTED)
    with session_scope(factory) as s:
        assert repo.reclaim_documents(s, [DocumentState.INGESTING], before,
                                      DocumentState.RECEIVED, limit=10) == []
        assert repo.reclaim_documents(s, docs, before, DocumentState.RECEIVED,
                                      limit=10) == [doc_old]
        # DONE is final: only the CLASSIFYING and PENDING old pages are stale; oldest first,
        # at most `limit`.
        assert repo.reclaim_pages(s, unfinished, before, PageState.PENDING,
                                  limit=1) == [pages_old[0]]
        assert repo.reclaim_pages(s, unfinished, before, PageState.PENDING,
                                  limit=10) == [pages_old[2]]
    with session_scope(factory) as s:
        # Taking a row back touches it, so the next sweep leaves it alone ...
        assert repo.reclaim_pages(s, unfinished, before, PageState.PENDING, limit=10) == []
        # ... until its own bound passes again; the fresh document's page was never stale.
        later = repo.utcnow() + timedelta(days=1)
        assert set(repo.reclaim_pages(s, unfinished, later, PageState.PENDING, limit=10)) == {
            *pages_old[::2], *pages_new}


def test_final_label_prefers_full_depth(factory) -> None:
    _, (p1, p2, _p3) = _doc_with_pages(factory, 3)
    with session_scope(factory) as s:
        repo.record_predictions(
            s,
            [
                _pred(p1, "early", label="letter", confidence=0.4),
                _pred(p1, "full", label="memo", confidence=0.8, exit_stage=3, exit_layer=12),
                _pred(p2, "early", label="form", confidence=0.95),
            ],
        )
    with session_scope(factory) as s:
        final = {f.page_id: f for f in repo.final_predictions(s)}
    assert set(final) == {p1, p2}  # p3 has no prediction yet
    assert (final[p1].label, final[p1].pass_name, final[p1].exit_layer) == ("memo", Pass.FULL, 12)
    assert (final[p2].label, final[p2].pass_name) == ("form", "early")
    assert final[p1].page_number == 1 and final[p1].created_at.tzinfo is UTC
    # A newer model version's answer supersedes the old one, even an old full-depth one.
    time.sleep(0.01)
    with session_scope(factory) as s:
        repo.record_predictions(s, [_pred(p1, "early", model_version="v2", label="invoice")])
        final = {f.page_id: f for f in repo.final_predictions(s)}
        assert (final[p1].label, final[p1].model_version) == ("invoice", "v2")
        only_v1 = {f.page_id: f.label for f in repo.final_predictions(s, model_version="v1")}
        assert only_v1 == {p1: "memo", p2: "form"}
        assert [f.page_id for f in repo.final_predictions(s, page_ids=[p2])] == [p2]


def test_counts_labels_and_watermarks(factory) -> None:
    _, page_ids = _doc_with_pages(factory, 2)
    with session_scope(factory) as s:
        repo.record_predictions(s, [_pred(page_ids[0])])
        repo.mark_pages(s, page_ids[:1], PageState.REROUTED)
        label_id = repo.add_human_label(s, page_ids[0], "invoice", "alice")
        assert label_id > 0
        assert repo.get_watermark(s, "s3://b/p") is None
        assert repo.get_watermark(s, "s3://b/p", "start") == "start"
        repo.set_watermark(s, "s3://b/p", "key-001")
        repo.set_watermark(s, "s3://b/p", "key-002")
    with session_scope(factory) as s:
        assert repo.get_watermark(s, "s3://b/p") == "key-002"
        counts = repo.counts_by_state(s)
    assert counts["documents"]["RECEIVED"] == 1 and counts["documents"]["DONE"] == 0
    assert counts["pages"] == {
        "PENDING": 1,
        "CLASSIFYING": 0,
        "OCR_QUEUED": 0,
        "OCRING": 0,
        "REROUTED": 1,
        "DONE": 0,
        "FAILED": 0,
    }
    assert counts["predictions"] == {"early": 1, "full": 0}
