"""Engines, sessions and units of work: the one place that owns transactions.

SQLite runs in WAL mode with foreign keys on. pysqlite's own transaction
handling is switched off (SQLAlchemy's documented recipe) so that SAVEPOINTs
work and so a writing unit can take the write lock up front with
``BEGIN IMMEDIATE``: two writers then queue instead of failing on a stale
snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from . import audit
from .errors import Conflict, Refused

SQLITE_BUSY_TIMEOUT_S = 30


def default_url(instance_path: str | Path) -> str:
    path = Path(instance_path)
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'minipipe.db'}"


def make_engine(url: str, **kw: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}, **kw
        )
        _sqlite_setup(engine)
        return engine
    kw.setdefault("pool_pre_ping", True)
    return create_engine(url, **kw)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """An engine and its session factories, one per process."""

    def __init__(self, url: str, **engine_kw: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kw)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(sqlite_immediate=True)
        self._write = sessionmaker(writer, expire_on_commit=False)

    def session(self, *, write: bool = True) -> Session:
        return (self._write if write else self._read)()

    @contextmanager
    def unit(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error.

        A ``Refused`` error still leaves its audit row: the unit rolls back
        whatever the attempt changed, records the refusal, commits that, and
        re-raises. A lost optimistic-lock race becomes ``Conflict``.
        """
        db = self.session(write=write)
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

    def dispose(self) -> None:
        self.engine.dispose()


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
