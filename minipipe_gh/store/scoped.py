"""Reads limited to the repositories a dashboard viewer can see.

Filtering happens in the query, not after it, so a page is never short of
rows the viewer may see and keyset pagination stays exact. Cursors are the
registry's and the ledger's (``pagination``). Repository names compare
case-insensitively, as GitHub's do. Functions take the caller's ``Session``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from minipipe_gh.core.errors import Invalid, NotFound
from minipipe_gh.store import ledger, pagination, registry
from minipipe_gh.store.models import AgentSession, Delivery, Patch
from minipipe_gh.store.pagination import Page
from minipipe_gh.store.signins import Viewer


def _visible(column: Any, viewer: Viewer, project: str | None) -> ColumnElement[bool]:
    names = [project] if project else viewer.names
    return func.lower(column).in_([n.lower() for n in names if viewer.can_see(n)])


def _canonical(viewer: Viewer, project: str | None) -> str | None:
    """GitHub's spelling of a repository the viewer named in any case."""
    repo = viewer.repo(project) if project else None
    return repo.full_name if repo is not None else project


def sessions_page(
    db: Session,
    viewer: Viewer,
    *,
    project: str | None = None,
    state: str | None = None,
    agent_type: str | None = None,
    cursor: str | None = None,
    limit: int = 25,
) -> Page[AgentSession]:
    """Newest first: ``registry.list_sessions`` within the viewer's repositories."""
    return registry.list_sessions(
        db,
        _canonical(viewer, project),
        state or None,
        agent_type or None,
        cursor=cursor,
        limit=limit,
        within=viewer.names,
    )


def agent_types(db: Session, viewer: Viewer) -> list[str]:
    q = (
        select(AgentSession.agent_type)
        .where(_visible(AgentSession.project_id, viewer, None))
        .distinct()
        .order_by(AgentSession.agent_type)
    )
    return list(db.scalars(q).all())


def patch_counts(db: Session, session_ids: Sequence[str]) -> dict[str, Counter[str]]:
    """Patches per state for each session on a page, in one query."""
    counts: dict[str, Counter[str]] = {sid: Counter() for sid in session_ids}
    if not session_ids:
        return counts
    q = (
        select(Patch.session_id, Patch.state, func.count())
        .where(Patch.session_id.in_(list(session_ids)))
        .group_by(Patch.session_id, Patch.state)
    )
    for session_id, state, n in db.execute(q):
        counts[session_id][state] = n
    return counts


def review_page(
    db: Session,
    viewer: Viewer,
    *,
    project: str | None = None,
    cursor: str | None = None,
    limit: int = 25,
) -> Page[Patch]:
    """Oldest first: the review queue within the viewer's repositories."""
    return ledger.list_patches_awaiting_review(
        db, project_id=_canonical(viewer, project), cursor=cursor, limit=limit, within=viewer.names
    )


def sessions_by_id(db: Session, ids: Sequence[str]) -> dict[str, AgentSession]:
    if not ids:
        return {}
    rows = db.scalars(select(AgentSession).where(AgentSession.session_id.in_(list(ids))))
    return {s.session_id: s for s in rows}


def dead_page(
    db: Session, viewer: Viewer, *, cursor: str | None = None, limit: int = 25
) -> Page[Delivery]:
    """Dead deliveries of visible repositories, newest first (deliveries with none are CLI-only)."""
    pagination.check_limit(limit)
    q = select(Delivery).where(
        Delivery.status == "dead", _visible(Delivery.repository, viewer, None)
    )
    after = pagination.decode(cursor)
    if after is not None:
        if not (after.isascii() and after.isdigit()):
            raise Invalid("cursor is not one this server gave out", field="cursor")
        q = q.where(Delivery.seq < int(after))
    rows = db.scalars(q.order_by(Delivery.seq.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        return Page(rows[:limit], pagination.encode(str(rows[limit - 1].seq)))
    return Page(rows, None)


def visible_session(db: Session, viewer: Viewer, session_id: str) -> AgentSession:
    """The session, or NotFound: another repository's session does not exist for this viewer."""
    session = db.get(AgentSession, session_id)
    if session is None or not viewer.can_see(session.project_id):
        raise NotFound(f"session {session_id} not found")
    return session


def visible_patch(db: Session, viewer: Viewer, ledger_id: str) -> Patch:
    patch = db.get(Patch, ledger_id)
    if patch is None or not viewer.can_see(patch.project_id):
        raise NotFound(f"patch {ledger_id} not found")
    return patch


def visible_delivery(db: Session, viewer: Viewer, delivery_id: str) -> Delivery:
    d = db.scalars(select(Delivery).where(Delivery.delivery_id == delivery_id)).first()
    if d is None or not viewer.can_see(d.repository):
        raise NotFound(f"delivery {delivery_id} not found")
    return d
