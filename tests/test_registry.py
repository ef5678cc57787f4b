"""The session registry: create, get, list, state moves, delete, optimistic locking."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from minipipe_gh.core.errors import Conflict, IllegalTransition, Invalid, NotFound
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.store import audit, ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch

S = SessionState


def create(database: Database, **kw: Any) -> str:
    fields = {"project_id": "octo/reg", "agent_type": "claude", "title": "do a thing"}
    fields.update(kw)
    with database.unit() as db:
        return registry.create_session(db, actor="bot", source="test", **fields).session_id


def move(database: Database, session_id: str, *states: str) -> None:
    for state in states:
        with database.unit() as db:
            registry.update_session_state(db, session_id, state, actor="bot", source="test")


def load(database: Database, session_id: str) -> AgentSession:
    with database.unit() as db:
        return registry.get_session(db, session_id)


def count(database: Database, model: Any) -> int:
    with database.unit() as db:
        return db.scalar(select(func.count()).select_from(model))


# --- create -----------------------------------------------------------------------


def test_create_stores_every_field(database: Database) -> None:
    with database.unit() as db:
        s = registry.create_session(
            db,
            project_id="  octo/reg  ",
            agent_type="aider",
            title="  Add retries  ",
            actor="bot",
            source="api",
            workstream_id="ws-3",
            workspace_path="/tmp/ws",
            base_branch="main",
            branch="minipipe/01abc-add-retries",
            pr_number=42,
            metadata={"model": "x"},
            idempotency_key="key-1",
        )
        session_id = s.session_id

    s = load(database, session_id)
    assert len(session_id) == 26 and session_id == session_id.lower() and session_id.isalnum()
    assert (s.project_id, s.agent_type, s.title) == ("octo/reg", "aider", "Add retries")
    assert (s.workstream_id, s.workspace_path, s.base_branch) == ("ws-3", "/tmp/ws", "main")
    assert (s.branch, s.pr_number, s.head_sha) == ("minipipe/01abc-add-retries", 42, None)
    assert s.state == S.CREATED
    assert s.meta == {"model": "x"}
    assert s.version == 1
    assert s.created_at.tzinfo is not None
    assert s.created_at <= s.updated_at and s.created_at <= s.last_activity_at
    with database.unit() as db:
        assert registry.find_by_idempotency_key(db, "key-1").session_id == session_id
        assert registry.find_by_pr(db, "octo/reg", 42).session_id == session_id
        (row,) = audit.history(db, "session", session_id)
    assert (row.from_state, row.to_state, row.outcome, row.actor, row.source) == (
        None,
        "created",
        "moved",
        "bot",
        "api",
    )


def test_ids_sort_by_creation(database: Database) -> None:
    ids = [create(database) for _ in range(30)]
    assert ids == sorted(ids) and len(set(ids)) == 30


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project_id", "no-slash"),
        ("project_id", "a/b/c"),
        ("project_id", "owner/"),
        ("project_id", "owner/na me"),
        ("project_id", ""),
        ("project_id", None),
        ("project_id", "o" * 199 + "/x"),
        ("agent_type", ""),
        ("agent_type", "   "),
        ("agent_type", None),
        ("agent_type", 7),
        ("agent_type", "a" * 101),
        ("title", ""),
        ("title", " \n "),
        ("title", None),
        ("title", "t" * 501),
        ("metadata", ["not", "an", "object"]),
    ],
)
def test_create_validation_names_the_field(database: Database, field: str, value: Any) -> None:
    fields: dict[str, Any] = {"project_id": "octo/reg", "agent_type": "claude", "title": "t"}
    fields[field] = value
    with pytest.raises(Invalid) as caught, database.unit() as db:
        registry.create_session(db, actor="bot", source="test", **fields)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert count(database, AgentSession) == 0
    assert count(database, AuditEntry) == 0


def test_project_id_must_be_owner_slash_name(database: Database) -> None:
    with pytest.raises(Invalid, match="owner/name"), database.unit() as db:
        registry.create_session(
            db, project_id="octo", agent_type="claude", title="t", actor="b", source="t"
        )


# --- get --------------------------------------------------------------------------


def test_get_unknown_session_is_not_found(database: Database) -> None:
    create(database)
    with pytest.raises(NotFound) as caught, database.unit() as db:
        registry.get_session(db, "01nosuchsession0000000000")
    assert "01nosuchsession0000000000" in str(caught.value)


# --- list -------------------------------------------------------------------------


def test_list_filters_by_project_state_and_agent(database: Database) -> None:
    made: list[tuple[str, str, str, str]] = []
    plan = [
        ("octo/a", "claude", []),
        ("octo/a", "aider", [S.ACTIVE]),
        ("octo/b", "claude", [S.ACTIVE]),
        ("octo/b", "codex", [S.ACTIVE, S.PAUSED]),
        ("octo/a", "claude", [S.ACTIVE, S.COMPLETED]),
        ("octo/b", "aider", [S.FAILED]),
        ("octo/a", "codex", [S.ACTIVE]),
    ]
    for project, agent, walk in plan:
        sid = create(database, project_id=project, agent_type=agent)
        move(database, sid, *walk)
        made.append((sid, project, agent, walk[-1] if walk else S.CREATED))

    def listed(**kw: Any) -> list[str]:
        with database.unit() as db:
            return [s.session_id for s in registry.list_sessions(db, **kw).items]

    def expected(pred: Any) -> list[str]:
        return sorted((m[0] for m in made if pred(m)), reverse=True)  # newest first

    assert listed() == expected(lambda m: True)
    assert listed(project_id="octo/a") == expected(lambda m: m[1] == "octo/a")
    assert listed(state="active") == expected(lambda m: m[3] == S.ACTIVE)
    assert listed(agent_type="claude") == expected(lambda m: m[2] == "claude")
    assert listed(project_id="octo/b", state="active") == expected(
        lambda m: m[1] == "octo/b" and m[3] == S.ACTIVE
    )
    assert listed(project_id="octo/a", state="active", agent_type="codex") == expected(
        lambda m: m == (m[0], "octo/a", "codex", S.ACTIVE)
    )
    assert listed(project_id="nobody/here") == []
    with pytest.raises(Invalid) as caught, database.unit() as db:
        registry.list_sessions(db, state="sleeping")
    assert caught.value.field == "state"


def test_get_active_sessions(database: Database) -> None:
    a1 = create(database, project_id="octo/a")
    a2 = create(database, project_id="octo/a")
    b1 = create(database, project_id="octo/b")
    idle = create(database, project_id="octo/a")
    paused = create(database, project_id="octo/a")
    move(database, a1, S.ACTIVE)
    move(database, a2, S.ACTIVE)
    move(database, b1, S.ACTIVE)
    move(database, paused, S.ACTIVE, S.PAUSED)
    with database.unit() as db:
        every = [s.session_id for s in registry.get_active_sessions(db).items]
        in_a = registry.get_active_sessions(db, project_id="octo/a")
        first = registry.get_active_sessions(db, limit=2)
        rest = registry.get_active_sessions(db, cursor=first.next_cursor, limit=2)
    assert every == [b1, a2, a1]
    assert [s.session_id for s in in_a.items] == [a2, a1] and in_a.next_cursor is None
    assert {s.state for s in in_a.items} == {"active"}
    assert idle not in every and paused not in every
    assert [s.session_id for s in first.items + rest.items] == every
    assert rest.next_cursor is None


# --- state moves ------------------------------------------------------------------


def test_pause_resume_complete_success(database: Database) -> None:
    sid = create(database)
    move(database, sid, S.ACTIVE)
    with database.unit() as db:
        registry.pause_session(db, sid, actor="alice", source="cli", reason="lunch")
    assert load(database, sid).state == S.PAUSED
    with database.unit() as db:
        registry.resume_session(db, sid, actor="alice", source="cli")
    assert load(database, sid).state == S.ACTIVE
    before = load(database, sid).last_activity_at
    with database.unit() as db:
        registry.complete_session(db, sid, success=True, actor="bot", source="api")
    s = load(database, sid)
    assert s.state == S.COMPLETED
    assert s.last_activity_at >= before
    with database.unit() as db:
        rows = audit.history(db, "session", sid)
    assert [(r.from_state, r.to_state, r.actor) for r in rows[-3:]] == [
        ("active", "paused", "alice"),
        ("paused", "active", "alice"),
        ("active", "completed", "bot"),
    ]
    assert rows[-3].reason == "lunch"


@pytest.mark.parametrize("walk", [[], [S.ACTIVE], [S.ACTIVE, S.PAUSED]])
def test_complete_without_success_fails_the_session(database: Database, walk: list[str]) -> None:
    sid = create(database)
    move(database, sid, *walk)
    with database.unit() as db:
        registry.complete_session(db, sid, success=False, actor="bot", source="api")
    assert load(database, sid).state == S.FAILED


def test_completing_a_created_session_is_illegal(database: Database) -> None:
    sid = create(database)
    with pytest.raises(IllegalTransition) as caught, database.unit() as db:
        registry.complete_session(db, sid, success=True, actor="bot", source="api")
    assert f"session {sid} cannot move from created to completed" == str(caught.value)
    assert load(database, sid).state == S.CREATED


def test_pausing_a_paused_session_is_refused_and_audited(database: Database) -> None:
    sid = create(database)
    move(database, sid, S.ACTIVE, S.PAUSED)
    version = load(database, sid).version
    with pytest.raises(IllegalTransition), database.unit() as db:
        registry.pause_session(db, sid, actor="alice", source="comment:9")
    s = load(database, sid)
    assert (s.state, s.version) == (S.PAUSED, version)
    with database.unit() as db:
        last = audit.history(db, "session", sid)[-1]
    assert (last.outcome, last.actor, last.source) == ("refused", "alice", "comment:9")


def test_update_state_of_unknown_session_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound), database.unit() as db:
        registry.pause_session(db, "nope", actor="a", source="t")


# --- delete -----------------------------------------------------------------------


def test_delete_archives_the_session_and_keeps_its_patches_and_audit_trail(
    database: Database,
) -> None:
    """A deleted session is a tombstone: unlisted, but its PR stays bound to it and its
    patches (and their decisions) stay for the audit trail and the statistics."""
    keep = create(database, project_id="octo/keep")
    sid = create(database)
    with database.unit() as db:
        registry.get_session(db, sid).pr_number = 12
        doomed = [
            ledger.record_patch(db, registry.get_session(db, sid), sha * 40, actor="b", source="t")
            for sha in "ab"
        ]
        kept = ledger.record_patch(
            db, registry.get_session(db, keep), "c" * 40, actor="b", source="t"
        )
        doomed_ids = [p.ledger_id for p in doomed]
        kept_id = kept.ledger_id
    n_audit = count(database, AuditEntry)

    with database.unit() as db:
        registry.delete_session(db, sid, actor="admin", source="cli")

    with database.unit() as db:
        archived = registry.get_session(db, sid)
        assert archived.archived_at is not None
        assert archived.meta["archived_by"] == "admin"
        assert registry.find_by_pr(db, archived.project_id, 12) == archived  # still bound
        assert [x.session_id for x in registry.list_sessions(db).items] == [keep]
        assert db.scalar(select(func.count()).where(Patch.ledger_id.in_(doomed_ids))) == 2
        assert ledger.list_patches(db, archived=False).items == [ledger.get_patch(db, kept_id)]
        assert ledger.get_patch(db, kept_id).session_id == keep
        assert registry.get_session(db, keep).state == S.CREATED
        for pid in doomed_ids:
            assert [r.to_state for r in ledger.history(db, pid)] == ["created"]
        rows = audit.history(db, "session", sid)
    assert count(database, AuditEntry) == n_audit + 1
    assert [r.outcome for r in rows] == ["moved", "noted"]
    assert (rows[-1].actor, rows[-1].source, rows[-1].reason) == ("admin", "cli", "session deleted")
    assert rows[-1].from_state == "created"
    with pytest.raises(NotFound), database.unit() as db:
        registry.delete_session(db, sid, actor="admin", source="cli")  # gone for a second delete


def test_delete_unknown_session_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound), database.unit() as db:
        registry.delete_session(db, "nope", actor="a", source="t")
    assert count(database, AuditEntry) == 0


# --- optimistic locking -----------------------------------------------------------


def test_stale_expected_version_is_a_conflict(database: Database) -> None:
    sid = create(database)
    seen = load(database, sid).version
    move(database, sid, S.ACTIVE)  # someone else moved it after we looked
    n_audit = count(database, AuditEntry)

    with pytest.raises(Conflict) as caught, database.unit() as db:
        registry.pause_session(db, sid, actor="alice", source="api", expected_version=seen)
    assert sid in str(caught.value)
    s = load(database, sid)
    assert (s.state, s.version) == (S.ACTIVE, seen + 1)
    assert count(database, AuditEntry) == n_audit

    with database.unit() as db:
        registry.pause_session(db, sid, actor="alice", source="api", expected_version=s.version)
    s2 = load(database, sid)
    assert (s2.state, s2.version) == (S.PAUSED, s.version + 1)
