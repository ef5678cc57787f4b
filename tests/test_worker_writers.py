"""run_forever's writer threads: a delivery's GitHub writes wait there, under its loop's
lease, while the loop handles the next delivery; one pull request's stay in order."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from minipipe_gh.delivery.routing import Router
from minipipe_gh.gh import effects
from minipipe_gh.review.context import Context
from minipipe_gh.store.models import Delivery
from tests.support import payload

EVENTS: list[tuple[str, str, float, str]] = []  # (what, delivery, when, thread)
LOCK = threading.Lock()


def _note(what: str, ident: str) -> None:
    with LOCK:
        EVENTS.append((what, ident, time.monotonic(), threading.current_thread().name))


def _slow_write(ectx: effects.EffectContext, spec: dict[str, Any]) -> None:
    _note("write-start", ectx.delivery_id)
    time.sleep(0.3)  # a round trip to GitHub
    _note("write-end", ectx.delivery_id)


def test_writes_wait_on_writer_threads_and_keep_pull_request_order(rt: Any, deliver: Any) -> None:
    EVENTS.clear()
    router = Router()

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        _note("handle", ctx.event.delivery_id)
        ctx.effect("test.slow_write", number=ctx.payload["number"])

    rt.router = router
    for ident, number, i in (("a1", 1, 0), ("b1", 2, 0), ("a2", 1, 1)):
        data = payload("pull_request.opened", number=number)
        data["pull_request"]["number"] = number
        data["pull_request"]["updated_at"] = f"2019-05-15T15:20:{i:02d}Z"
        deliver("pull_request", data, delivery_id=ident)
    stop = threading.Event()
    worker = rt.worker(
        executors=effects.Executors(gate={"test.slow_write": _slow_write}, best_effort={})
    )
    runner = threading.Thread(
        target=worker.run_forever, args=(stop,), kwargs={"threads": 1, "poll_s": 0.05}
    )
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with rt.database.unit() as s:
                statuses = dict(s.execute(select(Delivery.delivery_id, Delivery.status)).all())
            if set(statuses.values()) == {"done"}:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert statuses == {"a1": "done", "b1": "done", "a2": "done"}
    at = {(what, ident): (t, thread) for what, ident, t, thread in EVENTS}
    # every write ran on a writer thread, none on the loop
    writers = {thread for (what, _i), (_t, thread) in at.items() if what.startswith("write")}
    assert writers and all(name.startswith("minipipe-writer") for name in writers)
    # the one loop handled PR 2's delivery while PR 1's write was still waiting
    assert at[("handle", "b1")][0] < at[("write-end", "a1")][0]
    # PR 1's second delivery only after its first one's write finished
    assert at[("handle", "a2")][0] >= at[("write-end", "a1")][0]
    with rt.database.unit() as s:
        rows = s.scalars(select(Delivery)).all()
        assert all(d.lease_owner is None and d.attempts == 1 for d in rows)
