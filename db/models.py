"""The schema (SQLAlchemy 2 typed ORM). Portable across SQLite and PostgreSQL: plain strings with
CHECK constraints for states, naive-UTC timestamps behind a type that hands out aware UTC, JSON
for the confidence trail. Migrations in db/migrations must match this file (a test compares)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from db.states import DocumentState, FailureKind, FullDepthReason, PageState, Pass

# Deterministic constraint names, so migrations can refer to them on both backends.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (same bytes on SQLite and PostgreSQL, so `date(col)` is the UTC day on
    both) and returns timezone-aware UTC datetimes."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class WorkItem:
    """The columns every unit of work (a document, a page) carries besides its state: the
    failure record, the claim counters and the clock the reconciler reads."""

    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims, Celery retries included
    # Why it is FAILED (NULL otherwise): "transient" ones are retried later by the reconciler.
    failure_kind: Mapped[str | None] = mapped_column(String(16))
    # Attempts that ended FAILED: what the reconciler's retry budget counts.
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Document(WorkItem, Base):
    __tablename__ = "documents"
    __table_args__ = (
        # version_key = etag or sha256 or "": never NULL, because NULLs never collide in a
        # UNIQUE index and the same object would otherwise be registered twice.
        UniqueConstraint("source_uri", "version_key", name="uq_documents_source_version"),
        CheckConstraint(_in("state", DocumentState), name="state"),
        CheckConstraint(_in("failure_kind", FailureKind), name="failure_kind"),
        Index("ix_documents_state_updated", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_uri: Mapped[str] = mapped_column(Text)
    version_key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    page_count: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=DocumentState.RECEIVED.value)


class Page(WorkItem, Base):
    __tablename__ = "pages"
    __table_args__ = (
        UniqueConstraint("document_id", "number", name="uq_pages_document_number"),
        CheckConstraint(_in("state", PageState), name="state"),
        CheckConstraint(_in("failure_kind", FailureKind), name="failure_kind"),
        CheckConstraint("number >= 1", name="number_positive"),
        Index("ix_pages_state_updated", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    # db.states.TextSource: "text_layer" | "ocr" | "none" | "awaiting_ocr" | "ocr_avoided"
    text_source: Mapped[str | None] = mapped_column(String(16))
    word_count: Mapped[int | None] = mapped_column(Integer)
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=PageState.PENDING.value)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        # A redelivered classify/full_depth message writes nothing twice.
        UniqueConstraint(
            "page_id", "model_version", "pass_name", name="uq_predictions_page_model_pass"
        ),
        CheckConstraint(_in("pass_name", Pass), name="pass_name"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        CheckConstraint(_in("full_depth_reason", FullDepthReason), name="full_depth_reason"),
        Index("ix_predictions_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(128))
    pass_name: Mapped[str] = mapped_column(String(8))
    label: Mapped[str] = mapped_column(String(128))
    confidence: Mapped[float] = mapped_column(Float)
    exit_stage: Mapped[int] = mapped_column(Integer)
    exit_layer: Mapped[int] = mapped_column(Integer)
    trail: Mapped[list[float]] = mapped_column(JSON)  # calibrated confidence at each exit tried
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The exit policy in force (classifier.policy.policy_version: model version + a hash of the
    # thresholds); NULL on rows written before migration 0003.
    policy_version: Mapped[str | None] = mapped_column(String(160))
    # Why the page goes (early row: as the classify step decided; NULL = answered early) or
    # went (full row: NULL only on rows older than 0003) to full depth.
    full_depth_reason: Mapped[str | None] = mapped_column(String(16))
    # The seeded audit coin picked this page (true on its early and full rows): the audit
    # sample is every such page, also a low-confidence one, whose reason then says
    # "low_confidence" (it would have gone anyway; "audit_sample" = sent only for the audit).
    audit_sample: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Full rows: [[label, confidence], ...] at every exit, stage 0 first (what each exit would
    # have answered); NULL on early rows (their `trail` has the exits they visited).
    exit_answers: Mapped[list[list[Any]] | None] = mapped_column(JSON)
    # The OCR-free exit answered (early rows only; exit_stage and exit_layer are then -1: the
    # page was read from its raster before any OCR, ARCHITECTURE.md "Deferred OCR").
    ocr_free: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Whether tesseract had run for the page when this answer was given (NULL: rows older than
    # migration 0005, or a page whose text source was not recorded).
    ocr_ran: Mapped[bool | None] = mapped_column(Boolean)


class HumanLabel(Base):
    __tablename__ = "human_labels"
    __table_args__ = (Index("ix_human_labels_page", "page_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(128))
    who: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Watermark(Base):
    """Small named cursors: S3 polling high-water marks, backlog resume points."""

    __tablename__ = "watermarks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Policy(Base):
    """Exit policies stored for a model version (`doctriage thresholds tune --apply`): the
    newest row of a model version (highest id) is the policy in force for it; without one, the
    bundle's own. Rows are never updated: a change is a new row, so the history stays."""

    __tablename__ = "policies"
    __table_args__ = (Index("ix_policies_model_version", "model_version", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128))
    # classifier.policy.policy_version(model_version, spec): what predictions record
    policy_version: Mapped[str] = mapped_column(String(160))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the policy's JSON, as in exits.json
    # What chose it (the tuner's budget, delta, sample and before/after figures)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
