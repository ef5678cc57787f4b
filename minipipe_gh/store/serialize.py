"""Models as plain JSON-ready dicts: one shape for the CLI, the API and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from minipipe_gh.core import people, waits
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def change_version(db: Session, session_id: str) -> int | None:
    """The session's version plus its patches': it grows whenever either changes.

    One cheap query, polled by the long-poll; ``None`` when the session is gone.
    Patches go only with their session, so the sum never shrinks.
    """
    patches = (
        select(func.coalesce(func.sum(Patch.version), 0))
        .where(Patch.session_id == session_id)
        .scalar_subquery()
    )
    q = select(AgentSession.version + patches).where(AgentSession.session_id == session_id)
    value = db.execute(q).scalar()
    return None if value is None else int(value)


def _with_column(meta: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """The metadata as the API has always shown it: this column was once a key of it."""
    return meta if value is None else {**meta, key: value}


def session_dict(s: AgentSession) -> dict[str, Any]:
    """``version`` covers the session and its patches (see ``change_version``)."""
    db = object_session(s)
    version = change_version(db, s.session_id) if db is not None else None
    return {
        "session_id": s.session_id,
        "project_id": s.project_id,
        "workstream_id": s.workstream_id,
        "agent_type": s.agent_type,
        "title": s.title,
        "workspace_path": s.workspace_path,
        "branch": s.branch,
        "base_branch": s.base_branch,
        "pr_number": s.pr_number,
        "pr_url": s.meta.get("pr_url"),
        "head_sha": s.head_sha,
        "state": s.state,
        "metadata": _with_column(s.meta, "installation_id", s.installation_id),
        "created_at": _ts(s.created_at),
        "updated_at": _ts(s.updated_at),
        "last_activity_at": _ts(s.last_activity_at),
        "version": version if version is not None else s.version,
    }


def patch_dict(p: Patch) -> dict[str, Any]:
    return {
        "ledger_id": p.ledger_id,
        "patch_id": p.patch_id,
        "session_id": p.session_id,
        "project_id": p.project_id,
        "pr_number": p.pr_number,
        "run_id": p.run_id,
        "workstream_id": p.workstream_id,
        "state": p.state,
        "risk": {"level": p.risk, "reasons": p.risk_reasons},
        "files": p.files,
        "additions": p.additions,
        "deletions": p.deletions,
        "paths": p.paths,
        "review": review_dict(p.meta),
        "waiting_for": [w.as_json() for w in waiting_for(p)],
        "metadata": _with_column(p.meta, "merge_commit_sha", p.merge_commit_sha),
        "created_at": _ts(p.created_at),
        "updated_at": _ts(p.updated_at),
        "version": p.version,
    }


def waiting_for(p: Patch, session: AgentSession | None = None) -> list[waits.Wait]:
    """What the patch waits for, as its check run says it (``checkrun.View.waiting_for``):
    the session's holds, and the approvals count its check run was last written with."""
    if session is None:
        db = object_session(p)
        session = db.get(AgentSession, p.session_id) if db is not None else None
    ended = p.state in (PatchState.DROPPED, PatchState.ROLLED_BACK)
    return waits.waiting_for(
        p.state,
        p.meta,
        holds=[] if ended or session is None else people.holds(session.meta),
        required_approvals=people.required_approvals(p.meta),
    )


def review_dict(meta: dict[str, Any]) -> dict[str, Any]:
    """The verdict as typed fields, read from the review keys the ledger keeps in metadata."""
    status = meta.get("review_status")
    return {
        "status": status if status in ("pending", "approved", "rejected") else "pending",
        "manual_review_required": bool(meta.get("manual_review_required")),
        "reason": meta.get("review_reason"),
        "comment": meta.get("review_comment"),
        "by": meta.get("reviewed_by"),
        "at": meta.get("reviewed_at"),
        "approvals": [a.who.login for a in people.approvals(meta)],
    }


def audit_dict(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.id,
        "entity": a.entity,
        "entity_id": a.entity_id,
        "project_id": a.project_id,
        "from": a.from_state,
        "to": a.to_state,
        "outcome": a.outcome,
        "actor": a.actor,
        "source": a.source,
        "reason": a.reason,
        "details": a.details,
        "at": _ts(a.at),
    }
