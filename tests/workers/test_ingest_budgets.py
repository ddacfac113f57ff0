"""Budgets through the ingest step: what the store and the artifact folder end up holding."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Document, Page
from db.repository import register_document
from db.session import session_scope
from doctriage import wiring
from doctriage.settings import get_settings
from pipelines.artifacts import decode_page
from pipelines.sources import LocalSource
from tests.pipelines.pagedocs import write_big_image_pdf, write_text_bomb_pdf
from workers import steps


def _ingest(folder: Path, monkeypatch: pytest.MonkeyPatch, **env: str):
    for k, v in env.items():
        monkeypatch.setenv(f"DOCTRIAGE_{k}", v)
    get_settings.cache_clear()
    ctx = wiring.step_context(get_settings())
    (ref,) = LocalSource([folder])
    with session_scope(ctx.sessions) as s:
        doc_id = register_document(s, ref.uri, sha256=ref.sha256)[0]
    return ctx, doc_id, steps.ingest_document(ctx, doc_id)


def test_stored_artifacts_stay_within_the_byte_budget(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    # 20,000 words a page (under the object budget; the word budget keeps 5,000): ~175 KB
    # artifacts, over a 40,000-byte budget.
    write_text_bomb_pdf(folder / "dense.pdf", pages=2, words=20_000)
    ctx, doc_id, result = _ingest(folder, monkeypatch, MAX_ARTIFACT_BYTES="40000")
    assert result.state == "INGESTED" and len(result.page_ids) == 2
    root = Path(get_settings().resolved_artifact_url)
    with session_scope(ctx.sessions) as s:
        refs = s.execute(select(Page.artifact_ref).where(Page.document_id == doc_id)).scalars()
        for ref in refs:
            data = (root / ref).read_bytes()
            assert len(data) <= 40_000
            art = decode_page(data)
            assert 0 < len(art.words) < 5000 and art.words[:3] == ["w0", "w1", "w2"]


def test_embedded_image_bomb_fails_the_document_before_any_page(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    write_big_image_pdf(folder / "big.pdf", lead_pages=2)
    ctx, doc_id, result = _ingest(folder, monkeypatch, OCR_MODE="text")
    assert result.state == "FAILED" and result.page_ids == []
    assert result.error.endswith(
        "big.pdf: embedded image 40000x40000 px (object 4) over the 60,000,000-pixel budget"
    )
    with session_scope(ctx.sessions) as s:
        doc = s.get(Document, doc_id)
        assert doc.state == "FAILED" and doc.page_count == 0
