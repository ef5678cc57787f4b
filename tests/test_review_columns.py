"""A session's installation and a patch's merge commit are columns (migration 0013).

Rows written at 0012 kept them in the JSON metadata: the upgrade carries them over and
removes the keys (one home), the downgrade puts them back. Both run on the backend under
test (``--db``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.dialects.postgresql import JSONB

from minipipe_gh.store import migrate
from minipipe_gh.store.db import Database, make_engine
from minipipe_gh.store.models import AgentSession, Patch

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
AT = "2026-01-01 00:00:00"
MERGED = "m" * 40

SESSIONS = sa.table(
    "sessions",
    *(sa.column(c) for c in ("session_id", "project_id", "agent_type", "title", "state")),
    *(sa.column(c) for c in ("created_at", "updated_at", "last_activity_at", "version")),
    sa.column("metadata", JSON),
)
PATCHES = sa.table(
    "patches",
    *(sa.column(c) for c in ("ledger_id", "patch_id", "session_id", "project_id", "state")),
    *(sa.column(c) for c in ("risk", "files", "additions", "deletions", "version")),
    *(sa.column(c) for c in ("created_at", "updated_at")),
    sa.column("risk_reasons", JSON),
    sa.column("paths", JSON),
    sa.column("metadata", JSON),
)


def _session(sid: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": sid,
        "project_id": "o/r",
        "agent_type": "claude",
        "title": sid,
        "state": "active",
        "created_at": AT,
        "updated_at": AT,
        "last_activity_at": AT,
        "version": 3,
        "metadata": meta,
    }


def _patch(ledger_id: str, sid: str, state: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "ledger_id": ledger_id,
        "patch_id": ledger_id * 40,
        "session_id": sid,
        "project_id": "o/r",
        "state": state,
        "risk": "low",
        "files": 1,
        "additions": 2,
        "deletions": 0,
        "version": 5,
        "created_at": AT,
        "updated_at": AT,
        "risk_reasons": [],
        "paths": ["a.py"],
        "metadata": meta,
    }


BOUND = {"installation_id": 957387, "bot_login": "agent-bot", "pr_author": "agent-bot"}
APPLIED = {"merge_commit_sha": MERGED, "approvals": ["alice"], "review_status": "approved"}


def _seed_at_0012(url: str) -> None:
    command.upgrade(migrate.alembic_config(url), "0012")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                SESSIONS.insert(),
                [
                    _session("bound", BOUND),
                    _session("unbound", {"bot_login": "other-bot"}),
                    _session("as_text", {"installation_id": "42"}),  # any JSON the app left
                ],
            )
            conn.execute(
                PATCHES.insert(),
                [
                    _patch("a", "bound", "applied", APPLIED),
                    _patch("b", "bound", "dropped", {"drop_reason": "PR closed unmerged"}),
                ],
            )
    finally:
        engine.dispose()


def _meta(conn: Any, table: sa.TableClause, key: str) -> dict[str, dict[str, Any]]:
    return dict(conn.execute(select(table.c[key], table.c.metadata)).all())


def test_0013_carries_the_installation_and_merge_commit_into_columns(empty_db_url: str) -> None:
    url = empty_db_url
    _seed_at_0012(url)

    migrate.upgrade(url)

    engine = make_engine(url)
    try:
        insp = inspect(engine)
        assert "ix_sessions_installation_id" in {i["name"] for i in insp.get_indexes("sessions")}
        assert "ix_patches_merge_commit_sha" in {i["name"] for i in insp.get_indexes("patches")}
    finally:
        engine.dispose()
    database = Database(url)
    try:
        with database.unit(write=False) as s:
            sessions = {x.session_id: x for x in s.scalars(select(AgentSession))}
            assert {k: v.installation_id for k, v in sessions.items()} == {
                "bound": 957387,
                "unbound": None,
                "as_text": 42,
            }
            # the key is gone, everything else is as it was; no version bump (no bot wakes)
            assert sessions["bound"].meta == {"bot_login": "agent-bot", "pr_author": "agent-bot"}
            assert sessions["unbound"].meta == {"bot_login": "other-bot"}
            assert sessions["as_text"].meta == {}
            assert {v.version for v in sessions.values()} == {3}
            patches = {p.ledger_id: p for p in s.scalars(select(Patch))}
            assert (patches["a"].merge_commit_sha, patches["b"].merge_commit_sha) == (MERGED, None)
            assert patches["a"].meta == {"approvals": ["alice"], "review_status": "approved"}
            assert patches["b"].meta == {"drop_reason": "PR closed unmerged"}
            # the checks on a merge commit find its patch by the indexed column
            found = s.scalars(select(Patch.ledger_id).where(Patch.merge_commit_sha == MERGED))
            assert found.all() == ["a"]
    finally:
        database.dispose()


def test_0013_downgrade_puts_the_keys_back_and_keeps_every_row(empty_db_url: str) -> None:
    url = empty_db_url
    _seed_at_0012(url)
    migrate.upgrade(url)

    command.downgrade(migrate.alembic_config(url), "0012")

    engine = make_engine(url)
    try:
        insp = inspect(engine)
        assert "installation_id" not in {c["name"] for c in insp.get_columns("sessions")}
        assert "merge_commit_sha" not in {c["name"] for c in insp.get_columns("patches")}
        with engine.connect() as conn:
            sessions = _meta(conn, SESSIONS, "session_id")
            patches = _meta(conn, PATCHES, "ledger_id")
        assert sessions == {
            "bound": BOUND,
            "unbound": {"bot_login": "other-bot"},
            "as_text": {"installation_id": 42},
        }
        # no table rebuild: the sessions' patches are all still there (no cascade)
        assert patches == {"a": APPLIED, "b": {"drop_reason": "PR closed unmerged"}}
    finally:
        engine.dispose()
    migrate.upgrade(url)
    database = Database(url)
    try:
        with database.unit(write=False) as s:
            assert s.get(AgentSession, "bound").installation_id == 957387
            assert s.get(Patch, "a").merge_commit_sha == MERGED
    finally:
        database.dispose()
