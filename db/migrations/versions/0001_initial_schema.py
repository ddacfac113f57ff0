"""0001 (2026-11-29): initial schema: documents, pages, predictions, human_labels, watermarks"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0001", None

# Timestamps are naive UTC on both backends (db.models.UTCDateTime adds the zone on read).
TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    # One table each, parents before children (foreign keys).
    _documents()
    _watermarks()
    _pages()
    _human_labels()
    _predictions()


def _documents() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("version_key", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("page_count", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('RECEIVED', 'INGESTING', 'INGESTED', 'DONE', 'FAILED', 'SKIPPED')",
            name=op.f("ck_documents_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("source_uri", "version_key", name="uq_documents_source_version"),
    )
    op.create_index("ix_documents_state_updated", "documents", ["state", "updated_at"])


def _watermarks() -> None:
    op.create_table(
        "watermarks",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_watermarks")),
    )


def _pages() -> None:
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("text_source", sa.String(length=16), nullable=True),
        sa.Column("word_count", sa.Integer(), nullable=True),
        sa.Column("artifact_ref", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('PENDING', 'CLASSIFYING', 'REROUTED', 'DONE', 'FAILED')",
            name=op.f("ck_pages_state"),
        ),
        sa.CheckConstraint("number >= 1", name=op.f("ck_pages_number_positive")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_pages_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pages")),
        sa.UniqueConstraint("document_id", "number", name="uq_pages_document_number"),
    )
    op.create_index("ix_pages_state_updated", "pages", ["state", "updated_at"])


def _human_labels() -> None:
    op.create_table(
        "human_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("page_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("who", sa.String(length=128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["page_id"],
            ["pages.id"],
            name=op.f("fk_human_labels_page_id_pages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_human_labels")),
    )
    op.create_index("ix_human_labels_page", "human_labels", ["page_id"])


def _predictions() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("page_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("pass_name", sa.String(length=8), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("exit_stage", sa.Integer(), nullable=False),
        sa.Column("exit_layer", sa.Integer(), nullable=False),
        sa.Column("trail", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("pass_name IN ('early', 'full')", name=op.f("ck_predictions_pass_name")),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_predictions_confidence_range")
        ),
        sa.ForeignKeyConstraint(
            ["page_id"], ["pages.id"], name=op.f("fk_predictions_page_id_pages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint(
            "page_id", "model_version", "pass_name", name="uq_predictions_page_model_pass"
        ),
    )
    op.create_index("ix_predictions_created", "predictions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_created", table_name="predictions")
    op.drop_table("predictions")
    op.drop_index("ix_human_labels_page", table_name="human_labels")
    op.drop_table("human_labels")
    op.drop_index("ix_pages_state_updated", table_name="pages")
    op.drop_table("pages")
    op.drop_table("watermarks")
    op.drop_index("ix_documents_state_updated", table_name="documents")
    op.drop_table("documents")
