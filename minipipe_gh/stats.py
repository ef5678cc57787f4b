"""Per-agent-type statistics: how each kind of agent fares, from sessions and patches."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import AgentSession, Patch
from .session_states import SessionState

TOP_REASONS = 5


def agent_stats(
    db: Session, *, project_id: str | None = None, within: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """One row per agent type; ``within`` limits to those repositories (a token's scope)."""
    q = select(
        AgentSession.agent_type,
        AgentSession.state,
        AgentSession.created_at,
        AgentSession.updated_at,
    )
    pq = select(AgentSession.agent_type, Patch.meta).join(
        AgentSession, AgentSession.session_id == Patch.session_id
    )
    if project_id:
        q = q.where(AgentSession.project_id == project_id)
        pq = pq.where(AgentSession.project_id == project_id)
    if within is not None:
        scope = func.lower(AgentSession.project_id).in_([w.lower() for w in within])
        q = q.where(scope)
        pq = pq.where(scope)
    sessions: dict[str, list[Any]] = defaultdict(list)
    for row in db.execute(q):
        sessions[row.agent_type].append(row)
    reviews: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for agent, meta in db.execute(pq):
        status = (meta or {}).get("review_status")
        if status in ("approved", "rejected"):
            reviews[agent][status] += 1
        if status == "rejected" and meta.get("review_reason"):
            reasons[agent][meta["review_reason"]] += 1
    out = []
    for agent in sorted(set(sessions) | set(reviews)):
        rows = sessions.get(agent, [])
        done = [r for r in rows if r.state == SessionState.COMPLETED]
        ended = done + [r for r in rows if r.state == SessionState.FAILED]
        durations = [(r.updated_at - r.created_at).total_seconds() for r in done]
        decided = reviews[agent]["approved"] + reviews[agent]["rejected"]
        out.append(
            {
                "agent_type": agent,
                "sessions": len(rows),
                "by_state": dict(Counter(r.state for r in rows)),
                "success_rate": round(len(done) / len(ended), 4) if ended else None,
                "median_seconds_to_completion": statistics.median(durations) if durations else None,
                "patches_decided": decided,
                "approval_rate": round(reviews[agent]["approved"] / decided, 4)
                if decided
                else None,
                "rejection_rate": round(reviews[agent]["rejected"] / decided, 4)
                if decided
                else None,
                "top_rejection_reasons": [
                    {"reason": r, "count": n} for r, n in reasons[agent].most_common(TOP_REASONS)
                ],
            }
        )
    return out
