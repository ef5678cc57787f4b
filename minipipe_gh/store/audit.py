"""The append-only audit trail: rows are added here and never changed anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from minipipe_gh.store.models import AuditEntry, utcnow

_COLUMNS = (
    "entity",
    "entity_id",
    "project_id",
    "from_state",
    "to_state",
    "outcome",
    "actor",
    "source",
    "reason",
    "details",
    "at",
)
# Built once, every column bound (the driver's cursor applies no column defaults):
# every decision appends a row.
_INSERT = insert(AuditEntry.__table__).values({c: bindparam(c) for c in _COLUMNS})


def record(
    db: Session,
    *,
    entity: str,
    entity_id: str,
    actor: str,
    source: str,
    outcome: str,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    project_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append a row in the unit's transaction, on the driver's cursor of its connection
    (``Database.within``): no one changes the row after, so an ORM object would only
    add a flush's work, and a Core statement its execution context (~0.1 ms)."""
    row = {
        "entity": entity,
        "entity_id": entity_id,
        "project_id": project_id,
        "from_state": from_state,
        "to_state": to_state,
        "outcome": outcome,
        "actor": actor,
        "source": source,
        "reason": reason,
        "details": details or {},
        "at": utcnow(),
    }
    db.info["database"].within(db).execute(_INSERT, row)


def history(db: Session, entity: str, entity_id: str) -> Sequence[AuditEntry]:
    return db.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == entity, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.id)
    ).all()


def export(
    db: Session, *, since: datetime | None = None, project_id: str | None = None, batch: int = 1000
) -> Any:
    """Yield every row in order, in batches, for compliance export."""
    last = 0
    while True:
        q = select(AuditEntry).where(AuditEntry.id > last).order_by(AuditEntry.id).limit(batch)
        if since is not None:
            q = q.where(AuditEntry.at >= since)
        if project_id is not None:
            q = q.where(AuditEntry.project_id == project_id)
        rows = db.scalars(q).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id
