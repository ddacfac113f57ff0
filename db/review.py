"""The review queue: pages a person should label, for `doctriage review`.

A page is in the queue when nobody has labelled it yet and, for its newest model version,
either its early and full-depth answers differ (`disagreement`: an audit-sampled or re-routed
page whose full pass answered otherwise) or its final answer (full depth if present, else
early) is below the bar (`low_confidence`). Disagreements come first, then the least
confident; a page's place is its `key`, so "the next page after this one" is one keyset query.
Functions on a Session, never committing; SQLAlchemy Core with bound parameters only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, exists, false, func, or_, select
from sqlalchemy.orm import Session

from db.models import Document, HumanLabel, Page, Prediction
from db.repository import final_prediction_select
from db.states import Pass

P = Prediction.__table__
PG = Page.__table__
DOC = Document.__table__
HL = HumanLabel.__table__

DISAGREEMENT = "disagreement"
LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True)
class ReviewItem:
    """One page as the reviewer sees it. `early_*`/`full_*` are None when that pass has no row
    for the page's newest model version; `kind` says why the queue lists the page (or would,
    were it not labelled): None for a page it never lists (confident, no disagreement)."""

    page_id: int
    document_id: int
    page_number: int
    source_uri: str
    artifact_ref: str | None
    model_version: str
    final_label: str
    final_confidence: float
    early_label: str | None
    early_confidence: float | None
    early_exit_stage: int | None
    full_label: str | None
    full_confidence: float | None
    full_depth_reason: str | None  # the early row's: why the page went to full depth
    audit_sample: bool
    kind: str | None
    rank: int

    @property
    def suggested(self) -> str:
        """The answer a reviewer confirms with one key: full depth's when it ran (the model's
        best), else the early one."""
        if self.full_label is not None:
            return self.full_label
        return self.early_label if self.early_label is not None else self.final_label

    @property
    def key(self) -> tuple[int, float, int]:
        return (self.rank, self.final_confidence, self.page_id)


@dataclass(frozen=True)
class HumanLabelRow:
    label: str
    who: str
    created_at: datetime


def _items(below: float) -> tuple[Select[Any], Any, Any, Any]:
    """Every predicted page as a ReviewItem row (no queue filter yet), and the expressions the
    callers filter and order on: (select, in_queue, rank, final confidence)."""
    final = final_prediction_select().subquery("final")
    early, full = P.alias("early"), P.alias("full")

    def same_version(row: Any, pass_name: Pass) -> Any:
        return and_(row.c.page_id == final.c.page_id,
                    row.c.model_version == final.c.model_version,
                    row.c.pass_name == pass_name.value)

    differ = and_(early.c.id.is_not(None), full.c.id.is_not(None), early.c.label != full.c.label)
    low = final.c.confidence < below
    kind = case((differ, DISAGREEMENT), (low, LOW_CONFIDENCE), else_=None)
    rank = case((differ, 0), else_=1)
    query = (
        select(
            final.c.page_id,
            final.c.document_id,
            final.c.page_number,
            DOC.c.source_uri,
            PG.c.artifact_ref,
            final.c.model_version,
            final.c.label.label("final_label"),
            final.c.confidence.label("final_confidence"),
            early.c.label.label("early_label"),
            early.c.confidence.label("early_confidence"),
            early.c.exit_stage.label("early_exit_stage"),
            full.c.label.label("full_label"),
            full.c.confidence.label("full_confidence"),
            early.c.full_depth_reason,
            func.coalesce(early.c.audit_sample, full.c.audit_sample, false()).label("audit_sample"),
            kind.label("kind"),
            rank.label("rank"),
        )
        .select_from(final)
        .join(PG, PG.c.id == final.c.page_id)
        .join(DOC, DOC.c.id == final.c.document_id)
        .outerjoin(early, same_version(early, Pass.EARLY))
        .outerjoin(full, same_version(full, Pass.FULL))
    )
    unlabelled = ~exists(select(HL.c.id).where(HL.c.page_id == final.c.page_id))
    return query, and_(or_(differ, low), unlabelled), rank, final.c.confidence


def _item(row: Any) -> ReviewItem:
    values = dict(row)
    values["audit_sample"] = bool(values["audit_sample"])
    values["rank"] = int(values["rank"])
    return ReviewItem(**values)


def _ordered(query: Select[Any], rank: Any, confidence: Any) -> Select[Any]:
    return query.order_by(rank, confidence, query.selected_columns.page_id)


def queue(s: Session, below: float, *, limit: int | None = 50,
          after: tuple[int, float, int] | None = None) -> list[ReviewItem]:
    """The queue in review order (disagreements, then least confident, then page id); with
    `after`, only the pages whose key sorts after it."""
    query, in_queue, rank, confidence = _items(below)
    query = query.where(in_queue)
    if after is not None:
        r, c, pid = after
        page_id = query.selected_columns.page_id
        query = query.where(or_(
            rank > r,
            and_(rank == r, confidence > c),
            and_(rank == r, confidence == c, page_id > pid),
        ))
    query = _ordered(query, rank, confidence).limit(limit)
    return [_item(r) for r in s.execute(query).mappings()]


def item(s: Session, page_id: int, below: float) -> ReviewItem | None:
    """One page (in the queue or not: labelled, confident); None when it has no prediction."""
    query, _, _, _ = _items(below)
    row = s.execute(query.where(query.selected_columns.page_id == page_id)).mappings().first()
    return _item(row) if row is not None else None


def next_item(s: Session, below: float, after_page: int | None = None) -> ReviewItem | None:
    """The page to show next: the first in the queue after `after_page`'s place (the page just
    labelled or skipped), else from the start again (pages skipped earlier); None when the
    queue is empty."""
    if after_page is not None:
        current = item(s, after_page, below)
        if current is not None:
            following = queue(s, below, limit=1, after=current.key)
            if following:
                return following[0]
    first = queue(s, below, limit=1)
    return first[0] if first else None


def queue_counts(s: Session, below: float) -> dict[str, int]:
    """Pages waiting, per kind: {"disagreement": n, "low_confidence": m}."""
    query, in_queue, _, _ = _items(below)
    sub = query.where(in_queue).subquery("waiting")
    counts = {DISAGREEMENT: 0, LOW_CONFIDENCE: 0}
    for kind, n in s.execute(select(sub.c.kind, func.count()).group_by(sub.c.kind)):
        counts[str(kind)] = int(n)
    return counts


def latest_human_label(s: Session, page_id: int) -> HumanLabelRow | None:
    """The label that counts for a page (the newest), if any."""
    row = s.execute(
        select(HL.c.label, HL.c.who, HL.c.created_at)
        .where(HL.c.page_id == page_id)
        .order_by(HL.c.created_at.desc(), HL.c.id.desc())
        .limit(1)
    ).first()
    return HumanLabelRow(row.label, row.who, row.created_at) if row is not None else None


def labels_seen(s: Session) -> list[str]:
    """Every label a prediction has given, sorted."""
    return sorted(str(v) for (v,) in s.execute(select(P.c.label).distinct()))
