"""A worker process with several threads, and the in-process inbox waking it at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.store.models import Delivery
from tests.support import payload


def test_threads_share_the_queue_but_never_one_pull_request(rt: Any, deliver: Any) -> None:
    running: dict[str, int] = {}
    overlap: list[str] = []
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    router = Router()

    @router.register("pull_request")
    def slow(ctx: Context) -> None:
        key = f"#{ctx.payload['number']}"
        with lock:
            running[key] = running.get(key, 0) + 1
            if running[key] > 1:
                overlap.append(key)
            seen.append((key, ctx.event.delivery_id))
        time.sleep(0.02)
        with lock:
            running[key] -= 1

    rt.router = router
    for number in range(1, 5):
        for i in range(3):
            data = payload("pull_request.opened", number=number)
            data["pull_request"]["number"] = number
            # three events of one PR: GitHub's bodies differ (the same body is one event)
            data["pull_request"]["updated_at"] = f"2019-05-15T15:20:{i:02d}Z"
            deliver("pull_request", data, delivery_id=f"pr{number}-{i}")
    stop = threading.Event()
    worker = rt.worker()
    runner = threading.Thread(target=worker.run_forever, args=(stop,), kwargs={"threads": 3})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with rt.database.unit() as s:
                statuses = set(s.scalars(select(Delivery.status)))
            if statuses == {"done"}:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert statuses == {"done"}
    assert overlap == []
    for number in range(1, 5):
        order = [d for k, d in seen if k == f"#{number}"]
        assert order == [f"pr{number}-{i}" for i in range(3)]


def test_an_in_process_inbox_wakes_the_worker(rt: Any, deliver: Any) -> None:
    woken = threading.Event()
    rt.inbox.listeners.append(woken.set)
    deliver("pull_request", payload("pull_request.opened"), delivery_id="wake-1")
    assert woken.is_set()
    woken.clear()
    deliver("pull_request", payload("pull_request.opened"), delivery_id="wake-1")
    assert not woken.is_set()  # a redelivery stores nothing and wakes nobody
