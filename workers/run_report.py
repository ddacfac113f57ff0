"""What a run says about each document and each page, read back from the store.

The store is the truth: labels, confidences, exit stages and text sources come from the
documents, pages and predictions rows of the run's model version, so the report describes what
was stored (including what an earlier run of the same documents stored), not what was intended.
Only the time spent on each document is the run's own measurement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document, Page, Prediction
from db.session import session_scope
from db.states import Pass
from pipelines.errors import one_line
from pipelines.sources import uri_to_path
from workers.redaction import stored_error


@dataclass
class PageReport:
    page: int  # 1-based page number
    state: str
    # The page's final answer: the full-depth one when the page was re-routed, else the early one.
    label: str | None
    confidence: float | None
    # The early (anytime) pass: where the page left the network, and what it said there.
    exit_stage: int | None
    exit_layer: int | None
    early_label: str | None
    early_confidence: float | None
    rerouted: bool  # a full-depth pass ran (the early answer was unsure, or an audit sample)
    full_depth_label: str | None
    full_depth_confidence: float | None
    text_source: str | None  # "text_layer" | "ocr"
    error: str | None


@dataclass
class LabelSpan:
    """Consecutive pages with the same final label ("failed" or "pending" when none)."""

    label: str
    first_page: int
    last_page: int


@dataclass
class DocumentReport:
    name: str  # relative to the folder or prefix given, decoded; the file name otherwise
    uri: str
    state: str
    page_count: int
    labels: list[LabelSpan] = field(default_factory=list)
    lowest_confidence: float | None = None  # the least sure of the pages' final answers
    exit_stages: dict[str, int] = field(default_factory=dict)  # early exit stage -> pages
    text_sources: dict[str, int] = field(default_factory=dict)  # "text_layer"/"ocr" -> pages
    seconds: float | None = None  # this run's time on it; None when an earlier run did the work
    already_classified: bool = False  # final in the store before this run started
    error: str | None = None
    pages: list[PageReport] = field(default_factory=list)


def predictions_by_pass(
    s: Session, doc_ids: Sequence[int], model_version: str
) -> tuple[dict[int, Prediction], dict[int, Prediction]]:
    """The early and the full-depth predictions of the documents' pages under `model_version`,
    each keyed by page id."""
    preds = s.execute(
        select(Prediction)
        .join(Page, Page.id == Prediction.page_id)
        .where(Page.document_id.in_(doc_ids), Prediction.model_version == model_version)
    ).scalars()
    early: dict[int, Prediction] = {}
    full: dict[int, Prediction] = {}
    for p in preds:
        (early if p.pass_name == Pass.EARLY else full)[p.page_id] = p
    return early, full


@dataclass(frozen=True)
class RunFacts:
    """What a run knows of its documents that the store does not."""

    roots: Sequence[str] = ()  # the folders/prefixes it was given: they name the documents
    seconds: Mapping[int, float] = field(default_factory=dict)  # its time per document
    already: frozenset[int] | set[int] = frozenset()  # documents final before it started


def document_reports(
    sessions: sessionmaker[Session],
    doc_ids: Sequence[int],
    model_version: str,
    facts: RunFacts | None = None,
) -> list[DocumentReport]:
    """One report per document of `doc_ids` (in that order), with its pages in page order, as
    the store holds them under `model_version`."""
    facts = facts or RunFacts()
    ids = list(dict.fromkeys(doc_ids))
    with session_scope(sessions) as s:
        docs = {d.id: d for d in s.execute(select(Document).where(Document.id.in_(ids))).scalars()}
        in_docs = select(Page).where(Page.document_id.in_(ids))
        pages = list(s.execute(in_docs.order_by(Page.document_id, Page.number)).scalars())
        early, full = predictions_by_pass(s, ids, model_version)
        by_doc: dict[int, list[PageReport]] = {}
        for pg in pages:
            by_doc.setdefault(pg.document_id, []).append(
                _page_report(pg, early.get(pg.id), full.get(pg.id))
            )
        spent, already = facts.seconds, facts.already
        return [
            _document_report(
                docs[i], by_doc.get(i, []), facts.roots,
                None if i in already or i not in spent else round(spent[i], 3), i in already,
            )
            for i in ids if i in docs
        ]


def _page_report(pg: Page, early: Prediction | None, full: Prediction | None) -> PageReport:
    final = full or early
    return PageReport(
        page=pg.number,
        state=pg.state,
        label=final.label if final else None,
        confidence=round(final.confidence, 4) if final else None,
        exit_stage=early.exit_stage if early else None,
        exit_layer=early.exit_layer if early else None,
        early_label=early.label if early else None,
        early_confidence=round(early.confidence, 4) if early else None,
        rerouted=full is not None,
        full_depth_label=full.label if full else None,
        full_depth_confidence=round(full.confidence, 4) if full else None,
        text_source=pg.text_source,
        error=stored_error(pg.error) if pg.error else None,
    )


def _document_report(
    doc: Document, pages: list[PageReport], roots: Sequence[str], seconds: float | None,
    already: bool,
) -> DocumentReport:
    answered = [p.confidence for p in pages if p.confidence is not None]
    return DocumentReport(
        name=display_name(doc.source_uri, roots),
        uri=doc.source_uri,
        state=doc.state,
        page_count=len(pages),
        labels=label_spans(pages),
        lowest_confidence=min(answered) if answered else None,
        exit_stages={
            str(k): v
            for k, v in sorted(Counter(p.exit_stage for p in pages if p.exit_stage is not None)
                               .items())
        },
        text_sources=dict(sorted(Counter(p.text_source for p in pages if p.text_source).items())),
        seconds=seconds,
        already_classified=already,
        error=stored_error(doc.error) if doc.error else None,
        pages=pages,
    )


def label_spans(pages: Sequence[PageReport]) -> list[LabelSpan]:
    """Runs of consecutive pages (in page order) that share a final label."""
    spans: list[LabelSpan] = []
    for p in pages:
        label = p.label or ("failed" if p.state == "FAILED" else "pending")
        last = spans[-1] if spans else None
        if last is not None and last.label == label and last.last_page == p.page - 1:
            last.last_page = p.page
        else:
            spans.append(LabelSpan(label, p.page, p.page))
    return spans


def display_name(uri: str, roots: Sequence[str] = ()) -> str:
    """The document's name for people: its path relative to the folder (or S3 prefix) it was
    found under, decoded (no ``file://``, no ``%20``), control characters escaped; the file
    name when it was given by itself."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = uri_to_path(uri)  # the file's own bytes: one_line shows a non-UTF-8 byte as \xe9
        for root in roots:
            if root.startswith("s3://"):
                continue
            base = Path(root).resolve()  # file URIs hold resolved paths
            if base.is_dir() and path.is_relative_to(base):
                return one_line(path.relative_to(base).as_posix())
        return one_line(path.name or uri)
    if parsed.scheme == "s3":
        for root in roots:
            rest = uri[len(root):] if root.startswith("s3://") and uri.startswith(root) else ""
            # s3://b/batch is a string prefix of s3://b/batch2/x.pdf too: only a folder counts
            if rest and (root.endswith("/") or rest.startswith("/")):
                return one_line(unquote(rest.lstrip("/")))
        return one_line(unquote(parsed.path.rsplit("/", 1)[-1]) or uri)
    return one_line(uri)
