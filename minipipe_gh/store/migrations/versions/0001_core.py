"""core: sessions, patches, audit trail

Revision ID: 0001
Revises: -
Create Date: 2026-11-25 12:05:45.935932
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=200), nullable=True),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_entity", ["entity", "entity_id", "id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=200), nullable=False),
        sa.Column("workstream_id", sa.String(length=200), nullable=True),
        sa.Column("agent_type", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("workspace_path", sa.String(length=1000), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("base_branch", sa.String(length=255), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("head_sha", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_agent", ["agent_type", "session_id"], unique=False)
        batch_op.create_index("ix_sessions_branch", ["project_id", "branch"], unique=False)
        batch_op.create_index("ix_sessions_pr", ["project_id", "pr_number"], unique=False)
        batch_op.create_index(
            "ix_sessions_project_state", ["project_id", "state", "session_id"], unique=False
        )
        batch_op.create_index("ix_sessions_state", ["state", "session_id"], unique=False)

    op.create_table(
        "patches",
        sa.Column("ledger_id", sa.String(length=26), nullable=False),
        sa.Column("patch_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=200), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("workstream_id", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("risk", sa.String(length=10), nullable=False),
        sa.Column(
            "risk_reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("additions", sa.Integer(), nullable=False),
        sa.Column("deletions", sa.Integer(), nullable=False),
        sa.Column(
            "paths",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("tree_sha", sa.String(length=64), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ledger_id"),
    )
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patches_pr", ["project_id", "pr_number", "patch_id"], unique=False
        )
        batch_op.create_index(
            "ix_patches_run_state", ["run_id", "state", "ledger_id"], unique=False
        )
        batch_op.create_index("ix_patches_session", ["session_id", "ledger_id"], unique=False)
        batch_op.create_index("ix_patches_state", ["state", "ledger_id"], unique=False)
        batch_op.create_index(
            "ix_patches_workstream_state", ["workstream_id", "state", "ledger_id"], unique=False
        )

    _append_only_triggers()


def _append_only_triggers() -> None:
    """The audit trail is never edited: the database itself refuses UPDATE and DELETE."""
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.drop_index("ix_patches_workstream_state")
        batch_op.drop_index("ix_patches_state")
        batch_op.drop_index("ix_patches_session")
        batch_op.drop_index("ix_patches_run_state")
        batch_op.drop_index("ix_patches_pr")

    op.drop_table("patches")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_state")
        batch_op.drop_index("ix_sessions_project_state")
        batch_op.drop_index("ix_sessions_pr")
        batch_op.drop_index("ix_sessions_branch")
        batch_op.drop_index("ix_sessions_agent")

    op.drop_table("sessions")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_entity")
        batch_op.drop_index("ix_audit_at")

    op.drop_table("audit_log")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
