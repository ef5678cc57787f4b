"""The session registry: create, find, list and move agent sessions.

Every function takes the caller's ``Session`` and leaves the commit to it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session
from ulid import ULID

from minipipe_gh.core.errors import Invalid, NotFound
from minipipe_gh.core.session_states import MACHINE, SessionState
from minipipe_gh.store import audit, pagination
from minipipe_gh.store.models import AgentSession, utcnow
from minipipe_gh.store.pagination import Page
from minipipe_gh.store.transitions import advance

# Keys the app keeps in a session's metadata; a caller may not set them (self-approval
# and PR links depend on them).
RESERVED_METADATA = frozenset(
    {
        "pr_url",
        "pr_author",
        "pr_author_id",
        "bot_login",
        "bot_id",
        "bot_token",
        "token_users",
        "installation_id",
        "hold",
        "holds",
        "github_error",
        "archived_by",
        "seed_commit",
        "limit_checked",
    }
)
PROJECT_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def new_id() -> str:
    """Opaque, URL-safe and sortable by creation (a lowercase ULID)."""
    return str(ULID()).lower()


def _required(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{field} is required and must be a non-empty string", field=field)
    if len(value) > max_len:
        raise Invalid(f"{field} must be at most {max_len} characters", field=field)
    return value.strip()


def check_session_fields(agent_type: Any, title: Any) -> tuple[str, str]:
    """The checks ``create_session`` makes of these fields, for an edge that must refuse
    bad input before it asks GitHub anything."""
    return _required(agent_type, "agent_type", 100), _required(title, "title", 500)


def check_project_id(project_id: Any) -> str:
    value = _required(project_id, "project_id", 200)
    if not PROJECT_RE.match(value):
        raise Invalid("project_id must be a repository as owner/name", field="project_id")
    return value


def check_caller_metadata(metadata: dict[str, Any] | None) -> None:
    """Metadata from a caller (a bot) may not preset the app's own keys, and its whole
    numbers must fit in 64 bits: beyond that JSON readers (ours among them) turn them
    into floats, so the value would not come back as it was sent."""
    taken = sorted(RESERVED_METADATA & set(metadata or {}))
    if taken:
        raise Invalid(f"metadata keys {', '.join(taken)} are the app's own", field="metadata")
    why = _unstorable(metadata, METADATA_DEPTH)
    if why:
        raise Invalid(f"metadata {why}", field="metadata")


METADATA_DEPTH = 32  # objects and arrays within each other; the JSON writer stops at 255


def _unstorable(value: Any, depth: int) -> str | None:
    """Why a caller's JSON value would not be stored and read back as sent, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return "numbers must be whole numbers of at most 64 bits, or decimals"
    if isinstance(value, dict | list):
        if depth == 0:
            return f"may nest objects and arrays at most {METADATA_DEPTH} deep"
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            why = _unstorable(item, depth - 1)
            if why:
                return why
    return None


def create_session(
    db: Session,
    *,
    project_id: str,
    agent_type: str,
    title: str,
    actor: str,
    source: str,
    workstream_id: str | None = None,
    workspace_path: str | None = None,
    base_branch: str | None = None,
    branch: str | None = None,
    pr_number: int | None = None,
    head_sha: str | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    session_id: str | None = None,
    installation_id: int | None = None,
) -> AgentSession:
    if metadata is not None and not isinstance(metadata, dict):
        raise Invalid("metadata must be a JSON object", field="metadata")
    session = AgentSession(
        session_id=session_id or new_id(),
        project_id=check_project_id(project_id),
        agent_type=_required(agent_type, "agent_type", 100),
        title=_required(title, "title", 500),
        workstream_id=workstream_id,
        workspace_path=workspace_path,
        base_branch=base_branch,
        branch=branch,
        pr_number=pr_number,
        head_sha=head_sha,
        state=SessionState.CREATED,
        installation_id=installation_id,
        meta=metadata or {},
        idempotency_key=idempotency_key,
    )
    db.add(session)
    audit.record(
        db,
        entity="session",
        entity_id=session.session_id,
        project_id=session.project_id,
        to_state=SessionState.CREATED,
        outcome="moved",
        actor=actor,
        source=source,
        reason="session created",
    )
    return session


def get_session(db: Session, session_id: str) -> AgentSession:
    session = db.get(AgentSession, session_id)
    if session is None:
        raise NotFound(f"session {session_id} not found")
    return session


# A pull request's session, by the parameters ``project`` and ``number``.
OF_PR = (
    AgentSession.project_id == bindparam("project"),
    AgentSession.pr_number == bindparam("number"),
)
_BY_PR = select(AgentSession).where(*OF_PR)  # built once: it is on every delivery's path


def find_by_pr(db: Session, project_id: str, pr_number: int) -> AgentSession | None:
    return db.scalars(_BY_PR, {"project": project_id, "number": pr_number}).first()


def find_by_idempotency_key(db: Session, key: str) -> AgentSession | None:
    return db.scalars(select(AgentSession).where(AgentSession.idempotency_key == key)).first()


def list_sessions(
    db: Session,
    project_id: str | None = None,
    state: str | None = None,
    agent_type: str | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
    within: Collection[str] | None = None,
) -> Page[AgentSession]:
    """Newest first, one page at a time; ``within`` limits to those repositories.

    Archived (deleted) sessions are not listed.
    """
    pagination.check_limit(limit)
    q = select(AgentSession).where(AgentSession.archived_at.is_(None))
    if project_id is not None:
        q = q.where(AgentSession.project_id == project_id)
    if within is not None:
        q = q.where(func.lower(AgentSession.project_id).in_([w.lower() for w in within]))
    if state is not None:
        if state not in SessionState.__members__.values():
            raise Invalid(f"unknown session state {state!r}", field="state")
        q = q.where(AgentSession.state == state)
    if agent_type is not None:
        q = q.where(AgentSession.agent_type == agent_type)
    after = pagination.decode(cursor)
    if after is not None:
        q = q.where(AgentSession.session_id < after)
    rows = db.scalars(q.order_by(AgentSession.session_id.desc()).limit(limit + 1)).all()
    return pagination.page_of(rows, limit, "session_id")


def get_active_sessions(
    db: Session, project_id: str | None = None, *, cursor: str | None = None, limit: int = 50
) -> Page[AgentSession]:
    return list_sessions(db, project_id, SessionState.ACTIVE, cursor=cursor, limit=limit)


def update_session_state(
    db: Session,
    session_id: str,
    to: str,
    *,
    actor: str,
    source: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> AgentSession:
    session = get_session(db, session_id)
    advance(
        db,
        session,
        MACHINE,
        to,
        actor=actor,
        source=source,
        reason=reason,
        expected_version=expected_version,
    )
    session.last_activity_at = utcnow()
    return session


def pause_session(db: Session, session_id: str, **kw: Any) -> AgentSession:
    return update_session_state(db, session_id, SessionState.PAUSED, **kw)


def resume_session(db: Session, session_id: str, **kw: Any) -> AgentSession:
    return update_session_state(db, session_id, SessionState.ACTIVE, **kw)


def complete_session(db: Session, session_id: str, success: bool = True, **kw: Any) -> AgentSession:
    to = SessionState.COMPLETED if success else SessionState.FAILED
    return update_session_state(db, session_id, to, **kw)


def delete_session(db: Session, session_id: str, *, actor: str, source: str) -> AgentSession:
    """Archive the session: hidden from the bot API and its listings, but kept.

    Its PR stays bound to it (a later push is never adopted as a fresh session
    with a new bot), and its patches, their decisions and the audit trail stay,
    so ``/stats`` still counts them.
    """
    session = get_session(db, session_id)
    if session.archived_at is not None:
        raise NotFound(f"session {session_id} not found")
    session.archived_at = utcnow()
    session.meta = {**session.meta, "archived_by": actor}
    audit.record(
        db,
        entity="session",
        entity_id=session_id,
        project_id=session.project_id,
        from_state=session.state,
        outcome="noted",
        actor=actor,
        source=source,
        reason="session deleted",
    )
    return session


def touch(session: AgentSession, when: datetime | None = None) -> None:
    session.last_activity_at = when or utcnow()


def stale_sessions(
    db: Session,
    older_than: timedelta,
    *,
    project_id: str | None = None,
    now: datetime | None = None,
) -> list[AgentSession]:
    cutoff = (now or utcnow()) - older_than
    q = select(AgentSession).where(
        AgentSession.state == SessionState.ACTIVE, AgentSession.last_activity_at < cutoff
    )
    if project_id is not None:
        q = q.where(AgentSession.project_id == project_id)
    return list(db.scalars(q.order_by(AgentSession.session_id)).all())


def reap(
    db: Session,
    older_than: timedelta,
    *,
    actor: str,
    source: str,
    dry_run: bool = False,
    per_project: dict[str, timedelta] | None = None,
    now: datetime | None = None,
) -> list[AgentSession]:
    """Pause active sessions with no activity for ``older_than`` (or their repo's stale_after)."""
    now = now or utcnow()
    shortest = min([older_than, *(per_project or {}).values()])
    stale = []
    for session in stale_sessions(db, shortest, now=now):
        limit = (per_project or {}).get(session.project_id, older_than)
        if session.last_activity_at < now - limit:
            stale.append(session)
    if not dry_run:
        for session in stale:
            pause_session(db, session.session_id, actor=actor, source=source, reason="stale")
    return stale
