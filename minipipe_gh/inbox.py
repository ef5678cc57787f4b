"""The durable inbox: every verified delivery is committed before it is acknowledged.

Acknowledging is the hot path. Request threads hand their delivery to one
writer thread per process, which commits whatever is waiting in a single
transaction (group commit) and wakes each request with its outcome. A
redelivery (same ``X-GitHub-Delivery``) or the same event under another id
(same natural key) is not inserted: ``ON CONFLICT DO NOTHING ... RETURNING``
tells which rows were new.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from .db import Database
from .events import Event, natural_key, order_key
from .models import Delivery, utcnow

log = logging.getLogger(__name__)
BATCH_MAX = 256
WRITE_TRIES = 5


def row_for(event: Event, raw_body: bytes | str | None = None) -> dict[str, Any]:
    """The inbox row of an event; the raw body is kept as received when given."""
    if raw_body is None:
        raw_body = json.dumps(event.payload)
    body = raw_body.decode() if isinstance(raw_body, bytes) else raw_body
    now = utcnow()
    return {
        "delivery_id": event.delivery_id,
        "event": event.name,
        "action": event.action,
        "installation_id": event.installation_id,
        "repository": event.repository,
        "order_key": order_key(event),
        "natural_key": natural_key(event),
        "headers": event.headers,
        "payload": body,
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


def insert_new(database: Database, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows in one transaction; return the delivery ids that were new."""
    dialect = sqlite if database.is_sqlite else postgresql
    stmt = (
        dialect.insert(Delivery)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(Delivery.delivery_id)
    )
    with database.unit() as s:
        return set(s.scalars(stmt).all())


@dataclass
class _Pending:
    row: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    new: bool = False
    error: BaseException | None = None


class Inbox:
    """Stores deliveries durably; ``store`` returns True when the delivery is new."""

    def __init__(self, database: Database, *, group_commit: bool = True) -> None:
        self.database = database
        self.group_commit = group_commit
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def store(self, event: Event, raw_body: bytes | None = None) -> bool:
        row = row_for(event, raw_body)
        if not self.group_commit:
            return event.delivery_id in self._write([row])
        pending = _Pending(row)
        self._ensure_writer()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.new

    def _ensure_writer(self) -> None:
        # After a fork (gunicorn) the parent's thread is gone: start one per process.
        if self._writer is not None and self._pid == os.getpid() and self._writer.is_alive():
            return
        with self._lock:
            if self._writer is None or self._pid != os.getpid() or not self._writer.is_alive():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._writer = threading.Thread(
                    target=self._run, name="minipipe-inbox-writer", daemon=True
                )
                self._writer.start()

    def _run(self) -> None:
        q = self._queue
        while True:
            batch = [q.get()]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                new = self._write([p.row for p in batch])
            except BaseException as err:  # every waiter must wake, whatever happened
                for p in batch:
                    p.error = err
                    p.done.set()
                continue
            for p in batch:
                ident = p.row["delivery_id"]
                p.new = ident in new
                new.discard(ident)  # the same id twice in one batch: only the first is new
                p.done.set()

    def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                return insert_new(self.database, rows)
            except OperationalError:
                if attempt == WRITE_TRIES:
                    raise
                log.warning("inbox write failed (attempt %d), retrying", attempt, exc_info=True)
        raise AssertionError("unreachable")
