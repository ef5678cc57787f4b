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

from minipipe_gh.core import people
from minipipe_gh.store import ledger, migrate
from minipipe_gh.store.db import Database, make_engine
from minipipe_gh.store.models import AgentSession, Patch
from tests.scenario import R, Scenario, user
from tests.support import INSTALLATION_ID

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
        with database.unit() as s:
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
        with database.unit() as s:
            assert s.get(AgentSession, "bound").installation_id == 957387
            assert s.get(Patch, "a").merge_commit_sha == MERGED
    finally:
        database.dispose()


# -- through the webhook: the merge commit's checks find the patch by the column ----------


def _merged(rt: Any, deliver: Any, github: Any) -> Scenario:
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    rt.worker().run_once()
    sc.serve_pull("closed", merged=True)
    sc.pr_event("closed", merged=True)
    rt.worker().run_once()
    return sc


def _only(rt: Any) -> tuple[AgentSession, Patch]:
    with rt.database.unit() as s:
        return s.scalars(select(AgentSession)).one(), s.scalars(select(Patch)).one()


def _suites_read(github: Any, since: int) -> list[str]:
    sent = github.api_requests()[since:]
    return [p.split("?")[0] for m, p, _ in sent if m == "GET" and "/check-suites" in p]


def test_a_bound_and_merged_pr_fills_the_columns_not_the_metadata(rt, deliver, github) -> None:
    _merged(rt, deliver, github)
    session, patch = _only(rt)
    assert (session.installation_id, patch.state, patch.merge_commit_sha) == (
        INSTALLATION_ID,
        "applied",
        MERGED,
    )
    assert "installation_id" not in session.meta and "merge_commit_sha" not in patch.meta
    # the people of the session, through their one reader
    bot = people.person(user("agent-bot"))
    assert people.session_bot(session.meta) == bot == people.pr_author(session.meta)


def test_green_checks_on_the_merge_commit_commit_the_applied_patch(rt, deliver, github) -> None:
    sc = _merged(rt, deliver, github)
    sc.serve_green(MERGED)
    mark = len(github.api_requests())
    sc.suite_completed(sha=MERGED)
    rt.worker().run_once()
    assert _suites_read(github, mark) == [f"{R}/commits/{MERGED}/check-suites"]
    _session, patch = _only(rt)
    assert patch.state == "committed"
    with rt.database.unit() as s:
        moves = [(h.from_state, h.to_state, h.reason) for h in ledger.history(s, patch.ledger_id)]
    assert moves[-2:] == [
        ("applied", "verified", f"checks on merge commit {MERGED[:12]} succeeded"),
        ("verified", "committed", "verified on the base branch"),
    ]


def test_red_checks_on_the_merge_commit_roll_the_patch_back(rt, deliver, github) -> None:
    sc = _merged(rt, deliver, github)
    sc.serve_suites(MERGED, "failure")
    sc.suite_completed(sha=MERGED, conclusion="failure")
    rt.worker().run_once()
    assert _only(rt)[1].state == "rolled_back"


def test_checks_on_another_sha_leave_the_applied_patch_alone(rt, deliver, github) -> None:
    """The PR's head is not its merge commit: no merge verification is read for it."""
    sc = _merged(rt, deliver, github)
    mark = len(github.api_requests())
    sc.suite_completed(sha=sc.sha)
    rt.worker().run_once()
    assert _suites_read(github, mark) == []
    assert _only(rt)[1].state == "applied"


# -- the typed writers --------------------------------------------------------------------


def test_a_bots_id_learned_later_names_it_as_bot_and_token_user() -> None:
    meta = people.with_token_user(
        people.with_bot({}, people.Person("Bot"), token="ci"), people.Person("Bot")
    )
    assert meta == {
        "bot_login": "Bot",
        "bot_token": "ci",
        "token_users": [{"login": "Bot", "id": None}],
    }
    known = people.with_bot_id(meta, 7)
    assert people.session_bot(known) == people.Person("Bot", 7)
    assert people.token_users(known) == [people.Person("Bot", 7)]
    # renamed: still the same person, by id
    assert people.Person("bot-renamed", 7).among(people.authors(known))
    assert known["bot_token"] == "ci"


def test_the_published_stamp_reads_back_typed() -> None:
    meta = people.with_deciders({}, 2, ["alice", "bob"])
    assert (people.required_approvals(meta), people.decided_by(meta)) == (2, ["alice", "bob"])
    assert (people.required_approvals({}), people.decided_by({})) == (1, [])
    stale = people.with_stale_approvals({}, ["@alice approved aaaaaaaaaaaa"], ["alice"])
    assert people.stale_approvals(stale) == ["@alice approved aaaaaaaaaaaa"]
    assert people.rerequested(stale) == ["alice"]
