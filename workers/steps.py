"""The workflow's steps as plain functions: ingest a document, classify pages, run the full-depth
pass, reconcile. Celery tasks and the embedded runner call exactly these.

Every step is idempotent: it claims work with a conditional state change, writes with the
store's ON CONFLICT upserts, and decides re-routing deterministically (seeded per page), so a
redelivered message or a re-run changes nothing that was already done.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from classifier.predict import ClassifyRuntime
from classifier.stage_batcher import PagePrediction
from db.models import Document, Page, utcnow
from db.repository import (
    ClaimedPage,
    PageRecord,
    PredictionRecord,
    Routing,
    claim_document,
    claim_pages,
    finish_documents,
    hold_pages,
    mark_document,
    mark_pages,
    recent_latencies_ms,
    reclaim_documents,
    reclaim_pages,
    record_predictions,
    routing_of,
    touch_document,
    upsert_pages,
)
from db.session import session_scope
from db.states import DocumentState, FailureKind, FullDepthReason, PageState, Pass
from pipelines.artifacts import ArtifactNotFound, ArtifactStore, decode_page, encode_page, page_key
from pipelines.errors import DocumentError, one_line
from pipelines.options import IngestOptions
from pipelines.page_content import Page as PageContent
from pipelines.sources import name_of, open_uri
from workers import metrics
from workers.queue_config import RetryPolicy
from workers.redaction import stored_error

log = logging.getLogger(__name__)

# Pages written per store transaction while ingesting (a 2000-page PDF is never one transaction).
INGEST_CHUNK = 32
# An ingest touches its document's updated_at at least this often (between pages) while it
# streams: the heartbeat that tells the reconciler a long ingest is alive.
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class RerouteOptions:
    reroute_below: float = 0.6
    audit_fraction: float = 0.02
    seed: int = 0


@dataclass
class StepContext:
    """What the steps need, built once per process by doctriage.wiring."""

    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    ingest: IngestOptions = field(default_factory=IngestOptions)
    reroute: RerouteOptions = field(default_factory=RerouteOptions)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    open_uri: Callable[[str, str | None], BinaryIO] = open_uri
    # The page source (None: pipelines.pages.iter_pages, imported lazily so an ingest-only worker
    # never imports the page pipeline's heavy parts twice). Tests pass fakes in; bench/pipeline.py
    # passes one that counts pages by text source.
    iter_pages: Callable[..., Iterable[Any]] | None = None
    heartbeat_s: float = HEARTBEAT_S

    def pages_of(self, stream: BinaryIO, name: str) -> Iterable[Any]:
        fn = self.iter_pages
        if fn is None:
            from pipelines.pages import iter_pages

            fn = iter_pages
        return fn(stream, name=name, options=self.ingest)


@dataclass(frozen=True)
class IngestResult:
    document_id: int
    page_ids: list[int]  # pages to classify (PENDING)
    state: str
    error: str | None = None


@dataclass(frozen=True)
class ClassifyResult:
    done: list[int]
    rerouted: list[int]  # for the full_depth queue
    failed: list[int]
    skipped: list[int]  # not in a claimable state (already done, or someone else's)


# -- ingest ------------------------------------------------------------------------------------


def ingest_document(ctx: StepContext, doc_id: int) -> IngestResult:
    """Stream the document's pages into artifacts and page rows; returns pages to classify.

    A bad document (DocumentError) is marked FAILED with its one-line reason (credentials
    masked); pages read before the error are kept and classified. Any other error propagates,
    leaving the document INGESTING: the task retries a transient one (the store, broker or S3
    unreachable or throttling: workers.failures.is_transient) with backoff, the reconciler picks
    up one whose retries never came, and only a permanent one is marked FAILED (fail_document)."""
    with session_scope(ctx.sessions) as s:
        claimed = claim_document(s, doc_id)
        if claimed is None:
            return _already_claimed(s, doc_id)
        uri, version = claimed.source_uri, claimed.etag
    writer = _PageWriter(ctx, doc_id)
    error: str | None = None
    try:
        with ctx.open_uri(uri, version) as stream:
            for page in ctx.pages_of(stream, name_of(uri)):
                writer.add(page)
    except DocumentError as exc:
        error = stored_error(one_line(exc))  # a file name's newline stays visible: \n
        metrics.record_failure("ingest", exc)
    with session_scope(ctx.sessions) as s:
        writer.flush(s)  # the last pages and the document's new state: one transaction
        if error is not None:
            mark_document(s, doc_id, DocumentState.FAILED, error=error, page_count=writer.count,
                          failure_kind=FailureKind.PERMANENT)  # the input itself
            state = DocumentState.FAILED
        else:
            mark_document(s, doc_id, DocumentState.INGESTED, page_count=writer.count)
            finish_documents(s, [doc_id])  # a document with no pages is done now
            state = DocumentState.INGESTED
        pending = _pending_page_ids(s, doc_id)
    return IngestResult(doc_id, pending, state.value, error)


def _already_claimed(s: Session, doc_id: int) -> IngestResult:
    """A document the ingest could not claim: already ingested (a redelivered message: hand back
    what still needs classifying), or in another state it reports."""
    doc = s.get(Document, doc_id)
    if doc is None:
        raise LookupError(f"document {doc_id} does not exist")
    pending = _pending_page_ids(s, doc_id) if doc.state == DocumentState.INGESTED else []
    return IngestResult(doc_id, pending, doc.state, doc.error)


class _PageWriter:
    """An ingest's output: each page's artifact written at once, its row buffered and written
    every INGEST_CHUNK pages or `heartbeat_s`, with the document's heartbeat."""

    def __init__(self, ctx: StepContext, doc_id: int) -> None:
        self.ctx, self.doc_id = ctx, doc_id
        self.rows: list[PageRecord] = []
        self.count = 0
        self.beat = time.monotonic()  # the claim just set updated_at

    def add(self, page: PageContent) -> None:
        key = page_key(self.doc_id, page.number)
        self.ctx.artifacts.put(key, encode_page(page, max_bytes=self.ctx.ingest.max_artifact_bytes))
        self.rows.append(PageRecord(
            number=page.number, text_source=page.text_source, word_count=len(page.words),
            artifact_ref=key, width=page.width, height=page.height,
        ))
        self.count += 1
        metrics.record_ingested_page(page.text_source, page.ms / 1000.0)
        if len(self.rows) >= INGEST_CHUNK or time.monotonic() - self.beat >= self.ctx.heartbeat_s:
            with session_scope(self.ctx.sessions) as s:
                self.flush(s)
                touch_document(s, self.doc_id, DocumentState.INGESTING)  # the heartbeat
            self.beat = time.monotonic()

    def flush(self, s: Session) -> None:
        if self.rows:
            upsert_pages(s, self.doc_id, self.rows)
            self.rows.clear()


def _pending_page_ids(s: Session, doc_id: int) -> list[int]:
    q = select(Page.id).where(
        Page.document_id == doc_id,
        Page.state.in_([PageState.PENDING.value, PageState.CLASSIFYING.value]),
    ).order_by(Page.number)
    return [int(i) for i in s.execute(q).scalars()]


def fail_document(ctx: StepContext, doc_id: int, reason: str, *, transient: bool = False) -> None:
    """Failure outside the page pipeline (e.g. retries exhausted). `transient`
    (workers.failures.is_transient of the cause): the reconciler tries it again later."""
    kind = FailureKind.TRANSIENT if transient else FailureKind.PERMANENT
    with session_scope(ctx.sessions) as s:
        mark_document(s, doc_id, DocumentState.FAILED, error=stored_error(one_line(reason)),
                      failure_kind=kind)


# -- classify ----------------------------------------------------------------------------------


def audit_pick(page_id: int, seed: int, fraction: float) -> bool:
    """A seeded, per-page coin: the same page gets the same answer in every run and process."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{page_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def needs_full_depth(page_id: int, confidence: float, opts: RerouteOptions) -> bool:
    return full_depth_routing(page_id, confidence, opts) is not None


def full_depth_routing(page_id: int, confidence: float, opts: RerouteOptions) -> Routing | None:
    """Why this early answer goes to full depth, or None when it stands. A page both below the
    bar and drawn for the audit is `low_confidence` (it would have gone anyway) and still in the
    audit sample (`audit_sample` true): the sample stays every drawn page, unbiased."""
    sampled = audit_pick(page_id, opts.seed, opts.audit_fraction)
    if confidence < opts.reroute_below:
        return Routing(FullDepthReason.LOW_CONFIDENCE.value, sampled)
    return Routing(FullDepthReason.AUDIT_SAMPLE.value, True) if sampled else None


def _load_inputs(
    ctx: StepContext, pages: Sequence[Page | ClaimedPage]
) -> tuple[list[tuple[int, PageContent]], list[tuple[int, str]]]:
    """The claimed pages' artifacts, decoded (the model reads them as they are), and the ids of
    the unreadable ones with why."""
    ok: list[tuple[int, PageContent]] = []
    bad: list[tuple[int, str]] = []
    for p in pages:
        try:
            if not p.artifact_ref:
                raise ArtifactNotFound("no artifact reference")
            art = decode_page(ctx.artifacts.get(p.artifact_ref))
        except (ArtifactNotFound, ValueError, KeyError) as exc:
            bad.append((p.id, stored_error(f"page artifact unreadable: {exc}")))
            continue
        ok.append((p.id, art))
    return ok, bad


def classify_pages(
    ctx: StepContext, runtime: ClassifyRuntime, page_ids: Sequence[int]
) -> ClassifyResult:
    """Early-exit pass over the pages; one transaction writes the whole batch's predictions and
    states. Low-confidence pages (and the seeded audit sample) come back as `rerouted`."""
    ids = sorted(set(page_ids))
    with session_scope(ctx.sessions) as s:
        pages = claim_pages(s, ids, only_from=(PageState.PENDING, PageState.CLASSIFYING))
    claimed = {p.id for p in pages}
    skipped = [i for i in ids if i not in claimed]
    ok, bad = _load_inputs(ctx, pages)
    answers = runtime.classify([inp for _, inp in ok], early_exit=True)
    rerouted, done = [], []
    records = []
    for (page_id, _), a in zip(ok, answers, strict=True):
        routing = full_depth_routing(page_id, a.confidence, ctx.reroute)
        records.append(_record(page_id, runtime, Pass.EARLY, a, routing))
        (done if routing is None else rerouted).append(page_id)
    with session_scope(ctx.sessions) as s:
        record_predictions(s, records)
        mark_pages(s, done, PageState.DONE, only_from=(PageState.CLASSIFYING,))
        mark_pages(s, rerouted, PageState.REROUTED, only_from=(PageState.CLASSIFYING,))
        for page_id, reason in bad:
            mark_pages(s, [page_id], PageState.FAILED, error=reason)
        finish_documents(s, {p.document_id for p in pages})
    metrics.record_answers(answers, Pass.EARLY.value)
    metrics.record_rerouted(len(rerouted))
    metrics.record_failure("classify", "ArtifactUnreadable", len(bad))
    return ClassifyResult(done, rerouted, [i for i, _ in bad], skipped)


def full_depth_pages(
    ctx: StepContext, runtime: ClassifyRuntime, page_ids: Sequence[int]
) -> ClassifyResult:
    """All layers, no early exit, batched; stored as pass "full" beside the early one, and the
    page is DONE (its final label is the full-depth one)."""
    ids = sorted(set(page_ids))
    with session_scope(ctx.sessions) as s:
        # Still REROUTED, updated_at refreshed: the reconciler leaves a running batch alone.
        pages = hold_pages(s, ids, PageState.REROUTED)
    claimed = {p.id for p in pages}
    ok, bad = _load_inputs(ctx, pages)
    answers = runtime.classify([inp for _, inp in ok], early_exit=False)
    done = [pid for pid, _ in ok]
    with session_scope(ctx.sessions) as s:
        # The classify step's routing, read in the transaction that writes the full rows; a
        # page it did not route was sent by an operator (backlog --reclassify-below).
        routed = routing_of(s, done, runtime.version)
        record_predictions(s, [
            _record(pid, runtime, Pass.FULL, a, routed.get(pid, MANUAL))
            for (pid, _), a in zip(ok, answers, strict=True)
        ])
        mark_pages(s, done, PageState.DONE, only_from=(PageState.REROUTED,))
        for page_id, reason in bad:
            mark_pages(s, [page_id], PageState.FAILED, error=reason)
        finish_documents(s, {p.document_id for p in pages})
    metrics.record_answers(answers, Pass.FULL.value)
    metrics.record_failure("full_depth", "ArtifactUnreadable", len(bad))
    return ClassifyResult(done, [], [i for i, _ in bad], [i for i in ids if i not in claimed])


def fail_pages(
    ctx: StepContext, page_ids: Sequence[int], reason: str, *, transient: bool = False
) -> None:
    """`transient` as in fail_document: the reconciler classifies them again later."""
    kind = FailureKind.TRANSIENT if transient else FailureKind.PERMANENT
    with session_scope(ctx.sessions) as s:
        mark_pages(s, page_ids, PageState.FAILED, error=stored_error(reason), failure_kind=kind)
        docs = s.execute(select(Page.document_id).where(Page.id.in_(list(page_ids)))).scalars()
        finish_documents(s, set(docs))


MANUAL = Routing(FullDepthReason.MANUAL.value, False)


def _record(page_id: int, runtime: ClassifyRuntime, pass_name: Pass, a: PagePrediction,
            routing: Routing | None) -> PredictionRecord:
    """The engine's answer as the store's row: the page, model and policy version, pass and
    full-depth routing added; a full row keeps every exit's (label, confidence)."""
    full = pass_name is Pass.FULL
    return PredictionRecord(
        page_id=page_id, model_version=runtime.version, pass_name=pass_name.value, label=a.label,
        confidence=a.confidence, exit_stage=a.exit_stage, exit_layer=a.exit_layer,
        trail=list(a.trail), latency_ms=a.latency_ms,
        # the policy that let the page exit (the runtime's may change between batches)
        policy_version=a.decided_by or runtime.policy_version,
        full_depth_reason=routing.reason if routing else None,
        audit_sample=bool(routing and routing.audit_sample),
        exit_answers=list(zip(a.trail_labels, a.trail, strict=True)) if full else None,
    )


# -- reconcile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcilePlan:
    documents: list[int]  # -> ingest
    classify: list[int]  # page ids -> classify
    full_depth: list[int]  # page ids -> full_depth
    finished: list[int]  # documents found complete and marked DONE


@dataclass(frozen=True)
class StuckRules:
    """When the reconciler takes a row back (ARCHITECTURE.md, "Recovery"): only when nobody can
    be working on it, so healthy work is never run twice.

    - Waiting rows (RECEIVED documents, PENDING and REROUTED pages) have a message in their
      step's queue. An empty queue means it is lost: `lost_after_s`. A queue holding messages
      (or one whose depth cannot be read) may still hold theirs: `stuck_after_s`.
    - INGESTING: the ingest beats (HEARTBEAT_S) between pages; `ingest_after_s` of silence
      means its worker died.
    - CLASSIFYING pages, and REROUTED ones a full-depth batch holds: a batch takes seconds, so
      `max(classify_after_s, step_factor x p99 page latency measured over recent predictions)`.
    """

    stuck_after_s: float = 900.0
    lost_after_s: float = 30.0
    ingest_after_s: float = 90.0
    classify_after_s: float = 30.0
    step_factor: float = 4.0

    @classmethod
    def uniform(cls, seconds: float) -> StuckRules:
        """One bound for every state, whatever the queues hold."""
        return cls(seconds, seconds, seconds, seconds, 0.0)


# The steps whose queues the reconciler asks about (named like the Celery queues).
WAITING_QUEUES = ("ingest", "classify", "full_depth")


def reconcile(
    ctx: StepContext, rules: StuckRules | float, *, now: datetime | None = None,
    depth: Callable[[str], int | None] = lambda _queue: None, limit: int = 1000,
) -> ReconcilePlan:
    """The database is the truth: take back the documents and pages `rules` say nobody is
    working on and return them for re-enqueueing. `depth(queue)` is how many messages wait in
    that step's queue (None: unknown); `now` is the clock. The take-back refreshes updated_at,
    so the next sweeps leave the rows alone while their new messages wait."""
    rules = rules if isinstance(rules, StuckRules) else StuckRules.uniform(float(rules))
    now = now or utcnow()
    empty = {q: depth(q) == 0 for q in WAITING_QUEUES}  # read before the transaction opens

    def before(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    def waiting(queue: str, lost_s: float) -> datetime:
        return before(lost_s if empty[queue] else rules.stuck_after_s)

    with session_scope(ctx.sessions) as s:
        running = {p: max(rules.classify_after_s, rules.step_factor * _p99_s(s, p)) for p in Pass}
        docs = sorted({  # back to RECEIVED: nobody is ingesting them
            *reclaim_documents(s, [DocumentState.RECEIVED], waiting("ingest", rules.lost_after_s),
                               DocumentState.RECEIVED, limit=limit, now=now),
            *reclaim_documents(s, [DocumentState.INGESTING], before(rules.ingest_after_s),
                               DocumentState.RECEIVED, limit=limit, now=now),
        })
        classify = sorted({  # CLASSIFYING ones back to PENDING: nobody has them
            *reclaim_pages(s, [PageState.PENDING], waiting("classify", rules.lost_after_s),
                           PageState.PENDING, limit=limit, now=now,
                           unless_document_in=(DocumentState.RECEIVED, DocumentState.INGESTING)),
            *reclaim_pages(s, [PageState.CLASSIFYING], before(running[Pass.EARLY]),
                           PageState.PENDING, limit=limit, now=now),
        })
        full = reclaim_pages(
            s, [PageState.REROUTED],
            waiting("full_depth", max(rules.lost_after_s, running[Pass.FULL])),
            PageState.REROUTED, limit=limit, now=now)
        finished = finish_documents(s)
    return ReconcilePlan(docs, classify, full, finished)


def _p99_s(s: Session, pass_name: Pass) -> float:
    """p99 of the recent per-page latency of a pass, in seconds (0 with none measured)."""
    ms = sorted(recent_latencies_ms(s, pass_name))
    return ms[int(0.99 * (len(ms) - 1))] / 1000.0 if ms else 0.0
