"""The bot API's ``/stats``: per agent type, inside the token's repositories."""

from __future__ import annotations

import pytest

from tests.scenario import REPO
from tests.seed import error, make_token, seed_stats

# --- stats ------------------------------------------------------------------------------


def test_stats_per_agent_type(api, rt):
    seed_stats(rt)
    resp = api("GET", "/stats", query_string={"project_id": REPO})
    assert resp.status_code == 200
    items = {row["agent_type"]: row for row in resp.get_json()["items"]}
    assert set(items) == {"aider", "claude"}
    claude = items["claude"]
    assert claude["sessions"] == 4
    assert claude["by_state"] == {"completed": 2, "failed": 1, "active": 1}
    assert claude["success_rate"] == pytest.approx(0.6667)
    assert claude["median_seconds_to_completion"] == pytest.approx(120.0)
    assert claude["patches_decided"] == 6
    assert (claude["approval_rate"], claude["rejection_rate"]) == (0.5, 0.5)
    assert claude["top_rejection_reasons"] == [
        {"reason": "too big", "count": 2},
        {"reason": "breaks tests", "count": 1},
    ]
    aider = items["aider"]
    assert (aider["sessions"], aider["success_rate"], aider["approval_rate"]) == (1, None, None)
    assert aider["median_seconds_to_completion"] is None
    assert aider["top_rejection_reasons"] == []

    everywhere = {r["agent_type"]: r for r in api("GET", "/stats").get_json()["items"]}
    assert everywhere["claude"]["sessions"] == 5
    assert everywhere["claude"]["success_rate"] == 0.75
    assert everywhere["claude"]["median_seconds_to_completion"] == pytest.approx(180.0)
    assert {"reason": "elsewhere", "count": 1} in everywhere["claude"]["top_rejection_reasons"]


def test_stats_of_a_repository_outside_the_token_is_403(api, rt):
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", "/stats", query_string={"project_id": "octo/other"}), 403, "forbidden")
    assert scoped("GET", "/stats", query_string={"project_id": REPO}).get_json() == {"items": []}
