"""Nothing waits without a reason: every open patch says what it waits for, and since when.

"Since" is when the patch entered its state (its last move in the audit
trail), not when it was last touched: an approval that is one of two needed
does not restart the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipipe_gh.core import waits
from minipipe_gh.core.patch_states import OPEN, PatchState
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch, utcnow
from minipipe_gh.store.serialize import waiting_for

P = PatchState


@dataclass(frozen=True)
class Waiting:
    patch: Patch
    session: AgentSession | None
    since: datetime
    waits: tuple[waits.Wait, ...]

    @property
    def waits_for(self) -> str:
        return waits.in_words(self.waits)

    def seconds(self, now: datetime) -> float:
        return max((now - self.since).total_seconds(), 0.0)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "ledger_id": self.patch.ledger_id,
            "project_id": self.patch.project_id,
            "pr_number": self.patch.pr_number,
            "patch_id": self.patch.patch_id,
            "state": self.patch.state,
            "since": self.since.isoformat(),
            "waiting_seconds": round(self.seconds(now)),
            "waits_for": self.waits_for,
            "waiting_for": [w.as_json() for w in self.waits],
        }


def waits_for(patch: Patch, session: AgentSession | None) -> str:
    """What moves the patch on, in words: the check run's list (``waits.waiting_for``)."""
    return waits.in_words(waiting_for(patch, session))


def waiting(
    s: Session,
    *,
    older_than: timedelta | None = None,
    project_id: str | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> list[Waiting]:
    """Open patches, longest waiting first."""
    now = now or utcnow()
    entered = (
        select(AuditEntry.entity_id, func.max(AuditEntry.at).label("at"))
        .where(AuditEntry.entity == "patch", AuditEntry.outcome == "moved")
        .group_by(AuditEntry.entity_id)
        .subquery()
    )
    since = func.coalesce(entered.c.at, Patch.updated_at)
    q = (
        select(Patch, AgentSession, since)
        .join(AgentSession, AgentSession.session_id == Patch.session_id, isouter=True)
        .join(entered, entered.c.entity_id == Patch.ledger_id, isouter=True)
        .where(Patch.state.in_([str(x) for x in OPEN]))
        .order_by(since, Patch.ledger_id)
        .limit(limit)
    )
    if project_id:
        q = q.where(Patch.project_id == project_id)
    if older_than is not None:
        q = q.where(since <= now - older_than)
    out = []
    for patch, session, at in s.execute(q):
        at = _aware(at) if at is not None else patch.updated_at
        out.append(Waiting(patch, session, at, tuple(waiting_for(patch, session))))
    return out


def _aware(value: Any) -> datetime:
    """``coalesce`` loses the column type: SQLite gives a naive string or datetime back."""
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def longest_by_state(s: Session, now: datetime | None = None) -> dict[str, float]:
    """For the gauge: per open state, the seconds the longest-waiting patch has waited."""
    now = now or utcnow()
    out = {str(state): 0.0 for state in OPEN}
    for w in waiting(s, limit=10_000, now=now):
        out[w.patch.state] = max(out[w.patch.state], w.seconds(now))
    return out
