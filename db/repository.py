"""Store operations used by the steps. Each function takes a Session, never commits (the caller's
`session_scope` is the transaction) and is idempotent: unique keys plus ON CONFLICT make a
repeated call (a redelivered message, a second drop of the same object) a no-op."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, Table, Update, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Document, HumanLabel, Page, Prediction, Watermark, utcnow
from db.states import PAGE_FINAL, DocumentState, FailureKind, PageState, Pass, TextSource

# Rows per INSERT statement: far below SQLite's 32766 bound-parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class PageRecord:
    number: int  # 1-based
    text_source: str | None  # db.states.TextSource
    word_count: int | None
    artifact_ref: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class PredictionRecord:
    page_id: int
    model_version: str
    pass_name: str  # "early" | "full" (db.states.Pass)
    label: str
    confidence: float
    exit_stage: int
    exit_layer: int
    trail: Sequence[float]  # calibrated confidence at each exit tried, in order
    latency_ms: float | None
    policy_version: str | None = None  # classifier.policy.policy_version of the policy in force
    full_depth_reason: str | None = None  # db.states.FullDepthReason (None: answered early)
    audit_sample: bool = False  # the seeded audit coin picked the page
    exit_answers: Sequence[tuple[str, float]] | None = None  # full rows: (label, conf) per exit
    ocr_free: bool = False  # the OCR-free exit answered (exit_stage/exit_layer -1)
    ocr_ran: bool | None = None  # tesseract had run for the page when this answer was given


@dataclass(frozen=True)
class Routing:
    """Why a page went to full depth, as its early row records it (the classify step's
    decision), for the full row to carry."""

    reason: str
    audit_sample: bool


@dataclass(frozen=True)
class FinalPrediction:
    page_id: int
    document_id: int
    page_number: int
    model_version: str
    pass_name: str
    label: str
    confidence: float
    exit_stage: int
    exit_layer: int
    created_at: datetime


def _insert(s: Session, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (generic SQL has no portable upsert)."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect: {name}")


def _chunks(rows: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def version_key(etag: str | None, sha256: str | None) -> str:
    """The document's version in its idempotency key: etag, else sha256, else "" (never NULL,
    because NULLs never collide in a UNIQUE index)."""
    return etag or sha256 or ""


# --- documents --------------------------------------------------------------------------------


def register_document(
    s: Session, source_uri: str, *, etag: str | None = None, sha256: str | None = None
) -> tuple[int, bool]:
    """Create the document row once per (source_uri, version); returns (id, created)."""
    now = utcnow()
    key = version_key(etag, sha256)
    table = Document.__table__
    stmt = (
        _insert(s, table)
        .values(
            source_uri=source_uri,
            version_key=key,
            etag=etag,
            sha256=sha256,
            state=DocumentState.RECEIVED.value,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source_uri", "version_key"])
        .returning(table.c.id)
    )
    inserted = s.execute(stmt).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    # The row exists (committed by someone else, or earlier in this transaction).
    existing = s.execute(
        select(table.c.id).where(table.c.source_uri == source_uri, table.c.version_key == key)
    ).scalar_one()
    return int(existing), False


def get_document(s: Session, doc_id: int) -> Document | None:
    return s.get(Document, doc_id)


def mark_document(
    s: Session,
    doc_id: int,
    state: DocumentState | str,
    error: str | None = None,
    page_count: int | None = None,
    *,
    only_from: Iterable[DocumentState | str] | None = None,
    failure_kind: FailureKind | str | None = None,
) -> bool:
    """Set the state (and error, cleared when None; page_count when given). With `only_from`,
    only a document currently in one of those states moves, so a task can claim work with one
    statement. Moving to INGESTING counts an attempt; moving to FAILED counts a failed attempt
    and records `failure_kind` (default permanent; any other state clears it). Returns whether
    a row changed."""
    state = DocumentState(state)
    failed = state is DocumentState.FAILED
    stmt = _document_move(
        counts_attempt=state is DocumentState.INGESTING, sets_page_count=page_count is not None,
        restricted=only_from is not None, counts_failure=failed,
    )
    # Parameter names never match a column's: Core would add such a key to the SET clause.
    params: dict[str, Any] = {
        "doc_id": doc_id, "new_state": state.value, "new_error": error, "now": utcnow(),
        "new_page_count": page_count,
        "from_states": [DocumentState(x).value for x in only_from or ()],
        "new_kind": FailureKind(failure_kind or FailureKind.PERMANENT).value if failed else None,
    }
    return s.execute(stmt, params).rowcount > 0


@dataclass(frozen=True)
class ClaimedDocument:
    id: int
    source_uri: str
    etag: str | None


def claim_document(s: Session, doc_id: int) -> ClaimedDocument | None:
    """The ingest step's claim in one UPDATE ... RETURNING: a RECEIVED (or abandoned
    INGESTING) document moves to INGESTING, counting an attempt, and comes back with what
    ingesting needs; None when it is in another state or does not exist."""
    stmt = _document_move(counts_attempt=True, sets_page_count=False, restricted=True,
                          claims=True)
    params = {
        "doc_id": doc_id, "new_state": DocumentState.INGESTING.value, "new_error": None,
        "now": utcnow(), "new_kind": None,
        "from_states": [DocumentState.RECEIVED.value, DocumentState.INGESTING.value],
    }
    row = s.execute(stmt, params).one_or_none()
    return None if row is None else ClaimedDocument(doc_id, row.source_uri, row.etag)


def _move_values(table: Any, *, counts_attempt: bool, counts_failure: bool) -> dict[str, Any]:
    """The SET clause a state move of documents or pages shares: state, error, updated_at and
    failure kind from bound parameters; the attempt counters when the move counts one."""
    values: dict[str, Any] = {
        "state": bindparam("new_state"), "error": bindparam("new_error"),
        "updated_at": bindparam("now"), "failure_kind": bindparam("new_kind"),
    }
    if counts_attempt:
        values["attempts"] = table.c.attempts + 1
    if counts_failure:
        values["failed_attempts"] = table.c.failed_attempts + 1
    return values


@cache
def _document_move(
    *, counts_attempt: bool, sets_page_count: bool, restricted: bool, claims: bool = False,
    counts_failure: bool = False,
) -> Update:
    # Built once per shape and reused: building and keying a statement per call cost more
    # client CPU than the round trip (bound parameters carry the values).
    table = Document.__table__
    values = _move_values(table, counts_attempt=counts_attempt, counts_failure=counts_failure)
    if sets_page_count:
        values["page_count"] = bindparam("new_page_count")
    stmt = update(table).where(table.c.id == bindparam("doc_id")).values(**values)
    if restricted:
        stmt = stmt.where(table.c.state.in_(bindparam("from_states", expanding=True)))
    if claims:
        stmt = stmt.returning(table.c.source_uri, table.c.etag)
    return stmt


def finish_documents(s: Session, doc_ids: Iterable[int] | None = None) -> list[int]:
    """Mark DONE every INGESTED document (of `doc_ids`, or all) whose pages are all final.
    Returns the ids that moved. Runs after every classified batch; the check and the move are
    one UPDATE ... RETURNING."""
    lock, move_some, move_all = _finish_statements()
    if doc_ids is None:  # the reconciler's sweep: the safety net, no locking
        return sorted(int(i) for i in s.execute(move_all, {"now": utcnow()}).scalars())
    moved: list[int] = []
    for chunk in _chunks(sorted(set(doc_ids))):
        # Two tasks finishing the last pages of one document at once would each see the other's
        # pages still open (READ COMMITTED) and neither would mark it DONE. Locking the document
        # rows first (in id order: no deadlock) makes the second check wait for the first
        # commit; its next statement then sees those pages. SQLite serialises writers anyway.
        s.execute(lock, {"ids": list(chunk)})
        rows = s.execute(move_some, {"ids": list(chunk), "now": utcnow()})
        moved.extend(int(i) for i in rows.scalars())
    return sorted(moved)


@cache
def _finish_statements() -> tuple[Select[Any], Update, Update]:
    """finish_documents' row lock and its move, for some documents or all; built once."""
    docs, pages = Document.__table__, Page.__table__
    open_pages = (
        select(pages.c.id)
        .where(
            pages.c.document_id == docs.c.id, pages.c.state.not_in([p.value for p in PAGE_FINAL])
        )
        .exists()
    )
    some = docs.c.id.in_(bindparam("ids", expanding=True))
    lock = (
        select(docs.c.id)
        .where(some, docs.c.state == DocumentState.INGESTED.value)
        .order_by(docs.c.id)
        .with_for_update()
    )
    move_all = (
        update(docs)
        .where(docs.c.state == DocumentState.INGESTED.value, ~open_pages)
        .values(state=DocumentState.DONE.value, error=None, updated_at=bindparam("now"))
        .returning(docs.c.id)
    )
    return lock, move_all.where(some), move_all


# --- pages ------------------------------------------------------------------------------------


def upsert_pages(s: Session, doc_id: int, pages: Sequence[PageRecord]) -> list[int]:
    """Write the document's pages, once per (document_id, number); returns page ids in the order
    given. A re-ingest refreshes the descriptive columns but never the page's state."""
    if not pages:
        return []
    now = utcnow()
    table = Page.__table__
    rows = [
        {
            "document_id": doc_id,
            "number": p.number,
            "text_source": p.text_source,
            "word_count": p.word_count,
            "artifact_ref": p.artifact_ref,
            "width": p.width,
            "height": p.height,
            "state": PageState.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for p in pages
    ]
    insert = _insert(s, table)
    refreshed = ("text_source", "word_count", "artifact_ref", "width", "height")
    stmt = insert.on_conflict_do_update(
        index_elements=["document_id", "number"],
        set_={name: insert.excluded[name] for name in refreshed},
    ).returning(table.c.number, table.c.id)
    by_number: dict[int, int] = {}
    for chunk in _chunks(rows):
        # Rows as executemany parameters, not .values([...]): the statement is compiled once
        # and cached, and RETURNING (inserted and refreshed rows alike) saves a SELECT.
        by_number.update({int(n): int(i) for n, i in s.execute(stmt, chunk)})
    return [by_number[p.number] for p in pages]


def _page_move_params(
    page_ids: Iterable[int],
    state: PageState,
    error: str | None,
    only_from: Iterable[PageState | str] | None,
    failure_kind: FailureKind | str | None = None,
) -> Iterable[dict[str, Any]]:
    """The parameters of _page_move, one set per chunk of ids (no name is a column's: see
    mark_document)."""
    failed = state is PageState.FAILED
    common = {
        "new_state": state.value, "new_error": error, "now": utcnow(),
        "from_states": [PageState(x).value for x in only_from or ()],
        "new_kind": FailureKind(failure_kind or FailureKind.PERMANENT).value if failed else None,
    }
    for chunk in _chunks(list(page_ids)):
        yield {**common, "ids": list(chunk)}


@cache
def _page_move(
    *, counts_attempt: bool, restricted: bool, claims: bool, counts_failure: bool = False
) -> Update:
    """UPDATE pages: state (and error, cleared when None) of the ids; moving to CLASSIFYING
    or OCRING (a claim) counts an attempt, to FAILED a failed attempt (with its kind; other
    states clear the kind); `restricted` adds the only_from condition; a claim returns the
    rows. Built once per shape (see _document_move)."""
    table = Page.__table__
    values = _move_values(table, counts_attempt=counts_attempt, counts_failure=counts_failure)
    stmt = update(table).where(table.c.id.in_(bindparam("ids", expanding=True))).values(**values)
    if restricted:
        stmt = stmt.where(table.c.state.in_(bindparam("from_states", expanding=True)))
    if claims:
        stmt = stmt.returning(table.c.id, table.c.document_id, table.c.artifact_ref,
                              table.c.text_source)
    return stmt


def mark_pages(
    s: Session,
    page_ids: Iterable[int],
    state: PageState | str,
    error: str | None = None,
    *,
    only_from: Iterable[PageState | str] | None = None,
    failure_kind: FailureKind | str | None = None,
) -> int:
    """Set the state (and error, cleared when None) of many pages in one statement per chunk.
    `only_from` restricts the move as in mark_document. Moving to CLASSIFYING counts an
    attempt; moving to FAILED a failed attempt, with `failure_kind` (default permanent).
    Returns the number of rows changed."""
    state = PageState(state)
    stmt = _page_move(counts_attempt=state in CLAIMED_STATES,
                      restricted=only_from is not None, claims=False,
                      counts_failure=state is PageState.FAILED)
    params = _page_move_params(page_ids, state, error, only_from, failure_kind)
    return sum(s.execute(stmt, p).rowcount for p in params)


@dataclass(frozen=True)
class ClaimedPage:
    id: int
    document_id: int
    artifact_ref: str | None
    text_source: str | None = None


# The states a step's claim moves pages to: reaching one counts an attempt.
CLAIMED_STATES = frozenset({PageState.CLASSIFYING, PageState.OCRING})


def claim_pages(
    s: Session, page_ids: Iterable[int], only_from: Iterable[PageState | str],
    to: PageState | str = PageState.CLASSIFYING,
) -> list[ClaimedPage]:
    """Move the pages that are in `only_from` to `to` (CLASSIFYING, or OCRING for the ocr step;
    counting an attempt) and return them, by id: a step's claim in one UPDATE ... RETURNING per
    chunk."""
    stmt = _page_move(counts_attempt=True, restricted=True, claims=True)
    claimed: list[ClaimedPage] = []
    for params in _page_move_params(sorted(set(page_ids)), PageState(to), None, only_from):
        claimed.extend(ClaimedPage(int(i), int(d), a, t) for i, d, a, t in s.execute(stmt, params))
    return sorted(claimed, key=lambda c: c.id)


def set_page_text(s: Session, page_ids: Iterable[int], text_source: str,
                  word_count: int | None = None) -> None:
    """Record where the pages' words now come from (and how many), nothing else: the ocr step
    after tesseract, the classify step for pages the OCR-free exit answered."""
    ids = list(page_ids)
    if not ids:
        return
    values: dict[str, Any] = {"text_source": text_source}
    if word_count is not None:
        values["word_count"] = word_count
    table = Page.__table__
    for chunk in _chunks(ids):
        s.execute(update(table).where(table.c.id.in_(list(chunk))).values(**values))


@dataclass(frozen=True)
class OcrSource:
    """What the ocr step needs to read one page again: its document's source and version."""

    page_id: int
    number: int
    source_uri: str
    etag: str | None


def ocr_sources(s: Session, page_ids: Iterable[int]) -> dict[int, OcrSource]:
    """page id -> where its document is, for the pages given."""
    ids = list(page_ids)
    if not ids:
        return {}
    pg, doc = Page.__table__, Document.__table__
    query = (select(pg.c.id, pg.c.number, doc.c.source_uri, doc.c.etag)
             .join(doc, doc.c.id == pg.c.document_id).where(pg.c.id.in_(ids)))
    return {int(i): OcrSource(int(i), int(n), u, e) for i, n, u, e in s.execute(query)}


def get_page(s: Session, page_id: int) -> Page | None:
    return s.get(Page, page_id)


def pages_for_document(s: Session, doc_id: int) -> list[Page]:
    return list(
        s.execute(select(Page).where(Page.document_id == doc_id).order_by(Page.number)).scalars()
    )


def reclaim_documents(
    s: Session, states: Iterable[DocumentState | str], before: datetime,
    to: DocumentState | str, *, limit: int, now: datetime | None = None,
) -> list[int]:
    """The reconciler's take-back in one UPDATE ... RETURNING: documents in `states` not updated
    since `before` (at most `limit`, oldest first) move to `to` with a fresh updated_at. The
    condition is in the UPDATE itself, so a heartbeat committed meanwhile keeps its document."""
    table = Document.__table__

    def cond(t: Any) -> list[Any]:
        return [t.c.state.in_([DocumentState(x).value for x in states]), t.c.updated_at < before]

    return _reclaim(s, table, cond, limit, {"state": DocumentState(to).value,
                                             "updated_at": now or utcnow()})


def reclaim_pages(
    s: Session, states: Iterable[PageState | str], before: datetime, to: PageState | str, *,
    limit: int, now: datetime | None = None, unless_document_in: Iterable[DocumentState] = (),
) -> list[int]:
    """reclaim_documents for pages; none of a document in `unless_document_in` (one being
    ingested: its ingest enqueues its pending pages when it ends). No attempt is counted."""
    table, docs = Page.__table__, Document.__table__
    skip = [DocumentState(x).value for x in unless_document_in]

    def cond(t: Any) -> list[Any]:
        out = [t.c.state.in_([PageState(x).value for x in states]), t.c.updated_at < before]
        if skip:
            busy = select(docs.c.id).where(docs.c.id == t.c.document_id, docs.c.state.in_(skip))
            out.append(~busy.exists())
        return out

    return _reclaim(s, table, cond, limit, {"state": PageState(to).value,
                                             "updated_at": now or utcnow()})


def _reclaim(s: Session, table: Any, cond: Callable[[Any], list[Any]], limit: int,
             values: dict[str, Any]) -> list[int]:
    """UPDATE the oldest `limit` rows meeting `cond` (checked again in the UPDATE itself) to
    `values`; their ids, ascending."""
    inner = table.alias("stale")
    pick = select(inner.c.id).where(*cond(inner)).order_by(inner.c.updated_at, inner.c.id)
    stmt = (update(table).where(table.c.id.in_(pick.limit(limit).scalar_subquery()), *cond(table))
            .values(**values).returning(table.c.id))
    return sorted(int(i) for i in s.execute(stmt).scalars())


def touch_document(s: Session, doc_id: int, state: DocumentState | str) -> bool:
    """Refresh the document's updated_at if it is still in `state`, nothing else: the ingest
    step's heartbeat (the reconciler leaves a document alone while it beats)."""
    table = Document.__table__
    stmt = (update(table).where(table.c.id == doc_id, table.c.state == DocumentState(state).value)
            .values(updated_at=utcnow()))
    return s.execute(stmt).rowcount > 0


def hold_pages(s: Session, page_ids: Iterable[int], state: PageState | str) -> list[ClaimedPage]:
    """The pages still in `state`, their updated_at refreshed (same state, no attempt counted),
    by id: a full-depth batch's claim, so the reconciler does not hand them out again while the
    batch runs."""
    stmt = _page_move(counts_attempt=False, restricted=True, claims=True)
    state = PageState(state)
    held: list[ClaimedPage] = []
    for params in _page_move_params(sorted(set(page_ids)), state, None, [state]):
        held.extend(ClaimedPage(int(i), int(d), a, t) for i, d, a, t in s.execute(stmt, params))
    return sorted(held, key=lambda c: c.id)


def recent_latencies_ms(s: Session, pass_name: Pass | str, limit: int = 1000) -> list[float]:
    """Per-page latency (batcher submit -> exit) of the newest `limit` predictions of a pass:
    what the reconciler derives its bound for pages being classified from."""
    query = (select(Prediction.latency_ms)
             .where(Prediction.pass_name == Pass(pass_name).value,
                    Prediction.latency_ms.is_not(None))
             .order_by(Prediction.id.desc()).limit(limit))
    return [float(x) for x in s.execute(query).scalars()]


# --- predictions ------------------------------------------------------------------------------


def record_predictions(s: Session, rows: Sequence[PredictionRecord]) -> int:
    """Write a classified batch: INSERT ... ON CONFLICT DO NOTHING on (page, model_version,
    pass), so a redelivered batch writes nothing twice. Any bad row (unknown page, bad pass or
    confidence) fails the statement, and the caller's transaction with it. Returns the number
    of rows inserted."""
    if not rows:
        return 0
    now = utcnow()
    table = Prediction.__table__
    stmt = (
        _insert(s, table)
        .on_conflict_do_nothing(index_elements=["page_id", "model_version", "pass_name"])
        .returning(table.c.id)
    )
    params = [
        {
            "page_id": r.page_id,
            "model_version": r.model_version,
            "pass_name": str(r.pass_name),
            "label": r.label,
            "confidence": float(r.confidence),
            "exit_stage": int(r.exit_stage),
            "exit_layer": int(r.exit_layer),
            "trail": [float(c) for c in r.trail],
            "latency_ms": None if r.latency_ms is None else float(r.latency_ms),
            "created_at": now,
            "policy_version": r.policy_version,
            "full_depth_reason": None if r.full_depth_reason is None else str(r.full_depth_reason),
            "audit_sample": bool(r.audit_sample),
            "exit_answers": (None if r.exit_answers is None
                             else [[str(lab), float(c)] for lab, c in r.exit_answers]),
            "ocr_free": bool(r.ocr_free),
            "ocr_ran": None if r.ocr_ran is None else bool(r.ocr_ran),
        }
        for r in rows
    ]
    # executemany parameters: one cached statement (sent as multi-row INSERTs), see upsert_pages.
    return sum(len(s.execute(stmt, chunk).all()) for chunk in _chunks(params))


def routing_of(s: Session, page_ids: Iterable[int], model_version: str) -> dict[int, Routing]:
    """The full-depth routing the classify step recorded on the pages' early rows of
    `model_version`: page id -> Routing. A page missing here was not routed by the classify
    step (an operator's re-run, or its early answer is another version's)."""
    ids = list(page_ids)
    if not ids:
        return {}
    p = Prediction.__table__
    query = select(p.c.page_id, p.c.full_depth_reason, p.c.audit_sample).where(
        p.c.page_id.in_(ids), p.c.model_version == model_version,
        p.c.pass_name == Pass.EARLY.value, p.c.full_depth_reason.is_not(None))
    return {int(pid): Routing(reason, bool(audit)) for pid, reason, audit in s.execute(query)}


def settled_text_sources(s: Session, doc_id: int) -> dict[int, str]:
    """Page number -> text source of the document's pages whose OCR question is settled: OCRed
    (`ocr`) or answered without it (`ocr_avoided`)."""
    query = select(Page.number, Page.text_source).where(
        Page.document_id == doc_id,
        Page.text_source.in_([TextSource.OCR.value, TextSource.OCR_AVOIDED.value]))
    return {int(n): str(src) for n, src in s.execute(query)}


def answered_ocr_free(s: Session, page_ids: Iterable[int], model_version: str) -> set[int]:
    """The pages whose early answer of `model_version` the OCR-free exit gave. Back from OCR,
    such a page is on its way to full depth (re-routed, audited, or an operator's re-run):
    its early answer is already stored."""
    ids = list(page_ids)
    if not ids:
        return set()
    p = Prediction.__table__
    query = select(p.c.page_id).where(
        p.c.page_id.in_(ids), p.c.model_version == model_version,
        p.c.pass_name == Pass.EARLY.value, p.c.ocr_free.is_(True))
    return {int(pid) for pid in s.execute(query).scalars()}


def predictions_for_page(s: Session, page_id: int) -> list[Prediction]:
    query = select(Prediction).where(Prediction.page_id == page_id).order_by(Prediction.id)
    return list(s.execute(query).scalars())


def final_prediction_select(model_version: str | None = None) -> Select[Any]:
    """One row per page with its final answer: the newest model version's predictions, and
    among them the full-depth pass when there is one, else the early one. Columns: page_id,
    document_id, page_number, model_version, pass_name, label, confidence, exit_stage,
    exit_layer, created_at. A Core select, reusable as a subquery by the audit queries."""
    p, pg = Prediction.__table__, Page.__table__
    base = select(
        p,
        func.max(p.c.created_at)
        .over(partition_by=[p.c.page_id, p.c.model_version])
        .label("version_seen"),
    )
    if model_version is not None:
        base = base.where(p.c.model_version == model_version)
    b = base.subquery("versioned")
    full_first = case((b.c.pass_name == Pass.FULL.value, 0), else_=1)
    rank = (
        func.row_number()
        .over(
            partition_by=b.c.page_id, order_by=[b.c.version_seen.desc(), full_first, b.c.id.desc()]
        )
        .label("rank")
    )
    ranked = select(b, rank).subquery("ranked")
    return (
        select(
            ranked.c.page_id,
            pg.c.document_id,
            pg.c.number.label("page_number"),
            ranked.c.model_version,
            ranked.c.pass_name,
            ranked.c.label,
            ranked.c.confidence,
            ranked.c.exit_stage,
            ranked.c.exit_layer,
            ranked.c.created_at,
        )
        .join(pg, pg.c.id == ranked.c.page_id)
        .where(ranked.c.rank == 1)
    )


def final_predictions(
    s: Session,
    *,
    model_version: str | None = None,
    document_id: int | None = None,
    page_ids: Iterable[int] | None = None,
) -> list[FinalPrediction]:
    """Each page's final label (full-depth if present, else early), ordered by page id."""
    sub = final_prediction_select(model_version).subquery("final")
    query = select(sub).order_by(sub.c.page_id)
    if document_id is not None:
        query = query.where(sub.c.document_id == document_id)
    if page_ids is not None:
        query = query.where(sub.c.page_id.in_(list(page_ids)))
    return [FinalPrediction(**row) for row in s.execute(query).mappings()]


# --- status, labels, watermarks ---------------------------------------------------------------


def counts_by_state(s: Session) -> dict[str, dict[str, int]]:
    """{"documents": {state: n}, "pages": {state: n}, "predictions": {pass: n}}, zero-filled."""
    out: dict[str, dict[str, int]] = {
        "documents": {st.value: 0 for st in DocumentState},
        "pages": {st.value: 0 for st in PageState},
        "predictions": {ps.value: 0 for ps in Pass},
    }
    for key, column in (
        ("documents", Document.state),
        ("pages", Page.state),
        ("predictions", Prediction.pass_name),
    ):
        for value, n in s.execute(select(column, func.count()).group_by(column)):
            out[key][value] = int(n)
    return out


def add_human_label(s: Session, page_id: int, label: str, who: str) -> int:
    """Record a reviewer's label for a page (several may exist; the newest counts)."""
    row = HumanLabel(page_id=page_id, label=label, who=who, created_at=utcnow())
    s.add(row)
    s.flush()
    return row.id


def get_watermark(s: Session, name: str, default: str | None = None) -> str | None:
    value = s.execute(select(Watermark.value).where(Watermark.name == name)).scalar_one_or_none()
    return default if value is None else value


def set_watermark(s: Session, name: str, value: str) -> None:
    table = Watermark.__table__
    now = utcnow()
    stmt = _insert(s, table).values(name=name, value=value, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"value": stmt.excluded.value, "updated_at": now}
    )
    s.execute(stmt)
