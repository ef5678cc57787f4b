"""How many sessions each agent type holds open, against ``agents.<type>.max_open_sessions``.

Open sessions are ``created``, ``active`` or ``paused`` (deleted ones excepted). The bot
API refuses a session over the limit; the CLI and the dashboard show the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipipe_gh.core.policy import Policy
from minipipe_gh.core.session_states import OPEN
from minipipe_gh.store.models import AgentSession, InstalledRepository


@dataclass(frozen=True)
class OpenCount:
    """One agent type's open sessions on a repository and its limit (0: none)."""

    agent_type: str
    open: int
    limit: int
    rule: str  # the key that set the limit: agents.aider.max_open_sessions

    def shown(self) -> str:
        """``2 of 3`` or ``2 (no limit)``."""
        return f"{self.open} of {self.limit}" if self.limit else f"{self.open} (no limit)"


def _open(project: str) -> object:
    return (
        (func.lower(AgentSession.project_id) == project.lower())
        & AgentSession.state.in_([str(s) for s in OPEN])
        & AgentSession.archived_at.is_(None)
    )


def open_sessions(db: Session, project: str, agent_type: str) -> list[AgentSession]:
    """The agent type's open sessions on the repository, oldest first."""
    return list(
        db.scalars(
            select(AgentSession)
            .where(_open(project), AgentSession.agent_type == agent_type)  # type: ignore[arg-type]
            .order_by(AgentSession.session_id)
        )
    )


def counts(db: Session, project: str, policy: Policy | None) -> list[OpenCount]:
    """Every agent type with an open session or a limit on the repository; ``policy``
    None when it could not be read (limits then show as none)."""
    rows = db.execute(
        select(AgentSession.agent_type, func.count())
        .where(_open(project))  # type: ignore[arg-type]
        .group_by(AgentSession.agent_type)
    ).all()
    found = {agent: int(n) for agent, n in rows}
    named = [name for name, _keys in policy.agents if name != "default"] if policy else []
    out = []
    for agent in sorted(set(found) | set(named)):
        rails = policy.guardrails(agent) if policy else None
        limit = rails.max_open_sessions if rails else 0
        rule = rails.rule("max_open_sessions") if rails else ""
        out.append(OpenCount(agent, found.get(agent, 0), limit, rule))
    return out


def lock_repository(db: Session, project: str) -> None:
    """Serialise session creation on one repository, so two concurrent requests cannot
    both pass the limit (PostgreSQL row lock; SQLite already has one writer)."""
    db.execute(
        select(InstalledRepository.full_name)
        .where(func.lower(InstalledRepository.full_name) == project.lower())
        .with_for_update()
    ).all()


def refusal(policy: Policy, agent_type: str, held: list[AgentSession]) -> str | None:
    """Why one more session of ``agent_type`` is refused, naming the limit and the open
    sessions; ``None`` when it may start."""
    rails = policy.guardrails(agent_type)
    limit = rails.max_open_sessions
    if not limit or len(held) < limit:
        return None
    named = ", ".join(f"{s.session_id} ({s.state})" for s in held)
    return (
        f"agent type {agent_type} holds {len(held)} open sessions, the limit "
        f"({rails.rule('max_open_sessions')}) is {limit}: {named}"
    )
