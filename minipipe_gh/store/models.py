"""The database schema as typed SQLAlchemy 2 models.

Functions that read or write these take a ``Session`` from the caller (the
worker, an API request or a CLI command owns its lifecycle).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class AgentSession(Base):
    """One AI agent session: a branch and its pull request."""

    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(200))
    workstream_id: Mapped[str | None] = mapped_column(String(200))
    agent_type: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(500))
    workspace_path: Mapped[str | None] = mapped_column(String(1000))
    branch: Mapped[str | None] = mapped_column(String(255))
    base_branch: Mapped[str | None] = mapped_column(String(255))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    # The installation the session's PR is reached through (a column, not metadata: the
    # workers, the API and upkeep look sessions up by it).
    installation_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Deleted through the API: hidden from the bot API, but kept, so its PR stays bound to
    # it (never adopted afresh) and its decided patches stay in the audit trail and stats.
    archived_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_sessions_project_state", "project_id", "state", "session_id"),
        Index("ix_sessions_state", "state", "session_id"),
        Index("ix_sessions_agent", "agent_type", "session_id"),
        Index("ix_sessions_pr", "project_id", "pr_number"),
        Index("ix_sessions_branch", "project_id", "branch"),
    )


class Patch(Base):
    """One pushed state (head SHA) of a session's PR, moving through the ledger."""

    __tablename__ = "patches"

    ledger_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    patch_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("sessions.session_id", ondelete="CASCADE")
    )
    project_id: Mapped[str] = mapped_column(String(200))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(200))
    workstream_id: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    risk: Mapped[str] = mapped_column(String(10), default="low")
    risk_reasons: Mapped[list[str]] = mapped_column(JSONType, default=list)
    files: Mapped[int] = mapped_column(Integer, default=0)
    additions: Mapped[int] = mapped_column(Integer, default=0)
    deletions: Mapped[int] = mapped_column(Integer, default=0)
    paths: Mapped[list[str]] = mapped_column(JSONType, default=list)
    tree_sha: Mapped[str | None] = mapped_column(String(64))
    # The commit GitHub merged the PR as: checks on it verify the applied patch (found by it).
    merge_commit_sha: Mapped[str | None] = mapped_column(String(40), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_patches_state", "state", "ledger_id"),
        Index("ix_patches_run_state", "run_id", "state", "ledger_id"),
        Index("ix_patches_workstream_state", "workstream_id", "state", "ledger_id"),
        Index("ix_patches_session", "session_id", "ledger_id"),
        Index("ix_patches_pr", "project_id", "pr_number", "patch_id"),
    )

    @property
    def changes(self) -> int:
        return self.additions + self.deletions


class UsageReport(Base):
    """What one piece of a session's work cost, as its bot reported it (append-only).

    Rows, not a running total on the session: concurrent reports never conflict
    and never wake a bot waiting on the session's version.
    """

    __tablename__ = "session_usage"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    session_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("sessions.session_id", ondelete="CASCADE")
    )
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    model: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_session_usage_session", "session_id", "id"),)


class AuditEntry(Base):
    """One row of the append-only audit trail: a move, or a refused attempt.

    Database triggers refuse UPDATE and DELETE on this table.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    entity: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(200))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(10))  # "moved" | "refused" | "noted"
    actor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_audit_entity", "entity", "entity_id", "id"),
        Index("ix_audit_at", "at"),
    )


# A delivery not finished yet: the worker claims these, and only these are indexed for it.
PENDING = ("queued", "effects")
PENDING_LIST = ", ".join(f"'{p}'" for p in PENDING)  # as SQL literals, for raw SQL
PENDING_SQL = text(f"status IN ({PENDING_LIST})")


class Delivery(Base):
    """A verified webhook delivery in the durable inbox, and its processing state.

    ``seq`` orders deliveries as received; deliveries sharing an ``order_key``
    (one pull request) are handled one at a time in that order.
    """

    __tablename__ = "deliveries"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(60))
    action: Mapped[str | None] = mapped_column(String(60))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    repository: Mapped[str | None] = mapped_column(String(200))
    order_key: Mapped[str | None] = mapped_column(String(300))
    natural_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    effects: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    # The body lives in a table of its own, written once: on SQLite a row is rewritten
    # whole on each update that changes its size, and a 16 KB body spans overflow pages
    # (32 pages to the WAL for a delivery's four moves, against 4.5 without it).
    body: Mapped[DeliveryPayload] = relationship(
        lazy="joined", cascade="all, delete-orphan", passive_deletes=True
    )
    payload: AssociationProxy[str] = association_proxy(
        "body", "payload", creator=lambda text: DeliveryPayload(payload=text)
    )

    __table_args__ = (
        # Only unfinished deliveries are indexed for claiming (partial indexes): the claim
        # walks them in arrival order and stops after a batch, however long the history.
        Index(
            "ix_deliveries_pending", "seq", sqlite_where=PENDING_SQL, postgresql_where=PENDING_SQL
        ),
        Index(
            "ix_deliveries_pending_order",
            "order_key",
            "seq",
            sqlite_where=PENDING_SQL,
            postgresql_where=PENDING_SQL,
        ),
        Index("ix_deliveries_status", "status", "seq"),
    )


class DeliveryPayload(Base):
    """A delivery's body as received (the raw JSON text), one row per delivery."""

    __tablename__ = "delivery_payloads"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.seq", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    payload: Mapped[str] = mapped_column(Text)


class Installation(Base):
    """An installation of the app on an account, kept from ``installation`` events."""

    __tablename__ = "installations"

    installation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account: Mapped[str] = mapped_column(String(200))
    account_type: Mapped[str | None] = mapped_column(String(40))
    repository_selection: Mapped[str | None] = mapped_column(String(20))
    suspended_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstalledRepository(Base):
    """A repository an installation grants access to."""

    __tablename__ = "installed_repositories"

    repository_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    installation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("installations.installation_id", ondelete="CASCADE")
    )
    full_name: Mapped[str] = mapped_column(String(200), index=True)
    private: Mapped[bool] = mapped_column(default=False)


class CheckRunRef(Base):
    """The ``minipipe/review`` check run we own on a SHA: updated in place, never duplicated."""

    __tablename__ = "check_runs"

    project_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    head_sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    check_run_id: Mapped[int] = mapped_column(BigInteger)


class NeutralCheckRun(Base):
    """A ``minipipe/review`` success we posted for a PR that is not a session.

    Kept so that when the same SHA turns out to be a session's patch, that green
    run is withdrawn without a GitHub read: check runs belong to the SHA, not the PR.
    """

    __tablename__ = "neutral_check_runs"

    project_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    head_sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    check_run_id: Mapped[int] = mapped_column(BigInteger)
    withdrawn: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewRequest(Base):
    """A code owner the app asked to review a PR (a user ``@login`` or a team ``@org/team``).

    Kept so that a request is never sent twice, and is withdrawn once what that owner
    could cover is covered. Kept apart from the session row, whose version the API uses.
    """

    __tablename__ = "review_requests"

    project_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    pr_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for the bot API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    login: Mapped[str] = mapped_column(String(100))  # the GitHub user the token acts as
    repositories: Mapped[list[str] | None] = mapped_column(JSONType)  # None: all repositories
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    def allows(self, project_id: str) -> bool:
        return self.repositories is None or project_id.lower() in (
            r.lower() for r in self.repositories
        )


class DashboardLogin(Base):
    """A signed-in dashboard user, kept server-side: the cookie holds only a random id.

    ``id`` is the SHA-256 of that id, ``token`` the user's OAuth token encrypted
    with a key derived from ``SECRET_KEY``, ``repositories`` what the user may
    read among the app's installations (``[{"full_name", "installation_id"}]``).
    """

    __tablename__ = "dashboard_logins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    login: Mapped[str] = mapped_column(String(100))
    token: Mapped[str] = mapped_column(Text)
    repositories: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
