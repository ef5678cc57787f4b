"""review columns: a session's installation and a patch's merge commit leave the metadata

Both are looked up (the checks on a merge commit find its applied patches by it), so
they are typed, indexed columns; each has one home, so the metadata keys are removed.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
# (table, primary key, column and the metadata key it replaces, its type)
MOVED = (
    ("sessions", "session_id", "installation_id", sa.BigInteger()),
    ("patches", "ledger_id", "merge_commit_sha", sa.String(length=40)),
)


def _table(name: str, key: str, column: str) -> sa.TableClause:
    return sa.table(name, sa.column(key), sa.column(column), sa.column("metadata", JSON))


def _installation(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 40 else None


CONVERT = {"installation_id": _installation, "merge_commit_sha": _sha}


def upgrade() -> None:
    conn = op.get_bind()
    for name, key, column, type_ in MOVED:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column(column, type_, nullable=True))
            batch_op.create_index(f"ix_{name}_{column}", [column], unique=False)
        # Row by row through this connection: the same on SQLite and PostgreSQL.
        table = _table(name, key, column)
        rows = conn.execute(sa.select(table.c[key], table.c.metadata)).all()
        for ident, meta in rows:
            if not isinstance(meta, dict) or column not in meta:
                continue
            rest = {k: v for k, v in meta.items() if k != column}
            conn.execute(
                table.update()
                .where(table.c[key] == ident)
                .values({column: CONVERT[column](meta[column]), "metadata": rest})
            )


def downgrade() -> None:
    conn = op.get_bind()
    for name, key, column, _type in reversed(MOVED):
        table = _table(name, key, column)
        rows = conn.execute(
            sa.select(table.c[key], table.c[column], table.c.metadata).where(
                table.c[column].is_not(None)
            )
        ).all()
        for ident, value, meta in rows:
            conn.execute(
                table.update()
                .where(table.c[key] == ident)
                .values({"metadata": {**(meta or {}), column: value}})
            )
        # No table rebuild on SQLite (ALTER TABLE ... DROP COLUMN, SQLite 3.35+): rebuilding
        # ``sessions`` would drop it, and with foreign keys on that deletes every patch.
        with op.batch_alter_table(name, schema=None, recreate="never") as batch_op:
            batch_op.drop_index(f"ix_{name}_{column}")
            batch_op.drop_column(column)
