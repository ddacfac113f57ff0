"""0004 (2026-12-05): policies: exit policies stored per model version (the newest row of a version
is in force)"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"

TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    # A new table: no existing row changes (predictions keep their policy_version strings).
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("policy_version", sa.String(length=160), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
    )
    op.create_index("ix_policies_model_version", "policies", ["model_version", "id"])


def downgrade() -> None:
    op.drop_index("ix_policies_model_version", table_name="policies")
    op.drop_table("policies")
