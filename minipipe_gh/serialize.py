"""Models as plain JSON-ready dicts: one shape for the CLI, the API and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import AgentSession, AuditEntry, Patch


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def session_dict(s: AgentSession) -> dict[str, Any]:
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
        "metadata": s.meta,
        "created_at": _ts(s.created_at),
        "updated_at": _ts(s.updated_at),
        "last_activity_at": _ts(s.last_activity_at),
        "version": s.version,
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
        "metadata": p.meta,
        "created_at": _ts(p.created_at),
        "updated_at": _ts(p.updated_at),
        "version": p.version,
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
