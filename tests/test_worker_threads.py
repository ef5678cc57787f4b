"""A worker process with several threads, and what wakes it at once: the in-process inbox,
or on PostgreSQL a NOTIFY from any process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from minipipe_gh.context import Context
from minipipe_gh.models import Delivery
from minipipe_gh.routing import Router
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
            deliver("pull_request", data, delivery_id=f"pr{number}-{i}")
    stop = threading.Event()
    worker = rt.worker()
    runner = threading.Thread(target=worker.run_forever, args=(stop,), kwargs={"threads": 3})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with rt.database.unit(write=False) as s:
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


def test_postgres_wakes_a_worker_in_another_process_at_once(
    rt: Any, deliver: Any, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's: on SQLite, other processes' workers poll")
    handled = threading.Event()
    router = Router()

    @router.register("pull_request")
    def note(ctx: Context) -> None:
        handled.set()

    rt.router = router
    worker = rt.worker()  # not one of rt.inbox's listeners: as if in another process
    stop = threading.Event()
    runner = threading.Thread(target=worker.run_forever, args=(stop,), kwargs={"poll_s": 120.0})
    runner.start()
    try:
        time.sleep(1.0)  # it has looked, found nothing, and waits out a 120 s poll
        started = time.monotonic()
        deliver("pull_request", payload("pull_request.opened"), delivery_id="notify-1")
        assert handled.wait(10), "the NOTIFY at commit should have woken the worker"
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        runner.join(timeout=30)
    with rt.database.unit(write=False) as s:
        assert s.scalar(select(Delivery.status).where(Delivery.delivery_id == "notify-1")) == "done"
