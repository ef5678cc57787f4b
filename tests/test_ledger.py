"""The patch ledger: recording patches, review decisions, their metadata and the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DatabaseError

from minipipe_gh.core.errors import Conflict, IllegalTransition, Invalid, NotFound, Refused
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AuditEntry, Patch, utcnow

P = PatchState
SHA = "0123456789abcdef0123456789abcdef01234567"
REVIEW_KEYS = {
    "manual_review_required",
    "review_status",
    "review_reason",
    "reviewed_by",
    "reviewed_at",
    "review_comment",
}
# Shortest legal walk from created to each state the tests need.
WALKS = {
    P.CREATED: [],
    P.VALIDATED: [P.VALIDATED],
    P.QUARANTINED: [P.QUARANTINED],
    P.AWAITING_REVIEW: [P.VALIDATED, P.AWAITING_REVIEW],
    P.QUEUED: [P.VALIDATED, P.QUEUED],
    P.DROPPED: [P.DROPPED],
    P.APPLIED: [P.VALIDATED, P.QUEUED, P.APPLIED],
}


def new_patch(database: Database, state: str = P.CREATED, **kw: object) -> str:
    with database.unit() as db:
        session = registry.create_session(
            db,
            project_id="octo/ledger",
            agent_type="codex",
            title="fix the thing",
            actor="bot",
            source="test",
            workstream_id="ws-1",
            pr_number=7,
        )
        patch = ledger.record_patch(db, session, SHA, actor="bot", source="test", **kw)
        for step in WALKS[state]:
            ledger.transition(db, patch, step, actor="ci", source="test", reason=f"to {step}")
        return patch.ledger_id


def load(database: Database, ledger_id: str) -> Patch:
    with database.unit() as db:
        return ledger.get_patch(db, ledger_id)


def audit_rows(database: Database, ledger_id: str) -> list[AuditEntry]:
    with database.unit() as db:
        return list(ledger.history(db, ledger_id))


# --- record_patch -----------------------------------------------------------------


def test_record_patch_stores_the_push_and_its_session_link(database: Database) -> None:
    with database.unit() as db:
        session = registry.create_session(
            db,
            project_id="octo/ledger",
            agent_type="codex",
            title="t",
            actor="bot",
            source="test",
            workstream_id="ws-9",
            pr_number=12,
        )
        patch = ledger.record_patch(
            db,
            session,
            SHA,
            actor="bot",
            source="delivery:abc",
            files=3,
            additions=10,
            deletions=4,
            paths=["src/a.py", "src/b.py", "README.md"],
            tree_sha="f" * 40,
            run_id="run-1",
            risk="high",
            risk_reasons=["touches src/auth"],
        )
        session_id, ledger_id = session.session_id, patch.ledger_id

    with database.unit() as db:
        patch = ledger.get_patch(db, ledger_id)
        assert patch.patch_id == SHA
        assert (patch.session_id, patch.project_id, patch.pr_number) == (
            session_id,
            "octo/ledger",
            12,
        )
        assert (patch.run_id, patch.workstream_id) == ("run-1", "ws-9")
        assert patch.state == P.CREATED
        assert (patch.risk, patch.risk_reasons) == ("high", ["touches src/auth"])
        assert (patch.files, patch.additions, patch.deletions, patch.changes) == (3, 10, 4, 14)
        assert patch.paths == ["src/a.py", "src/b.py", "README.md"]
        assert patch.tree_sha == "f" * 40
        assert patch.meta == {"review_status": "pending", "approvals": []}
        assert patch.version == 1
        assert registry.get_session(db, session_id).head_sha == SHA
        (row,) = ledger.history(db, ledger_id)
        assert (row.from_state, row.to_state, row.outcome) == (None, "created", "moved")
        assert (row.actor, row.source) == ("bot", "delivery:abc")
        assert SHA[:12] in row.reason


def test_record_patch_requires_a_sha(database: Database) -> None:
    with pytest.raises(Invalid) as caught, database.unit() as db:
        session = registry.create_session(
            db, project_id="octo/ledger", agent_type="codex", title="t", actor="b", source="t"
        )
        ledger.record_patch(db, session, "", actor="bot", source="test")
    assert caught.value.field == "patch_id"
    assert "patch_id" in str(caught.value)


def test_get_patch_unknown_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound, match="patch nope not found"), database.unit() as db:
        ledger.get_patch(db, "nope")


# --- mark_for_review --------------------------------------------------------------


def test_mark_for_review_moves_a_validated_patch(database: Database) -> None:
    ledger_id = new_patch(database, P.VALIDATED)
    with database.unit() as db:
        ledger.mark_for_review(db, ledger_id, "carol", "touches billing", source="cli")

    patch = load(database, ledger_id)
    assert patch.state == P.AWAITING_REVIEW
    assert patch.meta["manual_review_required"] is True
    assert patch.meta["review_status"] == "pending"
    assert patch.meta["review_reason"] == "touches billing"
    last = audit_rows(database, ledger_id)[-1]
    assert (last.from_state, last.to_state, last.outcome) == (
        "validated",
        "awaiting_review",
        "moved",
    )
    assert (last.actor, last.source, last.reason) == ("carol", "cli", "touches billing")


@pytest.mark.parametrize("state", [P.CREATED, P.QUARANTINED])
def test_mark_for_review_before_checks_finish_is_noted_not_moved(
    database: Database, state: str
) -> None:
    ledger_id = new_patch(database, state)
    with database.unit() as db:
        ledger.mark_for_review(db, ledger_id, "carol", "wait for me")

    patch = load(database, ledger_id)
    assert patch.state == state
    assert patch.meta["manual_review_required"] is True
    assert patch.meta["review_reason"] == "wait for me"
    last = audit_rows(database, ledger_id)[-1]
    assert last.outcome == "noted"
    assert (last.from_state, last.to_state) == (state, state)
    assert last.actor == "carol"
    assert "wait for me" in last.reason


def test_mark_for_review_of_a_dropped_patch_is_refused(database: Database) -> None:
    ledger_id = new_patch(database, P.DROPPED)
    before = load(database, ledger_id)
    with pytest.raises(IllegalTransition), database.unit() as db:
        ledger.mark_for_review(db, ledger_id, "carol", "too late")
    after = load(database, ledger_id)
    assert (after.state, after.version, after.meta) == (before.state, before.version, before.meta)
    assert audit_rows(database, ledger_id)[-1].outcome == "refused"


# --- approve_patch ----------------------------------------------------------------


@pytest.mark.parametrize("state", [P.VALIDATED, P.AWAITING_REVIEW])
def test_single_approval_queues_the_patch(database: Database, state: str) -> None:
    ledger_id = new_patch(database, state)
    t0 = utcnow()
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", "lgtm", source="comment:1")

    patch = load(database, ledger_id)
    assert patch.state == P.QUEUED
    assert patch.meta["approvals"] == ["alice"]
    assert patch.meta["review_status"] == "approved"
    assert patch.meta["reviewed_by"] == "alice"
    assert patch.meta["review_comment"] == "lgtm"
    reviewed_at = datetime.fromisoformat(patch.meta["reviewed_at"])
    assert t0 <= reviewed_at <= utcnow()
    last = audit_rows(database, ledger_id)[-1]
    assert (last.from_state, last.to_state, last.outcome) == (state, "queued", "moved")
    assert (last.actor, last.source, last.reason) == ("alice", "comment:1", "lgtm")


def test_two_required_approvals_need_two_distinct_approvers(database: Database) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)

    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", required_approvals=2)
    patch = load(database, ledger_id)
    assert patch.state == P.AWAITING_REVIEW
    assert patch.meta["approvals"] == ["alice"]
    assert patch.meta["review_status"] == "pending"
    assert "1 of 2" in audit_rows(database, ledger_id)[-1].reason

    # The same approver again still counts once.
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", "really", required_approvals=2)
    patch = load(database, ledger_id)
    assert patch.state == P.AWAITING_REVIEW
    assert patch.meta["approvals"] == ["alice"]
    last = audit_rows(database, ledger_id)[-1]
    assert last.outcome == "noted" and "1 of 2" in last.reason

    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "bob", "ship it", required_approvals=2)
    patch = load(database, ledger_id)
    assert patch.state == P.QUEUED
    assert patch.meta["approvals"] == ["alice", "bob"]
    assert patch.meta["reviewed_by"] == "bob"
    assert patch.meta["review_status"] == "approved"
    moved = [r for r in audit_rows(database, ledger_id) if r.to_state == "queued"]
    assert len(moved) == 1 and moved[0].actor == "bob"


def test_approval_before_checks_finish_is_kept(database: Database) -> None:
    ledger_id = new_patch(database, P.CREATED)
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", "early bird")

    patch = load(database, ledger_id)
    assert patch.state == P.CREATED
    assert patch.meta["approvals"] == ["alice"]
    assert patch.meta["review_comment"] == "early bird"
    assert patch.meta["review_status"] == "pending"
    last = audit_rows(database, ledger_id)[-1]
    assert (last.outcome, last.from_state, last.to_state, last.actor) == (
        "noted",
        "created",
        "created",
        "alice",
    )
    # The approval survives validation, ready to take effect.
    with database.unit() as db:
        ledger.transition(db, ledger_id, P.VALIDATED, actor="ci", source="test", reason="green")
    assert load(database, ledger_id).meta["approvals"] == ["alice"]


@pytest.mark.parametrize("state", [P.DROPPED, P.APPLIED])
def test_approving_a_decided_patch_is_refused_with_an_audit_row(
    database: Database, state: str
) -> None:
    ledger_id = new_patch(database, state)
    before = load(database, ledger_id)
    with pytest.raises(IllegalTransition) as caught, database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice")
    assert ledger_id in str(caught.value) and state in str(caught.value)
    after = load(database, ledger_id)
    assert (after.state, after.version, after.meta) == (before.state, before.version, before.meta)
    last = audit_rows(database, ledger_id)[-1]
    assert (last.outcome, last.from_state, last.to_state, last.actor) == (
        "refused",
        state,
        "queued",
        "alice",
    )


def test_approve_with_a_stale_version_is_a_conflict(database: Database) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)
    version = load(database, ledger_id).version
    with pytest.raises(Conflict), database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", expected_version=version - 1)
    after = load(database, ledger_id)
    assert (after.state, after.version, after.meta["approvals"]) == (
        P.AWAITING_REVIEW,
        version,
        [],
    )


# --- cancel_approval --------------------------------------------------------------


def test_cancel_approval_returns_a_queued_patch_to_review(database: Database) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", "lgtm")
    with database.unit() as db:
        ledger.cancel_approval(db, ledger_id, "alice", source="comment:2")

    patch = load(database, ledger_id)
    assert patch.state == P.AWAITING_REVIEW
    assert patch.meta["approvals"] == []
    assert patch.meta["review_status"] == "pending"
    assert patch.meta["reviewed_by"] is None and patch.meta["reviewed_at"] is None
    last = audit_rows(database, ledger_id)[-1]
    assert (last.from_state, last.to_state, last.outcome) == ("queued", "awaiting_review", "moved")
    assert (last.actor, last.source, last.reason) == ("alice", "comment:2", "approval withdrawn")


def test_cancel_one_of_two_approvals_when_one_is_enough_keeps_it_queued(
    database: Database,
) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice")
        ledger.approve_patch(db, ledger_id, "bob")
    with database.unit() as db:
        ledger.cancel_approval(db, ledger_id, "alice")
    patch = load(database, ledger_id)
    assert patch.state == P.QUEUED
    assert patch.meta["approvals"] == ["bob"]
    assert audit_rows(database, ledger_id)[-1].outcome == "noted"


def test_withdrawing_an_approval_that_does_not_exist_is_refused(database: Database) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice", required_approvals=2)
    before = load(database, ledger_id)

    with pytest.raises(Refused) as caught, database.unit() as db:
        ledger.cancel_approval(db, ledger_id, "mallory")
    assert "mallory" in str(caught.value) and ledger_id in str(caught.value)

    after = load(database, ledger_id)
    assert (after.state, after.version, after.meta) == (before.state, before.version, before.meta)
    last = audit_rows(database, ledger_id)[-1]
    assert (last.outcome, last.actor, last.from_state) == ("refused", "mallory", "awaiting_review")
    assert last.reason == "no approval to withdraw"


# --- reject_patch -----------------------------------------------------------------


@pytest.mark.parametrize("state", [P.VALIDATED, P.AWAITING_REVIEW])
def test_reject_drops_the_patch_with_its_reason(database: Database, state: str) -> None:
    ledger_id = new_patch(database, state)
    with database.unit() as db:
        ledger.reject_patch(db, ledger_id, "bob", "  breaks the build  ", source="comment:3")

    patch = load(database, ledger_id)
    assert patch.state == P.DROPPED
    assert patch.meta["review_status"] == "rejected"
    assert patch.meta["review_reason"] == "breaks the build"
    assert patch.meta["reviewed_by"] == "bob"
    datetime.fromisoformat(patch.meta["reviewed_at"])
    last = audit_rows(database, ledger_id)[-1]
    assert (last.from_state, last.to_state, last.outcome) == (state, "dropped", "moved")
    assert (last.actor, last.source) == ("bob", "comment:3")
    assert last.reason == "rejected: breaks the build"


@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_reject_without_a_reason_is_refused_and_audited(
    database: Database, reason: str | None
) -> None:
    ledger_id = new_patch(database, P.AWAITING_REVIEW)
    before = load(database, ledger_id)
    n_before = len(audit_rows(database, ledger_id))

    with pytest.raises(Refused, match="reason"), database.unit() as db:
        ledger.reject_patch(db, ledger_id, "bob", reason)

    after = load(database, ledger_id)
    assert (after.state, after.version, after.meta) == (before.state, before.version, before.meta)
    rows = audit_rows(database, ledger_id)
    assert len(rows) == n_before + 1
    assert (rows[-1].outcome, rows[-1].actor, rows[-1].from_state, rows[-1].to_state) == (
        "refused",
        "bob",
        "awaiting_review",
        "dropped",
    )
    assert rows[-1].reason == "rejection without a reason"


def test_rejecting_a_dropped_patch_is_refused(database: Database) -> None:
    ledger_id = new_patch(database, P.DROPPED)
    with pytest.raises(IllegalTransition), database.unit() as db:
        ledger.reject_patch(db, ledger_id, "bob", "again")
    assert load(database, ledger_id).meta.get("review_status") == "pending"
    assert audit_rows(database, ledger_id)[-1].outcome == "refused"


# --- review metadata --------------------------------------------------------------


def test_review_metadata_uses_the_spec_keys(database: Database) -> None:
    approved = new_patch(database, P.VALIDATED)
    with database.unit() as db:
        ledger.mark_for_review(db, approved, "carol", "big change")
        ledger.approve_patch(db, approved, "alice", "fine by me")
    meta = load(database, approved).meta
    assert set(meta) == REVIEW_KEYS | {"approvals", "approvers"}
    [approver] = meta["approvers"]
    sha = load(database, approved).patch_id
    assert (approver["login"], approver["id"], approver["sha"]) == ("alice", None, sha)
    assert meta["manual_review_required"] is True
    assert (meta["review_status"], meta["review_reason"]) == ("approved", "big change")
    assert (meta["reviewed_by"], meta["review_comment"]) == ("alice", "fine by me")

    rejected = new_patch(database, P.VALIDATED)
    with database.unit() as db:
        ledger.mark_for_review(db, rejected, "carol", "big change")
        ledger.reject_patch(db, rejected, "bob", "too big")
    meta = load(database, rejected).meta
    assert REVIEW_KEYS - {"review_comment"} <= set(meta)
    assert meta["review_status"] in {"pending", "approved", "rejected"}
    assert (meta["review_status"], meta["review_reason"], meta["reviewed_by"]) == (
        "rejected",
        "too big",
        "bob",
    )


def test_custom_metadata_is_kept_alongside_review_fields(database: Database) -> None:
    ledger_id = new_patch(database, P.VALIDATED, metadata={"source_tool": "aider"})
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice")
    meta = load(database, ledger_id).meta
    assert meta["source_tool"] == "aider"
    assert meta["review_status"] == "approved"


# --- history and the audit trail --------------------------------------------------


def test_history_is_in_order_and_chains(database: Database) -> None:
    ledger_id = new_patch(database, P.CREATED)
    walk = [P.QUARANTINED, P.VALIDATED, P.AWAITING_REVIEW, P.QUEUED, P.AWAITING_REVIEW]
    for step in walk:
        with database.unit() as db:
            ledger.transition(db, ledger_id, step, actor="ci", source="test", reason=str(step))
    with pytest.raises(IllegalTransition), database.unit() as db:
        ledger.transition(db, ledger_id, P.COMMITTED, actor="eve", source="test")
    for step in (P.QUEUED, P.APPLIED, P.VERIFIED, P.COMMITTED):
        with database.unit() as db:
            ledger.transition(db, ledger_id, step, actor="ci", source="test", reason=str(step))

    rows = audit_rows(database, ledger_id)
    ids = [r.id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [r.at for r in rows]
    assert times == sorted(times)
    moved = [r for r in rows if r.outcome == "moved"]
    assert [r.to_state for r in moved] == [
        "created",
        *walk,
        "queued",
        "applied",
        "verified",
        "committed",
    ]
    for prev, nxt in zip(moved, moved[1:], strict=False):
        assert nxt.from_state == prev.to_state
    refused = [r for r in rows if r.outcome == "refused"]
    assert [(r.from_state, r.to_state, r.actor) for r in refused] == [
        ("awaiting_review", "committed", "eve")
    ]
    assert rows.index(refused[0]) == len(walk) + 1


def test_every_transition_has_a_complete_audit_row(database: Database) -> None:
    t0 = utcnow()
    a = new_patch(database, P.VALIDATED)
    b = new_patch(database, P.CREATED)
    with database.unit() as db:
        ledger.mark_for_review(db, a, "carol", "please look", source="api")
        ledger.approve_patch(db, a, "alice", "ok", source="comment:10")
        ledger.cancel_approval(db, a, "alice", source="comment:11")
        ledger.reject_patch(db, a, "bob", "no", source="cli")
        ledger.transition(db, b, P.QUARANTINED, actor="ci", source="delivery:1", reason="red")
        ledger.transition(db, b, P.DROPPED, actor="ci", source="delivery:2", reason="closed")
    t1 = utcnow()

    with database.unit() as db:
        patches = {a: ledger.get_patch(db, a), b: ledger.get_patch(db, b)}
        rows = [r for pid in (a, b) for r in ledger.history(db, pid)]
    moved = [r for r in rows if r.outcome == "moved" and r.from_state is not None]
    assert len(moved) == 7  # a: ->validated, ->awaiting, ->queued, ->awaiting, ->dropped; b: 2
    for row in rows:
        assert row.entity == "patch"
        assert row.project_id == "octo/ledger"
        assert row.actor and row.source and row.reason
        assert row.to_state is not None
        assert row.at.tzinfo is not None
        assert t0 - timedelta(seconds=1) <= row.at <= t1 + timedelta(seconds=1)
    for row in moved:
        assert row.from_state != row.to_state
    # The trail's last move agrees with the stored state.
    for pid, patch in patches.items():
        last_move = [r for r in rows if r.entity_id == pid and r.outcome == "moved"][-1]
        assert last_move.to_state == patch.state


def test_audit_log_refuses_update_and_delete(database: Database) -> None:
    ledger_id = new_patch(database, P.VALIDATED)
    original = [(r.id, r.reason) for r in audit_rows(database, ledger_id)]

    with pytest.raises(DatabaseError, match="append-only"), database.unit() as db:
        db.execute(update(AuditEntry).values(reason="rewritten"))
    with pytest.raises(DatabaseError, match="append-only"), database.unit() as db:
        db.execute(delete(AuditEntry).where(AuditEntry.entity_id == ledger_id))
    with pytest.raises(DatabaseError, match="append-only"), database.unit() as db:
        db.execute(text("DELETE FROM audit_log"))
    with pytest.raises(DatabaseError, match="append-only"), database.unit() as db:
        row = db.scalars(select(AuditEntry).where(AuditEntry.entity_id == ledger_id)).first()
        row.actor = "someone-else"
    with pytest.raises(DatabaseError, match="append-only"), database.unit() as db:
        db.delete(db.scalars(select(AuditEntry)).first())

    assert [(r.id, r.reason) for r in audit_rows(database, ledger_id)] == original
    with database.unit() as db:
        assert db.scalar(select(func.count()).where(AuditEntry.actor == "someone-else")) == 0


# --- core bugs found while writing these tests ------------------------------------


def test_a_patch_from_an_earlier_unit_moves_for_real_or_not_at_all(database: Database) -> None:
    """A Patch from an earlier unit must not get an audit row without its move.

    ``ledger.transition`` takes ``str | Patch``. A Patch loaded in an earlier unit
    (``expire_on_commit=False`` keeps it usable) is not attached to the new unit's
    session, so ``advance`` sets ``obj.state`` on an object nothing will flush,
    while the audit row it adds *is* flushed: the trail records a move that never
    happened. Either the move must persist or the call must be refused.
    """
    ledger_id = new_patch(database, P.VALIDATED)
    rows_before = len(audit_rows(database, ledger_id))
    with database.unit() as db:
        held = ledger.get_patch(db, ledger_id)
    moved_ok = True
    try:
        with database.unit() as db:
            ledger.transition(db, held, P.AWAITING_REVIEW, actor="x", source="test", reason="r")
    except Exception:  # refusing is acceptable; lying in the audit trail is not
        moved_ok = False
    stored = load(database, ledger_id).state
    last = audit_rows(database, ledger_id)[-1]
    if moved_ok:
        assert stored == P.AWAITING_REVIEW, (
            f"audit trail says {last.from_state} -> {last.to_state} ({last.outcome}) "
            f"but the patch is still {stored}"
        )
    else:
        assert stored == P.VALIDATED
        assert len(audit_rows(database, ledger_id)) == rows_before, "no row for a non-move"


def test_mark_for_review_honours_expected_version_before_checks_finish(
    database: Database,
) -> None:
    """CORE BUG (ledger.mark_for_review): ``expected_version`` is only checked on the
    ``transition`` branch; on a created/quarantined patch a stale version is accepted
    and the metadata is rewritten. It should raise ``Conflict`` as approve_patch does.
    """
    ledger_id = new_patch(database, P.CREATED)
    stale = load(database, ledger_id).version
    with database.unit() as db:
        ledger.approve_patch(db, ledger_id, "alice")  # someone else changed it: version bumps
    assert load(database, ledger_id).version == stale + 1
    with pytest.raises(Conflict), database.unit() as db:
        ledger.mark_for_review(db, ledger_id, "carol", "late", expected_version=stale)


@pytest.mark.parametrize(
    ("state", "call"),
    [
        (P.CREATED, lambda db, p: ledger.approve_patch(db, p, "alice", "early")),
        (P.CREATED, lambda db, p: ledger.mark_for_review(db, p, "carol", "look")),
        (
            P.AWAITING_REVIEW,
            lambda db, p: ledger.approve_patch(db, p, "alice", required_approvals=2),
        ),
    ],
    ids=["approve-before-checks", "review-before-checks", "approval-1-of-2"],
)
def test_review_notes_on_a_patch_from_an_earlier_unit_are_kept_or_refused(
    database: Database, state: str, call: Any
) -> None:
    """CORE BUG (ledger.approve_patch / mark_for_review / cancel_approval, the paths that
    note instead of moving): the detached-row guard is in ``transitions.advance`` only.
    Given a Patch loaded in an earlier unit, these paths set ``patch.meta`` on an object
    the unit never flushes, yet ``_note`` adds a "noted" audit row that is committed:
    the trail says "approval 1 of 1" while ``meta["approvals"]`` stays empty. They
    should refuse as ``advance`` does (or attach the row), never keep only the note.
    """
    ledger_id = new_patch(database, state)
    with database.unit() as db:
        held = ledger.get_patch(db, ledger_id)
    rows_before = len(audit_rows(database, ledger_id))
    meta_before = load(database, ledger_id).meta
    try:
        with database.unit() as db:
            call(db, held)
    except ValueError:  # refused, as advance() refuses a detached row
        assert len(audit_rows(database, ledger_id)) == rows_before
        assert load(database, ledger_id).meta == meta_before
        return
    stored = load(database, ledger_id).meta
    last = audit_rows(database, ledger_id)[-1]
    assert stored != meta_before, (
        f"audit trail noted {last.reason!r} but the patch metadata was not saved: {stored}"
    )
