"""delivery payloads: a delivery's body moves to a table of its own, written once

On SQLite an UPDATE rewrites the whole row when its size changes, and a 16 KB body
spans overflow pages: each of a delivery's moves (leased, handled, each write saved,
finished) wrote the body again to the WAL. The state row stays small; the body is
written once.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_payloads",
        sa.Column(
            "seq",
            SEQ,
            sa.ForeignKey("deliveries.seq", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.execute("INSERT INTO delivery_payloads (seq, payload) SELECT seq, payload FROM deliveries")
    # No table rebuild on SQLite (ALTER TABLE ... DROP COLUMN, SQLite 3.35+, which the
    # inbox's RETURNING needs already): a rebuild would have to recreate the partial
    # indexes the claim walks.
    with op.batch_alter_table("deliveries", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("payload")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("payload", sa.Text(), nullable=False, server_default=""))
    op.execute(
        "UPDATE deliveries SET payload = (SELECT p.payload FROM delivery_payloads p"
        " WHERE p.seq = deliveries.seq) WHERE seq IN (SELECT seq FROM delivery_payloads)"
    )
    op.drop_table("delivery_payloads")
