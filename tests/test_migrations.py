"""Alembic migrations from an empty database, and the settings every connection gets.

Each test runs on the backend under test (``--db``): SQLite's WAL, foreign keys
and write lock, or PostgreSQL's equivalents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from minipipe_gh.store import migrate
from minipipe_gh.store.db import Database, default_url, make_engine
from minipipe_gh.store.models import NeutralCheckRun

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


def triggers(conn: Any) -> set[str]:
    if conn.dialect.name == "sqlite":
        return set(conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))
    return set(conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))


def schema(engine: Any) -> list[tuple[str, list[str], list[str]]]:
    insp = inspect(engine)
    return [
        (
            t,
            sorted(c["name"] for c in insp.get_columns(t)),
            sorted(i["name"] for i in insp.get_indexes(t)),
        )
        for t in sorted(insp.get_table_names())
    ]


def test_upgrade_from_empty_to_head(empty_db_url: str) -> None:
    url = empty_db_url
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
            found = triggers(conn)
        if engine.dialect.name == "sqlite":
            assert {"audit_log_no_update", "audit_log_no_delete"} <= found
        else:
            assert "audit_log_no_change" in found
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(empty_db_url: str) -> None:
    url = empty_db_url
    migrate.upgrade(url)
    database = Database(url)
    try:
        before = schema(database.engine)
        migrate.upgrade(url)
        assert schema(database.engine) == before
        assert migrate.is_current(database.engine)
    finally:
        database.dispose()


def test_downgrade_to_base_and_back(empty_db_url: str) -> None:
    url = empty_db_url
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


def test_0008_adds_the_neutral_check_runs_and_keeps_existing_rows(empty_db_url: str) -> None:
    url = empty_db_url
    command.upgrade(migrate.alembic_config(url), "0006")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO check_runs (project_id, head_sha, check_run_id) VALUES (:p, :s, 5)"
                ),
                {"p": "o/r", "s": "a" * 40},
            )
        migrate.upgrade(url)
        assert {c["name"] for c in inspect(engine).get_columns("neutral_check_runs")} == {
            "project_id", "head_sha", "check_run_id", "withdrawn", "created_at"
        }  # fmt: skip
        with engine.connect() as conn:
            assert conn.execute(text("SELECT check_run_id FROM check_runs")).scalar() == 5
    finally:
        engine.dispose()
    database = Database(url)
    try:
        with database.unit() as s:
            s.add(NeutralCheckRun(project_id="o/r", head_sha="b" * 40, check_run_id=7))
        with database.unit() as s:
            row = s.get(NeutralCheckRun, ("o/r", "b" * 40))
            assert row is not None and (row.check_run_id, row.withdrawn) == (7, False)
    finally:
        database.dispose()


def test_0014_moves_each_delivery_body_to_its_own_table_and_back(empty_db_url: str) -> None:
    url = empty_db_url
    config = migrate.alembic_config(url)
    command.upgrade(config, "0013")
    engine = make_engine(url)
    bodies = {"d-1": '{"n": 1}', "d-2": '{"n": 2,  "kept": "as sent"}'}
    try:
        with engine.begin() as conn:
            for ident, body in bodies.items():
                conn.execute(
                    text(
                        "INSERT INTO deliveries (delivery_id, event, headers, payload, status,"
                        " attempts, next_attempt_at, received_at)"
                        " VALUES (:i, 'ping', '{}', :p, 'done', 1, :t, :t)"
                    ),
                    {"i": ident, "p": body, "t": "2026-12-01 00:00:00"},
                )
        migrate.upgrade(url)
        assert "payload" not in {c["name"] for c in inspect(engine).get_columns("deliveries")}
        moved = (
            "SELECT d.delivery_id, p.payload FROM deliveries d"
            " JOIN delivery_payloads p ON p.seq = d.seq"
        )
        with engine.connect() as conn:
            assert dict(conn.execute(text(moved)).all()) == bodies
        command.downgrade(config, "0013")
        assert "delivery_payloads" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            back = conn.execute(text("SELECT delivery_id, payload FROM deliveries")).all()
            assert dict(back) == bodies
    finally:
        engine.dispose()


def test_0015_stores_delivery_bodies_with_lz4_on_postgresql(
    empty_db_url: str, backend: str
) -> None:
    """Each body stored after the upgrade is compressed with lz4 on PostgreSQL (the
    server's CPU per acknowledgement); SQLite keeps text as it is, and reads it back."""
    url = empty_db_url
    migrate.upgrade(url)
    engine = make_engine(url)
    body = '{"comment": "' + "a long comment " * 1000 + '"}'  # 15 KB: compressed
    try:
        with engine.begin() as conn:
            seq = conn.execute(
                text(
                    "INSERT INTO deliveries (delivery_id, event, headers, status, attempts,"
                    " next_attempt_at, received_at)"
                    " VALUES ('d-1', 'ping', '{}', 'done', 1, :t, :t) RETURNING seq"
                ),
                {"t": "2026-12-01 00:00:00"},
            ).scalar_one()
            conn.execute(
                text("INSERT INTO delivery_payloads (seq, payload) VALUES (:s, :p)"),
                {"s": seq, "p": body},
            )
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT payload FROM delivery_payloads")).scalar_one()
            assert stored == body
            if backend == "postgres":
                method = conn.execute(
                    text("SELECT pg_column_compression(payload) FROM delivery_payloads")
                ).scalar_one()
                assert method == "lz4"
        config = migrate.alembic_config(url)
        command.downgrade(config, "0014")
        if backend == "postgres":  # the column is back to the server's default method
            with engine.connect() as conn:
                kept = conn.execute(
                    text(
                        "SELECT attcompression FROM pg_attribute WHERE attrelid ="
                        " 'delivery_payloads'::regclass AND attname = 'payload'"
                    )
                ).scalar_one()
                assert kept in ("", "\x00")
    finally:
        engine.dispose()


def test_default_url_is_a_file_in_the_instance_folder(tmp_path: Path) -> None:
    inst = tmp_path / "instance" / "nested"
    url = default_url(inst)
    assert inst.is_dir()
    assert url == f"sqlite:///{inst / 'minipipe.db'}"


# --- connection settings ----------------------------------------------------------


def test_database_connections_get_the_backend_settings(database: Database) -> None:
    def check(conn: Any) -> None:
        if database.is_sqlite:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        else:
            assert conn.execute(text("SHOW server_version_num")).scalar() >= "150000"
            assert conn.execute(text("SHOW transaction_isolation")).scalar() == "read committed"

    with database.unit() as db:
        check(db)
    # A second pooled connection gets the same settings.
    with database.engine.connect() as a, database.engine.connect() as b:
        for conn in (a, b):
            check(conn)


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
    with database.unit() as db:
        assert db.execute(text("SELECT count(*) FROM patches")).scalar() == 0


def test_write_units_serialise_writers(database: Database) -> None:
    """SQLite: a unit takes the write lock (``BEGIN IMMEDIATE``) at its first write.
    PostgreSQL: row locks, and ``SKIP LOCKED`` lets another claimer pass a locked row."""
    if not database.is_sqlite:
        with database.unit() as db:
            db.execute(
                text(
                    "INSERT INTO deliveries (delivery_id, event, headers, status,"
                    " attempts, next_attempt_at, received_at) VALUES ('a', 'push', '{}',"
                    " 'queued', 0, now(), now()), ('b', 'push', '{}',"
                    " 'queued', 0, now(), now())"
                )
            )
        with database.unit() as first, database.unit() as second:
            mine = first.execute(
                text(
                    "SELECT delivery_id FROM deliveries ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
            ).scalar()
            theirs = second.execute(
                text(
                    "SELECT delivery_id FROM deliveries ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
            ).scalar()
        assert (mine, theirs) == ("a", "b")
        return
    other = Database(database.url)

    @event.listens_for(other.engine, "connect")
    def _short_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 100")

    insert_session = text(
        "INSERT INTO sessions (session_id, project_id, agent_type, title, state, metadata,"
        " created_at, updated_at, last_activity_at, version) VALUES (:id, 'o/r', 'a', 't',"
        " 'created', '{}', '2026-01-01', '2026-01-01', '2026-01-01', 1)"
    )
    try:
        with database.unit() as db:
            # Reading takes no lock: another writer may still write ...
            db.execute(text("SELECT count(*) FROM sessions"))
            with other.unit() as writer:
                writer.execute(insert_session, {"id": "first"})
            # ... and this unit then sees that commit (no stale snapshot to fail on).
            assert db.execute(text("SELECT count(*) FROM sessions")).scalar() == 1
            # Its first write takes the lock (BEGIN IMMEDIATE) until it commits:
            db.execute(insert_session, {"id": "second"})
            with other.unit() as reader:  # readers are not blocked (WAL)
                assert reader.execute(text("SELECT count(*) FROM sessions")).scalar() == 1
            with pytest.raises(OperationalError, match="locked"), other.unit() as writer:
                writer.execute(insert_session, {"id": "third"})
        with other.unit() as reader:
            assert reader.execute(text("SELECT count(*) FROM sessions")).scalar() == 2
    finally:
        other.dispose()
