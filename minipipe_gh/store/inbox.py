"""The durable inbox: every verified delivery is committed before it is acknowledged.

Acknowledging is the hot path. Deliveries that arrive together are committed in
one transaction (group commit, led by one of their own request threads: see
``Inbox``) and each request learns its outcome. A
redelivery (same ``X-GitHub-Delivery``) or the same event under another id
(same natural key) is not inserted: ``ON CONFLICT DO NOTHING ... RETURNING``
tells which rows were new.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import PoolProxiedConnection

from minipipe_gh.core.events import Event, natural_key, order_key
from minipipe_gh.store import db
from minipipe_gh.store.db import (
    Database,
    Leader,
    Part,
    autocommitted,
    begin_write,
    end_write_turn,
    make_engine,
    sqlite_lock_path,
    take_write_turn,
)
from minipipe_gh.store.models import Delivery, DeliveryPayload, utcnow

log = logging.getLogger(__name__)
BATCH_MAX = 256
GROUP_WAIT_S = 0.001  # like PostgreSQL's commit_delay: see Inbox._pause
CHECKPOINT_EVERY_S = 1.0
WAL_TRUNCATE_QUIET_S = 30.0
WRITE_TRIES = 5
POKE_RELIST_S = 1.0  # how often a poker looks for workers started since


def wake_folder(url: str) -> Path:
    """Where the workers of one database listen for pokes: a folder of unix datagram
    sockets, named after the database URL, which web and worker processes share."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"minipipe-wake-{os.getuid()}-{digest}"


class Poke:
    """Wakes the workers of other processes the moment new deliveries are stored,
    instead of their next poll: one datagram to each worker's socket in
    ``wake_folder``. Sent after the commit, from the committing thread, and never
    waited on (non-blocking; a full, gone or stale socket is skipped), so the
    acknowledgement costs a few microseconds more, not a round trip. Works the
    same on both backends; a worker on another machine still polls."""

    def __init__(self, url: str) -> None:
        self.folder = wake_folder(url)
        self._sock: socket.socket | None = None
        self._pid = 0
        self._targets: list[str] = []
        self._listed = -POKE_RELIST_S

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._listed >= POKE_RELIST_S:
            self._listed = now
            try:
                self._targets = [str(p) for p in self.folder.glob("*.sock")]
            except OSError:
                self._targets = []
        if not self._targets:
            return
        if self._sock is None or self._pid != os.getpid():  # a socket per process
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            self._pid = os.getpid()
        for target in self._targets:
            with contextlib.suppress(OSError):  # full (a poke is already waiting) or gone
                self._sock.sendto(b"!", target)


_POKES: dict[str, Poke] = {}  # one per database URL and process


def wake_workers(url: str) -> None:
    """New deliveries were committed to the database at ``url``: poke its workers. The
    one call every writer of the inbox makes (the webhook's group commit, the check-run
    refresh queue, reconciliation), so none of them waits for a worker's next poll."""
    poke = _POKES.get(url)
    if poke is None:  # not ``setdefault(url, Poke(url))``: that builds a Poke every call
        poke = _POKES.setdefault(url, Poke(url))
    poke()


# The columns an inbox row sets, in the INSERT's order; ``row_for`` fills each one, and
# its "payload", which goes to ``delivery_payloads`` under the row's new ``seq``.
ROW_COLUMNS = (
    "delivery_id", "event", "action", "installation_id", "repository", "order_key",
    "natural_key", "headers", "status", "attempts", "next_attempt_at", "received_at",
)  # fmt: skip


def row_for(event: Event, raw_body: bytes | str | None = None) -> dict[str, Any]:
    """The inbox row of an event; the raw body is kept as received when given."""
    if raw_body is None:
        raw_body = json.dumps(event.payload)
    if isinstance(raw_body, bytes):
        raw, body = raw_body, raw_body.decode()
    else:
        raw, body = raw_body.encode(), raw_body
    now = utcnow()
    return {
        "delivery_id": event.delivery_id,
        "event": event.name,
        "action": event.action,
        "installation_id": event.installation_id,
        "repository": event.repository,
        "order_key": order_key(event),
        "natural_key": natural_key(event, raw),
        "headers": event.headers,
        "payload": body,
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


class _InsertNew:
    """One multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING seq, delivery_id`` per
    batch, then one INSERT of the new rows' bodies, run on the driver's own connection.

    Why not through a SQLAlchemy ``Connection``: the dialects' ON CONFLICT inserts
    are not cacheable in SQLAlchemy 2.0 (each batch was compiled afresh), and a
    Connection's per-statement work costs more than SQLite's own cost of a 16 KB
    row, on the path every acknowledgement waits for. Why one statement: each
    driver call gives up the GIL and waits to get it back behind the request
    threads. The column types' own bind processors turn values into what the ORM
    reads back (JSON as orjson's text on SQLite: the engine's serializer,
    ``db.make_engine``).
    """

    def __init__(self, engine: Engine) -> None:
        table = Delivery.__table__
        dialect = engine.dialect
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.head = f"INSERT INTO {table.name} ({', '.join(ROW_COLUMNS)}) VALUES "
        self.tail = " ON CONFLICT DO NOTHING RETURNING seq, delivery_id"
        bodies = DeliveryPayload.__table__
        self.bodies_into = f"INSERT INTO {bodies.name} (seq, payload)"
        self.bodies_head = self.bodies_into + " VALUES "
        # What SQLAlchemy itself binds: the dialect's implementation of each type.
        self.sqlite = dialect.name == "sqlite"
        self.processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in ROW_COLUMNS
        ]
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.lock_path = sqlite_lock_path(engine) if self.sqlite else None
        self._sql: dict[int, str] = {}
        self._bodies_sql: dict[int, str] = {}
        self._together_sql: dict[tuple[int, int], str] = {}

    def sql(self, n: int) -> str:
        """The statement for ``n`` rows (one per batch size, built once)."""
        if n not in self._sql:
            values = "(" + ", ".join([self.mark] * len(ROW_COLUMNS)) + ")"
            self._sql[n] = self.head + ", ".join([values] * n) + self.tail
        return self._sql[n]

    def bodies_sql(self, n: int) -> str:
        """The statement for ``n`` bodies (one per count, built once)."""
        if n not in self._bodies_sql:
            pair = f"({self.mark}, {self.mark})"
            self._bodies_sql[n] = self.bodies_head + ", ".join([pair] * n)
        return self._bodies_sql[n]

    def together_sql(self, n: int, m: int) -> str:
        """PostgreSQL: ``n`` rows and the ``m`` bodies of their distinct ids in one
        statement (built once per size). A body goes in under its new row's ``seq``; a
        duplicate's, whose row was not inserted, joins nothing. It answers the new ids."""
        if (n, m) not in self._together_sql:
            pairs = ", ".join(["(%s, %s)"] * m)
            self._together_sql[n, m] = (
                f"WITH new AS ({self.sql(n)}), stored AS ({self.bodies_into}"
                f" SELECT new.seq, body.payload FROM new JOIN (VALUES {pairs})"
                " AS body (delivery_id, payload) ON body.delivery_id = new.delivery_id)"
                " SELECT delivery_id FROM new"
            )
        return self._together_sql[n, m]

    def params(self, rows: list[dict[str, Any]]) -> list[Any]:
        flat: list[Any] = []
        columns = list(zip(ROW_COLUMNS, self.processors, strict=True))
        for row in rows:
            last: Any = _UNSET  # a row's two timestamps are one value: processed once
            done: Any = None
            for name, proc in columns:
                value = row[name]
                if proc is None:
                    flat.append(value)
                elif value is last:
                    flat.append(done)
                else:
                    last, done = value, proc(value)
                    flat.append(done)
        return flat

    def __call__(self, conn: PoolProxiedConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert on ``conn``, a pool connection the caller holds and keeps."""
        dbapi_error = self.dbapi_error
        chunks = [rows[i : i + BATCH_MAX] for i in range(0, len(rows), BATCH_MAX)]
        sql = ""
        try:
            if not self.sqlite and len(chunks) == 1:
                sql, flat = self.together(rows)
                return self._alone(conn, sql, flat)
            if self.sqlite:
                begin_write(conn.dbapi_connection, conn.info, self.lock_path)  # type: ignore[arg-type]
            cur = conn.cursor()
            new: set[str] = set()
            for chunk in chunks:  # within the drivers' parameter limits
                sql = self.sql(len(chunk))
                cur.execute(sql, self.params(chunk))
                stored = cur.fetchall()
                if not stored:
                    continue
                body = {row["delivery_id"]: row["payload"] for row in chunk}
                flat: list[Any] = []
                for seq, ident in stored:
                    flat += (seq, body[ident])
                    new.add(ident)
                sql = self.bodies_sql(len(stored))
                cur.execute(sql, flat)
            cur.close()
            conn.commit()
            return new
        except dbapi_error as err:  # as SQLAlchemy's own errors, e.g. OperationalError
            with contextlib.suppress(dbapi_error):
                conn.rollback()  # before the next writer's turn
            raise DBAPIError.instance(sql, None, err, dbapi_error) from err
        finally:
            end_write_turn(conn.info)

    def together(self, rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
        """PostgreSQL's one statement for ``rows`` and their bodies, and its values."""
        body = {row["delivery_id"]: row["payload"] for row in rows}  # one per id
        flat = self.params(rows)
        for pair in body.items():
            flat += pair
        return self.together_sql(len(rows), len(body)), flat

    def _alone(self, conn: PoolProxiedConnection, sql: str, flat: list[Any]) -> set[str]:
        """PostgreSQL: the one statement outside BEGIN and COMMIT (a statement is a
        transaction of its own, durable once it answers): one round trip on the path
        every acknowledgement waits for, where a transaction takes four."""
        with autocommitted(conn, self.dbapi_error):
            cur = conn.cursor()
            cur.execute(sql, flat)
            new = {ident for (ident,) in cur.fetchall()}
            cur.close()
            return new


_UNSET = object()


_INSERTS: weakref.WeakKeyDictionary[Engine, _InsertNew] = weakref.WeakKeyDictionary()


def insert_new(engine: Engine, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows in one transaction; return the delivery ids that were new."""
    conn = engine.raw_connection()
    try:
        return _insert_for(engine)(conn, rows)
    finally:
        conn.close()


def _insert_for(engine: Engine) -> _InsertNew:
    insert = _INSERTS.get(engine)
    if insert is None:
        insert = _INSERTS.setdefault(engine, _InsertNew(engine))
    return insert


def ingest_engine(database: Database) -> Engine:
    """The writer's own connection (SQLite): one, so the group commits come one at a
    time. Like every connection of the app's, it never checkpoints the WAL inside a
    commit (``make_engine``); ``_checkpoints`` does it beside them."""
    if not database.is_sqlite:
        return database.engine
    return make_engine(database.url, pool_size=1, max_overflow=0)


class _Pending(Part):
    """One delivery waiting to be committed, and whether it was new."""

    __slots__ = ("row", "new")

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.row = row
        self.new = False


class Inbox:
    """Stores deliveries durably; ``store`` returns True when the delivery is new.

    The request threads commit through a ``db.Leader`` (group commit with a leader):
    the request that finds no commit under way writes its own delivery together with
    every one queued behind it, so a lone delivery is written by its own thread and
    under load every commit holds what arrived during the one before it.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        # told after new deliveries commit; the poke wakes workers in other processes
        self.listeners: list[Callable[[], None]] = [partial(wake_workers, database.url)]
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        """Fresh state for a new process: after a fork (gunicorn) the parent's commit in
        progress, connections and checkpoint thread are not this process's."""
        self._engine: Engine | None = None
        self._conn: PoolProxiedConnection | None = None  # the leader's, kept between batches
        self._started = threading.Lock()
        self._leader = Leader(self._commit, most=BATCH_MAX, pause=self._pause, committed=self._tell)
        self._together = False  # the last batch held more than one delivery, and others write
        self._data_version = -1  # SQLite's, on the leaders' connection: see _others_write
        self._checkpointing = False
        self._stop_checkpoints = threading.Event()
        self._last_commit = 0.0  # monotonic time of this process's last stored batch

    def store(self, event: Event, raw_body: bytes | None = None) -> bool:
        row = row_for(event, raw_body)
        if not self._checkpointing:
            self._start_checkpoints()
        me = _Pending(row)
        self._leader.join(me)
        if me.error is not None:
            raise me.error
        return me.new

    def _pause(self) -> None:
        """While deliveries come in together (the last batch held more than one) and
        other connections write too, wait ``GROUP_WAIT_S`` for those still being parsed
        before writing: fewer, larger commits take less CPU per delivery and pass the
        writer's turn between processes less often (gunicorn 2x8: 7% more
        acknowledgements a second with it). A lone writer (one granian process, no
        worker writing) only waits on itself: it acknowledged 14-40% fewer deliveries
        a second with the pause (``bench/ingest.py``). A lone delivery is written at
        once, so a quiet server answers without the wait.
        """
        if self._together:
            time.sleep(GROUP_WAIT_S)

    def _commit(self, batch: list[_Pending]) -> None:
        """Write a batch (at most ``BATCH_MAX``) and set each request's outcome."""
        new = self._write([p.row for p in batch])
        self._together = len(batch) > 1 and self._others_write()
        self._last_commit = time.monotonic()
        for p in batch:
            ident = p.row["delivery_id"]
            p.new = ident in new
            new.discard(ident)  # the same id twice in one batch: only the first is new

    def _others_write(self) -> bool:
        """Whether another connection committed since this one last asked (SQLite's
        ``data_version``): another web process, or a worker. Always, on PostgreSQL."""
        conn = self._conn
        if not self.database.is_sqlite or conn is None:
            return True
        cur = conn.cursor()
        try:
            (version,) = cur.execute("PRAGMA data_version").fetchone()
        finally:
            cur.close()
        others, self._data_version = version != self._data_version, version
        return others

    def _tell(self, batch: list[_Pending]) -> None:
        """After the requests are woken: the listeners, when something was new."""
        if not any(p.new for p in batch):
            return
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # stored is stored: a listener cannot fail the requests
                log.exception("inbox listener failed")

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = ingest_engine(self.database)
        return self._engine

    def _start_checkpoints(self) -> None:
        with self._started:
            if self._checkpointing:
                return
            self._checkpointing = True
            if self.database.is_sqlite and self.database.engine.url.database:
                threading.Thread(
                    target=self._checkpoints,
                    name="minipipe-inbox-checkpoint",
                    daemon=True,
                ).start()

    def _checkpoints(self) -> None:
        """Keep the WAL short, beside the commits rather than in them (SQLite only): a
        checkpoint inside a commit would hold up every acknowledgement waiting
        behind it.

        A checkpoint restarts the WAL only once it has copied every frame, so under
        steady load the WAL keeps growing until the load pauses (measured: 430 MB
        after 18,000 deliveries without a pause); a restart then reuses the file
        from its start but keeps its size. Once no delivery has been stored here
        for ``WAL_TRUNCATE_QUIET_S``, a WAL over ``SQLITE_WAL_SIZE_LIMIT`` is
        truncated, in the writers' turn.

        Measured and not kept: ``journal_size_limit`` truncates in the writer that
        restarts the WAL, an ftruncate of ~22 ms inside an acknowledgement (p99 at
        500/s went from 7-22 to 28-37 ms); copying the last frames in the writers'
        turn every round restarts the WAL under load too, but that copy ends in two
        fsyncs, which held every acknowledgement for 10-75 ms each second.
        """
        path = self.database.engine.url.database
        lock_path = sqlite_lock_path(self.database.engine)
        turn: dict[str, Any] = {}

        def truncate_if_outgrown(conn: sqlite3.Connection) -> None:
            if self._wal_outgrown(path):
                take_write_turn(conn, turn, lock_path)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    end_write_turn(turn)

        db.checkpoint_wal(
            self.database,
            self._stop_checkpoints,
            lambda: CHECKPOINT_EVERY_S,
            truncate_if_outgrown,
        )

    def _wal_outgrown(self, path: str) -> bool:
        """Quiet here for a while, and the WAL is over the limit."""
        if time.monotonic() - self._last_commit < WAL_TRUNCATE_QUIET_S:
            return False
        try:
            return os.path.getsize(f"{path}-wal") > db.SQLITE_WAL_SIZE_LIMIT
        except OSError:
            return False

    def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert on the connection the leaders keep (one leader at a time), which
        spares a pool checkout and reset per batch. A failed connection is
        discarded; a busy database is tried again."""
        for attempt in range(1, WRITE_TRIES + 1):
            conn = self._conn if self._conn is not None else self.engine.raw_connection()
            self._conn = None
            try:
                new = _insert_for(self.engine)(conn, rows)
            except BaseException as err:
                conn.invalidate()  # whatever state it is in, the next batch starts afresh
                conn.close()
                if not isinstance(err, OperationalError) or attempt == WRITE_TRIES:
                    raise
                log.warning("inbox write failed (attempt %d), retrying", attempt, exc_info=True)
                continue
            self._conn = conn
            return new
        raise AssertionError("unreachable")


_LIVE: weakref.WeakSet[Inbox] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for inbox in list(_LIVE):
        inbox._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
