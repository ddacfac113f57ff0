"""The steps on their own (SQLite store): idempotent redelivery, re-routing, reconcile, and the
artifact and source helpers they stand on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from synthkit import ONE_PAGE_PDF, TWO_PAGE_PDF

from db.models import Document, Page, Prediction
from db.repository import register_document
from db.session import session_scope
from doctriage import wiring
from doctriage.settings import get_settings
from pipelines.artifacts import (
    ArtifactNotFound,
    LocalArtifactStore,
    decode_page,
    encode_page,
    page_key,
)
from pipelines.page_content import Page as PageContent
from pipelines.sources import LocalSource, open_uri, uri_to_path
from workers import steps


def test_artifact_round_trip_and_downsizing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    img = Image.new("RGB", (850, 1100), "white")
    data = encode_page(PageContent(number=3, width=850, height=1100, text_source="ocr",
                                   words=["a", "b"], boxes=[(0, 0, 10, 10), (5, 5, 1000, 1000)],
                                   image=img))
    key = store.put(page_key(7, 3), data)
    art = decode_page(store.get(key))
    assert (art.number, art.width, art.height, art.text_source) == (3, 850, 1100, "ocr")
    assert art.words == ["a", "b"] and art.boxes[1] == (5, 5, 1000, 1000)
    assert max(art.image.size) == 448 and art.image.mode == "RGB"
    with pytest.raises(ArtifactNotFound):
        store.get(page_key(7, 4))
    with pytest.raises(ValueError):
        store.put("../outside.json", b"{}")


def test_local_source_walks_folders_and_hashes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a b, c.pdf").write_bytes(b"%PDF-1.4 one")
    (tmp_path / "notes.txt").write_text("not a document")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.pdf").write_bytes(b"%PDF")
    items = list(LocalSource([tmp_path]))
    assert len(items) == 1
    uri, sha = items[0].uri, items[0].sha256
    assert uri.startswith("file://") and uri_to_path(uri).name == "a b, c.pdf"
    assert len(sha) == 64
    with open_uri(uri) as fh:
        assert fh.read() == b"%PDF-1.4 one"
    with pytest.raises(FileNotFoundError):
        LocalSource([tmp_path / "missing"]).files()


def test_audit_pick_is_seeded_and_near_the_fraction() -> None:
    picks = [steps.audit_pick(i, seed=1, fraction=0.1) for i in range(5000)]
    assert picks == [steps.audit_pick(i, seed=1, fraction=0.1) for i in range(5000)]
    assert 0.08 < sum(picks) / 5000 < 0.12
    assert picks != [steps.audit_pick(i, seed=2, fraction=0.1) for i in range(5000)]


@pytest.fixture
def ctx_runtime(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCTRIAGE_REROUTE_BELOW", "0.75")
    get_settings.cache_clear()
    settings = get_settings()
    return wiring.step_context(settings), wiring.classify_runtime(settings, tiny_bundle)


def _register(ctx, path: Path) -> int:
    (ref,) = LocalSource([path])
    with session_scope(ctx.sessions) as s:
        return register_document(s, ref.uri, sha256=ref.sha256)[0]


def _count(ctx, model) -> int:
    with session_scope(ctx.sessions) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_redelivered_messages_change_nothing(ctx_runtime, short_docs: Path) -> None:
    ctx, runtime = ctx_runtime
    doc_id = _register(ctx, short_docs / TWO_PAGE_PDF)
    first = steps.ingest_document(ctx, doc_id)
    assert first.state == "INGESTED" and len(first.page_ids) == 2
    # ingest redelivered: no new pages; the same pages are handed back for classification
    assert steps.ingest_document(ctx, doc_id).page_ids == first.page_ids
    assert _count(ctx, Page) == 2
    result = steps.classify_pages(ctx, runtime, first.page_ids)
    assert sorted(result.done + result.rerouted) == sorted(first.page_ids)
    again = steps.classify_pages(ctx, runtime, first.page_ids)  # redelivered
    assert again.skipped == sorted(first.page_ids) and not again.done
    steps.full_depth_pages(ctx, runtime, result.rerouted)
    steps.full_depth_pages(ctx, runtime, result.rerouted)  # redelivered
    assert _count(ctx, Prediction) == 2 + len(result.rerouted)
    with session_scope(ctx.sessions) as s:
        assert s.get(Document, doc_id).state == "DONE"


def test_missing_artifact_fails_the_page_with_a_reason(ctx_runtime, short_docs: Path) -> None:
    ctx, runtime = ctx_runtime
    doc_id = _register(ctx, short_docs / ONE_PAGE_PDF)
    ids = steps.ingest_document(ctx, doc_id).page_ids
    (Path(get_settings().resolved_artifact_url) / page_key(doc_id, 1)).unlink()
    result = steps.classify_pages(ctx, runtime, ids)
    assert result.failed == ids
    with session_scope(ctx.sessions) as s:
        page = s.get(Page, ids[0])
        assert page.state == "FAILED" and "artifact" in page.error
        assert s.get(Document, doc_id).state == "DONE"  # every page final


def test_reconcile_hands_back_stuck_work_once(ctx_runtime, short_docs: Path) -> None:
    ctx, runtime = ctx_runtime
    waiting = _register(ctx, short_docs / ONE_PAGE_PDF)
    ingested = _register(ctx, short_docs / TWO_PAGE_PDF)
    pages = steps.ingest_document(ctx, ingested).page_ids
    time.sleep(0.05)
    plan = steps.reconcile(ctx, 0.01)
    assert plan.documents == [waiting]
    assert sorted(plan.classify) == sorted(pages)
    # touched: a second sweep right away finds nothing new
    again = steps.reconcile(ctx, 1.0)
    assert again.documents == [] and again.classify == []
    # pages an interrupted full-depth pass left REROUTED are handed to full_depth
    ctx.reroute = steps.RerouteOptions(reroute_below=1.01)  # every page re-routed
    result = steps.classify_pages(ctx, runtime, pages)
    assert sorted(result.rerouted) == sorted(pages)
    time.sleep(0.05)
    plan = steps.reconcile(ctx, 0.01)
    assert sorted(plan.full_depth) == sorted(result.rerouted)
