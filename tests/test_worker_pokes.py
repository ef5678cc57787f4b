"""Workers in other processes are woken by a poke the moment a delivery is stored."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import select

from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.store import inbox as inbox_mod
from minipipe_gh.store.models import Delivery
from tests.support import payload


def _status(rt: Any, ident: str) -> str | None:
    with rt.database.unit() as s:
        return s.scalar(select(Delivery.status).where(Delivery.delivery_id == ident))


def test_a_stored_delivery_pokes_a_polling_worker_awake(
    rt: Any, deliver: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(inbox_mod, "POKE_RELIST_S", 0.0)  # see the worker started just now
    handled = threading.Event()
    router = Router()

    @router.register("pull_request")
    def note(ctx: Context) -> None:
        handled.set()

    rt.router = router
    worker = rt.worker()
    stop = threading.Event()
    # a 60 s poll: only the poke can explain a delivery handled within seconds
    runner = threading.Thread(target=worker.run_forever, args=(stop,), kwargs={"poll_s": 60.0})
    runner.start()
    mine = inbox_mod.wake_folder(rt.database.url) / f"{os.getpid()}-{id(worker):x}.sock"
    try:
        deadline = time.monotonic() + 10
        while not mine.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mine.exists(), "the worker listens for pokes"
        time.sleep(0.3)  # past its first claim: it waits in its poll now
        sent = time.monotonic()
        deliver("pull_request", payload("pull_request.opened"), delivery_id="poked-1")
        assert handled.wait(10)
        assert time.monotonic() - sent < 5
        deadline = time.monotonic() + 10
        while _status(rt, "poked-1") != "done" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _status(rt, "poked-1") == "done"
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert not mine.exists()  # a stopped worker removes its socket


def test_a_stale_socket_does_not_fail_the_acknowledgement(
    rt: Any, deliver: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(inbox_mod, "POKE_RELIST_S", 0.0)
    folder = inbox_mod.wake_folder(rt.database.url)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale = folder / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody reads it: a worker that died
    try:
        res = deliver("pull_request", payload("pull_request.opened"), delivery_id="stale-1")
        assert res.status_code == 202
        assert _status(rt, "stale-1") == "queued"
    finally:
        stale.unlink()
