"""Engines, sessions and units of work: the one place that owns transactions.

SQLite runs in WAL mode with foreign keys on. pysqlite's own transaction
handling is switched off (SQLAlchemy's documented recipe) so that SAVEPOINTs
work, and a unit takes SQLite's write lock with ``BEGIN IMMEDIATE`` just
before its first write, not at its start:

- reads before that see the latest commit (no snapshot to go stale, so a
  late write never fails with SQLITE_BUSY_SNAPSHOT; optimistic locking guards
  the rows a unit read and then changes);
- a worker's GitHub reads, made before it writes, do not hold the lock that
  the webhook's acknowledgements need;
- two writers queue on the lock instead of failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.expression import Executable

from minipipe_gh.core.errors import Conflict, Refused
from minipipe_gh.store import audit

SQLITE_BUSY_TIMEOUT_S = 30
# A PostgreSQL connection idle this long is pinged before use (``_ping_when_idle``).
IDLE_PING_S = 1.0
# A WAL that grew past this during a burst is truncated once writes pause: see
# ``Inbox._checkpoints``.
SQLITE_WAL_SIZE_LIMIT = 64 * 1024 * 1024
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|SAVEPOINT|CREATE|DROP|ALTER)\b", re.I)


def default_url(instance_path: str | Path) -> str:
    path = Path(instance_path)
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'minipipe.db'}"


def _json_text(value: Any) -> str:
    """A JSON column's text: orjson's (a tenth of ``json.dumps``'s CPU; every delivery's
    moves write its effects), integer keys spelled as strings as ``json.dumps`` does."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, **kw: Any) -> Engine:
    kw.setdefault("json_serializer", _json_text)
    kw.setdefault("json_deserializer", orjson.loads)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}, **kw
        )
        _sqlite_setup(engine)
        return engine
    engine = create_engine(url, **kw)
    if not kw.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


_GONE: weakref.WeakKeyDictionary[Engine, list[float]] = weakref.WeakKeyDictionary()


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for ``IDLE_PING_S``, or
    a disconnect was seen since it was last used; else use it as it is.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip each, two or
    three per delivery. What it guards against, a server restarted or a connection
    dropped while idle, is caught here the same way (a failed ping replaces every
    connection older than it: ``InvalidatePoolError``). A connection that breaks within
    a second of its last use fails its statement, and the pool is replaced as after
    any disconnect; the worker retries that delivery, and the inbox its batch.
    """
    dialect = engine.dialect
    error = dialect.loaded_dbapi.Error
    gone = _GONE[engine] = [0.0]  # when a disconnect was last seen

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None:  # new: just connected
            return
        if time.monotonic() - since < IDLE_PING_S and since > gone[0]:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except error as err:
            if not dialect.is_disconnect(err, dbapi_conn, None):
                raise
            gone[0] = time.monotonic()
            raise InvalidatePoolError(str(err)) from err

    @event.listens_for(engine, "handle_error")
    def _seen_gone(context: Any) -> None:
        if context.is_disconnect:
            gone[0] = time.monotonic()


def seen_disconnect(engine: Engine) -> None:
    """A statement run outside SQLAlchemy's execution found the connection gone: every
    pooled connection is pinged at its next use (``_ping_when_idle``)."""
    gone = _GONE.get(engine)
    if gone is not None:
        gone[0] = time.monotonic()


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # No commit copies the WAL back into the file itself: that checkpoint (every
        # ~1,000 pages, fsyncs included) ran inside a commit still holding the writers'
        # turn, and every acknowledgement waited behind it (0.8 s in bench runs). The
        # web tier's inbox and each worker checkpoint beside the commits instead
        # (``Inbox._checkpoints``, ``checkpoint_wal``).
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    lock_path = sqlite_lock_path(engine)

    @event.listens_for(engine, "before_cursor_execute")
    def _lock_before_first_write(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        if not dbapi_conn.in_transaction and WRITES.match(statement):
            try:
                begin_write(dbapi_conn, conn.connection.info, lock_path)
            except sqlite3.OperationalError as err:  # busy past the timeout: as SQLAlchemy would
                raise OperationalError("BEGIN IMMEDIATE", None, err) from err

    @event.listens_for(engine, "checkin")
    def _done_writing(_dbapi_conn: Any, record: Any) -> None:
        end_write_turn(record.info)


def sqlite_lock_path(engine: Engine) -> str | None:
    """The flock file beside a SQLite database file (None for an in-memory database)."""
    return f"{engine.url.database}.writer-lock" if engine.url.database else None


def begin_write(
    dbapi_conn: sqlite3.Connection, info: dict[str, Any], lock_path: str | None
) -> None:
    """Take SQLite's write lock on a driver connection: our turn, then ``BEGIN IMMEDIATE``
    (``sqlite3.OperationalError`` when still busy after the busy timeout)."""
    take_write_turn(dbapi_conn, info, lock_path)
    dbapi_conn.execute("BEGIN IMMEDIATE")


def take_write_turn(
    dbapi_conn: sqlite3.Connection, info: dict[str, Any], lock_path: str | None
) -> None:
    """Wait our turn to write on the flock beside the file, until ``end_write_turn``
    (the pool calls it when the connection is checked in). Past the connection's
    busy timeout, go on without it: SQLite's own lock then answers "database is
    locked"."""
    if lock_path:
        if "busy_s" not in info:
            (busy_ms,) = dbapi_conn.execute("PRAGMA busy_timeout").fetchone()
            info["busy_s"] = busy_ms / 1000
        _queue_for_writing(info, lock_path, info["busy_s"])


def end_write_turn(info: dict[str, Any]) -> None:
    """Let the next writer go."""
    fd = info.pop("writer_lock", None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    turn = info.pop("writer_turn", None)
    if turn is not None:
        turn.release()


# One lock per SQLite file for the threads of this process: they wait their turn on it,
# asleep, and only its holder tries the flock. Threads polling the flock themselves
# burnt a quarter of a busy worker's CPU (a try, a sleep and the GIL every 0.2-2 ms each).
_TURNS: dict[str, threading.Lock] = {}
_TURNS_LOCK = threading.Lock()


# The flock file of each SQLite file, opened once per process (not at every write): only
# the thread whose turn it is locks or unlocks it.
_FILES: dict[str, int] = {}


def _lock_file(lock_path: str) -> int:
    fd = _FILES.get(lock_path)
    if fd is None:
        fd = _FILES[lock_path] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd


def _thread_turn(lock_path: str) -> threading.Lock:
    turn = _TURNS.get(lock_path)
    if turn is None:
        with _TURNS_LOCK:
            turn = _TURNS.setdefault(lock_path, threading.Lock())
    return turn


def _queue_for_writing(info: dict[str, Any], lock_path: str, timeout_s: float) -> None:
    """Writers of one SQLite file wait their turn: the threads of a process on a lock
    of its own, then the processes on an flock beside the file (a waiter wakes within
    milliseconds of the lock's release, where SQLite's own busy handler sleeps up to
    100 ms between tries)."""
    if "writer_lock" in info:
        return
    deadline = time.monotonic() + timeout_s
    turn = _thread_turn(lock_path)
    if not turn.acquire(timeout=max(timeout_s, 0.0)):
        return  # SQLite's own lock then answers "database is locked"
    try:
        fd = _lock_file(lock_path)
    except OSError:
        turn.release()
        raise
    pause = 0.0002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                turn.release()
                return  # SQLite's own lock then answers "database is locked"
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    info["writer_lock"] = fd
    info["writer_turn"] = turn


def checkpoint_wal(
    database: Database,
    stop: threading.Event,
    every_s: Callable[[], float] = lambda: 1.0,
    then: Callable[[sqlite3.Connection], None] | None = None,
) -> None:
    """Until ``stop``: copy what the WAL holds back into the database file every
    ``every_s()``, on a connection of its own and outside the writers' turn (the one
    loop for every process that does it: the inbox's, each worker's). A PASSIVE
    checkpoint waits for no writer and no writer waits for it; ``then`` runs after
    each (the inbox truncates an outgrown WAL there). SQLite only: nothing to do on
    PostgreSQL or in memory."""
    path = database.engine.url.database
    if not database.is_sqlite or not path:
        return
    # A short busy timeout: whatever ``then`` does gives up rather than hold writers up.
    conn = sqlite3.connect(path, timeout=0.1, check_same_thread=False, isolation_level=None)
    try:
        while not stop.wait(every_s()):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if then is not None:
                    then(conn)
            except sqlite3.OperationalError:  # another process's checkpoint is running
                continue
    finally:
        conn.close()


class Prepared:
    """A Core statement compiled once for one dialect, to run on the driver's own cursor
    (``Driver``): its SQL, and the bind and result processors SQLAlchemy itself would
    apply (a datetime as SQLite's text, JSON through the engine's serializer), so what
    it writes and returns is what the ORM reads and writes."""

    __slots__ = ("sql", "positional", "binds", "results", "writes", "record")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        defaults = compiled.params  # literal values (``attempts + 1``) and None elsewhere
        names = list(compiled.positiontup or ()) if compiled.positional else list(defaults)
        self.sql = str(compiled)
        self.positional = compiled.positional
        self.binds = [
            (
                name,
                defaults.get(name),
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in names
        ]
        procs = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in compiled._result_columns
        ]
        self.results = procs if any(procs) else None
        self.writes = bool(WRITES.match(self.sql))
        # A row with the statement's column names as attributes, as a Core row has.
        keys = [c.keyname for c in compiled._result_columns]
        self.record = namedtuple("Record", keys) if keys else None  # type: ignore[misc]

    def params(self, values: dict[str, Any]) -> Any:
        """The driver's parameters: a sequence (qmark) or a mapping (pyformat)."""
        out = []
        for name, default, proc in self.binds:
            value = values.get(name, default)
            out.append(value if proc is None else proc(value))
        if self.positional:
            return out
        return dict(zip((b[0] for b in self.binds), out, strict=True))

    def rows(self, cursor: Any) -> list[tuple[Any, ...]]:
        rows = cursor.fetchall()
        if self.results is None:
            return [tuple(r) for r in rows]
        procs = self.results
        return [
            tuple(v if p is None else p(v) for v, p in zip(r, procs, strict=True)) for r in rows
        ]


@contextmanager
def autocommitted(conn: PoolProxiedConnection, error: type[Exception]) -> Iterator[None]:
    """PostgreSQL: each statement a transaction of its own while inside, then back to
    transactions as the pool lends them (nothing to restore on a connection invalidated
    meanwhile; ``error``, the driver's, from one that broke is left to its discarding)."""
    conn.dbapi_connection.autocommit = True  # type: ignore[union-attr]
    try:
        yield
    finally:
        if conn.dbapi_connection is not None:  # None once invalidated
            with contextlib.suppress(error):
                conn.dbapi_connection.autocommit = False  # type: ignore[union-attr]


class Driver:
    """Statements of one transaction on the driver's own connection: a ``Prepared``
    statement costs the driver's call and its parameters, not SQLAlchemy's execution
    context (measured: 19 µs a statement against 134 µs as a Core statement). On
    SQLite the write lock is taken before the first write, as for every connection."""

    __slots__ = ("database", "conn", "cursor", "_sqlite", "_alone")

    def __init__(
        self, database: Database, conn: PoolProxiedConnection, *, alone: bool = False
    ) -> None:
        self.database = database
        self.conn = conn
        self.cursor = conn.cursor()
        self._sqlite = database.is_sqlite
        self._alone = alone  # autocommit: each statement is a transaction of its own

    @property
    def alone(self) -> bool:
        """Whether each statement commits on its own (no transaction around them)."""
        return self._alone

    def execute(self, statement: Executable, values: dict[str, Any]) -> Any:
        """Run ``statement`` with ``values``; the driver's cursor, for ``rows``/rowcount."""
        prepared = self.database.prepared(statement)
        for observe in self.database.observers:
            observe(self.conn.info, prepared.sql)
        try:
            if self._sqlite and prepared.writes:
                dbapi_conn = self.conn.dbapi_connection
                if not dbapi_conn.in_transaction:  # type: ignore[union-attr]
                    begin_write(dbapi_conn, self.conn.info, self.database.lock_path)  # type: ignore[arg-type]
            self.cursor.execute(prepared.sql, prepared.params(values))
        except self.database._dbapi_error as err:  # as SQLAlchemy's: OperationalError, ...
            raise DBAPIError.instance(prepared.sql, None, err, self.database._dbapi_error) from err
        if self._alone:  # committed with it: observers see each transaction end
            for observe in self.database.observers:
                observe(self.conn.info, "COMMIT")
        return self.cursor

    def rows(self, statement: Executable, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        cursor = self.execute(statement, values)
        return self.database.prepared(statement).rows(cursor)

    def records(self, statement: Executable, values: dict[str, Any]) -> list[Any]:
        """The rows as named tuples: each column by its name, as on a Core row."""
        cursor = self.execute(statement, values)
        prepared = self.database.prepared(statement)
        make = prepared.record._make  # type: ignore[union-attr]
        return [make(r) for r in prepared.rows(cursor)]


class Part:
    """One thread's part of a group commit: ``done`` is held until the batch that holds
    it committed, or until its thread is asked to lead the next batch (a bare lock is
    cheaper to wait on than a ``threading.Event``)."""

    __slots__ = ("done", "lead", "error")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.lead = False
        self.error: BaseException | None = None


class Leader:
    """Group commit with a leader, as in MySQL's binary log group commit: the thread
    that finds no commit under way commits its own part together with every part
    queued behind it, wakes those threads, and hands the lead to the first that came
    in meanwhile. There is no writer thread to wake and wait for: a lone part is
    written by its own thread, and under load each commit holds what arrived during
    the one before it. The inbox's acknowledgements and the worker's moves both
    commit this way.

    ``commit(batch)`` writes a batch and sets each part's outcome (an error it raises
    becomes every part's); ``pause()`` runs before the leader takes its batch;
    ``committed(batch)`` runs once its threads are woken. At most ``most`` parts go in
    one batch."""

    def __init__(
        self,
        commit: Callable[[list[Any]], None],
        *,
        most: int = 0,
        pause: Callable[[], None] | None = None,
        committed: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self._commit = commit
        self._most = most or None
        self._pause = pause
        self._committed = committed
        self._mutex = threading.Lock()
        self._queue: list[Part] = []  # the leader's own part first
        self._leading = False

    def join(self, part: Part) -> None:
        """Return once ``part``'s batch committed (its outcome is set on it)."""
        with self._mutex:
            self._queue.append(part)
            follow, self._leading = self._leading, True
        if follow:
            part.done.acquire()  # committed by a leader, or asked to lead
        if not follow or part.lead:
            self._lead(part)

    def _lead(self, me: Part) -> None:
        try:
            if self._pause is not None:
                self._pause()
            with self._mutex:
                batch = self._queue[: self._most]
                del self._queue[: self._most]
            try:
                self._commit(batch)
            except BaseException as err:  # every waiter must wake, whatever happened
                for part in batch:
                    part.error = err
            for part in batch:
                if part is not me:
                    part.done.release()
            if self._committed is not None:
                self._committed(batch)
        finally:
            with self._mutex:
                if self._queue and self._queue[0] is me:  # interrupted before its batch
                    del self._queue[0]
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.release()
                else:
                    self._leading = False


class _Job(Part):
    """A thread's statements in a ``GroupCommit`` transaction, and their outcome."""

    __slots__ = ("fn", "single", "result")

    def __init__(self, fn: Callable[[Driver], Any], single: bool) -> None:
        super().__init__()
        self.fn = fn
        self.single = single
        self.result: Any = None


class GroupCommit:
    """Short transactions of many threads, committed together (a ``Leader`` for the
    worker's moves): each caller still returns only once its own statements are
    committed.

    Under load a worker's threads each wait their turn to write for tens of ms, and
    each turn costs a hand-over of SQLite's lock; here one turn carries what queued
    during the last. A job that raises one of ``isolated`` (raised before it wrote:
    a lost lease) fails alone; any other error rolls the shared transaction back, and
    every job of it runs again in a transaction of its own.

    On PostgreSQL a batch of one ``single`` job runs in autocommit: its statement is one
    round trip, where BEGIN and COMMIT would be two more (most batches, but at the
    busiest times, hold one job)."""

    def __init__(self, database: Database, isolated: tuple[type[BaseException], ...]) -> None:
        self.database = database
        self.isolated = isolated
        self._leader = Leader(self._commit)

    def run(self, fn: Callable[[Driver], Any], *, single: bool = False) -> Any:
        """``fn(driver)``'s result, once committed; or its error. ``single``: ``fn`` writes
        one statement, or asks ``driver.alone`` before it writes another (alone, each
        commits on its own)."""
        job = _Job(fn, single)
        self._leader.join(job)
        if job.error is not None:
            raise job.error
        return job.result

    def _commit(self, batch: list[_Job]) -> None:
        try:
            with self.database.driver(alone=len(batch) == 1 and batch[0].single) as tx:
                for job in batch:
                    try:
                        job.result = job.fn(tx)
                    except self.isolated as err:
                        job.error = err
            return
        except Exception:
            if len(batch) == 1:
                raise
        for job in batch:  # alone, so that each gets its own outcome
            job.result, job.error = None, None
            try:
                with self.database.driver() as tx:
                    job.result = job.fn(tx)
            except Exception as err:
                job.error = err


class Database:
    """An engine and its session factories, one per process."""

    def __init__(self, url: str, **engine_kw: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kw)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.lock_path = sqlite_lock_path(self.engine) if self.is_sqlite else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, info={"database": self})
        self._prepared: dict[Executable, Prepared] = {}
        self._dbapi_error = self.engine.dialect.loaded_dbapi.Error
        # Told (the connection's ``info``, the SQL) of each statement a ``Driver`` runs and
        # of its "COMMIT", as SQLAlchemy's engine events are of every other statement.
        self.observers: list[Callable[[dict[str, Any], str], None]] = []
        _LIVE.add(self)

    def prepared(self, statement: Executable) -> Prepared:
        """``statement`` compiled for this database, once."""
        done = self._prepared.get(statement)
        if done is None:
            done = self._prepared.setdefault(statement, Prepared(statement, self.engine.dialect))
        return done

    def session(self) -> Session:
        """A session of its own; SQLite takes the write lock at its first write."""
        return self._sessions()

    @contextmanager
    def unit(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error.

        A ``Refused`` error still leaves its audit row: the unit rolls back
        whatever the attempt changed, records the refusal, commits that, and
        re-raises. A lost optimistic-lock race becomes ``Conflict``.
        """
        db = self.session()
        try:
            yield db
            db.commit()
        except Refused as err:
            db.rollback()
            if err.audit:
                audit.record(db, **err.audit)
                db.commit()
            raise
        except StaleDataError as err:
            db.rollback()
            raise Conflict("the record was changed by someone else; reload and retry") from err
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """One transaction for Core statements, without the ORM's per-statement work
        (the worker's moves of a delivery): committed on success, else rolled back."""
        with self.engine.begin() as conn:
            yield conn

    def read(self, statement: Executable, values: dict[str, Any]) -> list[Any]:
        """One read that is a single statement, as named records (``Driver.records``),
        with no transaction around it: a statement is its own, and on PostgreSQL a
        BEGIN and a COMMIT are two round trips more (SQLite reads outside BEGIN anyway)."""
        with self.driver(alone=True) as tx:
            return tx.records(statement, values)

    @contextmanager
    def driver(self, *, alone: bool = False) -> Iterator[Driver]:
        """One transaction on the driver's own connection (``Driver``): committed on
        success, else rolled back; a driver error comes out as SQLAlchemy's. ``alone``
        (``read``, the worker's one-statement lease): each statement in autocommit
        instead, on PostgreSQL; SQLite's are one transaction still."""
        error = self._dbapi_error
        try:
            conn = self.engine.raw_connection()
        except error as err:  # e.g. the server is down: as SQLAlchemy's connect says it
            raise DBAPIError.instance(None, None, err, error) from err
        alone = alone and not self.is_sqlite
        try:
            if alone:
                with autocommitted(conn, error):
                    yield Driver(self, conn, alone=True)
            else:
                yield Driver(self, conn)
                for observe in self.observers:
                    observe(conn.info, "COMMIT")
                conn.commit()
        except (error, DBAPIError) as err:  # a statement's comes translated (Driver.execute)
            raw = err.orig if isinstance(err, DBAPIError) else err
            gone = self.engine.dialect.is_disconnect(raw, conn.dbapi_connection, None)
            if gone:  # not back to the pool: the next checkout connects afresh
                conn.invalidate(raw)
                seen_disconnect(self.engine)
            else:
                with contextlib.suppress(error):
                    conn.rollback()
            if isinstance(err, DBAPIError):
                err.connection_invalidated = gone
                raise
            raise DBAPIError.instance(None, None, err, error, connection_invalidated=gone) from err
        except BaseException:
            with contextlib.suppress(self._dbapi_error):
                conn.rollback()
            raise
        finally:
            conn.close()  # back to the pool: the SQLite writer's turn ends there

    @staticmethod
    def within(s: Session) -> Driver:
        """A ``Driver`` on the connection of a session's transaction (its commit is the
        session's)."""
        conn = s.connection()
        database = s.info["database"]
        return Driver(database, conn.connection)

    def dispose(self) -> None:
        self.engine.dispose()


_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (``gunicorn --preload``, multiprocessing) must not use the parent's
    connections: it drops them without closing them (SQLAlchemy's recipe for forks)."""
    for database in list(_LIVE):
        database.engine.dispose(close=False)
    _TURNS.clear()  # a lock some parent thread held at the fork would never be released
    for fd in _FILES.values():  # shared with the parent: its flock would be the parent's
        with contextlib.suppress(OSError):
            os.close(fd)
    _FILES.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def attempt(db: Session) -> Iterator[None]:
    """Run a step inside a SAVEPOINT; a refusal undoes the step but keeps its audit row.

    For handlers that must carry on after a refused command (and answer it)
    within the same delivery's transaction.
    """
    nested = db.begin_nested()
    try:
        yield
    except Refused as err:
        nested.rollback()
        if err.audit:
            audit.record(db, **err.audit)
        raise
    except StaleDataError as err:
        nested.rollback()
        raise Conflict("the record was changed by someone else; reload and retry") from err
    except BaseException:
        nested.rollback()
        raise
    else:
        nested.commit()
