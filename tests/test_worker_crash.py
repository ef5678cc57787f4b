"""A worker process killed with SIGKILL in the middle of a delivery.

The killed worker's open transaction must leave nothing behind; once its lease
expires another worker takes over every delivery it had claimed, and each is
handled exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from minipipe_gh.core.events import Event
from minipipe_gh.delivery.worker import Worker
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for
from minipipe_gh.store.models import AuditEntry, Delivery, utcnow
from tests.crash_worker import build_router
from tests.support import payload

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 30


def pr_event(delivery_id: str, number: int) -> Event:
    data = payload("pull_request.synchronize", number=number, pull_request__number=number)
    return Event(delivery_id, "pull_request", data, {"X-GitHub-Event": "pull_request"})


def deliveries(database: Database) -> dict[str, tuple[str, int, str | None]]:
    with database.unit() as s:
        return {
            d.delivery_id: (d.status, d.attempts, d.lease_owner)
            for d in s.scalars(select(Delivery))
        }


def audited(database: Database) -> list[str]:
    with database.unit() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.entity == "delivery"))
        return sorted(r.entity_id for r in rows)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the worker exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_a_killed_worker_commits_nothing_and_its_deliveries_are_taken_over(
    database, db_url, tmp_path
):
    markers = tmp_path / "markers"
    markers.mkdir()
    assert insert_new(
        database.engine, [row_for(pr_event("k-1", 2)), row_for(pr_event("k-2", 3))]
    ) == {
        "k-1",
        "k-2",
    }

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_worker",
            db_url,
            str(markers),
            "doomed",
            str(LEASE_S),
            "600",
        ],
        cwd=ROOT,
    )
    try:
        wait_for(markers / f"started-k-1-{proc.pid}", proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    # The batch claim leased both; the handler's flushed row died with the process.
    assert deliveries(database) == {"k-1": ("queued", 1, "doomed"), "k-2": ("queued", 1, "doomed")}
    assert audited(database) == []

    offset = timedelta()
    rescuer = Worker(
        database,
        build_router(markers, 0),
        None,
        lease_seconds=LEASE_S,
        worker_id="rescuer",
        clock=lambda: utcnow() + offset,
    )
    assert rescuer.run_once() == []  # the lease still holds
    offset = timedelta(seconds=LEASE_S + 1)
    assert sorted((o.delivery_id, o.status) for o in rescuer.run_once()) == [
        ("k-1", "done"),
        ("k-2", "done"),
    ]

    assert deliveries(database) == {"k-1": ("done", 2, None), "k-2": ("done", 2, None)}
    assert audited(database) == ["k-1", "k-2"]  # each handled exactly once
    assert sorted(p.name for p in markers.iterdir()) == sorted(
        [f"started-k-1-{proc.pid}", f"started-k-1-{os.getpid()}", f"started-k-2-{os.getpid()}"]
    )
    assert rescuer.run_once() == []
