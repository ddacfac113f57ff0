"""The workflow's steps as plain functions: ingest a document, classify pages (a page awaiting
OCR meets the OCR-free exit first), OCR the pages it did not settle, run the full-depth pass,
reconcile. Celery tasks and the embedded runner call exactly these.

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
from dataclasses import replace as replace_fields
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from classifier.predict import ClassifyRuntime
from classifier.stage_batcher import PagePrediction
from classifier.textless import OcrFreeAnswer, has_ocr_free_exit, ocr_free_answers
from db.models import Document, Page, utcnow
from db.repository import (
    ClaimedPage,
    OcrSource,
    PageRecord,
    PredictionRecord,
    Routing,
    answered_ocr_free,
    claim_document,
    claim_pages,
    finish_documents,
    hold_pages,
    mark_document,
    mark_pages,
    ocr_sources,
    recent_latencies_ms,
    reclaim_documents,
    reclaim_pages,
    record_predictions,
    routing_of,
    set_page_text,
    settled_text_sources,
    touch_document,
    upsert_pages,
)
from db.session import session_scope
from db.states import DocumentState, FailureKind, FullDepthReason, PageState, Pass, TextSource
from pipelines.artifacts import ArtifactNotFound, ArtifactStore, decode_page, encode_page, page_key
from pipelines.errors import DocumentError, one_line
from pipelines.options import IngestOptions
from pipelines.page_content import Page as PageContent
from pipelines.sources import name_of, open_uri
from workers import metrics
from workers.ocr_work import OcrJob, OcrOutcome, read_words
from workers.queue_config import RetryPolicy, StuckRules
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

    @property
    def defers_ocr(self) -> bool:
        """Ingest leaves OCR to the ocr step (IngestOptions.defer_ocr): pages it decides need OCR
        are stored awaiting it. A page source passed in (`iter_pages`) is taken as it is."""
        return self.ingest.defer_ocr and self.iter_pages is None

    def pages_of(self, stream: BinaryIO, name: str) -> Iterable[Any]:
        fn = self.iter_pages
        if fn is None:
            from pipelines.pages import iter_pages, plan_pages

            fn = plan_pages if self.ingest.defer_ocr else iter_pages
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
    needs_ocr: list[int] = field(default_factory=list)  # for the ocr queue (OCR_QUEUED)
    ocr_avoided: list[int] = field(default_factory=list)  # DONE on the OCR-free exit (in done)


@dataclass(frozen=True)
class OcrStepResult:
    classify: list[int]  # OCRed, PENDING again: for the classify step
    failed: list[int]  # OCR failed or timed out (FAILED with the reason)
    skipped: list[int]  # not awaiting OCR (already done, or someone else's)


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
        # A re-ingest (`doctriage retry`) of a document whose pages the deferred path already
        # settled: page number -> text source (ocr, ocr_avoided), kept rather than re-deferred.
        self.settled: dict[int, str] = {}
        if ctx.defers_ocr:
            with session_scope(ctx.sessions) as s:
                self.settled = settled_text_sources(s, doc_id)

    def add(self, page: PageContent) -> None:
        key = page_key(self.doc_id, page.number)
        if self.ctx.defers_ocr and page.text_source == TextSource.OCR.value:
            page.text_source = TextSource.AWAITING_OCR.value  # plan_pages: decided, not run
            self._keep_settled(page, key)
        self.ctx.artifacts.put(key, encode_page(page, max_bytes=self.ctx.ingest.max_artifact_bytes))
        source = page.text_source
        if self.settled.get(page.number) == TextSource.OCR_AVOIDED.value:
            source = TextSource.OCR_AVOIDED.value  # answered without OCR: it stays so
        self.rows.append(PageRecord(
            number=page.number, text_source=source, word_count=len(page.words),
            artifact_ref=key, width=page.width, height=page.height,
        ))
        self.count += 1
        metrics.record_ingested_page(page.text_source, page.ms / 1000.0)
        if len(self.rows) >= INGEST_CHUNK or time.monotonic() - self.beat >= self.ctx.heartbeat_s:
            with session_scope(self.ctx.sessions) as s:
                self.flush(s)
                touch_document(s, self.doc_id, DocumentState.INGESTING)  # the heartbeat
            self.beat = time.monotonic()

    def _keep_settled(self, page: PageContent, key: str) -> None:
        """A page OCRed before keeps its words (its row stays DONE: re-deferring would leave a
        DONE page with none)."""
        was = self.settled.get(page.number)
        if was == TextSource.OCR.value:
            try:
                old = decode_page(self.ctx.artifacts.get(key))
            except (ArtifactNotFound, ValueError, KeyError):
                return  # nothing to keep: the page waits for OCR again
            if old.text_source == TextSource.OCR.value:
                page.words, page.boxes, page.text_source = old.words, old.boxes, was

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
    states. Low-confidence pages (and the seeded audit sample) come back as `rerouted`.

    A page awaiting OCR meets the OCR-free exit instead (its raster alone): answered there, it
    is DONE and never OCRed (`ocr_avoided`); otherwise it goes to the ocr step (`needs_ocr`),
    and so does a page whose OCR-free answer is re-routed or drawn for the audit (its early
    answer recorded first): such a page comes back here after its OCR and goes on to the
    full-depth pass, never to a second early answer."""
    ids = sorted(set(page_ids))
    with session_scope(ctx.sessions) as s:
        pages = claim_pages(s, ids, only_from=(PageState.PENDING, PageState.CLASSIFYING))
        # Back from OCR with an OCR-free answer (re-routed, audited, or re-run by an
        # operator): straight on to full depth.
        ocred = [p.id for p in pages if p.text_source == TextSource.OCR.value]
        routed_before = answered_ocr_free(s, ocred, runtime.version)
    claimed = {p.id for p in pages}
    skipped = [i for i in ids if i not in claimed]
    awaiting = {p.id for p in pages if p.text_source == TextSource.AWAITING_OCR.value}
    ok, bad = _load_inputs(ctx, [p for p in pages if p.id not in routed_before])
    plain = [(pid, inp) for pid, inp in ok if pid not in awaiting]
    answers = runtime.classify([inp for _, inp in plain], early_exit=True)
    rerouted, done = sorted(routed_before), []
    records = []
    for (page_id, inp), a in zip(plain, answers, strict=True):
        routing = full_depth_routing(page_id, a.confidence, ctx.reroute)
        records.append(_record((page_id, inp), runtime, Pass.EARLY, a, routing))
        (done if routing is None else rerouted).append(page_id)
    free = _ocr_free_pass(ctx, runtime, [(pid, inp) for pid, inp in ok if pid in awaiting])
    records.extend(free.records)
    done.extend(free.avoided)
    with session_scope(ctx.sessions) as s:
        record_predictions(s, records)
        mark_pages(s, done, PageState.DONE, only_from=(PageState.CLASSIFYING,))
        mark_pages(s, rerouted, PageState.REROUTED, only_from=(PageState.CLASSIFYING,))
        mark_pages(s, free.needs_ocr, PageState.OCR_QUEUED, only_from=(PageState.CLASSIFYING,))
        set_page_text(s, free.avoided, TextSource.OCR_AVOIDED.value)
        for page_id, reason in bad:
            mark_pages(s, [page_id], PageState.FAILED, error=reason)
        finish_documents(s, {p.document_id for p in pages})
    metrics.record_answers(answers, Pass.EARLY.value)
    metrics.record_answers(free.answers, Pass.EARLY.value)
    metrics.record_rerouted(len(rerouted) - len(routed_before) + free.rerouted)
    metrics.record_ocr("avoided", len(free.avoided))
    metrics.record_failure("classify", "ArtifactUnreadable", len(bad))
    return ClassifyResult(sorted(done), rerouted, [i for i, _ in bad], skipped,
                          free.needs_ocr, free.avoided)


@dataclass
class _OcrFree:
    """What the OCR-free pass decided for a batch's pages awaiting OCR."""

    records: list[PredictionRecord] = field(default_factory=list)
    avoided: list[int] = field(default_factory=list)  # answered: DONE without OCR
    needs_ocr: list[int] = field(default_factory=list)  # to the ocr step
    rerouted: int = 0  # answered, but re-routed or drawn for the audit: OCR, then full depth
    answers: list[Any] = field(default_factory=list)  # for the metrics (exit stage -1)


# The exit stage and layer recorded for an OCR-free answer: before the encoder's first exit.
OCR_FREE_STAGE = -1


def _ocr_free_pass(ctx: StepContext, runtime: ClassifyRuntime,
                   pages: list[tuple[int, PageContent]]) -> _OcrFree:
    out = _OcrFree()
    if not pages:
        return out
    if not has_ocr_free_exit(runtime.model):  # nothing could exit: straight to OCR
        out.needs_ocr = [page_id for page_id, _ in pages]
        return out
    t0 = time.perf_counter()
    found: list[OcrFreeAnswer] = ocr_free_answers(runtime.model, [inp.image for _, inp in pages])
    per_page_ms = (time.perf_counter() - t0) * 1000 / len(pages)
    for (page_id, _), a in zip(pages, found, strict=True):
        if not a.exits:
            out.needs_ocr.append(page_id)
            continue
        routing = full_depth_routing(page_id, a.confidence, ctx.reroute)
        out.records.append(PredictionRecord(
            page_id=page_id, model_version=runtime.version, pass_name=Pass.EARLY.value,
            label=a.label, confidence=a.confidence, exit_stage=OCR_FREE_STAGE,
            exit_layer=OCR_FREE_STAGE, trail=[a.confidence], latency_ms=per_page_ms,
            policy_version=runtime.policy_version,
            full_depth_reason=routing.reason if routing else None,
            audit_sample=bool(routing and routing.audit_sample), ocr_free=True, ocr_ran=False))
        out.answers.append(_Answered(a.label, OCR_FREE_STAGE, a.confidence))
        if routing is None:
            out.avoided.append(page_id)
        else:  # re-routed pages and the audit sample always get OCR and the full-depth pass
            out.needs_ocr.append(page_id)
            out.rerouted += 1
    return out


@dataclass(frozen=True)
class _Answered:
    label: str
    exit_stage: int
    confidence: float


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
            _record((pid, inp), runtime, Pass.FULL, a, routed.get(pid, MANUAL))
            for (pid, inp), a in zip(ok, answers, strict=True)
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


# -- ocr ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrWork:
    """Pages the ocr step claimed (OCRING), with the jobs that read their words (run here, or
    in a process pool: workers.ocr_work.read_words), and the outcomes already known (a page
    whose artifact cannot be read fails without OCR)."""

    pages: dict[int, ClaimedPage]
    jobs: list[OcrJob]
    known: list[OcrOutcome]
    skipped: list[int]


def claim_ocr(ctx: StepContext, page_ids: Sequence[int]) -> OcrWork:
    """Claim the pages awaiting OCR (OCR_QUEUED, or OCRING left by a worker that died: the
    same rule as the classify claim) and prepare their jobs. The stored raster is used when it
    is large enough for the OCR dpi; otherwise the document is read again (once per document)
    and the page rendered at the OCR dpi. A document that cannot be read raises (transient or
    not: the caller's error rule decides), the pages staying OCRING for the reconciler."""
    ids = sorted(set(page_ids))
    with session_scope(ctx.sessions) as s:
        pages = claim_pages(s, ids, only_from=(PageState.OCR_QUEUED, PageState.OCRING),
                            to=PageState.OCRING)
        where = ocr_sources(s, [p.id for p in pages])
    claimed = {p.id: p for p in pages}
    jobs: list[OcrJob] = []
    known: list[OcrOutcome] = []
    read: dict[tuple[str, str | None], bytes] = {}
    ok, bad = _load_inputs(ctx, pages)
    known.extend(OcrOutcome(pid, error=reason) for pid, reason in bad)
    for pid, art in ok:
        src = where[pid]
        raster = _raster_for_ocr(ctx, art)
        if raster is not None:
            jobs.append(OcrJob(pid, src.number, name_of(src.source_uri), raster_png=raster[0],
                               raster_dpi=raster[1]))
            continue
        key = (src.source_uri, src.etag)
        if key not in read:
            read[key] = _read_source(ctx, src)
        jobs.append(OcrJob(pid, src.number, name_of(src.source_uri), source=read[key]))
    return OcrWork(claimed, jobs, known, [i for i in ids if i not in claimed])


def _raster_for_ocr(ctx: StepContext, art: PageContent) -> tuple[bytes, int] | None:
    """The stored raster as PNG and its dpi when it has at least the OCR dpi's pixels (ingest
    stores a raster of at most 448 px a side, so in practice never: the page is rendered
    again from its document)."""
    import io

    opts = ctx.ingest
    if not art.width or art.image.width < art.width * opts.ocr_dpi / opts.dpi:
        return None
    buf = io.BytesIO()
    art.image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), round(opts.dpi * art.image.width / art.width)


def _read_source(ctx: StepContext, src: OcrSource) -> bytes:
    with ctx.open_uri(src.source_uri, src.etag) as stream:
        return stream.read(ctx.ingest.max_file_bytes + 1)


def store_ocr(ctx: StepContext, work: OcrWork, outcomes: Sequence[OcrOutcome]) -> OcrStepResult:
    """Write what OCR read: each page's artifact rewritten with its words (same key: a
    re-run writes the same bytes), text source `ocr`, and the page PENDING again for the
    classify step; a page whose OCR failed or timed out is FAILED with the reason, and the
    rest of its document goes on. One transaction for the batch."""
    good: list[tuple[int, int]] = []  # (page id, words)
    failed: list[tuple[int, str]] = []
    for o in outcomes:
        page = work.pages[o.page_id]
        if o.error is not None:
            failed.append((o.page_id, stored_error(f"OCR failed: {o.error}")))
            continue
        try:
            _rewrite_artifact(ctx, page, o)
        except (ArtifactNotFound, ValueError, KeyError) as exc:
            failed.append((o.page_id, stored_error(f"page artifact unreadable: {exc}")))
            continue
        good.append((o.page_id, len(o.words)))
    with session_scope(ctx.sessions) as s:
        for page_id, words in good:
            set_page_text(s, [page_id], TextSource.OCR.value, words)
        back = [pid for pid, _ in good]
        mark_pages(s, back, PageState.PENDING, only_from=(PageState.OCRING,))
        for page_id, reason in failed:
            mark_pages(s, [page_id], PageState.FAILED, error=reason,
                       only_from=(PageState.OCRING,))
        finish_documents(s, {work.pages[pid].document_id for pid, _ in failed})
    ran = [o for o in outcomes if o.seconds > 0]
    metrics.record_ocr("run", len(ran))
    metrics.record_failure("ocr", "OcrFailed", len(failed))
    return OcrStepResult(sorted(back), sorted(pid for pid, _ in failed), list(work.skipped))


def _rewrite_artifact(ctx: StepContext, page: ClaimedPage, outcome: OcrOutcome) -> None:
    if not page.artifact_ref:
        raise ArtifactNotFound("no artifact reference")
    art = decode_page(ctx.artifacts.get(page.artifact_ref))
    art = replace_fields(art, words=list(outcome.words), boxes=list(outcome.boxes),
                         text_source=TextSource.OCR.value)
    ctx.artifacts.put(page.artifact_ref, encode_page(art, max_bytes=ctx.ingest.max_artifact_bytes))


def ocr_pages(ctx: StepContext, page_ids: Sequence[int]) -> OcrStepResult:
    """The ocr step in this process (the Celery ocr task): claim, tesseract, store. Idempotent:
    a page no longer awaiting OCR is skipped, and a re-run writes the same artifact."""
    work = claim_ocr(ctx, page_ids)
    outcomes = [*work.known, *(read_words(job, ctx.ingest) for job in work.jobs)]
    return store_ocr(ctx, work, outcomes)


MANUAL = Routing(FullDepthReason.MANUAL.value, False)


def _record(page: tuple[int, PageContent], runtime: ClassifyRuntime, pass_name: Pass,
            a: PagePrediction, routing: Routing | None) -> PredictionRecord:
    """The engine's answer for `page` (its id and the content it was answered from) as the
    store's row: model and policy version, pass and full-depth routing added; a full row keeps
    every exit's (label, confidence); `ocr_ran` from the page's text source then."""
    page_id, text_source = page[0], page[1].text_source
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
        ocr_ran=text_source == TextSource.OCR.value,
    )


# -- reconcile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcilePlan:
    documents: list[int]  # -> ingest
    classify: list[int]  # page ids -> classify
    full_depth: list[int]  # page ids -> full_depth
    finished: list[int]  # documents found complete and marked DONE
    ocr: list[int] = field(default_factory=list)  # page ids -> ocr


# The steps whose queues the reconciler asks about (named like the Celery queues).
WAITING_QUEUES = ("ingest", "classify", "full_depth", "ocr")


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
    empty = {q: _depth_of(depth, q) == 0 for q in WAITING_QUEUES}  # read before the transaction

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
        ocr = sorted({  # OCRING ones back to OCR_QUEUED: their worker died
            *reclaim_pages(s, [PageState.OCR_QUEUED], waiting("ocr", rules.lost_after_s),
                           PageState.OCR_QUEUED, limit=limit, now=now),
            *reclaim_pages(s, [PageState.OCRING], before(rules.ocr_after_s),
                           PageState.OCR_QUEUED, limit=limit, now=now),
        })
        finished = finish_documents(s)
    return ReconcilePlan(docs, classify, full, finished, ocr)


def _depth_of(depth: Callable[[str], int | None], queue: str) -> int | None:
    """A queue's depth; None (unknown: counted as busy) from a reader that does not know the
    queue (one written before the ocr queue existed)."""
    try:
        return depth(queue)
    except LookupError:
        return None


def _p99_s(s: Session, pass_name: Pass) -> float:
    """p99 of the recent per-page latency of a pass, in seconds (0 with none measured)."""
    ms = sorted(recent_latencies_ms(s, pass_name))
    return ms[int(0.99 * (len(ms) - 1))] / 1000.0 if ms else 0.0
