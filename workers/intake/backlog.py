"""The nightly backlog: find stored work that is not (or no longer) classified well enough and
hand it to the queues at a pace that leaves room for live drops.

What counts as work, for documents under a source prefix received within [since, until):
- never ingested: documents RECEIVED and untouched for ``grace_s`` -> ingest;
- never classified: pages PENDING and untouched for ``grace_s`` -> classify;
- classified by another model version: DONE pages with no prediction by ``model_version``
  -> back to PENDING -> classify;
- not confident enough: DONE pages whose final answer is an early-exit one below
  ``reclassify_below`` -> REROUTED -> full_depth (kept beside the early answer); a page the
  OCR-free exit answered has no words yet, so it goes OCR_QUEUED -> ocr first, and the classify
  step then sends it on to full depth (never to a second early answer).

The state change *is* the bookkeeping: a claimed page is no longer DONE, so a second run right
after the first finds nothing, and a page is only DONE again once a worker has classified it.
``grace_s`` keeps the backlog off live work that is merely waiting in a queue. Each chunk is
claimed and the resume cursor stored in one transaction, then enqueued; if the process dies
between the two, the claimed rows are exactly what the reconciler re-enqueues once they are
``stuck_after_s`` old, so nothing is lost, and the cursor lets the next run continue where
this one stopped instead of re-scanning.

Starving live drops is avoided by admission, not by a second queue: the backlog keeps at most
``max_in_queue`` of its messages ahead of anything else in a broker queue (it waits while the
queue is deeper), optionally also capped at ``max_rate`` messages/s. A live drop therefore
waits behind at most ``max_in_queue`` backlog messages, whatever the size of the backlog; the
rest of the backlog waits in the database, which is where it already is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from hashlib import sha256

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document, Page, Prediction, utcnow
from db.repository import (
    final_prediction_select,
    get_watermark,
    mark_document,
    mark_pages,
    set_watermark,
)
from db.session import session_scope
from db.states import DocumentState, PageState, Pass, TextSource
from workers.orchestration import Orchestrator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacklogQuery:
    source_prefix: str | None = None  # documents whose source_uri starts with this
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    model_version: str | None = None  # reclassify pages with no prediction by this version
    reclassify_below: float | None = None  # re-route early answers below this confidence
    limit: int | None = None  # at most this many documents with work
    grace_s: float = 900.0  # RECEIVED/PENDING rows touched this recently are live work

    def cursor_name(self) -> str:
        params = {k: v for k, v in asdict(self).items() if k not in ("limit", "grace_s")}
        digest = sha256(json.dumps(params, default=str, sort_keys=True).encode()).hexdigest()
        return f"backlog:{digest[:16]}"


@dataclass
class Claimed:
    ingest: list[int] = field(default_factory=list)  # document ids
    classify: list[int] = field(default_factory=list)  # page ids
    full_depth: list[int] = field(default_factory=list)  # page ids
    ocr: list[int] = field(default_factory=list)  # page ids: OCR, then full depth
    documents: int = 0  # documents with any work

    def extend(self, other: Claimed) -> None:
        self.ingest += other.ingest
        self.classify += other.classify
        self.full_depth += other.full_depth
        self.ocr += other.ocr
        self.documents += other.documents


@dataclass
class Pacer:
    """Admission control for backlog messages (see the module docstring).

    ``depth()`` returns how many messages wait in the queue a send goes to (None: no broker,
    nothing to protect). ``messages`` counts what the backlog sent, ``waited_s`` how long it
    held back."""

    depth: Callable[[str], int | None] = lambda _queue: None
    max_in_queue: int = 64
    max_rate: float | None = None  # messages per second, None: no rate cap
    poll_s: float = 0.2
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    messages: int = 0
    waited_s: float = 0.0
    _next_at: float = 0.0

    def admit(self, queue: str) -> None:
        start = self.clock()
        while (d := self.depth(queue)) is not None and d >= self.max_in_queue:
            self.sleep(self.poll_s)
        if self.max_rate:
            now = self.clock()
            if now < self._next_at:
                self.sleep(self._next_at - now)
            self._next_at = max(now, self._next_at) + 1.0 / self.max_rate
        self.messages += 1
        self.waited_s += self.clock() - start


@dataclass(frozen=True)
class Cursor:
    after_id: int = 0
    done: bool = True

    @classmethod
    def load(cls, value: str | None) -> Cursor:
        if not value:
            return cls()
        try:
            doc = json.loads(value)
            return cls(int(doc["after_id"]), bool(doc["done"]))
        except (ValueError, KeyError, TypeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"after_id": self.after_id, "done": self.done})


def _documents_in_scope(q: BacklogQuery) -> ColumnElement[bool]:
    cond = [Document.state.in_([
        DocumentState.RECEIVED.value, DocumentState.INGESTED.value, DocumentState.DONE.value])]
    if q.source_prefix:
        cond.append(Document.source_uri.startswith(q.source_prefix, autoescape=True))
    if q.since:
        cond.append(Document.created_at >= q.since)
    if q.until:
        cond.append(Document.created_at < q.until)
    return and_(*cond)


def count_in_scope(s: Session, q: BacklogQuery, after_id: int = 0) -> int:
    return int(s.execute(
        select(func.count()).select_from(Document)
        .where(_documents_in_scope(q), Document.id > after_id)
    ).scalar_one())


def _claim_chunk(s: Session, q: BacklogQuery, doc_ids: list[int], budget: int | None,
                 now: datetime) -> Claimed:
    """Find and claim the work among ``doc_ids`` (ascending), up to ``budget`` documents."""
    stale = now - timedelta(seconds=q.grace_s)
    ingest = set(s.execute(select(Document.id).where(
        Document.id.in_(doc_ids), Document.state == DocumentState.RECEIVED.value,
        Document.updated_at < stale)).scalars())

    page_cond = [and_(Page.state == PageState.PENDING.value, Page.updated_at < stale)]
    if q.model_version:
        has_version = exists().where(
            Prediction.page_id == Page.id, Prediction.model_version == q.model_version)
        page_cond.append(and_(Page.state == PageState.DONE.value, ~has_version))
    classify = s.execute(select(Page.id, Page.document_id, Page.state).where(
        Page.document_id.in_(doc_ids), or_(*page_cond))).all()

    full: list[tuple[int, int]] = []
    unread: set[int] = set()  # answered without OCR: OCR first
    if q.reclassify_below is not None:
        final = final_prediction_select(q.model_version).subquery("final")
        rows = s.execute(
            select(Page.id, Page.document_id, Page.text_source)
            .join(final, final.c.page_id == Page.id)
            .where(Page.document_id.in_(doc_ids), Page.state == PageState.DONE.value,
                   final.c.pass_name == Pass.EARLY.value,
                   final.c.confidence < q.reclassify_below)).all()
        full = [(int(p), int(d)) for p, d, _ in rows]
        unread = {int(p) for p, _, src in rows if src == TextSource.OCR_AVOIDED.value}

    with_work = sorted(ingest | {d for _, d, _ in classify} | {d for _, d in full})
    if budget is not None:
        with_work = with_work[:budget]
    keep = set(with_work)
    out = Claimed(documents=len(with_work))
    out.ingest = sorted(i for i in ingest if i in keep)
    classify_ids = sorted({int(p) for p, d, _ in classify if d in keep})
    full_ids = sorted({p for p, d in full if d in keep} - set(classify_ids))
    out.classify = classify_ids
    out.full_depth = [p for p in full_ids if p not in unread]
    out.ocr = [p for p in full_ids if p in unread]

    # Claim: fresh updated_at on what stays put, DONE -> PENDING / REROUTED for what is redone,
    # and the document back to INGESTED so it is finished again when its pages are.
    for doc_id in out.ingest:
        mark_document(s, doc_id, DocumentState.RECEIVED, only_from=(DocumentState.RECEIVED,))
    mark_pages(s, out.classify, PageState.PENDING, only_from=(PageState.PENDING, PageState.DONE))
    mark_pages(s, out.full_depth, PageState.REROUTED, only_from=(PageState.DONE,))
    mark_pages(s, out.ocr, PageState.OCR_QUEUED, only_from=(PageState.DONE,))
    redone = {d for _, d, st in classify if d in keep and st == PageState.DONE.value}
    redone |= {d for p, d in full if d in keep and p in set(full_ids)}
    for doc_id in sorted(redone):
        mark_document(s, doc_id, DocumentState.INGESTED, only_from=(DocumentState.DONE,))
    return out


@dataclass
class BacklogReport:
    claimed: Claimed
    scanned: int
    resumed_from: int
    complete: bool
    seconds: float
    pacer_wait_s: float


def run_backlog(
    sessions: sessionmaker[Session],
    q: BacklogQuery,
    enqueue: Orchestrator,
    pacer: Pacer | None = None,
    *,
    chunk_docs: int = 200,
    message_pages: int = 16,
    on_progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> BacklogReport:
    """Scan documents in id order, claim and enqueue their work chunk by chunk, and keep a
    resume cursor. ``on_progress(n)`` is told how many documents each chunk scanned."""
    started = time.monotonic()
    pacer = pacer or Pacer()
    name = q.cursor_name()
    with session_scope(sessions) as s:
        cursor = Cursor.load(get_watermark(s, name))
    after = 0 if cursor.done else cursor.after_id
    if after:
        log.info("backlog %s resumes after document %d", name, after)
    total = Claimed()
    scanned = 0
    complete = False
    while True:
        if stop and stop():
            break
        budget = None if q.limit is None else q.limit - total.documents
        if budget is not None and budget <= 0:
            break
        with session_scope(sessions) as s:
            ids = [int(i) for i in s.execute(
                select(Document.id).where(_documents_in_scope(q), Document.id > after)
                .order_by(Document.id).limit(chunk_docs)).scalars()]
            if not ids:
                complete = True
                set_watermark(s, name, Cursor(after, done=True).dump())
                break
            got = _claim_chunk(s, q, ids, budget, utcnow())
            # With a budget cut, resume right after the last document that got its work.
            last = ids[-1] if budget is None or got.documents < budget else _last_claimed(got, s)
            set_watermark(s, name, Cursor(last, done=False).dump())
        scanned += sum(1 for i in ids if i <= last)
        after = last
        _send(enqueue, pacer, got, message_pages)
        total.extend(got)
        if on_progress:
            on_progress(sum(1 for i in ids if i <= last))
    return BacklogReport(total, scanned, cursor.after_id if not cursor.done else 0, complete,
                         time.monotonic() - started, pacer.waited_s)


def send_new(doc_ids: Sequence[int], enqueue: Orchestrator, pacer: Pacer,
             on_progress: Callable[[int], None] | None = None) -> None:
    """Documents a scan registered go to ingest, one paced message each, then drain (in
    process: run them now)."""
    for doc_id in doc_ids:
        pacer.admit("ingest")
        enqueue.ingest([doc_id])
        if on_progress:
            on_progress(1)
    enqueue.drain()


def _last_claimed(got: Claimed, s: Session) -> int:
    page_ids = got.classify + got.full_depth + got.ocr
    docs = set(got.ingest)
    if page_ids:
        docs |= set(s.execute(select(Page.document_id).where(Page.id.in_(page_ids))).scalars())
    return max(docs)


def _send(enqueue: Orchestrator, pacer: Pacer, got: Claimed, message_pages: int) -> None:
    for doc_id in got.ingest:
        pacer.admit("ingest")
        enqueue.ingest([doc_id])
    for queue, ids, send in (("classify", got.classify, enqueue.classify),
                             ("full_depth", got.full_depth, enqueue.full_depth),
                             ("ocr", got.ocr, enqueue.ocr)):
        for start in range(0, len(ids), message_pages):
            pacer.admit(queue)
            send(ids[start:start + message_pages])
    enqueue.drain()  # in process: run this chunk's work now (Celery: already sent)
