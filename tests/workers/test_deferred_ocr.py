"""Deferred OCR (ARCHITECTURE.md, "Deferred OCR"): pages that need OCR meet the OCR-free exit
first; only the ones it does not settle (and re-routed or audited ones) are OCRed by the ocr
step, then classified with their words. Steps on a SQLite store with the tiny bundle, whose
OCR-free behaviour is forced through `model.ocr_free` (threshold 0: every page exits; None: no
page does); tesseract runs for real on generated scans."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import prometheus_client
import pytest
from sqlalchemy import func, select
from synthkit import scanned_pdf

from db import audit
from db.models import Document, Page, Prediction, utcnow
from db.repository import register_document
from db.session import session_scope
from doctriage import wiring
from doctriage.commands._tables import summary_text
from doctriage.settings import get_settings
from pipelines.artifacts import decode_page
from pipelines.sources import LocalSource
from workers import steps
from workers.embedded import run_documents

EVERY_PAGE_EXITS = {"temperature": 1.0, "threshold": 0.0}
NO_PAGE_EXITS = {"temperature": 1.0, "threshold": 2.0}  # an exit that settles nothing
NO_REROUTE = steps.RerouteOptions(reroute_below=0.0, audit_fraction=0.0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    (folder / "letter-scan-2p.pdf").write_bytes(scanned_pdf("letter", 2, "deferred-ocr"))
    (folder / "memo-scan-1p.pdf").write_bytes(scanned_pdf("memo", 1, "deferred-ocr"))
    return folder


@pytest.fixture
def ctx_runtime(tiny_bundle: Path):
    settings = get_settings()
    ctx = wiring.step_context(settings)
    ctx.reroute = NO_REROUTE
    runtime = wiring.classify_runtime(settings, tiny_bundle)
    return ctx, runtime


def _register(ctx, path: Path) -> int:
    (ref,) = LocalSource([path])
    with session_scope(ctx.sessions) as s:
        return register_document(s, ref.uri, sha256=ref.sha256)[0]


def _pages(ctx, doc_id: int) -> list[Page]:
    with session_scope(ctx.sessions) as s:
        rows = s.execute(select(Page).where(Page.document_id == doc_id).order_by(Page.number))
        pages = list(rows.scalars())
        s.expunge_all()
    return pages


def _predictions(ctx) -> list[Prediction]:
    with session_scope(ctx.sessions) as s:
        preds = list(s.execute(select(Prediction).order_by(Prediction.id)).scalars())
        s.expunge_all()
    return preds


def _doc_state(ctx, doc_id: int) -> str:
    with session_scope(ctx.sessions) as s:
        return s.get(Document, doc_id).state


def _ocr_metric(outcome: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(
        "doctriage_ocr_pages_total", {"outcome": outcome}) or 0.0


def test_ingest_defers_ocr_and_the_page_says_so(ctx_runtime, scans: Path) -> None:
    ctx, _ = ctx_runtime
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    pages = _pages(ctx, doc_id)
    assert [p.id for p in pages] == ids
    assert {(p.state, p.text_source, p.word_count) for p in pages} == {
        ("PENDING", "awaiting_ocr", 0)}
    art = decode_page(ctx.artifacts.get(pages[0].artifact_ref))
    assert (art.text_source, art.words) == ("awaiting_ocr", [])


def test_the_ocr_free_exit_answers_and_ocr_never_runs(ctx_runtime, scans: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = EVERY_PAGE_EXITS

    def no_ocr(*_a, **_k):
        raise AssertionError("tesseract ran")

    monkeypatch.setattr("pipelines.ocr.ocr_image", no_ocr)
    monkeypatch.setattr("pipelines.pages.ocr_image", no_ocr)
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    avoided_before = _ocr_metric("avoided")
    result = steps.classify_pages(ctx, runtime, ids)
    assert result.done == ids and result.ocr_avoided == ids
    assert result.needs_ocr == [] and result.rerouted == []
    assert _ocr_metric("avoided") - avoided_before == len(ids)
    pages = _pages(ctx, doc_id)
    assert {(p.state, p.text_source) for p in pages} == {("DONE", "ocr_avoided")}
    assert _doc_state(ctx, doc_id) == "DONE"
    preds = _predictions(ctx)
    assert sorted(p.page_id for p in preds) == ids
    for p in preds:
        assert (p.pass_name, p.ocr_free, p.ocr_ran) == ("early", True, False)
        assert (p.exit_stage, p.exit_layer) == (steps.OCR_FREE_STAGE, steps.OCR_FREE_STAGE)
        assert p.trail == [pytest.approx(p.confidence)]
    # classify redelivered: a no-op
    again = steps.classify_pages(ctx, runtime, ids)
    assert again.skipped == ids and not again.done
    assert len(_predictions(ctx)) == len(ids)


def test_a_page_the_exit_does_not_settle_is_ocred_once_then_classified(
        ctx_runtime, scans: Path) -> None:
    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = {"temperature": 1.0, "threshold": 1.01}  # never confident enough
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    result = steps.classify_pages(ctx, runtime, ids)
    assert result.needs_ocr == ids and result.done == [] and result.ocr_avoided == []
    assert {p.state for p in _pages(ctx, doc_id)} == {"OCR_QUEUED"}
    assert _predictions(ctx) == []  # nothing answered yet

    run_before = _ocr_metric("run")
    ocred = steps.ocr_pages(ctx, ids)
    assert ocred.classify == ids and ocred.failed == [] and ocred.skipped == []
    assert _ocr_metric("run") - run_before == len(ids)
    pages = _pages(ctx, doc_id)
    assert {(p.state, p.text_source) for p in pages} == {("PENDING", "ocr")}
    assert all(p.word_count > 10 for p in pages)
    stored = [ctx.artifacts.get(p.artifact_ref) for p in pages]
    art = decode_page(stored[0])
    assert art.text_source == "ocr" and len(art.words) == pages[0].word_count
    # ocr redelivered: skipped, nothing changes
    again = steps.ocr_pages(ctx, ids)
    assert again.skipped == ids and again.classify == []
    assert [ctx.artifacts.get(p.artifact_ref) for p in pages] == stored
    assert [(p.state, p.attempts) for p in _pages(ctx, doc_id)] == [
        (p.state, p.attempts) for p in pages]

    final = steps.classify_pages(ctx, runtime, ids)
    assert sorted(final.done + final.rerouted) == ids and final.needs_ocr == []
    preds = _predictions(ctx)
    assert sorted(p.page_id for p in preds) == ids  # one early answer each
    for p in preds:
        assert (p.ocr_free, p.ocr_ran) == (False, True) and p.exit_stage >= 0
    assert _doc_state(ctx, doc_id) == "DONE"


def test_an_audited_ocr_free_answer_gets_ocr_then_the_full_depth_pass(
        ctx_runtime, scans: Path) -> None:
    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = EVERY_PAGE_EXITS
    ctx.reroute = steps.RerouteOptions(reroute_below=0.0, audit_fraction=1.0)  # all audited
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    first = steps.classify_pages(ctx, runtime, ids)
    assert first.needs_ocr == ids and first.done == [] and first.ocr_avoided == []
    early = _predictions(ctx)
    assert [(p.ocr_free, p.audit_sample, p.full_depth_reason) for p in early] == [
        (True, True, "audit_sample")] * len(ids)

    assert steps.ocr_pages(ctx, ids).classify == ids
    back = steps.classify_pages(ctx, runtime, ids)
    assert back.rerouted == ids and back.done == [] and back.needs_ocr == []
    assert len(_predictions(ctx)) == len(ids)  # the OCR-free early answer stays the early one
    assert {p.state for p in _pages(ctx, doc_id)} == {"REROUTED"}

    full = steps.full_depth_pages(ctx, runtime, ids)
    assert full.done == ids
    rows = [p for p in _predictions(ctx) if p.pass_name == "full"]
    assert sorted(p.page_id for p in rows) == ids
    assert {(p.ocr_ran, p.ocr_free, p.audit_sample, p.full_depth_reason) for p in rows} == {
        (True, False, True, "audit_sample")}
    assert _doc_state(ctx, doc_id) == "DONE"


def test_a_failed_ocr_fails_its_page_with_the_reason_and_the_document_goes_on(
        ctx_runtime, scans: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import pages as page_pipeline
    from pipelines.ocr import OcrTimeout

    ctx, runtime = ctx_runtime
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    assert steps.classify_pages(ctx, runtime, ids).needs_ocr == ids  # bundle without the exit
    real, calls = page_pipeline.ocr_image, []

    def first_times_out(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OcrTimeout("OCR timed out after 60 s")
        return real(*args, **kwargs)

    monkeypatch.setattr(page_pipeline, "ocr_image", first_times_out)
    result = steps.ocr_pages(ctx, ids)
    assert result.failed == ids[:1] and result.classify == ids[1:]
    first, second = _pages(ctx, doc_id)
    assert first.state == "FAILED" and "page 1: OCR timed out after 60 s" in first.error
    assert first.failure_kind == "permanent"
    assert second.state == "PENDING"
    assert _doc_state(ctx, doc_id) == "INGESTED"
    steps.classify_pages(ctx, runtime, result.classify)
    assert _doc_state(ctx, doc_id) == "DONE"  # every page final


def test_reconcile_takes_back_a_stuck_ocring_page(ctx_runtime, scans: Path) -> None:
    ctx, runtime = ctx_runtime
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    steps.classify_pages(ctx, runtime, ids)
    work = steps.claim_ocr(ctx, ids[:1])  # a worker took page 1 and died
    assert list(work.pages) == ids[:1]
    rules = steps.StuckRules()
    busy = steps.reconcile(ctx, rules, now=utcnow() + timedelta(seconds=60),
                           depth=lambda _q: 5)
    assert busy.ocr == []  # OCRING under ocr_after_s; page 2 waits in a busy queue
    later = steps.reconcile(ctx, rules, now=utcnow() + timedelta(seconds=rules.ocr_after_s + 5),
                            depth=lambda _q: 5)
    assert later.ocr == ids[:1]
    assert [p.state for p in _pages(ctx, doc_id)] == ["OCR_QUEUED", "OCR_QUEUED"]
    lost = steps.reconcile(ctx, rules, now=utcnow() + timedelta(seconds=rules.ocr_after_s + 60),
                           depth=lambda q: 0 if q == "ocr" else 5)
    assert lost.ocr == ids  # the ocr queue is empty: their messages are gone
    assert steps.ocr_pages(ctx, ids).classify == ids


def test_embedded_run_answers_every_page_once_and_avoids_ocr_for_exits(
        ctx_runtime, scans: Path, short_docs: Path) -> None:
    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = EVERY_PAGE_EXITS
    docs = [_register(ctx, scans / "letter-scan-2p.pdf"),
            _register(ctx, scans / "memo-scan-1p.pdf"),
            _register(ctx, short_docs / "letter-1p.pdf")]
    summary = run_documents(ctx, runtime, docs)
    assert summary.documents_by_state == {"DONE": 3} and summary.pages_failed == 0
    assert summary.pages_by_text_source == {"ocr_avoided": 3, "text_layer": 1}
    preds = _predictions(ctx)
    assert len(preds) == len({p.page_id for p in preds}) == 4  # every page answered once
    assert sorted(p.ocr_free for p in preds) == [False, True, True, True]
    assert summary.pages_classified_this_run == 4
    # `audit summary`: the share of pages that needed OCR and never paid for it
    with session_scope(ctx.sessions) as s:
        audited = audit.summary(s)
    ocr = audited["total"]["ocr"]
    assert (ocr["needed"], ocr["avoided"], ocr["avoided_share"]) == (3, 3, 1.0)
    assert sum(c["needed"] for c in ocr["classes"].values()) == 3
    (group,) = audited["groups"]
    assert group["ocr"]["avoided"] == 3
    assert "OCR avoided (answered by the OCR-free exit) for 3 of 3 pages" in summary_text(audited)


def test_embedded_run_ocrs_in_a_pool_what_the_exit_does_not_settle(
        ctx_runtime, scans: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, runtime = ctx_runtime
    monkeypatch.setattr(runtime.model, "ocr_free", NO_PAGE_EXITS, raising=False)
    ctx.reroute = steps.RerouteOptions(reroute_below=0.75, audit_fraction=0.3)
    docs = [_register(ctx, scans / "letter-scan-2p.pdf"),
            _register(ctx, scans / "memo-scan-1p.pdf")]
    summary = run_documents(ctx, runtime, docs)
    assert summary.documents_by_state == {"DONE": 2} and summary.pages_failed == 0
    assert summary.pages_by_text_source == {"ocr": 3}
    preds = _predictions(ctx)
    early = [p for p in preds if p.pass_name == "early"]
    assert len(early) == len({p.page_id for p in early}) == 3
    assert {(p.ocr_free, p.ocr_ran) for p in preds} == {(False, True)}
    with session_scope(ctx.sessions) as s:
        words = s.execute(select(func.min(Page.word_count))).scalar_one()
    assert words > 10
    assert summary.pages_classified_this_run == 3
    with session_scope(ctx.sessions) as s:
        ocr = audit.summary(s)["total"]["ocr"]
    assert (ocr["needed"], ocr["avoided"], ocr["avoided_share"]) == (3, 0, 0.0)


def test_without_an_ocr_free_exit_the_embedded_run_ocrs_at_ingest(
        ctx_runtime, scans: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, runtime = ctx_runtime  # the tiny bundle has no OCR-free exit: nothing could skip OCR
    assert ctx.defers_ocr and getattr(runtime.model, "ocr_free", None) is None
    deferred: list[int] = []
    monkeypatch.setattr(steps, "claim_ocr",
                        lambda _ctx, ids: deferred.extend(ids) or pytest.fail("deferred"))
    doc_id = _register(ctx, scans / "memo-scan-1p.pdf")
    summary = run_documents(ctx, runtime, [doc_id])
    assert deferred == [] and summary.pages_failed == 0
    assert summary.pages_by_text_source == {"ocr": 1}
    (pred,) = _predictions(ctx)
    assert (pred.ocr_free, pred.ocr_ran) == (False, True) and pred.exit_stage >= 0


def test_a_classify_worker_without_the_exit_sends_awaiting_pages_straight_to_ocr(
        ctx_runtime, scans: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, runtime = ctx_runtime  # distributed: ingest deferred, the classify bundle has no exit
    asked: list[int] = []
    monkeypatch.setattr(steps, "ocr_free_answers",
                        lambda _m, images: asked.append(len(images)) or [])
    doc_id = _register(ctx, scans / "memo-scan-1p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    result = steps.classify_pages(ctx, runtime, ids)
    assert (result.needs_ocr, result.done, asked) == (ids, [], [])
    assert _predictions(ctx) == []


def test_defer_off_ocrs_at_ingest_as_before(ctx_runtime, scans: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTRIAGE_DEFER_OCR", "0")
    get_settings.cache_clear()
    assert wiring.ingest_options(get_settings()).defer_ocr is False
    ctx, runtime = ctx_runtime
    ctx.ingest = replace(ctx.ingest, defer_ocr=False)
    runtime.model.ocr_free = EVERY_PAGE_EXITS  # would answer every page, were it asked
    doc_id = _register(ctx, scans / "memo-scan-1p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    (page,) = _pages(ctx, doc_id)
    assert page.text_source == "ocr" and page.word_count > 10
    result = steps.classify_pages(ctx, runtime, ids)
    assert result.done == ids and result.needs_ocr == [] and result.ocr_avoided == []
    (pred,) = _predictions(ctx)
    assert (pred.ocr_free, pred.ocr_ran) == (False, True) and pred.exit_stage >= 0


def test_backlog_reclassify_of_an_ocr_free_answer_ocrs_it_before_full_depth(
        ctx_runtime, scans: Path) -> None:
    """`backlog --reclassify-below` on pages the OCR-free exit answered: they have no words, so
    they are OCRed first, then get the full-depth pass (reason manual); their early answer
    stays the OCR-free one."""
    from workers.intake.backlog import BacklogQuery, run_backlog
    from workers.orchestration import InProcessOrchestrator

    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = EVERY_PAGE_EXITS
    doc_id = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, doc_id).page_ids
    assert steps.classify_pages(ctx, runtime, ids).ocr_avoided == ids
    query = BacklogQuery(model_version=runtime.version, reclassify_below=1.01, grace_s=0.0)
    report = run_backlog(ctx.sessions, query, InProcessOrchestrator(ctx, runtime, ocr_workers=1))
    assert (report.claimed.ocr, report.claimed.full_depth) == (ids, [])
    pages = _pages(ctx, doc_id)
    assert {(p.state, p.text_source) for p in pages} == {("DONE", "ocr")}
    assert all(p.word_count > 10 for p in pages)
    preds = _predictions(ctx)
    early = sorted((p.page_id, p.ocr_free) for p in preds if p.pass_name == "early")
    full = sorted((p.page_id, p.full_depth_reason, p.ocr_ran) for p in preds
                  if p.pass_name == "full")
    assert early == [(i, True) for i in ids]
    assert full == [(i, "manual", True) for i in ids]
    assert _doc_state(ctx, doc_id) == "DONE"
    # run again: the final answers are full-depth ones now, nothing to do
    again = run_backlog(ctx.sessions, query, InProcessOrchestrator(ctx, runtime, ocr_workers=1))
    assert again.claimed.documents == 0 and len(_predictions(ctx)) == 2 * len(ids)


def test_a_reingested_document_keeps_the_words_ocr_read_and_the_pages_it_avoided(
        ctx_runtime, scans: Path) -> None:
    """`doctriage retry` ingests a document again (FAILED -> RECEIVED): its pages stay DONE,
    so the OCR-settled ones keep their words (or their `ocr_avoided`) instead of waiting for an
    OCR that would never come."""
    from db.repository import mark_document
    from db.states import DocumentState

    ctx, runtime = ctx_runtime
    runtime.model.ocr_free = NO_PAGE_EXITS
    ocred_doc = _register(ctx, scans / "letter-scan-2p.pdf")
    ids = steps.ingest_document(ctx, ocred_doc).page_ids
    steps.classify_pages(ctx, runtime, ids)
    steps.ocr_pages(ctx, ids)
    steps.classify_pages(ctx, runtime, ids)
    runtime.model.ocr_free = EVERY_PAGE_EXITS
    avoided_doc = _register(ctx, scans / "memo-scan-1p.pdf")
    steps.classify_pages(ctx, runtime, steps.ingest_document(ctx, avoided_doc).page_ids)
    before = {p.id: (p.state, p.text_source, p.word_count, ctx.artifacts.get(p.artifact_ref))
              for d in (ocred_doc, avoided_doc) for p in _pages(ctx, d)}
    assert {v[:2] for v in before.values()} == {("DONE", "ocr"), ("DONE", "ocr_avoided")}
    for doc_id in (ocred_doc, avoided_doc):
        with session_scope(ctx.sessions) as s:
            mark_document(s, doc_id, DocumentState.RECEIVED)  # what retry's reset does
        again = steps.ingest_document(ctx, doc_id)
        assert again.page_ids == [] and _doc_state(ctx, doc_id) == "DONE"
    after = {p.id: (p.state, p.text_source, p.word_count, ctx.artifacts.get(p.artifact_ref))
             for d in (ocred_doc, avoided_doc) for p in _pages(ctx, d)}
    assert after == before
