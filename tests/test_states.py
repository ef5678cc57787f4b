"""Both transition tables, move by move, through the real registry and ledger on a real database.

Every legal pair must work; every other pair must be refused with an error that
names the entity, its state and the requested one, change nothing, and leave
exactly one "refused" row in the audit trail. An entity is put in a state by
walking a legal path from its initial state (BFS over the table), never by
writing the state column.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from sqlalchemy import func, select

from minipipe_gh.core.errors import IllegalTransition
from minipipe_gh.core.machine import Machine
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.session_states import MACHINE as SESSION_MACHINE
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.store import audit, ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AuditEntry

ACTOR = "tester"
SOURCE = "test:states"


def path_to(machine: Machine[Any], start: str, goal: str) -> list[str]:
    """The shortest legal walk from ``start`` to ``goal`` (excluding ``start``), by BFS."""
    start, goal = machine.states(start), machine.states(goal)
    came_from: dict[Any, Any] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for nxt in sorted(machine.table[state]):
            if nxt not in came_from:
                came_from[nxt] = state
                queue.append(nxt)
    assert goal in came_from, f"{machine.entity} state {goal} is unreachable from {start}"
    walk: list[str] = []
    while goal != start:
        walk.append(goal)
        goal = came_from[goal]
    return walk[::-1]


class SessionKind:
    entity = "session"
    machine = SESSION_MACHINE
    initial = SessionState.CREATED

    def create(self, db: Any) -> str:
        s = registry.create_session(
            db, project_id="octo/states", agent_type="claude", title="t", actor=ACTOR, source=SOURCE
        )
        return s.session_id

    def move(self, db: Any, entity_id: str, to: str) -> None:
        registry.update_session_state(db, entity_id, to, actor=ACTOR, source=SOURCE, reason="test")

    def load(self, db: Any, entity_id: str) -> Any:
        return registry.get_session(db, entity_id)


class PatchKind:
    entity = "patch"
    machine = PATCH_MACHINE
    initial = PatchState.CREATED

    def create(self, db: Any) -> str:
        s = registry.create_session(
            db, project_id="octo/states", agent_type="claude", title="t", actor=ACTOR, source=SOURCE
        )
        return ledger.record_patch(db, s, "a" * 40, actor=ACTOR, source=SOURCE).ledger_id

    def move(self, db: Any, entity_id: str, to: str) -> None:
        ledger.transition(db, entity_id, to, actor=ACTOR, source=SOURCE, reason="test")

    def load(self, db: Any, entity_id: str) -> Any:
        return ledger.get_patch(db, entity_id)


KINDS = (SessionKind(), PatchKind())


def put_in(database: Database, kind: Any, state: str) -> str:
    """A new entity walked to ``state`` along legal moves, one unit of work per move."""
    with database.unit() as db:
        entity_id = kind.create(db)
    for step in path_to(kind.machine, kind.initial, state):
        with database.unit() as db:
            kind.move(db, entity_id, step)
    with database.unit() as db:
        assert kind.load(db, entity_id).state == state
    return entity_id


def snapshot(database: Database, kind: Any, entity_id: str) -> tuple[str, int, Any, int]:
    with database.unit() as db:
        obj = kind.load(db, entity_id)
        n_audit = db.scalar(select(func.count()).select_from(AuditEntry))
        return obj.state, obj.version, obj.updated_at, n_audit


LEGAL = [
    pytest.param(kind, src, dst, id=f"{kind.entity}:{src}->{dst}")
    for kind in KINDS
    for src, dst in kind.machine.legal_pairs()
]
ILLEGAL = [
    pytest.param(kind, src, dst, id=f"{kind.entity}:{src}->{dst}")
    for kind in KINDS
    for src, dst in kind.machine.illegal_pairs()
]


# --- the tables themselves ------------------------------------------------------

SPEC_SESSION_TABLE = {
    "created": {"active", "failed"},
    "active": {"paused", "completed", "failed"},
    "paused": {"active", "completed", "failed"},
    "completed": set(),
    "failed": set(),
}
SPEC_PATCH_TABLE = {
    "created": {"validated", "quarantined", "dropped"},
    "validated": {"awaiting_review", "queued", "dropped"},
    "awaiting_review": {"queued", "dropped"},
    "queued": {"awaiting_review", "applied", "dropped"},
    "quarantined": {"validated", "dropped"},
    "applied": {"verified", "rolled_back"},
    "verified": {"committed"},
    "dropped": set(),
    "rolled_back": set(),
    "committed": set(),
}


@pytest.mark.parametrize(
    ("machine", "spec"),
    [(SESSION_MACHINE, SPEC_SESSION_TABLE), (PATCH_MACHINE, SPEC_PATCH_TABLE)],
    ids=["session", "patch"],
)
def test_table_is_the_spec_table(machine: Machine[Any], spec: dict[str, set[str]]) -> None:
    table = {str(src): {str(dst) for dst in dsts} for src, dsts in machine.table.items()}
    assert table == spec
    assert {str(s) for s in machine.terminal} == {s for s, dsts in spec.items() if not dsts}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.entity)
def test_legal_and_illegal_pairs_partition_every_pair(kind: Any) -> None:
    legal, illegal = set(kind.machine.legal_pairs()), set(kind.machine.illegal_pairs())
    states = list(kind.machine.states)
    assert not legal & illegal
    assert legal | illegal == {(a, b) for a in states for b in states}
    assert len(legal) == sum(len(t) for t in kind.machine.table.values())
    # Every state can be reached from the initial one, so every pair below is testable.
    for state in states:
        walk = path_to(kind.machine, kind.initial, state)
        for a, b in zip([kind.initial, *walk], walk, strict=False):
            assert (a, b) in legal


# --- every legal move works -----------------------------------------------------


@pytest.mark.parametrize(("kind", "src", "dst"), LEGAL)
def test_legal_move(database: Database, kind: Any, src: str, dst: str) -> None:
    entity_id = put_in(database, kind, src)
    state, version, _, n_audit = snapshot(database, kind, entity_id)

    with database.unit() as db:
        kind.move(db, entity_id, dst)

    with database.unit() as db:
        obj = kind.load(db, entity_id)
        assert obj.state == dst
        assert obj.version == version + 1
        rows = audit.history(db, kind.entity, entity_id)
        assert db.scalar(select(func.count()).select_from(AuditEntry)) == n_audit + 1
        last = rows[-1]
        assert (last.from_state, last.to_state, last.outcome) == (src, dst, "moved")
        assert (last.actor, last.source, last.reason) == (ACTOR, SOURCE, "test")
        assert last.project_id == "octo/states"


# --- every other pair is refused ------------------------------------------------


@pytest.mark.parametrize(("kind", "src", "dst"), ILLEGAL)
def test_illegal_move_is_refused(database: Database, kind: Any, src: str, dst: str) -> None:
    entity_id = put_in(database, kind, src)
    before = snapshot(database, kind, entity_id)

    with pytest.raises(IllegalTransition) as caught, database.unit() as db:
        kind.move(db, entity_id, dst)

    err = caught.value
    message = str(err)
    assert entity_id in message
    if src == dst:  # a self-move is worded as such, never "from dropped to dropped"
        assert f"is already {src}" in message and "cannot move" not in message
    else:
        assert f"from {src} to {dst}" in message
    assert kind.entity in message
    assert (err.entity, err.entity_id, err.current, err.requested) == (
        kind.entity,
        entity_id,
        src,
        dst,
    )

    state, version, updated_at, n_audit = snapshot(database, kind, entity_id)
    assert (state, version, updated_at) == before[:3], "a refused move changed the row"
    assert n_audit == before[3] + 1, "a refused move must leave exactly one audit row"
    with database.unit() as db:
        last = audit.history(db, kind.entity, entity_id)[-1]
    assert last.outcome == "refused"
    assert (last.from_state, last.to_state) == (src, dst)
    assert (last.actor, last.source) == (ACTOR, SOURCE)
    assert entity_id in (last.reason or "")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.entity)
def test_unknown_target_state_is_refused(database: Database, kind: Any) -> None:
    entity_id = put_in(database, kind, kind.initial)
    before = snapshot(database, kind, entity_id)

    with pytest.raises(IllegalTransition) as caught, database.unit() as db:
        kind.move(db, entity_id, "exploded")

    assert entity_id in str(caught.value) and "exploded" in str(caught.value)
    state, version, _, n_audit = snapshot(database, kind, entity_id)
    assert (state, version) == before[:2]
    assert n_audit == before[3] + 1
