"""Group commit of short transactions (``GroupCommit``, the worker's moves): jobs queued
while a commit is under way share the next one; each caller returns only once its own
statements are committed; a job's error costs the others nothing."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select

from minipipe_gh.store.db import Database, Driver, GroupCommit
from minipipe_gh.store.models import Installation, utcnow
from tests.support import in_transaction

_T = Installation.__table__
_ADD = insert(_T).values(
    installation_id=bindparam("id"),
    account=bindparam("account"),
    created_at=bindparam("at", type_=_T.c.created_at.type),
    updated_at=bindparam("at", type_=_T.c.updated_at.type),
)


class Lost(Exception):
    """Raised by a job before it wrote anything (the worker's lost lease)."""


def _add(n: int) -> Any:
    def job(tx: Driver) -> int:
        tx.execute(_ADD, {"id": n, "account": f"acct-{n}", "at": utcnow()})
        return n

    return job


def _stored(database: Database) -> set[int]:
    with database.unit() as s:
        return set(s.scalars(select(Installation.installation_id)))


@pytest.fixture
def commits(database: Database) -> Any:
    seen: list[str] = []

    def note(_info: dict[str, Any], sql: str) -> None:
        if sql == "COMMIT":
            seen.append(sql)

    database.observers.append(note)
    yield seen
    database.observers.remove(note)


def _run_behind_a_slow_leader(
    group: GroupCommit, jobs: dict[int, Any], *, leader_wait_s: float = 0.3, single: bool = False
) -> dict[int, Any]:
    """Job 0 leads and holds its commit open until every other job is queued behind it
    (each ``single`` as given); returns each job's result or error."""
    out: dict[int, Any] = {}
    queued = threading.Event()

    def slow_leader(tx: Driver) -> int:
        queued.wait(5)
        time.sleep(leader_wait_s)  # the others are queued by now: they share the next commit
        return _add(0)(tx)

    def call(n: int, fn: Any) -> None:
        try:
            out[n] = group.run(fn, single=single and n > 0)
        except Exception as err:  # noqa: BLE001 - the test reads each job's outcome
            out[n] = err

    leader = threading.Thread(target=call, args=(0, slow_leader))
    leader.start()
    time.sleep(0.1)  # the leader is inside its transaction
    threads = [threading.Thread(target=call, args=(n, fn)) for n, fn in jobs.items()]
    for t in threads:
        t.start()
    queued.set()
    for t in [leader, *threads]:
        t.join(10)
    return out


def test_jobs_queued_behind_a_commit_share_the_next_one(
    database: Database, commits: list[str]
) -> None:
    group = GroupCommit(database, isolated=(Lost,))
    out = _run_behind_a_slow_leader(group, {n: _add(n) for n in range(1, 9)})
    assert out == {n: n for n in range(9)}  # each caller got its own result
    assert _stored(database) == set(range(9))
    assert len(commits) == 2  # the leader's, then one for the eight queued behind it


def test_a_caller_returns_only_once_its_statements_are_committed(database: Database) -> None:
    group = GroupCommit(database, isolated=(Lost,))
    for n in range(20, 25):
        assert group.run(_add(n)) == n
        assert n in _stored(database)  # visible to another connection at once


def test_an_isolated_error_fails_its_own_job_and_the_rest_commit_together(
    database: Database, commits: list[str]
) -> None:
    group = GroupCommit(database, isolated=(Lost,))

    def lost(_tx: Driver) -> int:
        raise Lost("another worker holds it")

    out = _run_behind_a_slow_leader(group, {1: _add(1), 2: lost, 3: _add(3)})
    assert isinstance(out[2], Lost)
    assert {out[0], out[1], out[3]} == {0, 1, 3}
    assert _stored(database) == {0, 1, 3}
    assert len(commits) == 2  # the lost job did not break the shared transaction


def test_any_other_error_is_its_jobs_alone_the_others_still_commit(database: Database) -> None:
    group = GroupCommit(database, isolated=(Lost,))

    def wrote_then_failed(tx: Driver) -> int:
        tx.execute(_ADD, {"id": 2, "account": "half-done", "at": utcnow()})
        raise RuntimeError("disk I/O error")

    duplicate = _add(1)  # the same key as job 1: the database refuses one of them
    out = _run_behind_a_slow_leader(group, {1: _add(1), 2: wrote_then_failed, 3: duplicate})
    assert isinstance(out[2], RuntimeError)
    errors = [n for n in (1, 3) if isinstance(out[n], Exception)]
    assert len(errors) == 1  # one of the two inserts of key 1 is refused, the other stored
    assert _stored(database) == {0, 1}  # nothing of the failed job; the rest committed


def test_a_lone_single_statement_job_commits_alone_on_postgresql(
    database: Database, backend: str
) -> None:
    """Alone in its batch, a job of one statement runs in autocommit on PostgreSQL: its
    statement is its one round trip (BEGIN and COMMIT would be two more). A job not
    marked ``single`` keeps its transaction; SQLite's are transactions still."""
    group = GroupCommit(database, isolated=(Lost,))
    seen: list[tuple[bool, bool]] = []

    def job(n: int) -> Any:
        def run(tx: Driver) -> int:
            _add(n)(tx)
            seen.append((tx.alone, in_transaction(tx, backend)))
            return n

        return run

    assert group.run(job(40), single=True) == 40
    assert group.run(job(41)) == 41
    postgres = backend == "postgres"
    assert seen == [(postgres, not postgres), (False, True)]
    assert _stored(database) == {40, 41}  # both committed


def test_single_jobs_queued_together_still_share_one_transaction(
    database: Database, commits: list[str]
) -> None:
    group = GroupCommit(database, isolated=(Lost,))
    alone: list[bool] = []

    def single(n: int) -> Any:
        def run(tx: Driver) -> int:
            alone.append(tx.alone)
            return _add(n)(tx)

        return run

    out = _run_behind_a_slow_leader(group, {n: single(n) for n in range(1, 5)}, single=True)
    assert out == {n: n for n in range(5)}
    assert alone == [False] * 4  # four of them in one batch: one transaction, not four
    assert len(commits) == 2
