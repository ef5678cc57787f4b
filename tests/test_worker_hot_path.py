"""The worker's hot path: a poke wakes one idle loop, and a loop that finishes a delivery
leases the next in the same transaction when its finish made one due, its claim saw
more, or a stored delivery is not claimed yet, without giving up what a finish must
save."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import Wakeup, Worker
from minipipe_gh.gh import effects
from minipipe_gh.review.context import Context
from minipipe_gh.store.db import GroupCommit
from minipipe_gh.store.models import Delivery
from tests.support import MOVES, WRITES, in_transaction, payload, watching_statements

SENT: list[str] = []


def _write(ectx: effects.EffectContext, spec: dict[str, Any]) -> None:
    SENT.append(ectx.delivery_id)


EXECUTORS = effects.Executors(gate={"test.write": _write}, best_effort={})


def _router() -> Router:
    router = Router()

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        ctx.effect("test.write", n=1)

    return router


def _opened(number: int) -> dict[str, Any]:
    body = payload("pull_request.opened")
    body["number"] = number
    body["pull_request"]["number"] = number
    return body


def _statuses(rt: Any) -> dict[str, tuple[str, str | None]]:
    with rt.database.unit() as s:
        rows = s.execute(select(Delivery.delivery_id, Delivery.status, Delivery.lease_owner))
        return {ident: (status, owner) for ident, status, owner in rows}


def _seqs(rt: Any) -> dict[str, int]:
    with rt.database.unit() as s:
        return dict(s.execute(select(Delivery.delivery_id, Delivery.seq)).all())  # type: ignore[arg-type]


@pytest.fixture
def write_commits(rt: Any) -> Iterator[list[int]]:
    """Each commit of a transaction that wrote, on either backend: how many statements
    it held."""
    turns: list[int] = []

    def seen(info: dict[str, Any], statement: str) -> None:
        if statement == "COMMIT":
            held = info.pop("held", 0)
            if info.pop("wrote", False):
                turns.append(held)
            return
        info["held"] = info.get("held", 0) + 1
        if WRITES.match(statement):
            info["wrote"] = True

    with watching_statements(rt.database, seen):
        yield turns


def test_a_loop_that_finishes_a_delivery_leases_the_next_with_the_fewest_writes(
    rt: Any, deliver: Any, write_commits: list[int], backend: str
) -> None:
    SENT.clear()
    for n, ident in ((11, "pre-1"), (12, "pre-2")):  # two pull requests: both due at once
        assert deliver("pull_request", _opened(n), delivery_id=ident).status_code == 202
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    write_commits.clear()  # the deliveries' own storing
    assert [o.status for o in worker.run_once(limit=1)] == ["done", "done"]
    assert SENT == ["pre-1", "pre-2"]
    if backend == "postgres":
        # A lone move runs in autocommit: the finish is its one statement, with no BEGIN
        # and COMMIT round trips around it, and the loop's claim leases the second right
        # after it, one statement too (in the finish's transaction it was four).
        claim, _handler, finish, claim_2, _handler_2, finish_2 = write_commits
        assert (claim, finish, claim_2, finish_2) == (1, 1, 1, 1)
    else:
        # the first: claim, handler phase, finish (+ the second's lease, in the finish's
        # transaction: the claim saw it due); the second: handler phase, finish (which
        # said none waits behind it: no lease). Claimed on its own, the second would
        # have cost one more commit, a turn of the write lock.
        assert len(write_commits) == 5
    assert _statuses(rt) == {"pre-1": ("done", None), "pre-2": ("done", None)}


def test_the_next_delivery_of_a_pull_request_is_taken_as_the_one_before_it_finishes(
    rt: Any, deliver: Any, heads_looked_for: list[str]
) -> None:
    """One pull request's second delivery is due only once its first is done: the loop
    that finishes the first goes on to it (no poke announces it)."""
    SENT.clear()
    for n in range(2):
        body = _opened(15)
        body["pull_request"]["title"] = f"chain {n}"  # two events, not one sent twice
        deliver("pull_request", body, delivery_id=f"chain-{n}")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    looked = heads_looked_for
    looked.clear()
    assert [o.status for o in worker.run_once(limit=1)] == ["done", "done"]
    assert SENT == ["chain-0", "chain-1"]
    # the claim, then the lease of the next in the first's finish, which said one waits
    # behind it; the second's finish said none waits, and looked for nothing
    assert len(looked) == 2
    assert _statuses(rt) == {"chain-0": ("done", None), "chain-1": ("done", None)}


def _grouped(worker: Worker, monkeypatch: Any) -> None:
    """Every move of ``worker`` as in a batch shared with other loops' moves: alone, a
    move runs in autocommit on PostgreSQL, and a finish there leases nothing (the
    loop's claim does, right after)."""
    moves = worker.moves
    monkeypatch.setattr(moves, "run", lambda fn, single=False: GroupCommit.run(moves, fn))


def test_a_lease_that_fails_as_a_delivery_finishes_does_not_lose_the_finish(
    rt: Any, deliver: Any, monkeypatch: Any
) -> None:
    SENT.clear()
    for n, ident in ((21, "fin-1"), (22, "fin-2")):
        deliver("pull_request", _opened(n), delivery_id=ident)
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    _grouped(worker, monkeypatch)
    real_lease = worker._lease_rows
    calls = {"n": 0}

    def failing_lease(tx: Any, limit: int, holder: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the lease as the first delivery finishes
            raise OperationalError("UPDATE deliveries", None, Exception("disk I/O error"))
        return real_lease(tx, limit, holder)

    monkeypatch.setattr(worker, "_lease_rows", failing_lease)
    outcomes = worker.run_once(limit=1)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert SENT == ["fin-1", "fin-2"]  # each written once: the finish was saved alone
    assert _statuses(rt) == {"fin-1": ("done", None), "fin-2": ("done", None)}


def test_a_delivery_leased_at_a_finish_is_handed_only_to_the_loop_that_leased_it(
    rt: Any, deliver: Any, monkeypatch: Any
) -> None:
    SENT.clear()
    for n, ident in ((31, "own-1"), (32, "own-2")):
        deliver("pull_request", _opened(n), delivery_id=ident)
    a = Worker(rt.database, _router(), None, executors=EXECUTORS, worker_id="A")
    _grouped(a, monkeypatch)
    b = Worker(rt.database, _router(), None, executors=EXECUTORS, worker_id="B")
    [first] = a.claim(limit=1)
    assert a.process(first, then_claim=1).status == "done"
    assert _statuses(rt)["own-2"] == ("queued", "A")  # leased by A as it finished
    assert b.claim() == []  # B cannot take what A holds
    [second] = a.claim()  # A's next claim hands it over without a query
    assert a.process(second).status == "done"
    assert SENT == ["own-1", "own-2"]


@pytest.fixture
def heads_looked_for(rt: Any) -> Iterator[list[str]]:
    """Each look for due heads (the claim's query), on either backend."""
    looked: list[str] = []

    def seen(_info: dict[str, Any], statement: str) -> None:
        # SQLite looks first, then leases; PostgreSQL locks and leases in one statement
        if statement.lstrip().upper().startswith(("SELECT HEAD.SEQ", "WITH DUE AS")):
            looked.append(statement)

    with watching_statements(rt.database, seen):
        yield looked


def test_a_loop_whose_finish_found_no_more_work_stops_without_another_claim(
    rt: Any, deliver: Any, heads_looked_for: list[str]
) -> None:
    SENT.clear()
    deliver("pull_request", _opened(41), delivery_id="lone-1")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    looked = heads_looked_for
    looked.clear()
    assert [o.status for o in worker.run_once(limit=1)] == ["done"]
    assert SENT == ["lone-1"]
    # the claim only: the finish said none waits behind it, and the claim saw none more
    # due than it took, so a look for the next would find nothing
    assert len(looked) == 1
    assert worker.run_once(limit=1) == []  # the next run looks again, and finds none
    assert len(looked) == 2
    assert worker.wakeup.wait(0) is False  # one delivery woke no other loop


def test_a_loop_whose_finish_found_no_more_work_waits_for_a_wake_to_look_again(
    rt: Any, deliver: Any, heads_looked_for: list[str]
) -> None:
    """The finish said no delivery waits behind it, and the claim saw none more due than
    it took: looking again at once would find nothing. The loop waits; a delivery stored
    since then pokes it awake."""
    SENT.clear()
    deliver("pull_request", _opened(43), delivery_id="wait-1")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    looked = heads_looked_for
    looked.clear()
    loop = threading.Thread(target=worker._step, args=(30.0,))
    loop.start()
    deadline = time.monotonic() + 10
    while SENT != ["wait-1"] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert SENT == ["wait-1"]
    assert loop.is_alive()  # waiting, not claiming again
    assert len(looked) == 1  # the claim: the finish looked for nothing more
    deliver("pull_request", _opened(44), delivery_id="wait-2")
    worker.wakeup.set()  # as the inbox's poke does
    loop.join(5)
    assert not loop.is_alive()  # woken at once, well before its 30 s poll
    worker._step(30.0)  # the next step claims the new delivery and handles it
    assert SENT == ["wait-1", "wait-2"]
    assert _statuses(rt) == {"wait-1": ("done", None), "wait-2": ("done", None)}


def test_a_claim_on_postgresql_runs_outside_a_transaction(
    rt: Any, deliver: Any, backend: str, monkeypatch: Any
) -> None:
    """PostgreSQL's lease is one statement: no BEGIN before it and no COMMIT after it
    (two round trips fewer for each claim, most of which find nothing to lease)."""
    deliver("pull_request", _opened(45), delivery_id="alone-1")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    seen: list[tuple[str, bool]] = []
    real = worker._lease_rows

    def lease_rows(tx: Any, limit: int, holder: str) -> Any:
        got = real(tx, limit, holder)
        seen.append(("leased" if got[0] else "none", in_transaction(tx, backend)))
        return got

    monkeypatch.setattr(worker, "_lease_rows", lease_rows)
    assert len(worker.claim(limit=1)) == 1
    assert worker.claim(limit=1) == []
    # SQLite leases under its write lock, in a transaction; its look that finds nothing
    # takes no lock (a read outside BEGIN)
    assert seen == [("leased", backend != "postgres"), ("none", False)]
    assert _statuses(rt)["alone-1"][1] == worker.worker_id  # the lease was committed


def test_a_claim_takes_each_pull_requests_first_delivery_and_any_without_an_order(
    rt: Any, deliver: Any
) -> None:
    """Due: the first unfinished delivery of each order key, and every delivery that has
    none (no repository: nothing to keep in order), however many are queued."""
    from minipipe_gh.core.events import Event
    from minipipe_gh.store.inbox import insert_new, row_for

    for n in range(3):  # three deliveries on one pull request, in order
        body = _opened(71)
        body["pull_request"]["title"] = f"take {n}"  # three events, not one sent thrice
        assert deliver("pull_request", body, delivery_id=f"pr-{n}").status_code == 202
    loose = [Event(f"loose-{n}", "ping", {"zen": f"z{n}"}, {}) for n in range(2)]
    assert insert_new(rt.database.engine, [row_for(e) for e in loose]) == {"loose-0", "loose-1"}
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS, worker_id="A")
    got = worker.claim(limit=10)
    idents = {s: i for i, s in _seqs(rt).items()}
    assert sorted(idents.values()) == ["loose-0", "loose-1", "pr-0", "pr-1", "pr-2"]
    assert sorted(idents[seq] for seq in got) == ["loose-0", "loose-1", "pr-0"]
    assert worker.claim(limit=10) == []  # the pull request's next waits for its first


def test_a_claim_that_sees_more_due_work_than_it_takes_wakes_one_more_loop(
    rt: Any, deliver: Any
) -> None:
    for n, ident in ((51, "more-1"), (52, "more-2")):  # two pull requests: both due
        deliver("pull_request", _opened(n), delivery_id=ident)
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS, worker_id="A")
    assert len(worker.claim(limit=1)) == 1
    assert worker.wakeup.wait(0) is True  # another loop is woken for the second
    assert len(worker.claim(limit=1)) == 1
    assert worker.wakeup.wait(0) is False  # the last one wakes nobody


def test_a_poke_wakes_one_idle_loop_not_all_of_them() -> None:
    wake = Wakeup()
    woke: list[bool] = []

    def loop() -> None:
        woke.append(wake.wait(3.0))

    loops = [threading.Thread(target=loop) for _ in range(3)]
    for t in loops:
        t.start()
    time.sleep(0.2)  # all three are waiting
    started = time.monotonic()
    wake.set()
    while not woke and time.monotonic() - started < 2:
        time.sleep(0.01)
    time.sleep(0.2)
    assert woke == [True]  # one loop woke at once; the others still wait
    wake.set_all()
    for t in loops:
        t.join(2)
    assert len(woke) == 3 and not any(t.is_alive() for t in loops)


def test_a_wake_with_no_loop_waiting_is_kept_for_the_next() -> None:
    wake = Wakeup()
    wake.set()
    started = time.monotonic()
    assert wake.wait(2.0) is True
    assert time.monotonic() - started < 0.5
    assert wake.wait(0.05) is False  # taken once


def test_a_worker_of_n_threads_gets_a_connection_pool_for_n(settings: Any) -> None:
    from minipipe_gh.delivery.runtime import Runtime

    rt = Runtime.build(settings, threads=16)
    try:
        pool = rt.database.engine.pool
        assert pool.size() == 17  # type: ignore[attr-defined]  # the loops and the upkeep
        held = [rt.database.engine.connect() for _ in range(17)]
        assert pool.checkedout() == 17  # type: ignore[attr-defined]  # none waited
        for conn in held:
            conn.close()
    finally:
        rt.database.dispose()


def test_an_idle_worker_has_one_loop_looking_for_work_not_every_loop(
    rt: Any, monkeypatch: Any
) -> None:
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
    looked: list[str] = []
    real_claim = worker.claim

    def claim(limit: int = 10) -> list[int]:
        looked.append(threading.current_thread().name)
        return real_claim(limit)

    monkeypatch.setattr(worker, "claim", claim)
    stop = threading.Event()
    runner = threading.Thread(
        target=worker.run_forever,
        args=(stop,),
        kwargs={"threads": 8, "poll_s": 0.05, "upkeep_every_s": 3600},
        name="runner",  # run_forever's own loop
    )
    monkeypatch.setattr(worker, "reconcile", lambda: None)
    monkeypatch.setattr(worker, "recover", lambda: None)
    runner.start()
    time.sleep(1.0)
    stop.set()
    runner.join(10)
    others = [n for n in looked if n != "runner"]
    assert looked.count("runner") >= 5  # the main loop polls every 50 ms
    assert len(others) <= 7  # each other loop looked once, at its start, then waited


def test_a_claim_returns_each_delivery_its_own_body(rt: Any, deliver: Any) -> None:
    for n in (61, 62, 63):  # three pull requests, three bodies, leased in one claim
        deliver("pull_request", _opened(n), delivery_id=f"body-{n}")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS, worker_id="A")
    seqs = worker.claim(limit=3)
    assert len(seqs) == 3
    numbers = {}
    for seq in seqs:
        ident, *_rest, body, _headers = worker._claimed[(seq, "A")]
        numbers[ident] = orjson.loads(body)["number"]
    assert numbers == {"body-61": 61, "body-62": 62, "body-63": 63}


def test_a_deliverys_moves_never_write_its_body_again(rt: Any, deliver: Any) -> None:
    """The body is written once, with the delivery: the moves (leased, handled, done)
    update only the small state row, which SQLite rewrites whole on each of them."""
    written: list[str] = []
    moves: list[str] = []

    def seen(_info: dict[str, Any], statement: str) -> None:
        moves.append(statement)
        head = " ".join(statement.split()[:3]).upper()
        if head.startswith(("INSERT INTO DELIVERY_PAYLOADS", "UPDATE DELIVERY_PAYLOADS",
                            "DELETE FROM DELIVERY_PAYLOADS")):  # fmt: skip
            written.append(head)

    SENT.clear()
    deliver("pull_request", _opened(71), delivery_id="once-1")
    with watching_statements(rt.database, seen):
        worker = Worker(rt.database, _router(), None, executors=EXECUTORS)
        assert [o.status for o in worker.run_once()] == ["done"]
    assert SENT == ["once-1"]
    # the moves were seen (leased, handled, done), and none of them wrote the body
    assert sum(bool(MOVES.match(m)) for m in moves) >= 3
    assert written == []
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == "once-1")).one()
        assert d.status == "done" and orjson.loads(d.payload)["number"] == 71


def test_a_loop_woken_for_a_wake_another_took_first_waits_on() -> None:
    """A loop coming to wait just as a poke arrives takes the wake first: the loop that
    was woken for it would claim for nothing, so it goes back to waiting."""
    wake = Wakeup()
    woke: list[bool] = []
    loop = threading.Thread(target=lambda: woke.append(wake.wait(5.0)))
    loop.start()
    time.sleep(0.2)  # waiting
    with wake._cond:  # a wake, taken by another loop before this one runs
        wake._pending = True
        wake._cond.notify()
        wake._pending = False
    time.sleep(0.3)
    assert loop.is_alive() and woke == []  # still waiting, not off to claim
    wake.set()
    loop.join(2)
    assert woke == [True]
    stopping = threading.Thread(target=lambda: woke.append(wake.wait(5.0)))
    stopping.start()
    time.sleep(0.2)
    wake.set_all()  # stopping: every loop goes, none waits out its poll
    stopping.join(2)
    assert woke == [True, True]


def test_a_loop_finishing_as_a_delivery_is_stored_and_unclaimed_takes_it_itself(
    rt: Any, deliver: Any
) -> None:
    """A delivery stored while no loop was free to claim it (its wake kept), or while
    the loop woken for it still waits for a CPU: the loop finishing a delivery then,
    already running, looks for it itself."""
    SENT.clear()
    deliver("pull_request", _opened(61), delivery_id="busy-1")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)

    def store_then_poke(ectx: effects.EffectContext, spec: dict[str, Any]) -> None:
        SENT.append(ectx.delivery_id)
        if ectx.delivery_id == "busy-1":  # stored while this loop writes; nobody waits
            deliver("pull_request", _opened(62), delivery_id="busy-2")
            worker.wakeup.set()
        if ectx.delivery_id == "busy-2":  # stored, and a loop woken for it: not at its claim
            deliver("pull_request", _opened(63), delivery_id="busy-3")
            worker._woken.add("another loop")

    worker.executors = effects.Executors(gate={"test.write": store_then_poke}, best_effort={})
    assert [o.status for o in worker.run_once(limit=1)] == ["done", "done", "done"]
    assert SENT == ["busy-1", "busy-2", "busy-3"]
    assert worker.wakeup.take() is False  # the kept wake was this loop's to answer
