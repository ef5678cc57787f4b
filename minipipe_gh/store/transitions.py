"""``advance()``: the one way an entity changes state.

It checks the move against the entity's table, checks the expected version
(optimistic locking), sets the state, and appends the audit row. A refusal
raises with the audit row the caller's unit of work will keep.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.orm import Session, object_session

from minipipe_gh.core.errors import Conflict, IllegalTransition
from minipipe_gh.core.machine import Machine
from minipipe_gh.store import audit
from minipipe_gh.store.models import utcnow


class Stateful(Protocol):
    state: str
    version: int
    project_id: str


def ident(obj: Any) -> str:
    return obj.ledger_id if hasattr(obj, "ledger_id") else obj.session_id


def advance(
    db: Session,
    obj: Stateful,
    machine: Machine[Any],
    to: str,
    *,
    actor: str,
    source: str,
    reason: str | None = None,
    expected_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    entity_id = ident(obj)
    check_attached(db, obj, machine)
    check_version(obj, machine, expected_version)
    try:
        machine.check(entity_id, obj.state, to)
    except IllegalTransition as err:
        err.audit = refusal(obj, machine, to, actor=actor, source=source, reason=str(err))
        raise
    audit.record(
        db,
        entity=machine.entity,
        entity_id=entity_id,
        project_id=obj.project_id,
        from_state=obj.state,
        to_state=to,
        outcome="moved",
        actor=actor,
        source=source,
        reason=reason,
        details=details,
    )
    obj.state = to
    obj.updated_at = utcnow()  # type: ignore[attr-defined]


def note(
    db: Session, obj: Stateful, machine: Machine[Any], *, actor: str, source: str, reason: str
) -> None:
    """An audit row for something that happened to the entity without a move."""
    audit.record(
        db,
        entity=machine.entity,
        entity_id=ident(obj),
        project_id=obj.project_id,
        from_state=obj.state,
        to_state=obj.state,
        outcome="noted",
        actor=actor,
        source=source,
        reason=reason,
    )


def check_attached(db: Session, obj: Any, machine: Machine[Any]) -> None:
    """A row loaded in another unit would take the audit row but not the change."""
    if object_session(obj) is not db:
        raise ValueError(f"{machine.entity} {ident(obj)} was not loaded in this unit of work")


def check_version(obj: Stateful, machine: Machine[Any], expected: int | None) -> None:
    """Optimistic locking: the caller decided on ``expected``; refuse if it moved since."""
    if expected is not None and obj.version != expected:
        raise Conflict(
            f"{machine.entity} {ident(obj)} is at version {obj.version}, "
            f"not {expected}: someone else changed it first"
        )


def refusal(
    obj: Stateful,
    machine: Machine[Any],
    to: str | None,
    *,
    actor: str,
    source: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit row of a refused attempt, for a ``Refused`` error to carry."""
    return {
        "entity": machine.entity,
        "entity_id": ident(obj),
        "project_id": obj.project_id,
        "from_state": obj.state,
        "to_state": to,
        "outcome": "refused",
        "actor": actor,
        "source": source,
        "reason": reason,
        "details": details,
    }
