"""``store/db.Driver``: statements on the driver's own cursor behave as SQLAlchemy's do.

The claim, the moves, the audit rows and the check run's reads skip Core's execution
context; these tests hold them to what a Core statement would give: SQLAlchemy's
error types, the transaction they were run in, and rows whose columns have names.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from minipipe_gh.store import audit
from minipipe_gh.store.db import Driver
from minipipe_gh.store.models import AuditEntry, utcnow

ROW = {
    "entity": "patch",
    "entity_id": "L-1",
    "project_id": "o/r",
    "from_state": None,
    "to_state": "created",
    "outcome": "moved",
    "actor": "someone",
    "source": "test",
    "reason": None,
    "details": {"k": [1, 2]},
}


def _audit_rows(rt) -> int:
    with rt.database.unit() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry))


def test_a_refused_statement_raises_sqlalchemys_error_and_writes_nothing(rt):
    before = _audit_rows(rt)
    with pytest.raises(IntegrityError), rt.database.driver() as tx:
        tx.execute(audit._INSERT, {**ROW, "at": utcnow()})  # a good row first
        tx.execute(audit._INSERT, {**ROW, "actor": None, "at": utcnow()})  # NOT NULL
    assert _audit_rows(rt) == before  # the good row rolled back with it
    with rt.database.driver() as tx:  # the connection went back to the pool usable
        tx.execute(audit._INSERT, {**ROW, "at": utcnow()})
    assert _audit_rows(rt) == before + 1


def test_an_audit_row_is_part_of_its_units_transaction(rt):
    before = _audit_rows(rt)
    with pytest.raises(RuntimeError), rt.database.unit() as s:
        audit.record(s, **ROW)
        raise RuntimeError("the handler failed")
    assert _audit_rows(rt) == before
    with rt.database.unit() as s:
        audit.record(s, **ROW)
        [entry] = audit.history(s, "patch", "L-1")  # read back in the same unit
        assert entry.details == {"k": [1, 2]} and entry.at.tzinfo is not None


def test_records_name_each_column_as_a_core_row_does(rt):
    with rt.database.unit() as s:
        audit.record(s, **ROW)
    query = select(AuditEntry.actor, AuditEntry.details.label("what"), AuditEntry.at).where(
        AuditEntry.entity_id == "L-1"
    )
    with rt.database.driver() as tx:
        [row] = tx.records(query, {})
    with rt.database.unit() as s:
        core = s.execute(query).one()
    assert (row.actor, row.what, row.at) == (core.actor, core.what, core.at)


def _in_transaction(dbapi_conn) -> bool:
    if isinstance(dbapi_conn, sqlite3.Connection):
        return dbapi_conn.in_transaction
    return dbapi_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


def test_a_lone_read_runs_outside_a_transaction_and_leaves_the_connection_as_it_was(
    rt, backend, monkeypatch
):
    """``Database.read``: no BEGIN before its statement, so none to COMMIT after it (two
    round trips on PostgreSQL); the pooled connection still rolls a failed unit back."""
    with rt.database.unit() as s:
        audit.record(s, **ROW)
    after: list[bool] = []
    real = Driver.records

    def records(self, statement, values):
        got = real(self, statement, values)
        after.append(_in_transaction(self.conn.dbapi_connection))
        return got

    monkeypatch.setattr(Driver, "records", records)
    query = select(AuditEntry.actor).where(AuditEntry.entity_id == "L-1")
    [row] = rt.database.read(query, {})
    assert row.actor == "someone"
    with rt.database.driver() as tx:
        tx.records(query, {})
    # a read in a transaction leaves one open on PostgreSQL; SQLite reads outside BEGIN
    assert after == [False, backend == "postgres"]
    test_a_refused_statement_raises_sqlalchemys_error_and_writes_nothing(rt)
