"""The CLI companions of the bot API: tokens, reaping stale sessions, stats as JSON."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from minipipe_gh.delivery.maintenance import reap_stale
from minipipe_gh.store import tokens
from minipipe_gh.store.models import AgentSession, ApiToken, Base
from tests.scenario import REPO
from tests.seed import (
    audit_rows,
    cli_runner,
    error,
    install,
    seed_session,
    seed_stats,
    serve_policy,
)

# --- the CLI: tokens, reaping, stats --------------------------------------------------------


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Any:
    return cli_runner(db_url, tmp_path)


def test_cli_token_create_prints_it_once_and_stores_only_its_hash(cli, api, rt):
    result = cli("token", "create", "ci", "--as", "writer", "--repo", REPO)
    secret = result.stdout.strip()
    assert secret.startswith("mpg_") and "\n" not in secret
    assert "not shown again" in result.stderr and secret not in result.stderr
    with rt.database.unit() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "ci")).one()
    assert (row.login, row.repositories) == ("writer", [REPO])
    assert row.token_hash == tokens.digest(secret) != secret
    with rt.database.unit() as s:  # nowhere in the database, on any backend
        everything = repr([s.execute(select(t)).all() for t in Base.metadata.sorted_tables])
    assert secret not in everything and secret[4:] not in everything
    assert row.token_hash in everything

    # it works against the API, within its repositories
    ci = api.as_(secret)
    assert ci("GET", "/sessions").status_code == 200
    error(ci("GET", "/sessions", query_string={"project_id": "octo/other"}), 403, "forbidden")

    listing = json.loads(cli("token", "list", "--json").stdout)["items"]
    by_name = {t["name"]: t for t in listing}
    assert by_name["ci"]["login"] == "writer"
    assert by_name["ci"]["repositories"] == REPO
    assert by_name["ci"]["revoked"] is False
    assert by_name["ci"]["last_used_at"] is not None
    assert by_name["agent"]["repositories"] == "all"
    table = cli("token", "list").stdout
    for shown in (json.dumps(listing), table):
        assert secret not in shown and row.token_hash not in shown

    cli("token", "create", "ci", "--as", "x", code=2)  # the name is taken

    assert "revoked" in cli("token", "revoke", "ci").stdout
    error(ci("GET", "/sessions"), 401, "unauthorized")
    listing = json.loads(cli("token", "list", "--json").stdout)["items"]
    assert {t["name"]: t["revoked"] for t in listing} == {"agent": False, "ci": True}
    assert "no token named" in cli("token", "revoke", "nope", code=2).stderr


def test_cli_reap_dry_run_then_for_real(cli, rt):
    stale = seed_session(rt, idle=timedelta(hours=2))
    fresh = seed_session(rt, idle=timedelta(minutes=10))
    already = seed_session(rt, state="paused", idle=timedelta(days=3))

    dry = cli("sessions", "reap", "--older-than", "1h", "--dry-run")
    assert stale in dry.stdout and fresh not in dry.stdout and already not in dry.stdout
    assert "would pause 1 stale sessions" in dry.stdout
    with rt.database.unit() as s:
        assert s.get(AgentSession, stale).state == "active"
    assert audit_rows(rt, entity_id=stale, to_state="paused") == []

    done = json.loads(cli("sessions", "reap", "--older-than", "1h", "--json").stdout)
    assert done["dry_run"] is False
    assert [row["session_id"] for row in done["sessions"]] == [stale]
    with rt.database.unit() as s:
        assert [s.get(AgentSession, x).state for x in (stale, fresh, already)] == [
            "paused",
            "active",
            "paused",
        ]
    [pause] = audit_rows(rt, entity_id=stale, to_state="paused")
    assert (pause.reason, pause.actor, pause.source) == ("stale", "minipipe", "cli")

    cli("sessions", "reap", "--older-than", "soon", code=2)


def test_reap_honours_each_repositories_stale_after(rt, github):
    install(rt, REPO, "Codertocat/Other", "Codertocat/Eager")
    at = {"installation_id": 1}
    quick = seed_session(rt, **at, idle=timedelta(hours=3))
    recent = seed_session(rt, **at, idle=timedelta(minutes=90))
    other = seed_session(rt, project="Codertocat/Other", **at, idle=timedelta(hours=3))
    eager = seed_session(rt, project="Codertocat/Eager", **at, idle=timedelta(minutes=70))
    github.allow_token_exchange()
    serve_policy(github, "sessions:\n  stale_after: 2h\n")
    serve_policy(github, None, repo="Codertocat/Other")
    serve_policy(github, "sessions:\n  stale_after: 5m\n", repo="Codertocat/Eager")

    would = reap_stale(rt.database, rt.github, dry_run=True)
    assert sorted(s.session_id for s in would) == sorted([quick, eager])
    reaped = reap_stale(rt.database, rt.github)
    assert sorted(s.session_id for s in reaped) == sorted([quick, eager])
    with rt.database.unit() as s:
        states = {x: s.get(AgentSession, x).state for x in (quick, recent, other, eager)}
    assert states == {quick: "paused", recent: "active", other: "active", eager: "paused"}
    assert [a.reason for a in audit_rows(rt, entity_id=quick, to_state="paused")] == ["stale"]
    policy_reads = [p for m, p, _ in github.api_requests() if p.endswith("/minipipe.yml")]
    assert len(policy_reads) == 3  # once per repository: the policy is cached


def test_cli_sessions_stats_json_matches_the_api(cli, api, rt):
    seed_stats(rt)
    printed = json.loads(cli("sessions", "stats", "--json").stdout)
    assert printed == api("GET", "/stats").get_json()
    mine = json.loads(cli("sessions", "stats", "--project", REPO, "--json").stdout)
    claude = next(r for r in mine["items"] if r["agent_type"] == "claude")
    assert (claude["sessions"], claude["median_seconds_to_completion"]) == (4, 120.0)
    table = cli("sessions", "stats").stdout
    assert "too big (2); breaks tests (1)" in table
