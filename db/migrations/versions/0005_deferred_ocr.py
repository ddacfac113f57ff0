"""0005 (2026-12-05): pages: states OCR_QUEUED and OCRING (deferred OCR); predictions: ocr_free,
ocr_ran"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0005", "0004"

OLD = "state IN ('PENDING', 'CLASSIFYING', 'REROUTED', 'DONE', 'FAILED')"
NEW = "state IN ('PENDING', 'CLASSIFYING', 'OCR_QUEUED', 'OCRING', 'REROUTED', 'DONE', 'FAILED')"


def _sqlite_check(old: str, new: str) -> None:
    """Swap the CHECK text of pages.state in SQLite's schema in place. SQLite cannot alter a
    constraint, and the batch (copy) way would DROP the table, which with foreign keys on
    cascades to predictions (see 0002). Rewriting the stored CREATE TABLE is SQLite's own
    documented way for a change that every stored row already satisfies (ALTER TABLE docs,
    "other kinds of table schema changes"): the new list is a superset of the old one, and a
    downgrade first moves the rows in the new states back to PENDING."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'pages'").scalar_one()
    if old not in sql:
        raise RuntimeError(f"pages.state CHECK is not {old!r}: cannot migrate")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'pages'",
            (sql.replace(old, new),))
        # a new schema version makes every connection reload the schema (and the CHECK)
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_check(OLD, NEW)
    else:
        op.drop_constraint(op.f("ck_pages_state"), "pages", type_="check")
        op.create_check_constraint(op.f("ck_pages_state"), "pages", NEW)
    # Rows older than this revision: not answered by the OCR-free exit (there was none); whether
    # OCR had run is not recorded (NULL).
    op.add_column(
        "predictions",
        sa.Column("ocr_free", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("predictions", sa.Column("ocr_ran", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # Pages waiting for or in OCR go back to classification (their text source stays
    # awaiting_ocr: the old code classifies them without words).
    pages = sa.table("pages", sa.column("state"))
    op.execute(pages.update().where(pages.c.state.in_(["OCR_QUEUED", "OCRING"]))
               .values(state="PENDING"))
    op.drop_column("predictions", "ocr_ran")
    op.drop_column("predictions", "ocr_free")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_check(NEW, OLD)
    else:
        op.drop_constraint(op.f("ck_pages_state"), "pages", type_="check")
        op.create_check_constraint(op.f("ck_pages_state"), "pages", OLD)
