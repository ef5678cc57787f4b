"""Two writers deciding the same patch at the same moment: exactly one wins.

Each writer reads the patch (version v) and waits on a barrier, so both have
decided on the same version; then each applies its decision in its own write
unit with ``expected_version=v``. Writes are serialized (``BEGIN IMMEDIATE``),
so the second one sees the first one's version bump and gets ``Conflict``.

The read happens in a read-only unit: a write unit takes SQLite's write lock at
its first statement, so two write units that both read and then wait on a
barrier would wait on each other forever. That is also how the edges use it: an
API client or a comment decides on what it saw earlier, then writes.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from minipipe_gh.core.errors import Conflict
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import Database

P = PatchState
ROUNDS = 20


def seed(database: Database, n: int, state: str = P.AWAITING_REVIEW) -> list[str]:
    """``n`` patches in ``state``, each on its own session."""
    ids = []
    with database.unit() as db:
        for i in range(n):
            s = registry.create_session(
                db, project_id="octo/race", agent_type="codex", title=f"t{i}", actor="b", source="t"
            )
            patch = ledger.record_patch(db, s, f"{i:040x}", actor="b", source="t")
            ledger.transition(db, patch, P.VALIDATED, actor="ci", source="t", reason="green")
            if state == P.AWAITING_REVIEW:
                ledger.transition(db, patch, state, actor="ci", source="t", reason="high risk")
            ids.append(patch.ledger_id)
    return ids


def decide(database: Database, ledger_id: str, action: str, version: int) -> None:
    with database.unit() as db:
        if action == "approve":
            ledger.approve_patch(db, ledger_id, "alice", "lgtm", expected_version=version)
        else:
            ledger.reject_patch(db, ledger_id, "bob", "no", expected_version=version)


def race_one(database: Database, ledger_id: str, action: str, barrier: Any) -> str:
    """Read, meet the other writer, decide. Returns "won" or "conflict"."""
    with database.unit() as db:
        version = ledger.get_patch(db, ledger_id).version
    barrier.wait(timeout=30)
    try:
        decide(database, ledger_id, action, version)
    except Conflict:
        return "conflict"
    return "won"


def check_outcome(database: Database, ledger_id: str, results: dict[str, str]) -> str:
    assert sorted(results.values()) == ["conflict", "won"], results
    winner = next(action for action, r in results.items() if r == "won")
    with database.unit() as db:
        patch = ledger.get_patch(db, ledger_id)
        moves = [r for r in ledger.history(db, ledger_id) if r.from_state == "awaiting_review"]
    if winner == "approve":
        assert patch.state == P.QUEUED
        assert patch.meta["review_status"] == "approved"
        assert patch.meta["approvals"] == ["alice"]
    else:
        assert patch.state == P.DROPPED
        assert patch.meta["review_status"] == "rejected"
        assert patch.meta["approvals"] == []
    # One decision made it into the trail; the loser left nothing behind.
    assert [(r.to_state, r.outcome) for r in moves] == [(patch.state, "moved")]
    return winner


def test_two_threads_decide_the_same_patch(database: Database) -> None:
    winners = []
    for ledger_id in seed(database, ROUNDS):
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def run(action: str, ledger_id: str, barrier: Any, results: dict[str, str]) -> None:
            results[action] = race_one(database, ledger_id, action, barrier)

        threads = [
            threading.Thread(target=run, args=(action, ledger_id, barrier, results))
            for action in ("approve", "reject")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a writer hung"
        winners.append(check_outcome(database, ledger_id, results))
    assert len(winners) == ROUNDS


def test_a_stale_decision_after_a_finished_one_is_a_conflict(database: Database) -> None:
    """The deterministic half of the race: the loser's exact sequence."""
    (ledger_id,) = seed(database, 1)
    with database.unit() as db:
        version = ledger.get_patch(db, ledger_id).version
    decide(database, ledger_id, "reject", version)
    with pytest.raises(Conflict, match="someone else"):
        decide(database, ledger_id, "approve", version)
    results = {"reject": "won", "approve": "conflict"}
    assert check_outcome(database, ledger_id, results) == "reject"


# --- two OS processes on one SQLite file -----------------------------------------


def _process_writer(db_url: str, action: str, ids: list[str], barrier: Any, out: Any) -> None:
    database = Database(db_url)
    try:
        for ledger_id in ids:
            out.put((ledger_id, action, race_one(database, ledger_id, action, barrier)))
    except BaseException as err:  # report, so the parent fails with the cause
        out.put((None, action, f"error: {err!r}"))
        raise
    finally:
        database.dispose()


def test_two_processes_decide_the_same_patches(database: Database, db_url: str) -> None:
    ids = seed(database, ROUNDS)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process_writer, args=(db_url, action, ids, barrier, out))
        for action in ("approve", "reject")
    ]
    for p in procs:
        p.start()
    by_patch: dict[str, dict[str, str]] = {}
    try:
        for _ in range(2 * ROUNDS):
            ledger_id, action, result = out.get(timeout=120)
            assert ledger_id is not None, f"{action} writer failed: {result}"
            by_patch.setdefault(ledger_id, {})[action] = result
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert set(by_patch) == set(ids)
    for ledger_id in ids:
        check_outcome(database, ledger_id, by_patch[ledger_id])
