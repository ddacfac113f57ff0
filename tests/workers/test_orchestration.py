"""The orchestration seam: the in-process orchestrator and the Celery one (tasks run eagerly,
the real steps on a real SQLite store) apply the same follow-on rules and the same error rule,
so the same documents end in the same stored states either way."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from classifier.bundle import load_bundle
from classifier.predict import BatcherOptions, ClassifyRuntime
from db.models import Document, Page, Prediction
from db.repository import register_document
from db.session import make_engine, migrate, session_factory, session_scope
from pipelines.artifacts import LocalArtifactStore
from pipelines.options import IngestOptions
from pipelines.sources import path_to_uri, sha256_file
from workers import steps, tasks
from workers.orchestration import InProcessOrchestrator, Orchestrator, chunks
from workers.steps import RerouteOptions, StepContext, needs_full_depth

REROUTE = RerouteOptions(reroute_below=0.7, audit_fraction=0.2)


def _pdf(path: Path, pages: int) -> Path:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for n in range(1, pages + 1):
        c.drawString(72, 720, f"{path.stem} page {n}: invoice total amount due")
        c.showPage()
    c.save()
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> ClassifyRuntime:
    return ClassifyRuntime(load_bundle(tiny_bundle), BatcherOptions(max_batch=2))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[StepContext]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield StepContext(sessions=session_factory(engine),
                      artifacts=LocalArtifactStore(tmp_path / "artifacts"),
                      ingest=IngestOptions(), reroute=REROUTE)
    engine.dispose()


@pytest.fixture
def documents(ctx: StepContext, tmp_path: Path) -> list[int]:
    """Three good documents (1, 2 and 3 pages) and a broken one, registered."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [_pdf(folder / f"doc{n}.pdf", n) for n in (1, 2, 3)]
    broken = folder / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    with session_scope(ctx.sessions) as s:
        return [register_document(s, path_to_uri(p), sha256=sha256_file(p))[0]
                for p in [*paths, broken]]


def _in_process(ctx: StepContext, runtime: ClassifyRuntime,
                monkeypatch: pytest.MonkeyPatch) -> Orchestrator:
    return InProcessOrchestrator(ctx, runtime)


def _celery(ctx: StepContext, runtime: ClassifyRuntime,
            monkeypatch: pytest.MonkeyPatch) -> Orchestrator:
    """Messages run at once in this process (eager), through the real tasks."""
    monkeypatch.setitem(tasks.app.conf, "task_always_eager", True)
    monkeypatch.setitem(tasks.app.conf, "task_eager_propagates", False)
    monkeypatch.setattr(tasks.context, "step_context", lambda: ctx)
    monkeypatch.setattr(tasks.context, "classify_runtime", lambda: runtime)
    return tasks.CeleryOrchestrator(chunk=2)


IMPLEMENTATIONS = {"in_process": _in_process, "celery": _celery}
Make = Callable[[StepContext, ClassifyRuntime, pytest.MonkeyPatch], Orchestrator]


def _stored(ctx: StepContext) -> tuple[dict[int, tuple[str, str | None]], list[Page],
                                       list[Prediction]]:
    with session_scope(ctx.sessions) as s:
        docs = {d.id: (d.state, d.error) for d in s.execute(select(Document)).scalars()}
        pages = list(s.execute(select(Page).order_by(Page.id)).scalars())
        preds = list(s.execute(select(Prediction)).scalars())
        s.expunge_all()
    return docs, pages, preds


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_follow_on_rules_are_the_same_in_process_and_on_celery(
    make: Make, ctx: StepContext, runtime: ClassifyRuntime, documents: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ingest -> classify its pages -> full depth for the re-routed ones -> documents DONE; a
    bad document FAILED with its reason, the others unaffected."""
    run = make(ctx, runtime, monkeypatch)
    run.ingest(documents)
    run.drain()
    docs, pages, preds = _stored(ctx)
    *good, broken = documents
    assert [docs[i][0] for i in good] == ["DONE"] * 3
    assert docs[broken][0] == "FAILED" and "broken.pdf" in (docs[broken][1] or "")
    assert len(pages) == 6 and {p.state for p in pages} == {"DONE"}
    early = {p.page_id: p for p in preds if p.pass_name == "early"}
    full = {p.page_id for p in preds if p.pass_name == "full"}
    assert set(early) == {p.id for p in pages}
    assert full == {i for i, e in early.items() if needs_full_depth(i, e.confidence, REROUTE)}
    assert full, "the fixture should re-route some pages"


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_a_classify_error_fails_those_pages_and_the_run_goes_on(
    make: Make, ctx: StepContext, runtime: ClassifyRuntime, documents: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The error rule of both: the pages of a failing classify call are FAILED with
    "<type>: <message>" (a permanent kind for a bug), every other page is classified."""
    real = steps.classify_pages
    calls: list[list[int]] = []

    def first_call_breaks(c: StepContext, r: ClassifyRuntime, ids: list[int]) -> Any:
        calls.append(list(ids))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(c, r, ids)

    monkeypatch.setattr(steps, "classify_pages", first_call_breaks)
    run = make(ctx, runtime, monkeypatch)
    run.ingest(documents[:3])
    run.drain()
    _, pages, _ = _stored(ctx)
    failed = {p.id for p in pages if p.state == "FAILED"}
    assert failed == set(calls[0])
    for p in pages:
        if p.id in failed:
            assert p.error == "RuntimeError: boom" and p.failure_kind == "permanent"
        else:
            assert p.state == "DONE"


@pytest.fixture
def scans(ctx: StepContext, tmp_path: Path) -> list[int]:
    """Two generated scans (2 and 1 pages: they need OCR), registered."""
    from synthkit import scanned_pdf

    folder = tmp_path / "scans"
    folder.mkdir()
    paths = []
    for label, n in (("letter", 2), ("memo", 1)):
        paths.append(folder / f"{label}-{n}p.pdf")
        paths[-1].write_bytes(scanned_pdf(label, n, "orchestration"))
    with session_scope(ctx.sessions) as s:
        return [register_document(s, path_to_uri(p), sha256=sha256_file(p))[0] for p in paths]


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_deferred_ocr_follows_the_same_rules_in_process_and_on_celery(
    make: Make, ctx: StepContext, runtime: ClassifyRuntime, scans: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ingest (no OCR) -> classify (the bundle has no OCR-free exit) -> ocr -> classify with
    words -> full depth for the re-routed ones: every page answered once, OCRed once."""
    run = make(ctx, runtime, monkeypatch)
    run.ingest(scans)
    run.drain()
    docs, pages, preds = _stored(ctx)
    assert [docs[i][0] for i in scans] == ["DONE", "DONE"]
    assert len(pages) == 3 and {(p.state, p.text_source) for p in pages} == {("DONE", "ocr")}
    early = {p.page_id: p for p in preds if p.pass_name == "early"}
    assert sorted(early) == [p.id for p in pages]
    assert len([p for p in preds if p.pass_name == "early"]) == 3
    assert {(p.ocr_free, p.ocr_ran) for p in preds} == {(False, True)}
    full = {p.page_id for p in preds if p.pass_name == "full"}
    assert full == {i for i, e in early.items() if needs_full_depth(i, e.confidence, REROUTE)}


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_a_failed_ocr_fails_its_pages_with_the_reason_and_the_run_goes_on(
    make: Make, ctx: StepContext, runtime: ClassifyRuntime, scans: list[int],
    documents: list[int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tesseract cannot run (no such language): the scanned pages are FAILED with tesseract's
    reason (permanent), their documents end, the text-layer documents are classified."""
    ctx.ingest = IngestOptions(ocr_lang="no-such-language")
    run = make(ctx, runtime, monkeypatch)
    run.ingest([*scans, *documents[:3]])
    run.drain()
    docs, pages, preds = _stored(ctx)
    assert [docs[i][0] for i in [*scans, *documents[:3]]] == ["DONE"] * 5
    failed = [p for p in pages if p.state == "FAILED"]
    assert {p.document_id for p in failed} == set(scans) and len(failed) == 3
    for p in failed:
        assert p.error.startswith("OCR failed: ") and "tesseract failed" in p.error
        assert p.failure_kind == "permanent"
    assert {p.state for p in pages if p.document_id not in scans} == {"DONE"}
    assert {p.page_id for p in preds} == {p.id for p in pages if p.state == "DONE"}


def test_celery_sends_one_message_per_document_and_chunk_at_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, Any, int]] = []
    for name, task in (("ingest", tasks.ingest), ("classify", tasks.classify),
                       ("full", tasks.full_depth), ("ocr", tasks.ocr)):
        monkeypatch.setattr(task, "apply_async", lambda args, priority, name=name: sent.append(
            (name, args[0], priority)))
    run = tasks.CeleryOrchestrator(chunk=2)
    run.ingest([7, 8])
    run.classify([1, 2, 3, 4, 5])
    run.full_depth([9])
    run.ocr([10, 11])  # one page per ocr message
    run.drain()
    assert sent == [("ingest", 7, 0), ("ingest", 8, 0), ("classify", [1, 2], 0),
                    ("classify", [3, 4], 0), ("classify", [5], 0), ("full", [9], 0),
                    ("ocr", [10], 0), ("ocr", [11], 0)]
    # The backlog's sender: every message at the configured backlog priority.
    sent.clear()
    monkeypatch.setitem(tasks.app.conf, "doctriage_backlog_priority", 6)
    backlog = tasks.CeleryOrchestrator.for_backlog()
    backlog.ingest([7])
    backlog.full_depth([9])
    assert sent == [("ingest", 7, 6), ("full", [9], 6)]


def test_in_process_batches_span_documents_and_full_depth_waits_for_drain(
    ctx: StepContext, runtime: ClassifyRuntime, documents: list[int],
) -> None:
    """Pages queue across documents and run `chunk` at a time; re-routed pages run once, in
    page id order, when drained."""
    seen: list[tuple[str, list[int]]] = []

    class Observer:
        def ingested(self, doc_id: int, result: Any, seconds: float) -> None:
            seen.append(("ingest", [doc_id]))

        def classified(self, ids: Any, result: Any, seconds: float, *, full: bool) -> None:
            seen.append(("full" if full else "early", list(ids)))

    run = InProcessOrchestrator(ctx, runtime, chunk=4, observer=Observer())
    run.ingest(documents[:3])  # 1 + 2 + 3 pages
    assert [kind for kind, _ in seen] == ["ingest", "ingest", "ingest", "early"]
    assert len(seen[-1][1]) == 4  # pages of three documents in one call
    run.drain()
    early = [ids for kind, ids in seen if kind == "early"]
    assert [len(ids) for ids in early] == [4, 2]
    full = [i for kind, ids in seen if kind == "full" for i in ids]
    assert full == sorted(set(full))


def test_chunks_keep_order() -> None:
    assert chunks([5, 6, 7], 2) == [[5, 6], [7]]
    assert chunks([], 3) == []
