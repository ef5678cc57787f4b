"""check run references

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 12:14:31.182113
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "check_runs",
        sa.Column("project_id", sa.String(length=200), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=False),
        sa.Column("check_run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "head_sha"),
    )


def downgrade() -> None:
    op.drop_table("check_runs")
