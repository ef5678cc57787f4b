"""The pool pings a PostgreSQL connection only after it sat idle, or after a disconnect.

SQLAlchemy's ``pool_pre_ping`` costs a round trip at every checkout (two or three per
delivery); ``store/db._ping_when_idle`` keeps what it is for: a connection the server
dropped while it sat in the pool is replaced before use, never handed to a statement.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError

from minipipe_gh.store import db as db_mod
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Delivery


def _pings(database: Database, monkeypatch: Any) -> list[int]:
    """Each ping the pool makes (the dialect's own, as SQLAlchemy's pre-ping uses)."""
    pings: list[int] = []
    real = database.engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(database.engine.dialect, "do_ping", counted)
    return pings


def _connects(database: Database) -> list[int]:
    made: list[int] = []
    event.listen(database.engine, "connect", lambda *_: made.append(1))
    return made


def _use(database: Database) -> None:
    with database.unit() as s:
        s.execute(select(Delivery.seq).limit(1)).all()


def _drop_every_connection(database: Database, backend: str, cluster: Any) -> None:
    """What a server restart or an idle timeout does to the pooled connections."""
    if backend == "postgres":
        with cluster.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database.engine.url.database,),
            )
    else:
        database.engine.dispose()  # a file has no server to drop it: the pool lets go


def test_a_connection_in_steady_use_is_not_pinged_one_idle_past_the_limit_is(
    database: Database, backend: str, monkeypatch: Any
) -> None:
    pings = _pings(database, monkeypatch)
    _use(database)  # connects: a new connection needs no ping
    for _ in range(10):
        _use(database)
    assert pings == []
    monkeypatch.setattr(db_mod, "IDLE_PING_S", 0.0)  # as if each had sat idle a while
    _use(database)
    assert len(pings) == (1 if backend == "postgres" else 0)  # a file cannot drop it


def test_a_connection_dropped_while_idle_is_replaced_before_a_statement_sees_it(
    database: Database, backend: str, pg_cluster: Any, monkeypatch: Any
) -> None:
    _use(database)
    made = _connects(database)
    _drop_every_connection(database, backend, pg_cluster)
    monkeypatch.setattr(db_mod, "IDLE_PING_S", 0.0)
    _use(database)  # no error: pinged, found dead, replaced
    assert made == [1]


def test_after_a_disconnect_every_pooled_connection_is_pinged_at_its_next_use(
    database: Database, backend: str, pg_cluster: Any, monkeypatch: Any
) -> None:
    """Used a moment ago, so not pinged for being idle: once one statement found its
    connection gone, the others are pinged before use too."""
    first, second = database.engine.connect(), database.engine.connect()
    first.close(), second.close()  # two in the pool, both just used
    _drop_every_connection(database, backend, pg_cluster)
    made = _connects(database)
    if backend == "postgres":
        with pytest.raises(OperationalError), database.driver() as tx:
            tx.rows(select(Delivery.seq).limit(1), {})  # this one hit the dropped connection
        assert made == []
        with database.driver() as tx, database.unit() as s:  # both at once: two from the pool
            tx.rows(select(Delivery.seq).limit(1), {})
            s.execute(text("SELECT 1")).all()
        assert len(made) == 2  # the dead one replaced, before either statement ran
    else:
        _use(database)
        assert len(made) == 1
