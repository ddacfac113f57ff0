"""Audit queries on confidence: summary, low-confidence pages, early-vs-full agreement, and
calibration against human labels. SQLAlchemy Core with bound parameters only: every filter value
travels as data, never as SQL text."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session

from db.models import Document, HumanLabel, Page, Prediction, utcnow
from db.repository import final_prediction_select
from db.states import Pass, TextSource

P = Prediction.__table__
PG = Page.__table__
DOC = Document.__table__
HL = HumanLabel.__table__


@dataclass(frozen=True)
class AuditFilter:
    """Filters shared by every query: a prediction's time window [since, until), its class
    (label) and its model version. None means no filter."""

    since: datetime | None = None
    until: datetime | None = None
    label: str | None = None
    model_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "class": self.label,
            "model_version": self.model_version,
        }


def _where(columns: Any, f: AuditFilter, *, label: bool = True) -> list[Any]:
    """Filter clauses on a prediction-shaped column set (`.created_at`, `.label`, ...)."""
    clauses = []
    if f.since is not None:
        clauses.append(columns.created_at >= f.since)
    if f.until is not None:
        clauses.append(columns.created_at < f.until)
    if label and f.label is not None:
        clauses.append(columns.label == f.label)
    if f.model_version is not None:
        clauses.append(columns.model_version == f.model_version)
    return clauses


def _day(value: Any) -> str:
    # SQLite's date() gives 'YYYY-MM-DD' text, PostgreSQL's a date: one spelling for both.
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _early_with_full(f: AuditFilter) -> Any:
    """Early-pass rows, each with its page's full-depth answer (same model version) if any,
    and the page's final label. The class filter applies to the final label."""
    early, full = P.alias("early"), P.alias("full")
    joined = early.outerjoin(
        full,
        and_(
            full.c.page_id == early.c.page_id,
            full.c.model_version == early.c.model_version,
            full.c.pass_name == Pass.FULL.value,
        ),
    )
    final_label = func.coalesce(full.c.label, early.c.label)
    query = select(
        early.c.page_id,
        early.c.model_version,
        func.date(early.c.created_at).label("day"),
        early.c.label.label("early_label"),
        early.c.confidence,
        early.c.exit_stage,
        full.c.id.label("full_id"),
        full.c.label.label("full_label"),
        final_label.label("final_label"),
    ).select_from(joined)
    query = query.where(early.c.pass_name == Pass.EARLY.value, *_where(early.c, f, label=False))
    if f.label is not None:
        query = query.where(final_label == f.label)
    return query.subquery("ewf")


def _early_row(columns: Any) -> tuple[Any, Any]:
    """The early-pass prediction of the same page and model version as `columns`' row, and the
    clause to (outer) join it on. Every audit output gives `exit_stage` as where the EARLY pass
    left, also on a full-depth answer (the page was re-routed from there), as `run` does; the
    full pass's own stage would only say "all layers". Without an early row, its own stage."""
    early = P.alias("early_pass")
    on = and_(
        early.c.page_id == columns.page_id,
        early.c.model_version == columns.model_version,
        early.c.pass_name == Pass.EARLY.value,
    )
    return early, on


# --- summary ----------------------------------------------------------------------------------


def summary(s: Session, f: AuditFilter = AuditFilter()) -> dict[str, Any]:
    """Pages, classes, exit-stage histogram, mean confidence and re-route rate, by model version
    and day (of the early prediction), plus the totals; `ocr`: of the pages that needed OCR
    (no usable text layer), how many the OCR-free exit answered without it, per final class."""
    ewf = _early_with_full(f)
    keys = (ewf.c.model_version, ewf.c.day)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    base = select(
        *keys,
        func.count().label("pages"),
        func.sum(case((ewf.c.full_id.is_not(None), 1), else_=0)).label("rerouted"),
        func.avg(ewf.c.confidence).label("mean_confidence"),
    ).group_by(*keys)
    for row in s.execute(base):
        groups[(row.model_version, _day(row.day))] = {
            "model_version": row.model_version,
            "day": _day(row.day),
            "pages": int(row.pages),
            "rerouted": int(row.rerouted or 0),
            "reroute_rate": int(row.rerouted or 0) / int(row.pages),
            "mean_confidence": float(row.mean_confidence),
            "exit_stages": {},
            "classes": {},
        }
    for column, field in ((ewf.c.exit_stage, "exit_stages"), (ewf.c.final_label, "classes")):
        query = select(*keys, column, func.count()).group_by(*keys, column).order_by(column)
        for version, day, value, n in s.execute(query):
            groups[(version, _day(day))][field][str(value)] = int(n)
    for g in groups.values():
        g["ocr"] = _ocr_counts({})
    for version, day, label, needed, avoided in s.execute(_ocr_query(ewf, keys)):
        counts = groups[(version, _day(day))]["ocr"]
        counts["classes"][str(label)] = _share(int(needed), int(avoided or 0))
    for g in groups.values():
        g["ocr"] = _ocr_counts(g["ocr"]["classes"])
    rows = [groups[k] for k in sorted(groups)]
    return {"filters": f.as_dict(), "total": _total(rows), "groups": rows}


# Text sources of pages that needed OCR: OCRed, or answered without it by the OCR-free exit.
_NEEDED_OCR = (TextSource.OCR.value, TextSource.OCR_AVOIDED.value)


def _ocr_query(ewf: Any, keys: tuple[Any, ...]) -> Select[Any]:
    """Per group and final class: pages that needed OCR, and those it was avoided for."""
    avoided = case((PG.c.text_source == TextSource.OCR_AVOIDED.value, 1), else_=0)
    return (
        select(*keys, ewf.c.final_label, func.count().label("needed"),
               func.sum(avoided).label("avoided"))
        .select_from(ewf.join(PG, PG.c.id == ewf.c.page_id))
        .where(PG.c.text_source.in_(_NEEDED_OCR))
        .group_by(*keys, ewf.c.final_label)
        .order_by(ewf.c.final_label)
    )


def _share(needed: int, avoided: int) -> dict[str, Any]:
    return {"needed": needed, "avoided": avoided,
            "avoided_share": avoided / needed if needed else None}


def _ocr_counts(classes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    needed = sum(c["needed"] for c in classes.values())
    avoided = sum(c["avoided"] for c in classes.values())
    return {**_share(needed, avoided), "classes": dict(sorted(classes.items()))}


def _total(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    pages = sum(r["pages"] for r in rows)
    rerouted = sum(r["rerouted"] for r in rows)
    stages: dict[str, int] = defaultdict(int)
    classes: dict[str, int] = defaultdict(int)
    ocr: dict[str, dict[str, Any]] = {}
    for r in rows:
        for k, v in r["exit_stages"].items():
            stages[k] += v
        for k, v in r["classes"].items():
            classes[k] += v
        for k, c in r["ocr"]["classes"].items():
            was = ocr.get(k, _share(0, 0))
            ocr[k] = _share(was["needed"] + c["needed"], was["avoided"] + c["avoided"])
    return {
        "pages": pages,
        "rerouted": rerouted,
        "reroute_rate": rerouted / pages if pages else 0.0,
        "mean_confidence": (
            sum(r["mean_confidence"] * r["pages"] for r in rows) / pages if pages else None
        ),
        "exit_stages": dict(sorted(stages.items(), key=lambda kv: int(kv[0]))),
        "classes": dict(sorted(classes.items())),
        "ocr": _ocr_counts(ocr),
    }


# --- low confidence ---------------------------------------------------------------------------


def low_confidence_select(
    below: float, f: AuditFilter = AuditFilter(), limit: int | None = None
) -> Select[Any]:
    final = final_prediction_select(f.model_version).subquery("final")
    early, on_early = _early_row(final.c)
    query = (
        select(
            final.c.page_id,
            DOC.c.source_uri.label("document_uri"),
            final.c.page_number,
            final.c.label,
            final.c.confidence,
            func.coalesce(early.c.exit_stage, final.c.exit_stage).label("exit_stage"),
            final.c.pass_name,
            final.c.model_version,
            final.c.created_at,
        )
        .join(DOC, DOC.c.id == final.c.document_id)
        .outerjoin(early, on_early)
        .where(final.c.confidence < below, *_where(final.c, f))
        .order_by(final.c.confidence, final.c.page_id)
        .limit(limit)
    )
    return query


def low_confidence(
    s: Session, below: float, f: AuditFilter = AuditFilter(), limit: int | None = None
) -> list[dict[str, Any]]:
    """Pages whose final answer is below `below`, least confident first, with document uri and
    page number: the pages a reviewer should look at. `pass_name` says which pass gave the
    answer; `exit_stage` is where the early pass left (see _early_row)."""
    rows = s.execute(low_confidence_select(below, f, limit)).mappings()
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]


# --- re-routes --------------------------------------------------------------------------------


def reroutes(s: Session, f: AuditFilter = AuditFilter()) -> dict[str, Any]:
    """Agreement between the early and full-depth answers of re-routed pages, by early exit
    stage and early class. The class filter applies to the early class here."""
    early_f = AuditFilter(f.since, f.until, None, f.model_version)
    ewf = _early_with_full(early_f)
    agree = func.sum(case((ewf.c.early_label == ewf.c.full_label, 1), else_=0))
    query = (
        select(
            ewf.c.exit_stage, ewf.c.early_label, func.count().label("pages"), agree.label("agree")
        )
        .where(ewf.c.full_id.is_not(None))
        .group_by(ewf.c.exit_stage, ewf.c.early_label)
        .order_by(ewf.c.exit_stage, ewf.c.early_label)
    )
    if f.label is not None:
        query = query.where(ewf.c.early_label == f.label)
    rows = [
        {
            "exit_stage": int(r.exit_stage),
            "class": r.early_label,
            "pages": int(r.pages),
            "agree": int(r.agree),
            "agreement": int(r.agree) / int(r.pages),
        }
        for r in s.execute(query)
    ]
    pages = sum(r["pages"] for r in rows)
    agreed = sum(r["agree"] for r in rows)
    total = {"pages": pages, "agree": agreed, "agreement": agreed / pages if pages else None}
    return {"filters": f.as_dict(), "total": total, "groups": rows}


# --- calibration ------------------------------------------------------------------------------


def _latest_human_labels() -> Any:
    rank = func.row_number().over(
        partition_by=HL.c.page_id, order_by=[HL.c.created_at.desc(), HL.c.id.desc()]
    )
    ranked = select(HL.c.page_id, HL.c.label, rank.label("rank")).subquery("hl_ranked")
    return select(ranked.c.page_id, ranked.c.label).where(ranked.c.rank == 1).subquery("truth")


def calibration_pairs(
    s: Session, f: AuditFilter = AuditFilter()
) -> list[tuple[str, int, float, bool]]:
    """(pass, exit stage, confidence, correct) for every prediction on a page with a human label
    (the newest label per page counts). The exit stage is the early pass's, for the full pass
    too (see _early_row). The class filter applies to the human label."""
    truth = _latest_human_labels()
    early, on_early = _early_row(P.c)
    query = (
        select(
            P.c.pass_name,
            func.coalesce(early.c.exit_stage, P.c.exit_stage),
            P.c.confidence,
            case((P.c.label == truth.c.label, 1), else_=0).label("correct"),
        )
        .join(truth, truth.c.page_id == P.c.page_id)
        .outerjoin(early, on_early)
        .where(*_where(P.c, f, label=False))
        .order_by(P.c.id)
    )
    if f.label is not None:
        query = query.where(truth.c.label == f.label)
    return [(p, int(st), float(c), bool(ok)) for p, st, c, ok in s.execute(query)]


# --- report inputs ----------------------------------------------------------------------------


def final_confidences_by_class(
    s: Session, f: AuditFilter = AuditFilter()
) -> dict[str, list[float]]:
    """The final answer's confidence of every page, grouped by its final class."""
    final = final_prediction_select(f.model_version).subquery("final")
    query = (
        select(final.c.label, final.c.confidence).where(*_where(final.c, f)).order_by(final.c.label)
    )
    out: dict[str, list[float]] = defaultdict(list)
    for label_, conf in s.execute(query):
        out[label_].append(float(conf))
    return dict(out)


def exit_depth(s: Session, f: AuditFilter = AuditFilter()) -> list[dict[str, Any]]:
    """Pages per early exit stage, and how many of them were re-routed to full depth (filters
    as in `summary`: the class filter applies to the final label)."""
    ewf = _early_with_full(f)
    rerouted = func.sum(case((ewf.c.full_id.is_not(None), 1), else_=0))
    query = (
        select(ewf.c.exit_stage, func.count(), rerouted)
        .group_by(ewf.c.exit_stage)
        .order_by(ewf.c.exit_stage)
    )
    return [
        {"exit_stage": int(stage), "pages": int(n), "rerouted": int(r or 0)}
        for stage, n, r in s.execute(query)
    ]


def agreement_by_day(s: Session, f: AuditFilter = AuditFilter()) -> list[dict[str, Any]]:
    """Early vs full-depth agreement on re-routed pages per UTC day (of the early answer)."""
    ewf = _early_with_full(AuditFilter(f.since, f.until, None, f.model_version))
    agree = func.sum(case((ewf.c.early_label == ewf.c.full_label, 1), else_=0))
    query = (
        select(ewf.c.day, func.count().label("pages"), agree.label("agree"))
        .where(ewf.c.full_id.is_not(None))
        .group_by(ewf.c.day)
        .order_by(ewf.c.day)
    )
    if f.label is not None:
        query = query.where(ewf.c.early_label == f.label)
    return [
        {"day": _day(d), "pages": int(n), "agree": int(a), "agreement": int(a) / int(n)}
        for d, n, a in s.execute(query)
    ]


# --- human labels -----------------------------------------------------------------------------


def label(s: Session, page_id: int, label: str, who: str) -> int:
    """Record a human label for a page; LookupError if the page does not exist."""
    if s.get(Page, page_id) is None:
        raise LookupError(f"no page with id {page_id}")
    if not label.strip():
        raise ValueError("label must not be empty")
    row = HumanLabel(page_id=page_id, label=label.strip(), who=who, created_at=utcnow())
    s.add(row)
    s.flush()
    return row.id
