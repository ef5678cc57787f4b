"""The ``minipipe-gh`` CLI end to end: a real SQLite file chosen through the environment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from minipipe_gh.cli import main
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.store import ledger, migrate, registry
from minipipe_gh.store.db import Database
from tests.support import API, APP_ID, FakeGitHub

P = PatchState


@dataclass
class Cli:
    runner: CliRunner
    env: dict[str, str]
    url: str

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(main, list(args), env=self.env, catch_exceptions=False)

    def db(self) -> Database:
        return Database(self.url)


@pytest.fixture
def cli(tmp_path: Path, private_key_pem: str) -> Iterator[Cli]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {
        "DATABASE_URL": url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
        # `reviews approve|reject --as LOGIN` reads LOGIN's permission from GitHub
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_API_URL": API,
    }
    yield Cli(CliRunner(), env, url)


ONE = "/repos/octo/one"


def serve_reviewers(github: FakeGitHub, **roles: str) -> None:
    """GitHub for octo/one: no policy file, and these users' roles."""
    github.allow_token_exchange()
    github.add("GET", f"{ONE}/contents/.github/minipipe.yml", {"message": "Not Found"}, status=404)
    for login, role in roles.items():
        github.add(
            "GET",
            f"{ONE}/collaborators/{login}/permission",
            {"permission": role, "role_name": role, "user": {"login": login, "id": len(login)}},
        )


@pytest.fixture
def gh(github: FakeGitHub) -> FakeGitHub:
    serve_reviewers(github, alice="write", bob="write")
    return github


@pytest.fixture
def seeded(cli: Cli) -> dict[str, Any]:
    """Upgraded through the CLI, then two sessions and three patches through the core."""
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    database = cli.db()
    try:
        with database.unit() as db:
            s1 = registry.create_session(
                db,
                project_id="octo/one",
                agent_type="claude",
                title="first",
                actor="bot",
                source="test",
                branch="minipipe/aaa-first",
                pr_number=1,
                metadata={"bot_login": "bot", "pr_author": "bot"},
                installation_id=1,
            )
            s2 = registry.create_session(
                db,
                project_id="octo/two",
                agent_type="aider",
                title="second",
                actor="bot",
                source="t",
            )
            registry.update_session_state(db, s1.session_id, "active", actor="bot", source="t")
            waiting = ledger.record_patch(db, s1, "a" * 40, actor="bot", source="t")
            other_waiting = ledger.record_patch(db, s2, "b" * 40, actor="bot", source="t")
            fresh = ledger.record_patch(db, s1, "c" * 40, actor="bot", source="t")
            for p in (waiting, other_waiting):
                ledger.transition(db, p, P.VALIDATED, actor="ci", source="t", reason="green")
                ledger.transition(db, p, P.AWAITING_REVIEW, actor="ci", source="t", reason="risk")
            ids = {
                "s1": s1.session_id,
                "s2": s2.session_id,
                "waiting": waiting.ledger_id,
                "other_waiting": other_waiting.ledger_id,
                "fresh": fresh.ledger_id,
            }
    finally:
        database.dispose()
    return ids


def patch_state(cli: Cli, ledger_id: str) -> Any:
    database = cli.db()
    try:
        with database.unit() as db:
            p = ledger.get_patch(db, ledger_id)
            return (
                p.state,
                p.meta,
                [(r.outcome, r.actor, r.source) for r in ledger.history(db, p.ledger_id)],
            )
    finally:
        database.dispose()


def test_db_upgrade_creates_the_schema(cli: Cli, tmp_path: Path) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "database at head" in result.stdout
    assert (tmp_path / "cli.db").is_file()
    assert (tmp_path / "instance").is_dir()
    database = cli.db()
    try:
        assert migrate.is_current(database.engine)
    finally:
        database.dispose()
    again = cli("db", "upgrade")
    assert again.exit_code == 0


def test_sessions_list_table(cli: Cli, seeded: dict[str, Any]) -> None:
    result = cli("sessions", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "SESSION_ID",
        "PROJECT_ID",
        "AGENT_TYPE",
        "STATE",
        "BRANCH",
        "PR_NUMBER",
        "TITLE",
    ]
    assert len(lines) == 3
    assert lines[1].split()[:4] == [seeded["s2"], "octo/two", "aider", "created"]  # newest first
    assert lines[2].split() == [
        seeded["s1"],
        "octo/one",
        "claude",
        "active",
        "minipipe/aaa-first",
        "1",
        "first",
    ]


def test_sessions_list_json_filters_and_pages(cli: Cli, seeded: dict[str, Any]) -> None:
    result = cli("sessions", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["session_id"] for s in data["items"]] == [seeded["s2"], seeded["s1"]]
    assert data["next_cursor"] is None
    assert data["items"][1]["state"] == "active"

    only = json.loads(cli("sessions", "list", "--json", "--state", "active").stdout)
    assert [s["session_id"] for s in only["items"]] == [seeded["s1"]]
    by_project = json.loads(cli("sessions", "list", "--json", "--project", "octo/two").stdout)
    assert [s["session_id"] for s in by_project["items"]] == [seeded["s2"]]
    by_agent = json.loads(cli("sessions", "list", "--json", "--agent", "claude").stdout)
    assert [s["session_id"] for s in by_agent["items"]] == [seeded["s1"]]

    first = json.loads(cli("sessions", "list", "--json", "--limit", "1").stdout)
    assert first["next_cursor"]
    second = json.loads(
        cli("sessions", "list", "--json", "--limit", "1", "--cursor", first["next_cursor"]).stdout
    )
    assert [s["session_id"] for s in first["items"] + second["items"]] == [
        seeded["s2"],
        seeded["s1"],
    ]
    table = cli("sessions", "list", "--limit", "1")
    assert f"more: --cursor {first['next_cursor']}" in table.stdout


def test_sessions_list_bad_input_exits_2(cli: Cli, seeded: dict[str, Any]) -> None:
    bad_state = cli("sessions", "list", "--state", "sleeping")
    assert bad_state.exit_code == 2
    assert "unknown session state 'sleeping'" in bad_state.stderr
    bad_cursor = cli("sessions", "list", "--cursor", "!!!")
    assert bad_cursor.exit_code == 2 and "cursor" in bad_cursor.stderr
    bad_limit = cli("sessions", "list", "--limit", "0")
    assert bad_limit.exit_code == 2 and "limit" in bad_limit.stderr


def test_sessions_list_empty(cli: Cli) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli("sessions", "list")
    assert result.exit_code == 0 and result.stdout.strip() == "(none)"


def test_sessions_show(cli: Cli, seeded: dict[str, Any]) -> None:
    result = cli("sessions", "show", seeded["s1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "project_id: octo/one" in out
    assert "state: active" in out
    assert "branch: minipipe/aaa-first" in out
    assert "head_sha: " + "c" * 40 in out
    assert seeded["waiting"] in out and seeded["fresh"] in out
    assert seeded["other_waiting"] not in out

    data = json.loads(cli("sessions", "show", seeded["s1"], "--json").stdout)
    assert data["session_id"] == seeded["s1"]
    assert [p["ledger_id"] for p in data["patches"]] == [seeded["waiting"], seeded["fresh"]]
    assert [p["state"] for p in data["patches"]] == ["awaiting_review", "created"]


def test_unknown_ids_exit_2_with_a_clear_message(cli: Cli, seeded: dict[str, Any]) -> None:
    show = cli("sessions", "show", "01doesnotexist")
    assert show.exit_code == 2
    assert show.stderr.strip() == "error: session 01doesnotexist not found"
    assert show.stdout == ""
    approve = cli("reviews", "approve", "01nopatch", "--as", "alice")
    assert approve.exit_code == 2
    assert approve.stderr.strip() == "error: patch 01nopatch not found"
    reject = cli("reviews", "reject", "01nopatch", "--as", "bob", "--reason", "x")
    assert reject.exit_code == 2
    assert "patch 01nopatch not found" in reject.stderr


def test_reviews_list_json(cli: Cli, seeded: dict[str, Any]) -> None:
    result = cli("reviews", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["ledger_id"] for p in data["items"]] == [seeded["waiting"], seeded["other_waiting"]]
    assert {p["state"] for p in data["items"]} == {"awaiting_review"}
    assert data["next_cursor"] is None
    one = json.loads(cli("reviews", "list", "--json", "--project", "octo/two").stdout)
    assert [p["ledger_id"] for p in one["items"]] == [seeded["other_waiting"]]
    table = cli("reviews", "list")
    assert table.stdout.splitlines()[0].split()[:2] == ["LEDGER_ID", "PROJECT_ID"]
    assert seeded["fresh"] not in table.stdout


def test_reviews_approve(cli: Cli, seeded: dict[str, Any], gh: FakeGitHub) -> None:
    result = cli("reviews", "approve", seeded["waiting"], "--as", "alice", "--comment", "lgtm")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{seeded['waiting']}: approved by alice, now queued"
    state, meta, trail = patch_state(cli, seeded["waiting"])
    assert state == "queued"
    assert (meta["reviewed_by"], meta["review_comment"]) == ("alice", "lgtm")
    assert trail[-1] == ("moved", "alice", "cli")
    remaining = json.loads(cli("reviews", "list", "--json").stdout)
    assert [p["ledger_id"] for p in remaining["items"]] == [seeded["other_waiting"]]


def test_reviews_reject(cli: Cli, seeded: dict[str, Any], gh: FakeGitHub) -> None:
    result = cli(
        "reviews", "reject", seeded["waiting"], "--as", "bob", "--reason", "breaks the build"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{seeded['waiting']}: rejected by bob, now dropped"
    state, meta, trail = patch_state(cli, seeded["waiting"])
    assert state == "dropped"
    assert (meta["review_status"], meta["review_reason"]) == ("rejected", "breaks the build")
    assert trail[-1] == ("moved", "bob", "cli")


def test_reject_without_reason_fails(cli: Cli, seeded: dict[str, Any], gh: FakeGitHub) -> None:
    before = patch_state(cli, seeded["waiting"])
    missing = cli("reviews", "reject", seeded["waiting"], "--as", "bob")
    assert missing.exit_code == 2
    assert "--reason" in missing.stderr
    assert patch_state(cli, seeded["waiting"]) == before  # click refused; nothing reached the core

    blank = cli("reviews", "reject", seeded["waiting"], "--as", "bob", "--reason", "   ")
    assert blank.exit_code == 2
    assert "error: a rejection needs a reason" in blank.stderr
    state, _, trail = patch_state(cli, seeded["waiting"])
    assert state == "awaiting_review"
    assert trail[-1] == ("refused", "bob", "cli")


def test_illegal_decision_exits_2_and_names_the_states(
    cli: Cli, seeded: dict[str, Any], gh: FakeGitHub
) -> None:
    assert (
        cli("reviews", "reject", seeded["waiting"], "--as", "bob", "--reason", "no").exit_code == 0
    )
    again = cli("reviews", "approve", seeded["waiting"], "--as", "alice")
    assert again.exit_code == 2
    assert f"patch {seeded['waiting']} cannot move from dropped to queued" in again.stderr


def test_audit_export_prints_json_lines(cli: Cli, seeded: dict[str, Any], gh: FakeGitHub) -> None:
    assert cli("reviews", "approve", seeded["waiting"], "--as", "alice").exit_code == 0
    result = cli("audit", "export")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows, "the seed wrote audit rows"
    # 2 sessions created + 1 session move + 3 patches recorded + 4 patch moves + 1 approval
    assert len(rows) == 11
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    keys = {"id", "entity", "entity_id", "project_id", "from", "to", "outcome", "actor"}
    assert all(keys | {"source", "reason", "details", "at"} <= set(r) for r in rows)
    assert rows[-1]["entity_id"] == seeded["waiting"]
    assert (rows[-1]["to"], rows[-1]["actor"], rows[-1]["source"]) == ("queued", "alice", "cli")

    two = [json.loads(x) for x in cli("audit", "export", "--repo", "octo/two").stdout.splitlines()]
    assert two and {r["project_id"] for r in two} == {"octo/two"}
    assert len(two) == 4  # created session, recorded patch, two moves

    future = cli("audit", "export", "--since", "2999-01-01T00:00:00+00:00")
    assert future.exit_code == 0 and future.stdout == ""
    past = cli("audit", "export", "--since", "2000-01-01")
    assert len(past.stdout.splitlines()) == len(rows)
    bad = cli("audit", "export", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr
