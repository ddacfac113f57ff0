"""The embedded runner: the distributed workflow's steps, in-process, with no broker.

Documents are registered, ingested one at a time (pages stream into artifacts), and their pages
are classified in chunks through the stage batcher in drain mode, so batches stay full across
document boundaries; re-routed pages get the full-depth pass at the end. A bad document is
recorded FAILED with its reason and the run goes on. The summary is read back from the store,
so it describes what was stored, not what was intended.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Document, Page
from db.repository import mark_document, register_document
from db.session import session_scope
from db.states import DOCUMENT_FINAL, DocumentState, PageState
from pipelines.errors import one_line
from workers import steps
from workers.classify_runtime import ClassifyRuntime
from workers.redaction import stored_error
from workers.run_report import DocumentReport, document_reports, predictions_by_pass
from workers.steps import StepContext

log = logging.getLogger(__name__)

# Pages per classify step call: several batcher batches, one store transaction.
CLASSIFY_CHUNK_BATCHES = 4


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


def run_embedded(
    ctx: StepContext,
    runtime: ClassifyRuntime,
    documents: Iterable[tuple[str, str]],
    *,
    progress: Progress | None = None,
    roots: Sequence[str] = (),
) -> RunSummary:
    """Ingest and classify `documents` ((uri, etag or sha256) pairs); `roots`, the folders or
    prefixes they were found under, only name them in the per-document report."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    tick = progress or (lambda _e, _n: None)
    doc_ids: list[int] = []
    with session_scope(ctx.sessions) as s:
        for uri, version in documents:
            # Sources yield (uri, etag) for object stores and (uri, sha256) for files.
            if uri.startswith("s3://"):
                doc_id, _ = register_document(s, uri, etag=version)
            else:
                doc_id, _ = register_document(s, uri, sha256=version)
            doc_ids.append(doc_id)
        # What a source listed but refused (a symlink leaving its folder): SKIPPED, never read.
        skipped_ids = record_skipped(s, getattr(documents, "skipped", ()))
        already = _final_already(s, doc_ids)
    chunk = runtime.options.max_batch * CLASSIFY_CHUNK_BATCHES
    pending: list[int] = []
    classified = 0
    # Time per document: its ingest, plus an even share of each classify call its pages were in
    # (batches span documents, so a page's compute cannot be told apart from its batch-mates').
    spent: dict[int, float] = defaultdict(float)
    doc_of_page: dict[int, int] = {}

    def share(ids: Sequence[int], seconds: float) -> None:
        for page_id in ids:
            if page_id in doc_of_page:
                spent[doc_of_page[page_id]] += seconds / len(ids)

    def classify(ids: Sequence[int]) -> None:
        nonlocal classified
        t0 = time.perf_counter()
        try:
            result = steps.classify_pages(ctx, runtime, ids)
        except Exception as exc:  # as a task would: the pages fail with the reason, the run goes on
            log.warning("classifying %d pages failed: %s", len(ids), exc)
            steps.fail_pages(ctx, ids, f"{type(exc).__name__}: {exc}",
                             transient=_is_transient(exc))
        else:
            classified += len(result.done) + len(result.rerouted)
        share(ids, time.perf_counter() - t0)
        tick("pages", len(ids))

    for doc_id in doc_ids:
        t0 = time.perf_counter()
        try:
            result = steps.ingest_document(ctx, doc_id)
            pending.extend(result.page_ids)
            doc_of_page.update(dict.fromkeys(result.page_ids, doc_id))
        except Exception as exc:  # one bad document never stops the run
            log.warning("document %s failed: %s", doc_id, one_line(exc))
            steps.fail_document(ctx, doc_id, f"{type(exc).__name__}: {exc}",
                                transient=_is_transient(exc))
        spent[doc_id] += time.perf_counter() - t0
        tick("document", 1)
        while len(pending) >= chunk:
            classify(pending[:chunk])
            del pending[:chunk]
    if pending:
        classify(pending)
    # Re-routed pages, including any an earlier, interrupted run of these documents left behind.
    rerouted_pages = _pages_in(ctx, doc_ids, PageState.REROUTED)
    doc_of_page.update(rerouted_pages)
    rerouted = list(rerouted_pages)
    for start in range(0, len(rerouted), chunk):
        ids = rerouted[start : start + chunk]
        t0 = time.perf_counter()
        try:
            steps.full_depth_pages(ctx, runtime, ids)
        except Exception as exc:
            log.warning("full-depth pass over %d pages failed: %s", len(ids), exc)
            steps.fail_pages(ctx, ids, f"{type(exc).__name__}: {exc}",
                             transient=_is_transient(exc))
        share(ids, time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_started
    summary = summarize(ctx, [*doc_ids, *skipped_ids], runtime.version)
    summary.documents_already_classified = len(already)
    summary.per_document = document_reports(
        ctx.sessions, [*doc_ids, *skipped_ids], runtime.version,
        roots=roots, seconds=spent, already=already,
    )
    summary.seconds = round(seconds, 3)
    summary.cpu_seconds = round(cpu_seconds, 3)
    summary.pages_classified_this_run = classified
    summary.pages_per_s = round(classified / seconds, 3) if seconds > 0 else 0.0
    summary.batcher = runtime.stats()
    return summary


def _is_transient(exc: BaseException) -> bool:
    # Imported here: workers.failures loads botocore, kombu and redis, which `run` rarely needs.
    from workers.failures import is_transient

    return is_transient(exc)


def record_skipped(s: Session, skipped: Iterable[tuple[str, str]]) -> list[int]:
    """Register each refused ``(uri, reason)`` once and mark it SKIPPED with the reason."""
    ids = []
    for uri, reason in skipped:
        doc_id, created = register_document(s, uri)
        if created:
            mark_document(s, doc_id, DocumentState.SKIPPED, error=one_line(reason))
        ids.append(doc_id)
    return ids


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
