"""The embedded runner: the distributed workflow's steps, in-process, with no broker.

Documents are registered, then handed to workers.orchestration.InProcessOrchestrator: ingested
one at a time (pages stream into artifacts), their pages classified in chunks through the stage
batcher in drain mode, so batches stay full across document boundaries; re-routed pages get the
full-depth pass at the end. A bad document is recorded FAILED with its reason and the run goes
on. The summary is read back from the store,
so it describes what was stored, not what was intended.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from classifier.predict import ClassifyRuntime
from classifier.textless import has_ocr_free_exit
from db.models import Document, Page
from db.session import session_scope
from db.states import DOCUMENT_FINAL, DocumentState, PageState
from pipelines.sources import DocumentRef
from workers.intake.registration import Screen, register_documents
from workers.orchestration import InProcessOrchestrator
from workers.redaction import stored_error
from workers.run_report import DocumentReport, RunFacts, document_reports, predictions_by_pass
from workers.steps import ClassifyResult, IngestResult, StepContext

log = logging.getLogger(__name__)

@dataclass
class RunSummary:
    documents: int = 0
    documents_by_state: dict[str, int] = field(default_factory=dict)
    failed_documents: list[dict[str, str]] = field(default_factory=list)
    pages: int = 0
    pages_failed: int = 0
    pages_per_class: dict[str, int] = field(default_factory=dict)
    exit_stage_histogram: dict[str, int] = field(default_factory=dict)
    mean_confidence: float | None = None
    pages_rerouted: int = 0
    # Pages by where their words came from (text_layer, ocr, ocr_avoided: answered by the
    # OCR-free exit with no OCR, awaiting_ocr: not answered yet, none).
    pages_by_text_source: dict[str, int] = field(default_factory=dict)
    pages_classified_this_run: int = 0
    seconds: float = 0.0
    # CPU seconds the run spent (this process's threads + tesseract subprocesses): the cost of
    # the work, steadier than wall time on a shared machine.
    cpu_seconds: float = 0.0
    pages_per_s: float = 0.0
    model_version: str = ""
    completed: bool = True
    batcher: dict[str, Any] = field(default_factory=dict)
    # Documents an earlier run had already taken to a final state: nothing new for them here.
    documents_already_classified: int = 0
    per_document: list[DocumentReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. the model does not fit the documents

    @property
    def any_failed(self) -> bool:
        """A document or a page of this run's documents failed (now or in an earlier run)."""
        return bool(self.failed_documents) or self.pages_failed > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str, int], None]  # (event, amount): "document" done, "pages" classified


@dataclass(frozen=True)
class RunDisplay:
    """What a run shows a person: progress ticks, and the folders or prefixes its documents
    were found under (they only name the documents in the per-document report)."""

    progress: Progress | None = None
    roots: Sequence[str] = ()


NO_DISPLAY = RunDisplay()


def run_embedded(
    ctx: StepContext,
    runtime: ClassifyRuntime,
    documents: Iterable[DocumentRef],
    *,
    screen: Screen | None = None,
    display: RunDisplay = NO_DISPLAY,
) -> RunSummary:
    """Register `documents` (a source's references; `screen`, the source's, refuses what needs
    a look at the bytes), then ingest and classify them; refused ones are recorded SKIPPED with
    the reason and reported."""
    registered = register_documents(ctx.sessions, documents, screen=screen)
    return run_documents(ctx, runtime, registered.documents, skipped_ids=registered.skipped_ids,
                         display=display)


class _RunObserver:
    """Per-document time and progress, told by the orchestrator after each step call. A
    document's time is its ingest plus an even share of each classify call its pages were in
    (batches span documents, so a page's compute cannot be told apart from its batch-mates')."""

    def __init__(self, tick: Progress) -> None:
        self.tick = tick
        self.spent: dict[int, float] = defaultdict(float)
        self.doc_of_page: dict[int, int] = {}
        self.pages_done = 0

    def ingested(self, doc_id: int, result: IngestResult | None, seconds: float) -> None:
        if result is not None:
            self.doc_of_page.update(dict.fromkeys(result.page_ids, doc_id))
        self.spent[doc_id] += seconds
        self.tick("document", 1)

    def classified(self, page_ids: Sequence[int], result: ClassifyResult | None,
                   seconds: float, *, full: bool) -> None:
        for page_id in page_ids:
            if page_id in self.doc_of_page:
                self.spent[self.doc_of_page[page_id]] += seconds / len(page_ids)
        if not full:
            # A page sent to OCR is classified again after it: counted then, once.
            later = len(result.needs_ocr) if result is not None else 0
            if result is not None:
                self.pages_done += len(result.done) + len(result.rerouted)
            self.tick("pages", len(page_ids) - later)


def run_documents(
    ctx: StepContext,
    runtime: ClassifyRuntime,
    doc_ids: Sequence[int],
    *,
    skipped_ids: Sequence[int] = (),
    display: RunDisplay = NO_DISPLAY,
) -> RunSummary:
    """Ingest and classify registered documents through the in-process orchestrator, then read
    the summary back from the store (`skipped_ids`: refused ones, reported only)."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    if ctx.ingest.defer_ocr and not has_ocr_free_exit(runtime.model):
        # No page could skip OCR: read it at ingest, as before deferral (a deferred page would
        # only pay a second render and a pool hop: 68 s vs 33 s on the README demo).
        ctx = replace(ctx, ingest=replace(ctx.ingest, defer_ocr=False))
    with session_scope(ctx.sessions) as s:
        already = _final_already(s, doc_ids)
    observer = _RunObserver(display.progress or (lambda _e, _n: None))
    run = InProcessOrchestrator(ctx, runtime, observer=observer)
    # Re-routed pages an earlier, interrupted run of these documents left behind (no reconciler
    # here): the full-depth pass at the end takes them with this run's.
    leftover = _pages_in(ctx, doc_ids, PageState.REROUTED)
    observer.doc_of_page.update(leftover)
    run.full_depth(list(leftover))
    # ... and pages it left waiting for OCR or in it (OCR_QUEUED, OCRING): OCRed again here.
    awaiting = {**_pages_in(ctx, doc_ids, PageState.OCR_QUEUED),
                **_pages_in(ctx, doc_ids, PageState.OCRING)}
    observer.doc_of_page.update(awaiting)
    if awaiting:
        run.ocr(sorted(awaiting))
    run.ingest(doc_ids)
    run.drain()
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    reported = [*doc_ids, *skipped_ids]
    summary = summarize(ctx, reported, runtime.version)
    summary.documents_already_classified = len(already)
    summary.per_document = document_reports(
        ctx.sessions, reported, runtime.version,
        RunFacts(roots=display.roots, seconds=observer.spent, already=already),
    )
    summary.seconds = round(seconds, 3)
    summary.cpu_seconds = round(cpu_seconds, 3)
    summary.pages_classified_this_run = observer.pages_done
    summary.pages_per_s = round(observer.pages_done / seconds, 3) if seconds > 0 else 0.0
    summary.batcher = runtime.stats()
    return summary


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # tesseract, once it has exited
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _final_already(s: Session, doc_ids: Sequence[int]) -> set[int]:
    """The documents an earlier run already took to a final state (this run reads them only)."""
    q = select(Document.id).where(
        Document.id.in_(list(doc_ids)), Document.state.in_([x.value for x in DOCUMENT_FINAL])
    )
    return {int(i) for i in s.execute(q).scalars()}


def _pages_in(ctx: StepContext, doc_ids: Sequence[int], state: PageState) -> dict[int, int]:
    """{page id: document id} of these documents' pages in `state`, in page id order."""
    with session_scope(ctx.sessions) as s:
        q = select(Page.id, Page.document_id).where(
            Page.document_id.in_(list(doc_ids)), Page.state == state.value
        )
        return {int(i): int(d) for i, d in s.execute(q.order_by(Page.id)).all()}


def summarize(ctx: StepContext, doc_ids: Sequence[int], model_version: str) -> RunSummary:
    """What the store holds for these documents under this model version."""
    out = RunSummary(model_version=model_version)
    ids = list(doc_ids)
    with session_scope(ctx.sessions) as s:
        docs = list(s.execute(select(Document).where(Document.id.in_(ids))).scalars())
        out.documents = len(docs)
        out.documents_by_state = dict(Counter(d.state for d in docs))
        out.failed_documents = [
            {"uri": d.source_uri, "error": stored_error(d.error or "")}
            for d in docs if d.state == DocumentState.FAILED
        ]
        pages = list(s.execute(select(Page).where(Page.document_id.in_(ids))).scalars())
        out.pages = len(pages)
        out.pages_failed = sum(p.state == PageState.FAILED for p in pages)
        out.pages_by_text_source = dict(sorted(Counter(str(p.text_source)
                                                       for p in pages).items()))
        early, full = predictions_by_pass(s, ids, model_version)
    final = {**early, **full}  # the full-depth answer wins where there is one
    out.pages_per_class = dict(sorted(Counter(p.label for p in final.values()).items()))
    out.exit_stage_histogram = {
        str(k): v for k, v in sorted(Counter(p.exit_stage for p in early.values()).items())
    }
    if early:
        out.mean_confidence = round(sum(p.confidence for p in early.values()) / len(early), 4)
    out.pages_rerouted = len(full)
    out.completed = all(d.state in ("DONE", "FAILED", "SKIPPED") for d in docs)
    return out
