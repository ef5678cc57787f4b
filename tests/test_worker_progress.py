"""A delivery's writes: each one that succeeds is saved before the next is sent, so a
worker killed between two writes never sends the first again. When a write fails,
what succeeded before it is kept, so the retry performs only the rest; a worker that
lost its lease between two writes performs no more."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import Worker
from minipipe_gh.gh import effects
from minipipe_gh.review.context import Context
from minipipe_gh.store.models import Delivery, utcnow
from tests.support import MOVES, payload, watching_statements

WRITES: list[tuple[str, str]] = []  # (delivery, what)
LEASES = re.compile(r"\battempts\s*=\s*\(?\s*deliveries\.attempts\s*\+", re.I)
FAIL: dict[str, int] = {}  # delivery -> how many more times test.second fails
STEAL: dict[str, Any] = {}  # delivery -> a callable run inside test.first


def _first(ectx: effects.EffectContext, spec: dict[str, Any]) -> None:
    WRITES.append((ectx.delivery_id, "first"))
    if ectx.delivery_id in STEAL:
        STEAL.pop(ectx.delivery_id)()


def _second(ectx: effects.EffectContext, spec: dict[str, Any]) -> None:
    if FAIL.get(ectx.delivery_id, 0) > 0:
        FAIL[ectx.delivery_id] -= 1
        raise RuntimeError("GitHub answered 502")
    WRITES.append((ectx.delivery_id, "second"))


EXECUTORS = effects.Executors(gate={"test.first": _first, "test.second": _second}, best_effort={})


def _router() -> Router:
    router = Router()

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        ctx.effect("test.first", n=1)
        ctx.effect("test.second", n=2)

    return router


def _row(rt: Any, ident: str) -> Delivery:
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == ident)).one()
        s.expunge(d)
        return d


class _Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> Any:
        return utcnow() + self.offset


def test_each_write_that_succeeds_is_saved_before_the_next_is_sent(rt: Any, deliver: Any) -> None:
    WRITES.clear()
    deliver("pull_request", payload("pull_request.opened"), delivery_id="once-1")
    worker = Worker(rt.database, _router(), None, executors=EXECUTORS)

    def note(_info: dict[str, Any], statement: str) -> None:
        if MOVES.match(statement):  # a lease is the one move that counts an attempt
            WRITES.append(("once-1", "lease" if LEASES.search(statement) else "UPDATE delivery"))

    with watching_statements(rt.database, note):
        assert [o.status for o in worker.run_once()] == ["done"]
    # the claim, the handler phase's commit, the first write and its progress, the
    # second write, then the finish (which saves the last result with ``done``, and says
    # no delivery waits behind it: no look for the next follows)
    seen = [what for _d, what in WRITES]
    assert seen == [
        "lease",
        "UPDATE delivery",
        "first",
        "UPDATE delivery",
        "second",
        "UPDATE delivery",
    ]
    d = _row(rt, "once-1")
    assert d.status == "done"
    assert [e["result"] for e in d.effects] == ["done", "done"]


def test_a_failed_write_keeps_what_succeeded_and_the_retry_performs_only_the_rest(
    rt: Any, deliver: Any
) -> None:
    WRITES.clear()
    FAIL["rest-1"] = 1
    clock = _Clock()
    deliver("pull_request", payload("pull_request.opened"), delivery_id="rest-1")
    worker = Worker(rt.database, _router(), None, clock=clock, executors=EXECUTORS)
    assert [o.status for o in worker.run_once()] == ["retry"]
    d = _row(rt, "rest-1")
    assert d.status == "effects"
    assert [(e["kind"], e.get("result")) for e in d.effects] == [
        ("test.first", "done"),
        ("test.second", None),
    ]
    assert "502" in (d.last_error or "")
    clock.offset += timedelta(minutes=5)
    assert [o.status for o in worker.run_once()] == ["done"]
    assert WRITES == [("rest-1", "first"), ("rest-1", "second")]  # first not performed again
    d = _row(rt, "rest-1")
    assert d.status == "done"
    assert [e["result"] for e in d.effects] == ["done", "done"]


def test_a_worker_that_lost_its_lease_between_two_writes_performs_no_more(
    rt: Any, deliver: Any
) -> None:
    WRITES.clear()
    deliver("pull_request", payload("pull_request.opened"), delivery_id="steal-1")
    late = _Clock()
    a = Worker(rt.database, _router(), None, worker_id="A", executors=EXECUTORS)
    b = Worker(rt.database, _router(), None, worker_id="B", clock=late, executors=EXECUTORS)

    def b_takes_over() -> None:  # A's lease runs out during its first write
        late.offset = timedelta(seconds=rt.settings.lease_seconds + 1)
        assert b.claim() != []

    STEAL["steal-1"] = b_takes_over
    assert [o.status for o in a.run_once()] == ["lost"]
    assert WRITES == [("steal-1", "first")]  # A did not go on to the second write
    d = _row(rt, "steal-1")
    assert (d.status, d.lease_owner) == ("effects", "B")
