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
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from .db import Database, make_engine
from .events import Event, natural_key, order_key
from .models import Delivery, utcnow

log = logging.getLogger(__name__)
BATCH_MAX = 256
CHECKPOINT_EVERY_S = 1.0
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


def insert_new(engine: Engine, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows in one transaction; return the delivery ids that were new.

    One statement, executed for many rows: SQLAlchemy compiles it once and
    caches it ("insertmanyvalues"), where ``insert().values(rows)`` would be
    compiled afresh for every batch.
    """
    table = Delivery.__table__
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    stmt = dialect.insert(table).on_conflict_do_nothing().returning(table.c.delivery_id)
    with engine.begin() as conn:
        return set(conn.execute(stmt, rows).scalars().all())


def ingest_engine(database: Database) -> Engine:
    """The writer's own connections. On SQLite they never checkpoint the WAL inside an
    acknowledgement's commit (``wal_autocheckpoint=0``): the worker's commits, and the
    writer when idle, do it instead."""
    if not database.is_sqlite:
        return database.engine
    engine = make_engine(database.url, pool_size=1, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    return engine


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
        self._engine: Engine | None = None
        self.listeners: list[Callable[[], None]] = []  # told after new deliveries commit
        self.group_commit = group_commit
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def store(self, event: Event, raw_body: bytes | None = None) -> bool:
        row = row_for(event, raw_body)
        if not self.group_commit:
            new = event.delivery_id in self._write([row])
            for listener in self.listeners if new else ():
                listener()
            return new
        pending = _Pending(row)
        self._ensure_writer()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.new

    def _ensure_writer(self) -> None:
        # After a fork (gunicorn) the parent's thread and connections are gone: start anew.
        if self._writer is not None and self._pid == os.getpid() and self._writer.is_alive():
            return
        with self._lock:
            if self._writer is None or self._pid != os.getpid() or not self._writer.is_alive():
                self._queue = queue.SimpleQueue()
                self._engine = None
                self._pid = os.getpid()
                self._writer = threading.Thread(
                    target=self._run, name="minipipe-inbox-writer", daemon=True
                )
                self._writer.start()
                if self.database.is_sqlite and self.database.engine.url.database:
                    threading.Thread(
                        target=self._checkpoints, name="minipipe-inbox-checkpoint", daemon=True
                    ).start()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = ingest_engine(self.database)
        return self._engine

    def _checkpoints(self) -> None:
        """Keep the WAL short, beside the writer rather than in its way (SQLite only):
        a checkpoint inside the writer's loop would hold up every acknowledgement
        waiting behind it."""
        path = self.database.engine.url.database
        conn = sqlite3.connect(path, timeout=1.0, check_same_thread=False)
        try:
            while self._pid == os.getpid():
                time.sleep(CHECKPOINT_EVERY_S)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:
                    log.debug("checkpoint skipped", exc_info=True)
        finally:
            conn.close()

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
            if new:
                for listener in self.listeners:
                    listener()
            for p in batch:
                ident = p.row["delivery_id"]
                p.new = ident in new
                new.discard(ident)  # the same id twice in one batch: only the first is new
                p.done.set()

    def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                return insert_new(self.engine, rows)
            except OperationalError:
                if attempt == WRITE_TRIES:
                    raise
                log.warning("inbox write failed (attempt %d), retrying", attempt, exc_info=True)
        raise AssertionError("unreachable")
