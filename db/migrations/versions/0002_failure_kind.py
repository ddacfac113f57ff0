"""0002 (2026-12-04): documents and pages: failure_kind (transient | permanent, NULL unless
FAILED), failed_attempts"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0002", "0001"

CHECK = "failure_kind IN ('transient', 'permanent')"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ("documents", "pages"):
        if sqlite:
            # SQLite cannot add a constraint to an existing table, and the batch (copy) way
            # would DROP the table, which with foreign keys on cascades (documents -> pages ->
            # predictions). A CHECK in the ADD COLUMN itself is allowed (NULLs pass it).
            op.execute(
                f"ALTER TABLE {table} ADD COLUMN failure_kind VARCHAR(16)"
                f" CONSTRAINT ck_{table}_failure_kind CHECK ({CHECK})"
            )
        else:
            op.add_column(table, sa.Column("failure_kind", sa.String(length=16), nullable=True))
            op.create_check_constraint(op.f(f"ck_{table}_failure_kind"), table, CHECK)
        op.add_column(
            table, sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        # Rows FAILED before the kind was recorded: the cause is unknown, so no automatic retry
        # (`doctriage retry --kind all` re-runs such documents).
        rows = sa.table(table, sa.column("state"), sa.column("failure_kind"),
                        sa.column("failed_attempts"))
        op.execute(rows.update().where(rows.c.state == "FAILED")
                   .values(failure_kind="permanent", failed_attempts=1))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ("pages", "documents"):
        if not sqlite:
            op.drop_constraint(op.f(f"ck_{table}_failure_kind"), table, type_="check")
        op.drop_column(table, "failed_attempts")
        op.drop_column(table, "failure_kind")
