"""claiming: partial indexes over unfinished deliveries

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 13:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PENDING = sa.text("status IN ('queued', 'effects')")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.drop_index("ix_deliveries_order")
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["seq"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_deliveries_pending_order",
        "deliveries",
        ["order_key", "seq"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index("ix_deliveries_status", "deliveries", ["status", "seq"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.drop_index("ix_deliveries_pending_order", table_name="deliveries")
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_order", ["order_key", "seq"], unique=False)
        batch_op.create_index(
            "ix_deliveries_due", ["status", "next_attempt_at", "seq"], unique=False
        )
