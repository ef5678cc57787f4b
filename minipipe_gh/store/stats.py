"""Per-agent-type statistics: how each kind of agent fares, from sessions and patches."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.store.models import AgentSession, Patch, UsageReport

TOP_REASONS = 5
# A patch that landed: merged and not rolled back.
MERGED = (PatchState.APPLIED, PatchState.VERIFIED, PatchState.COMMITTED)


def record_usage(
    db: Session,
    session_id: str,
    *,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    model: str | None = None,
) -> None:
    """Add one report to the session's usage (a row: reports never conflict)."""
    db.add(
        UsageReport(
            session_id=session_id,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_usd,
            model=model,
        )
    )


def _usage(tokens_in: Any, tokens_out: Any, cost: Any, reports: Any) -> dict[str, Any]:
    return {
        "tokens_in": int(tokens_in or 0),
        "tokens_out": int(tokens_out or 0),
        "cost_usd": round(float(cost or 0), 6),
        "reports": int(reports or 0),
    }


def session_usage(db: Session, session_id: str) -> dict[str, Any]:
    """The session's totals, and per model."""
    sums = (
        func.sum(UsageReport.tokens_in),
        func.sum(UsageReport.tokens_out),
        func.sum(UsageReport.cost_usd),
        func.count(UsageReport.id),
    )
    where = UsageReport.session_id == session_id
    total = db.execute(select(*sums).where(where)).one()
    models = {
        row[0]: _usage(*row[1:])
        for row in db.execute(
            select(UsageReport.model, *sums)
            .where(where, UsageReport.model.is_not(None))
            .group_by(UsageReport.model)
            .order_by(UsageReport.model)
        )
    }
    return {**_usage(*total), "models": models}


def _usage_by_agent(
    db: Session, project_id: str | None, within: Collection[str] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, float], dict[str, int]]:
    """Per agent type: usage totals, the cost of sessions that landed, merged patches.

    ``within`` (a token's repositories) scopes them as it scopes the other figures.
    """
    per_session = (
        select(
            UsageReport.session_id,
            func.sum(UsageReport.tokens_in).label("tokens_in"),
            func.sum(UsageReport.tokens_out).label("tokens_out"),
            func.sum(UsageReport.cost_usd).label("cost"),
            func.count(UsageReport.id).label("reports"),
        )
        .group_by(UsageReport.session_id)
        .subquery()
    )
    q = select(AgentSession.session_id, AgentSession.agent_type, per_session).join(
        per_session, per_session.c.session_id == AgentSession.session_id
    )
    mq = (
        select(AgentSession.agent_type, Patch.session_id, func.count(Patch.ledger_id))
        .join(AgentSession, AgentSession.session_id == Patch.session_id)
        .where(Patch.state.in_(MERGED))
        .group_by(AgentSession.agent_type, Patch.session_id)
    )
    if project_id:
        q = q.where(func.lower(AgentSession.project_id) == project_id.lower())
        mq = mq.where(func.lower(AgentSession.project_id) == project_id.lower())
    if within is not None:
        scope = func.lower(AgentSession.project_id).in_([w.lower() for w in within])
        q, mq = q.where(scope), mq.where(scope)
    merged: dict[str, int] = Counter()
    landed_sessions: set[str] = set()
    for agent, session_id, count in db.execute(mq):
        merged[agent] += count
        landed_sessions.add(session_id)
    usage: dict[str, dict[str, Any]] = defaultdict(lambda: _usage(0, 0, 0, 0))
    landed: dict[str, float] = defaultdict(float)
    for row in db.execute(q):
        u = usage[row.agent_type]
        u["tokens_in"] += int(row.tokens_in or 0)
        u["tokens_out"] += int(row.tokens_out or 0)
        u["cost_usd"] += float(row.cost or 0)
        u["reports"] += int(row.reports or 0)
        if row.session_id in landed_sessions:
            landed[row.agent_type] += float(row.cost or 0)
    return usage, landed, merged


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
        q = q.where(func.lower(AgentSession.project_id) == project_id.lower())
        pq = pq.where(func.lower(AgentSession.project_id) == project_id.lower())
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
    usage, landed, merged = _usage_by_agent(db, project_id, within)
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
                **_cost_fields(usage.get(agent), landed.get(agent, 0.0), merged.get(agent, 0)),
            }
        )
    return out


def _cost_fields(usage: dict[str, Any] | None, landed: float, merged: int) -> dict[str, Any]:
    """What an agent type's work cost, and what each change that landed cost.

    ``cost_per_merged_patch`` divides all of the agent's reported cost (failed
    work included: it is what landing took) by its merged patches;
    ``landed_cost_usd`` is the cost of the sessions whose patches merged.
    """
    u = dict(usage or _usage(0, 0, 0, 0))
    u["cost_usd"] = round(u["cost_usd"], 6)
    return {
        "usage": u,
        "merged_patches": merged,
        "landed_cost_usd": round(landed, 6),
        "cost_per_merged_patch": round(u["cost_usd"] / merged, 6) if merged else None,
    }
