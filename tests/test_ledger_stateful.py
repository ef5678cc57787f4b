"""The patch ledger as a state machine under random operations, on a real database.

Hypothesis drives the ledger's public operations (record, transition, approve,
withdraw an approval, reject with or without a reason, mark for review,
supersede by a new push) in random order against a small reference model of
the spec's rules. After every step the database must agree with the model and:

- every stored state is a ``PatchState`` and every stored move is in ``TRANSITIONS``;
- a refused attempt changes nothing but appends exactly one "refused" audit row;
- replaying a patch's "moved" audit rows from nothing reproduces its state;
- the version goes up on every committed change, and only then;
- a session has at most one open patch.

One database serves the whole run (a fresh one per example would be too
slow); each example opens sessions of its own, so examples never meet.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from minipipe_gh.core.errors import Refused
from minipipe_gh.core.patch_states import OPEN, TRANSITIONS, PatchState
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AuditEntry, Patch

P = PatchState
PROJECT = "octo/stateful"
REVIEWERS = ("alice", "bob", "carol")
STATES = sorted(P, key=str)
SETTINGS = settings(
    max_examples=50,
    stateful_step_count=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_shas = itertools.count(1)


@pytest.fixture(scope="module")
def ledger_db(make_db: Callable[[], str]) -> Iterator[Database]:
    database = Database(make_db())
    yield database
    database.dispose()


# --- the reference model ------------------------------------------------------------------


@dataclass
class Model:
    """What the spec says one patch should look like."""

    session_id: str
    state: P = P.CREATED
    approvals: list[str] = field(default_factory=list)
    review_status: str = "pending"
    manual_review_required: bool = False


@dataclass(frozen=True)
class Row:
    """One patch as stored, with its audit trail."""

    state: str
    version: int
    meta: dict[str, Any]
    updated_at: Any
    session_id: str
    trail: tuple[tuple[str | None, str | None, str], ...]  # (from, to, outcome)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(outcome for _f, _t, outcome in self.trail)


def snapshot(database: Database, ids: list[str]) -> dict[str, Row]:
    with database.unit() as db:
        patches = db.scalars(select(Patch).where(Patch.ledger_id.in_(ids))).all()
        trail: dict[str, list[tuple[str | None, str | None, str]]] = {i: [] for i in ids}
        for a in db.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity == "patch", AuditEntry.entity_id.in_(ids))
            .order_by(AuditEntry.id)
        ):
            trail[a.entity_id].append((a.from_state, a.to_state, a.outcome))
        return {
            p.ledger_id: Row(
                p.state,
                p.version,
                dict(p.meta),
                p.updated_at,
                p.session_id,
                tuple(trail[p.ledger_id]),
            )
            for p in patches
        }


def replay(trail: tuple[tuple[str | None, str | None, str], ...]) -> str | None:
    """Fold the "moved" rows from nothing; every step must follow the table."""
    state: str | None = None
    for from_state, to_state, outcome in trail:
        if outcome != "moved":
            continue
        if state is None:
            assert (from_state, to_state) == (None, P.CREATED), trail
        else:
            assert from_state == state, f"a move from {from_state} while at {state}: {trail}"
            assert P(to_state) in TRANSITIONS[P(from_state)], f"{from_state} → {to_state}"
        state = to_state
    return state


# --- the machine ----------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    database: Database  # set by the test

    sessions = Bundle("sessions")
    patches = Bundle("patches")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Model] = {}
        self.rows: dict[str, Row] = {}

    # -- helpers -----------------------------------------------------------------------

    def _new_session(self, db: Any) -> str:
        s = registry.create_session(
            db,
            project_id=PROJECT,
            agent_type="codex",
            title="stateful",
            actor="bot",
            source="test:stateful",
            pr_number=next(_shas),
        )
        return s.session_id

    def _record(self, db: Any, session_id: str) -> str:
        session = registry.get_session(db, session_id)
        patch = ledger.record_patch(
            db, session, f"{next(_shas):040x}", actor="bot", source="test:stateful"
        )
        self.model[patch.ledger_id] = Model(session_id)
        return patch.ledger_id

    def _act(
        self,
        target: str | None,
        op: Callable[[Any], None],
        *,
        refused: bool,
        expect: dict[str, str] | None = None,
    ) -> None:
        """Run ``op`` in one unit of work; check its outcome against the model.

        ``expect`` maps ledger ids to the audit outcome the step must add
        ("moved", "noted" or "refused"); every other patch must not change at all.
        """
        before = self.rows
        got_refused = False
        try:
            with self.database.unit() as db:
                op(db)
        except Refused:
            got_refused = True
        assert got_refused == refused, f"refused={got_refused}, the model says {refused}"
        after = snapshot(self.database, list(self.model))
        expect = dict(expect or {})
        if refused and target is not None:
            expect = {target: "refused"}
        for ledger_id, row in after.items():
            old = before.get(ledger_id)
            added = row.trail[len(old.trail) :] if old else row.trail
            if old is not None:
                assert row.trail[: len(old.trail)] == old.trail, "the audit trail was edited"
            want = expect.get(ledger_id)
            if old is None:
                assert [o for _f, _t, o in added] == ["moved"], added  # just recorded
                continue
            if want is None:
                assert row == old, f"patch {ledger_id} changed though the step was not about it"
                continue
            assert [o for _f, _t, o in added] == [want], (want, added)
            if want == "refused":
                # nothing changed; the refusal names the state it was refused in
                assert (row.state, row.version, row.meta, row.updated_at) == (
                    old.state,
                    old.version,
                    old.meta,
                    old.updated_at,
                )
                assert added[0][0] == old.state
            elif (row.state, row.meta) != (old.state, old.meta):
                assert row.version > old.version, "a committed change must bump the version"
            else:
                assert row.version == old.version
        self.rows = after

    # -- rules ---------------------------------------------------------------------------

    @initialize(target=patches)
    def first_push(self) -> str:
        with self.database.unit() as db:
            ledger_id = self._record(db, self._new_session(db))
        self.rows = snapshot(self.database, list(self.model))
        return ledger_id

    @rule(target=patches)
    def record(self) -> str:
        """A push on another session of the same example."""
        created: list[str] = []
        self._act(
            None, lambda db: created.append(self._record(db, self._new_session(db))), refused=False
        )
        return created[0]

    @rule(patch=patches, to=st.sampled_from(STATES))
    def transition(self, patch: str, to: P) -> None:
        m = self.model[patch]
        legal = to in TRANSITIONS[m.state]
        self._act(
            patch,
            lambda db: ledger.transition(db, patch, to, actor="ci", source="test", reason="rule"),
            refused=not legal,
            expect={patch: "moved"},
        )
        if legal:
            m.state = to

    @rule(patch=patches, data=st.data())
    def advance(self, patch: str, data: st.DataObject) -> None:
        """A legal move forward (random targets alone would mostly be refused)."""
        legal = sorted(TRANSITIONS[self.model[patch].state] - {P.DROPPED}, key=str)
        self.transition(patch, data.draw(st.sampled_from(legal or STATES), label="to"))

    @rule(
        patch=patches,
        reviewer=st.sampled_from(REVIEWERS),
        required=st.integers(1, 2),
        comment=st.sampled_from([None, "lgtm"]),
    )
    def approve(self, patch: str, reviewer: str, required: int, comment: str | None) -> None:
        m = self.model[patch]
        allowed = m.state in (P.CREATED, P.QUARANTINED, P.VALIDATED, P.AWAITING_REVIEW, P.QUEUED)
        given = m.approvals + ([] if reviewer in m.approvals else [reviewer])
        queues = allowed and m.state in (P.VALIDATED, P.AWAITING_REVIEW) and len(given) >= required
        self._act(
            patch,
            lambda db: ledger.approve_patch(
                db, patch, reviewer, comment, source="test", required_approvals=required
            ),
            refused=not allowed,
            expect={patch: "moved" if queues else "noted"},
        )
        if allowed:
            m.approvals = given
        if queues:
            m.state, m.review_status = P.QUEUED, "approved"

    @rule(patch=patches, reviewer=st.sampled_from(REVIEWERS), required=st.integers(1, 2))
    def cancel_approval(self, patch: str, reviewer: str, required: int) -> None:
        m = self.model[patch]
        has = reviewer in m.approvals
        left = [a for a in m.approvals if a != reviewer]
        back = has and m.state == P.QUEUED and len(left) < required
        self._act(
            patch,
            lambda db: ledger.cancel_approval(
                db, patch, reviewer, source="test", required_approvals=required
            ),
            refused=not has,
            expect={patch: "moved" if back else "noted"},
        )
        if has:
            m.approvals = left
        if back:
            m.state, m.review_status = P.AWAITING_REVIEW, "pending"

    @rule(
        patch=patches,
        reviewer=st.sampled_from(REVIEWERS),
        reason=st.sampled_from([None, "", "   ", "breaks the login form"]),
    )
    def reject(self, patch: str, reviewer: str, reason: str | None) -> None:
        m = self.model[patch]
        ok = bool(reason and reason.strip()) and P.DROPPED in TRANSITIONS[m.state]
        self._act(
            patch,
            lambda db: ledger.reject_patch(db, patch, reviewer, reason, source="test"),
            refused=not ok,
            expect={patch: "moved"},
        )
        if ok:
            m.state, m.review_status = P.DROPPED, "rejected"

    @rule(
        patch=patches,
        reviewer=st.sampled_from(REVIEWERS),
        reason=st.sampled_from([None, "touches auth"]),
    )
    def mark_for_review(self, patch: str, reviewer: str, reason: str | None) -> None:
        m = self.model[patch]
        early = m.state in (P.CREATED, P.QUARANTINED)
        moves = P.AWAITING_REVIEW in TRANSITIONS[m.state]
        self._act(
            patch,
            lambda db: ledger.mark_for_review(db, patch, reviewer, reason, source="test"),
            refused=not (early or moves),
            expect={patch: "noted" if early else "moved"},
        )
        if early or moves:
            m.review_status, m.manual_review_required = "pending", True
        if moves and not early:
            m.state = P.AWAITING_REVIEW

    @rule(target=patches, session=sessions)
    def supersede(self, session: str) -> str:
        """A new push: record the new head, drop the open patch (as the workflow does)."""
        open_ids = [i for i, m in self.model.items() if m.session_id == session and m.state in OPEN]
        created: list[str] = []

        def push(db: Any) -> None:
            old = ledger.open_patch(db, session)
            assert (old.ledger_id if old else None) == (open_ids[0] if open_ids else None)
            new = self._record(db, session)
            created.append(new)
            if old is not None:
                sha = ledger.get_patch(db, new).patch_id
                ledger.supersede(db, old, sha, actor="bot", source="test")

        self._act(None, push, refused=False, expect={i: "moved" for i in open_ids})
        for i in open_ids:
            self.model[i].state = P.DROPPED
        return created[0]

    @rule(target=sessions, patch=patches)
    def session_of(self, patch: str) -> str:
        return self.model[patch].session_id

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        assert set(self.rows) == set(self.model)
        open_per_session: Counter[str] = Counter()
        for ledger_id, row in self.rows.items():
            m = self.model[ledger_id]
            assert row.state in set(P), row.state
            assert row.state == m.state, (ledger_id, row.state, m.state)
            assert replay(row.trail) == row.state
            assert row.meta.get("approvals", []) == m.approvals
            assert row.meta.get("review_status") == m.review_status
            assert bool(row.meta.get("manual_review_required")) == m.manual_review_required
            if row.state in OPEN:
                open_per_session[row.session_id] += 1
        assert all(n == 1 for n in open_per_session.values()), open_per_session


def test_the_ledger_follows_its_rules_under_random_operations(ledger_db: Database) -> None:
    LedgerMachine.database = ledger_db
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
    # the run really exercised the database: every state was reached through a legal
    # move, and every kind of audit outcome was written
    with ledger_db.unit() as db:
        rows = db.execute(
            select(AuditEntry.outcome, AuditEntry.to_state).where(AuditEntry.entity == "patch")
        ).all()
    assert {outcome for outcome, _to in rows} == {"moved", "noted", "refused"}
    assert {to for outcome, to in rows if outcome == "moved"} == set(P)
