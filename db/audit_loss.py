"""What early exit costs, estimated from the audit sample: the share of early answers that the
full-depth pass answers differently, with a 95% Wilson interval, overall and by group.

Only the audit sample counts (early rows with `audit_sample` true and the full-depth row of the
same page and model version): the seeded coin picks pages whatever their confidence, so the
sample is unbiased over all traffic. Pages re-routed for low confidence alone are left out: they
are the pages the early exit is least sure of, and their disagreement overstates the loss.
SQLAlchemy Core with bound parameters only."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from db.audit import DOC, PG, AuditFilter, _day, _where
from db.models import Prediction
from db.states import Pass

P = Prediction.__table__
# Two-sided 95%: the normal quantile 0.975.
Z95 = 1.959963984540054
GROUPINGS = ("day", "class", "stage", "source", "version")
# Where no bundle records a budget: half a point of disagreement, the threshold search's default.
DEFAULT_BUDGET = 0.005
EVERYTHING = AuditFilter()


@dataclass(frozen=True)
class LossEstimate:
    """`differ` of `pages` audit-sampled early answers differ from full depth; `estimate` is
    their share, [lower, upper] its 95% Wilson interval (all None without pages)."""

    pages: int
    differ: int
    estimate: float | None
    lower: float | None
    upper: float | None

    @classmethod
    def of(cls, pages: int, differ: int, z: float = Z95) -> LossEstimate:
        lower, upper = wilson(differ, pages, z)
        return cls(pages, differ, differ / pages if pages else None, lower, upper)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial share: good at shares near 0 and small n, where the
    normal (Wald) interval collapses to zero width."""
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n the bound is exactly 0 or 1 (the formula leaves a rounding residue there).
    lower = 0.0 if successes <= 0 else max(0.0, centre - half)
    upper = 1.0 if successes >= n else min(1.0, centre + half)
    return lower, upper


def source_prefix(uri: str) -> str:
    """A document's source for grouping: its URI up to the last '/' (scheme, bucket and
    folder: `s3://bucket/in/2026/a.pdf` -> `s3://bucket/in/2026/`)."""
    cut = uri.rfind("/")
    return uri[: cut + 1] if cut >= 0 else uri


def _pairs(f: AuditFilter) -> Any:
    """One row per audit-sampled early answer that has its full-depth answer: the grouping
    columns and whether the two labels differ. The class filter applies to the early class."""
    early, full = P.alias("early"), P.alias("full")
    on = and_(full.c.page_id == early.c.page_id, full.c.model_version == early.c.model_version,
              full.c.pass_name == Pass.FULL.value)
    query = (
        select(
            func.date(early.c.created_at).label("day"),
            early.c.label.label("class"),
            early.c.exit_stage.label("stage"),
            DOC.c.source_uri.label("source"),
            func.coalesce(early.c.policy_version, early.c.model_version).label("version"),
            case((early.c.label != full.c.label, 1), else_=0).label("differ"),
        )
        .select_from(early.join(full, on).join(PG, PG.c.id == early.c.page_id)
                     .join(DOC, DOC.c.id == PG.c.document_id))
        .where(early.c.pass_name == Pass.EARLY.value, early.c.audit_sample.is_(True),
               *_where(early.c, f))
    )
    return query.subquery("audit_pairs")


def _key(by: str, value: Any) -> Any:
    if by == "day":
        return _day(value)
    if by == "stage":
        return int(value)
    if by == "source":
        return source_prefix(value)
    return value


def loss(s: Session, f: AuditFilter = EVERYTHING, by: str | None = None) -> dict[str, Any]:
    """The estimate over the filtered audit sample (`total`) and per group of `by` (one of
    GROUPINGS; `groups`, sorted by key, each with the group's key under the name `by`)."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}: one of {', '.join(GROUPINGS)}")
    pairs = _pairs(f)
    counts = [func.count().label("pages"), func.sum(pairs.c.differ).label("differ")]
    n, k = s.execute(select(*counts)).one()
    result: dict[str, Any] = {"filters": f.as_dict(), "by": by,
                              "total": LossEstimate.of(int(n), int(k or 0)).as_dict(),
                              "groups": []}
    if by is None:
        return result
    column = pairs.c[by]
    folded: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for value, pages, differ in s.execute(select(column, *counts).group_by(column)):
        acc = folded[_key(by, value)]  # sources fold per document into their folder
        acc[0] += int(pages)
        acc[1] += int(differ or 0)
    result["groups"] = [{by: key, **LossEstimate.of(*folded[key]).as_dict()}
                        for key in sorted(folded)]
    return result


def over_budget(total: dict[str, Any], budget: float) -> bool:
    """The loss is above the budget with 95% confidence: the interval's lower bound is over it."""
    return total["lower"] is not None and total["lower"] > budget


def loss_by_day(s: Session, f: AuditFilter = EVERYTHING) -> list[dict[str, Any]]:
    """Per UTC day of the early answer (the HTML report's figure)."""
    return loss(s, f, "day")["groups"]


@dataclass(frozen=True)
class AuditAnswers:
    """One audit-sampled page with both passes stored: the early answer (and the policy that
    decided it), the full-depth label and every exit's (label, confidence) from the full row."""

    page_id: int
    early_label: str
    policy_version: str | None
    full_label: str
    exit_answers: list[list[Any]]


def audit_answers(s: Session, f: AuditFilter = EVERYTHING) -> list[AuditAnswers]:
    """The audit sample as the threshold tuner replays it (`doctriage thresholds tune`): early
    rows with `audit_sample` true joined to the full row of the same page and model version
    that has `exit_answers` (full rows before migration 0003 have none), in page order. The
    filters apply to the early row."""
    early, full = P.alias("early"), P.alias("full")
    on = and_(full.c.page_id == early.c.page_id, full.c.model_version == early.c.model_version,
              full.c.pass_name == Pass.FULL.value)
    query = (
        select(early.c.page_id, early.c.label, early.c.policy_version, full.c.label,
               full.c.exit_answers)
        .select_from(early.join(full, on))
        .where(early.c.pass_name == Pass.EARLY.value, early.c.audit_sample.is_(True),
               full.c.exit_answers.is_not(None), *_where(early.c, f))
        .order_by(early.c.page_id)
    )
    # A JSON null (not SQL NULL) passes the filter on PostgreSQL: skipped here.
    return [AuditAnswers(int(pid), el, pv, fl, list(ea))
            for pid, el, pv, fl, ea in s.execute(query) if ea]
