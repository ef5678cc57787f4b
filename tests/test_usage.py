"""What agents' work cost: usage reports on a session, and per agent type in ``/stats``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.models import UsageReport
from tests import test_api
from tests.scenario import REPO
from tests.test_api import Api, error, install, make_token, seed_session

cli = test_api.cli  # the CLI fixture, shared


@pytest.fixture
def api(rt: Any, client: Any) -> Api:
    install(rt, REPO, "octo/other")
    return Api(client, make_token(rt, "agent", "agent-bot"))


def merged_patch(rt: Any, session_id: str, sha: str, to: str = P.APPLIED) -> None:
    with rt.database.unit() as s:
        patch = ledger.record_patch(
            s, registry.get_session(s, session_id), sha, actor="bot", source="test"
        )
        for step in (P.VALIDATED, P.QUEUED, P.APPLIED):
            ledger.transition(s, patch, step, actor="github", source="test")
            if step == to:
                break


def test_usage_reports_add_up_on_the_session(api, rt):
    sid = seed_session(rt)
    first = api(
        "POST", f"/sessions/{sid}/usage", {"tokens_in": 1000, "cost_usd": 0.25, "model": "m1"}
    )
    assert first.status_code == 200
    assert first.get_json()["usage"]["tokens_in"] == 1000
    api("POST", f"/sessions/{sid}/usage", {"tokens_in": 500, "tokens_out": 70, "model": "m2"})
    api("POST", f"/sessions/{sid}/usage", {"cost_usd": 1, "model": "m1"})
    usage = api("GET", f"/sessions/{sid}").get_json()["usage"]
    assert usage == {
        "tokens_in": 1500,
        "tokens_out": 70,
        "cost_usd": 1.25,
        "reports": 3,
        "models": {
            "m1": {"tokens_in": 1000, "tokens_out": 0, "cost_usd": 1.25, "reports": 2},
            "m2": {"tokens_in": 500, "tokens_out": 70, "cost_usd": 0.0, "reports": 1},
        },
    }
    with rt.database.unit() as s:
        rows = s.scalars(select(UsageReport).where(UsageReport.session_id == sid)).all()
    assert [(r.tokens_in, r.tokens_out, r.cost_usd, r.model) for r in rows] == [
        (1000, 0, 0.25, "m1"),
        (500, 70, 0.0, "m2"),
        (0, 0, 1.0, "m1"),
    ]


def test_a_usage_report_does_not_wake_a_waiting_bot(api, rt):
    sid = seed_session(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    api("POST", f"/sessions/{sid}/usage", {"tokens_in": 10})
    assert api("GET", f"/sessions/{sid}").get_json()["version"] == version


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "tokens_in"),
        ({"model": "m"}, "tokens_in"),
        ({"tokens_in": -1}, "tokens_in"),
        ({"tokens_in": 1.5}, "tokens_in"),
        ({"tokens_out": "9"}, "tokens_out"),
        ({"tokens_out": True}, "tokens_out"),
        ({"cost_usd": -0.01}, "cost_usd"),
        ({"cost_usd": "1"}, "cost_usd"),
        ({"cost_usd": 1, "model": ""}, "model"),
        ({"cost_usd": 1, "model": 3}, "model"),
    ],
)
def test_a_bad_usage_report_names_the_field_and_stores_nothing(api, rt, body, field):
    sid = seed_session(rt)
    error(api("POST", f"/sessions/{sid}/usage", body), 400, "invalid", field)
    with rt.database.unit() as s:
        assert s.scalars(select(UsageReport)).all() == []


def test_usage_of_an_unknown_or_hidden_session_is_404(api, rt):
    error(
        api("POST", "/sessions/01nosuchsession000000000000/usage", {"tokens_in": 1}),
        404,
        "not_found",
    )
    other = seed_session(rt, project="octo/other")
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("POST", f"/sessions/{other}/usage", {"tokens_in": 1}), 404, "not_found")


def test_stats_report_usage_and_cost_per_merged_patch(api, rt):
    landed = seed_session(rt, agent_type="claude")
    wasted = seed_session(rt, agent_type="claude")
    cheap = seed_session(rt, agent_type="aider", project="octo/other")
    merged_patch(rt, landed, "1" * 40)
    merged_patch(rt, landed, "2" * 40, to=P.QUEUED)  # approved, not merged yet
    merged_patch(rt, cheap, "3" * 40)
    api("POST", f"/sessions/{landed}/usage", {"tokens_in": 100, "tokens_out": 10, "cost_usd": 3})
    api("POST", f"/sessions/{wasted}/usage", {"tokens_in": 50, "cost_usd": 1})
    api("POST", f"/sessions/{cheap}/usage", {"tokens_in": 7, "cost_usd": 0.5})

    items = {r["agent_type"]: r for r in api("GET", "/stats").get_json()["items"]}
    claude = items["claude"]
    assert claude["usage"] == {"tokens_in": 150, "tokens_out": 10, "cost_usd": 4.0, "reports": 2}
    assert (claude["merged_patches"], claude["landed_cost_usd"]) == (1, 3.0)
    assert claude["cost_per_merged_patch"] == 4.0
    assert items["aider"]["cost_per_merged_patch"] == 0.5

    mine = {
        r["agent_type"]: r
        for r in api("GET", "/stats", query_string={"project_id": REPO.upper()}).get_json()["items"]
    }
    assert set(mine) == {"claude"}  # the filter compares as GitHub does: case-insensitively
    assert mine["claude"]["usage"]["cost_usd"] == 4.0

    none = seed_session(rt, agent_type="codex")
    assert none
    codex = next(r for r in api("GET", "/stats").get_json()["items"] if r["agent_type"] == "codex")
    assert codex["usage"]["cost_usd"] == 0 and codex["cost_per_merged_patch"] is None


def test_a_scoped_token_sees_only_its_repositories_usage(api, rt):
    mine = seed_session(rt, agent_type="claude")
    theirs = seed_session(rt, agent_type="claude", project="octo/other")
    merged_patch(rt, theirs, "4" * 40)
    api("POST", f"/sessions/{mine}/usage", {"cost_usd": 1})
    api("POST", f"/sessions/{theirs}/usage", {"cost_usd": 50})
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    [claude] = scoped("GET", "/stats").get_json()["items"]
    assert (claude["usage"]["cost_usd"], claude["merged_patches"]) == (1.0, 0)
    assert claude["landed_cost_usd"] == 0 and claude["cost_per_merged_patch"] is None


def test_cli_sessions_stats_shows_the_cost(api, rt, cli):
    sid = seed_session(rt, agent_type="claude")
    merged_patch(rt, sid, "1" * 40)
    api("POST", f"/sessions/{sid}/usage", {"cost_usd": 2.5})
    printed = json.loads(cli("sessions", "stats", "--json").stdout)
    assert printed == api("GET", "/stats").get_json()
    header, row = cli("sessions", "stats").stdout.splitlines()[:2]
    assert "COST_USD" in header and "COST_PER_MERGED_PATCH" in header
    assert row.split()[-3:] == ["2.5", "1", "2.5"]
