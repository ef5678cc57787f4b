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
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from .db import Database, begin_write, make_engine, sqlite_lock_path, take_write_turn
from .events import Event, natural_key, order_key
from .models import Delivery, utcnow

log = logging.getLogger(__name__)
BATCH_MAX = 256
GROUP_WAIT_S = 0.001  # like PostgreSQL's commit_delay: see Inbox._run
CHECKPOINT_EVERY_S = 1.0
WRITE_TRIES = 5


# The columns an inbox row sets, in the INSERT's order; ``row_for`` fills each one.
ROW_COLUMNS = (
    "delivery_id", "event", "action", "installation_id", "repository", "order_key",
    "natural_key", "headers", "payload", "status", "attempts", "next_attempt_at", "received_at",
)  # fmt: skip


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


class _InsertNew:
    """One multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING delivery_id`` per
    batch, run on the driver's own connection.

    Why not through a SQLAlchemy ``Connection``: the dialects' ON CONFLICT inserts
    are not cacheable in SQLAlchemy 2.0 (each batch was compiled afresh), and a
    Connection's per-statement work costs more than SQLite's own cost of a 16 KB
    row, on the path every acknowledgement waits for. Why one statement: each
    driver call gives up the GIL and waits to get it back behind the request
    threads. The column types' own bind processors turn values into what the ORM
    reads back.
    """

    def __init__(self, engine: Engine) -> None:
        table = Delivery.__table__
        dialect = engine.dialect
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.head = f"INSERT INTO {table.name} ({', '.join(ROW_COLUMNS)}) VALUES "
        self.tail = " ON CONFLICT DO NOTHING RETURNING delivery_id"
        self.processors = [table.c[name].type.bind_processor(dialect) for name in ROW_COLUMNS]
        self.sqlite = dialect.name == "sqlite"
        self.lock_path = sqlite_lock_path(engine) if self.sqlite else None
        self._sql: dict[int, str] = {}

    def sql(self, n: int) -> str:
        """The statement for ``n`` rows (one per batch size, built once)."""
        if n not in self._sql:
            values = "(" + ", ".join([self.mark] * len(ROW_COLUMNS)) + ")"
            self._sql[n] = self.head + ", ".join([values] * n) + self.tail
        return self._sql[n]

    def params(self, rows: list[dict[str, Any]]) -> list[Any]:
        flat: list[Any] = []
        for row in rows:
            for name, proc in zip(ROW_COLUMNS, self.processors, strict=True):
                value = row[name]
                flat.append(value if proc is None else proc(value))
        return flat

    def __call__(self, engine: Engine, rows: list[dict[str, Any]]) -> set[str]:
        dbapi_error = engine.dialect.loaded_dbapi.Error
        chunks = [rows[i : i + BATCH_MAX] for i in range(0, len(rows), BATCH_MAX)]
        # On SQLite one statement is its own transaction: no BEGIN and COMMIT round
        # trips through the driver (each one gives up the GIL) for a single batch.
        explicit = len(chunks) > 1 or not self.sqlite
        conn = engine.raw_connection()
        sql = ""
        try:
            if self.sqlite:
                take_turn = begin_write if explicit else take_write_turn
                take_turn(conn.dbapi_connection, conn.info, self.lock_path)  # type: ignore[arg-type]
            cur = conn.cursor()
            new: set[str] = set()
            for chunk in chunks:  # within the drivers' parameter limits
                sql = self.sql(len(chunk))
                cur.execute(sql, self.params(chunk))
                new.update(row[0] for row in cur.fetchall())
            cur.close()
            if explicit:
                conn.commit()
            return new
        except dbapi_error as err:  # as SQLAlchemy's own errors, e.g. OperationalError
            raise DBAPIError.instance(sql, None, err, dbapi_error) from err
        finally:
            conn.close()  # the pool rolls back what is left open, then frees the flock


_INSERTS: weakref.WeakKeyDictionary[Engine, _InsertNew] = weakref.WeakKeyDictionary()


def insert_new(engine: Engine, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows in one transaction; return the delivery ids that were new."""
    insert = _INSERTS.get(engine)
    if insert is None:
        insert = _INSERTS.setdefault(engine, _InsertNew(engine))
    return insert(engine, rows)


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


class _Pending:
    """One delivery waiting for the writer. ``done`` is a lock held until the writer
    has committed (a bare lock: cheaper to wait on than a ``threading.Event``)."""

    __slots__ = ("row", "done", "new", "error")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.done = threading.Lock()
        self.done.acquire()
        self.new = False
        self.error: BaseException | None = None


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
        pending.done.acquire()  # released by the writer once committed
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
        """Commit whatever is waiting, as one batch.

        While deliveries come in together (the last batch held more than one),
        wait ``GROUP_WAIT_S`` for those still being parsed before writing: fewer,
        larger commits take less CPU per delivery and pass SQLite's lock between
        processes less often (measured: about 10% less CPU per stored delivery and
        6% more acknowledged per second under load). A lone delivery is written at
        once, so a quiet server answers without the wait.
        """
        q = self._queue
        together = False
        while True:
            batch = [q.get()]
            if together:
                time.sleep(GROUP_WAIT_S)
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            together = len(batch) > 1
            try:
                new = self._write([p.row for p in batch])
            except BaseException as err:  # every waiter must wake, whatever happened
                for p in batch:
                    p.error = err
                    p.done.release()
                continue
            if new:
                for listener in self.listeners:
                    listener()
            for p in batch:
                ident = p.row["delivery_id"]
                p.new = ident in new
                new.discard(ident)  # the same id twice in one batch: only the first is new
                p.done.release()

    def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                return insert_new(self.engine, rows)
            except OperationalError:
                if attempt == WRITE_TRIES:
                    raise
                log.warning("inbox write failed (attempt %d), retrying", attempt, exc_info=True)
        raise AssertionError("unreachable")
