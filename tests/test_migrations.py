"""Alembic migrations from an empty file, and the SQLite settings every connection gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from minipipe_gh import migrate
from minipipe_gh.db import Database, default_url, make_engine

CORE_TABLES = {"sessions", "patches", "audit_log"}
CORE_INDEXES = {
    "sessions": {
        "ix_sessions_project_state",
        "ix_sessions_state",
        "ix_sessions_agent",
        "ix_sessions_pr",
        "ix_sessions_branch",
    },
    "patches": {
        "ix_patches_state",
        "ix_patches_run_state",
        "ix_patches_workstream_state",
        "ix_patches_session",
        "ix_patches_pr",
    },
    "audit_log": {"ix_audit_entity", "ix_audit_at"},
}


def test_upgrade_from_empty_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    try:
        assert migrate.current_revision(engine) is None
        assert not migrate.is_current(engine)

        migrate.upgrade(url)

        assert migrate.is_current(engine)
        head = migrate.head_revision(url)
        assert head is not None and migrate.current_revision(engine) == head
        insp = inspect(engine)
        tables = set(insp.get_table_names())
        assert CORE_TABLES | {"alembic_version"} <= tables
        for table, expected in CORE_INDEXES.items():
            assert expected <= {ix["name"] for ix in insp.get_indexes(table)}, table
        assert {c["name"] for c in insp.get_columns("patches")} >= {
            "ledger_id",
            "patch_id",
            "session_id",
            "project_id",
            "pr_number",
            "run_id",
            "workstream_id",
            "state",
            "risk",
            "metadata",
            "created_at",
            "updated_at",
            "version",
        }
        fks = insp.get_foreign_keys("patches")
        assert any(fk["referred_table"] == "sessions" for fk in fks)
        with engine.connect() as conn:
            triggers = set(
                conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            )
        assert {"audit_log_no_update", "audit_log_no_delete"} <= triggers
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    migrate.upgrade(url)
    database = Database(url)
    try:
        with database.engine.connect() as conn:
            before = conn.execute(text("SELECT sql FROM sqlite_master ORDER BY name")).all()
        migrate.upgrade(url)
        with database.engine.connect() as conn:
            after = conn.execute(text("SELECT sql FROM sqlite_master ORDER BY name")).all()
        assert before == after
        assert migrate.is_current(database.engine)
    finally:
        database.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    migrate.upgrade(url)
    command.downgrade(migrate.alembic_config(url), "base")
    engine = make_engine(url)
    try:
        assert not CORE_TABLES & set(inspect(engine).get_table_names())
        assert migrate.current_revision(engine) is None
        migrate.upgrade(url)
        assert migrate.is_current(engine)
        assert set(inspect(engine).get_table_names()) >= CORE_TABLES
    finally:
        engine.dispose()


def test_default_url_is_a_file_in_the_instance_folder(tmp_path: Path) -> None:
    inst = tmp_path / "instance" / "nested"
    url = default_url(inst)
    assert inst.is_dir()
    assert url == f"sqlite:///{inst / 'minipipe.db'}"


# --- connection settings ----------------------------------------------------------


@pytest.mark.parametrize("write", [True, False], ids=["write-unit", "read-unit"])
def test_database_connections_use_wal_and_foreign_keys(database: Database, write: bool) -> None:
    with database.unit(write=write) as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert db.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    # A second pooled connection gets the same settings.
    with database.engine.connect() as a, database.engine.connect() as b:
        for conn in (a, b):
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(IntegrityError), database.unit() as db:
        db.execute(
            text(
                "INSERT INTO patches (ledger_id, patch_id, session_id, project_id, state, risk,"
                " risk_reasons, files, additions, deletions, paths, metadata, created_at,"
                " updated_at, version) VALUES ('l1', 'sha', 'no-such-session', 'o/r', 'created',"
                " 'low', '[]', 0, 0, 0, '[]', '{}', '2026-01-01', '2026-01-01', 1)"
            )
        )
    with database.unit(write=False) as db:
        assert db.execute(text("SELECT count(*) FROM patches")).scalar() == 0


def test_write_units_take_the_write_lock_up_front(database: Database) -> None:
    """``BEGIN IMMEDIATE``: a second writer cannot even start while one is open."""
    other = Database(database.url)

    @event.listens_for(other.engine, "connect")
    def _short_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 100")

    try:
        with database.unit() as db:
            db.execute(text("SELECT 1"))
            # A reader is not blocked (WAL) ...
            with other.unit(write=False) as reader:
                assert reader.execute(text("SELECT count(*) FROM sessions")).scalar() == 0
            # ... but a second writer is, before it has written anything.
            with pytest.raises(OperationalError, match="locked"), other.unit() as writer:
                writer.execute(text("SELECT 1"))
    finally:
        other.dispose()
