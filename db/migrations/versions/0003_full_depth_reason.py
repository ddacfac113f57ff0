"""0003 (2026-12-05): predictions: policy_version, full_depth_reason (CHECK), audit_sample,
exit_answers"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"

CHECK = "full_depth_reason IN ('low_confidence', 'audit_sample', 'manual')"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("predictions", sa.Column("policy_version", sa.String(length=160), nullable=True))
    if sqlite:
        # As in 0002: the CHECK goes in the ADD COLUMN itself (a batch copy would DROP the
        # table); NULLs pass it.
        op.execute(
            "ALTER TABLE predictions ADD COLUMN full_depth_reason VARCHAR(16)"
            f" CONSTRAINT ck_predictions_full_depth_reason CHECK ({CHECK})"
        )
    else:
        op.add_column(
            "predictions", sa.Column("full_depth_reason", sa.String(length=16), nullable=True)
        )
        op.create_check_constraint(
            op.f("ck_predictions_full_depth_reason"), "predictions", CHECK
        )
    # Rows older than this revision: not known to be in the audit sample (false), reason and
    # policy unknown (NULL).
    op.add_column(
        "predictions",
        sa.Column("audit_sample", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("predictions", sa.Column("exit_answers", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_predictions_full_depth_reason"), "predictions", type_="check")
    for column in ("exit_answers", "audit_sample", "full_depth_reason", "policy_version"):
        op.drop_column("predictions", column)
