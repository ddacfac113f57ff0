"""The human-labelled pages of the store (table `human_labels`): what `doctriage train
--from-store` fine-tunes on and holds out. Functions on a Session, never committing; the page's
words, boxes and raster stay in its artifact (the caller reads `artifact_ref`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Document, HumanLabel, Page


@dataclass(frozen=True)
class LabelledPage:
    page_id: int
    document_id: int
    number: int
    artifact_ref: str | None
    label: str  # the newest human label of the page
    source_uri: str


def newest_labels() -> Any:
    """(page_id, label) of each labelled page's newest label (latest created_at, then id)."""
    hl = HumanLabel.__table__
    rank = func.row_number().over(
        partition_by=hl.c.page_id, order_by=[hl.c.created_at.desc(), hl.c.id.desc()]
    )
    ranked = select(hl.c.page_id, hl.c.label, rank.label("rank")).subquery("hl_ranked")
    return select(ranked.c.page_id, ranked.c.label).where(ranked.c.rank == 1).subquery("newest")


def labelled_pages(s: Session) -> list[LabelledPage]:
    """Every page with a human label (its newest), in document then page order."""
    newest = newest_labels()
    query = (
        select(Page.id, Page.document_id, Page.number, Page.artifact_ref, newest.c.label,
               Document.source_uri)
        .join(newest, newest.c.page_id == Page.id)
        .join(Document, Document.id == Page.document_id)
        .order_by(Page.document_id, Page.number)
    )
    return [LabelledPage(int(pid), int(did), int(n), ref, str(label), str(uri))
            for pid, did, n, ref, label, uri in s.execute(query)]
