"""The bot API (``/api/v1``): tokens (401), unknown routes, the OpenAPI description, input
the database cannot store. Sessions, patches and stats have their own modules
(test_api_sessions.py, test_api_patches.py, test_api_stats.py); the CLI's are test_cli*.py.

A real migrated database, the real Flask app, GitHub faked at the HTTP layer;
each test asserts what a bot would see and what GitHub was sent.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from minipipe_gh.store import tokens
from minipipe_gh.store.models import ApiToken
from tests.seed import (
    NEW_SESSION,
    Api,
    error,
    serve_session_pr,
)

# --- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Basic YWdlbnQ6c2VjcmV0", "Bearer", "Bearer    ", "Token mpg_x", "Bearer mpg_unknown"],
)
def test_missing_or_bad_token_is_401(api, header):
    headers = {"Authorization": header} if header is not None else {}
    resp = Api(api.client, None)("GET", "/sessions", headers=headers)
    error(resp, 401, "unauthorized")


def test_every_endpoint_needs_a_token_but_the_description(api):
    anonymous = Api(api.client, None)
    calls = [
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/x"),
        ("DELETE", "/sessions/x"),
        ("POST", "/sessions/x/pause"),
        ("POST", "/sessions/x/resume"),
        ("POST", "/sessions/x/complete"),
        ("GET", "/patches"),
        ("GET", "/patches/x"),
        ("POST", "/patches/x/approve"),
        ("POST", "/patches/x/reject"),
        ("POST", "/patches/x/review"),
        ("GET", "/stats"),
    ]
    for method, path in calls:
        error(anonymous(method, path), 401, "unauthorized")
    assert anonymous("GET", "/openapi.json").status_code == 200


def test_a_revoked_token_is_401_at_once(api, rt):
    assert api("GET", "/sessions").status_code == 200
    with rt.database.unit() as s:
        tokens.revoke(s, "agent")
    err = error(api("GET", "/sessions"), 401, "unauthorized")
    assert "revoked" in err["message"]


def test_a_used_token_records_when(api, rt):
    api("GET", "/stats")
    with rt.database.unit() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "agent")).one()
    assert row.last_used_at is not None


# --- POST /sessions -----------------------------------------------------------------


NUL = "a\x00b"  # PostgreSQL refuses NUL in text and in JSONB; SQLite stores it


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/stats?project_id=a%00b", None),
        ("GET", "/sessions?project_id=a%00b", None),
        ("GET", "/sessions?agent_type=a%00b", None),
        ("GET", "/patches?session_id=a%00b", None),
        ("GET", "/sessions/a%00b", None),
        ("GET", "/patches/a%00b", None),
        ("POST", "/sessions", {**NEW_SESSION, "title": NUL}),
        ("POST", "/sessions", {**NEW_SESSION, "metadata": {"note": NUL}}),
    ],
    ids=[
        "stats",
        "sessions-project",
        "sessions-agent",
        "patches",
        "session",
        "patch",
        "title",
        "meta",
    ],
)
def test_a_nul_character_in_the_input_is_not_a_server_error(api, github, method, path, body):
    serve_session_pr(github)
    resp = api(method, path, body)
    assert resp.status_code < 500
    if resp.status_code >= 400:
        assert resp.get_json()["error"]["code"]


# --- moves ------------------------------------------------------------------------------


def test_unknown_routes_and_methods_under_the_api_answer_json(api):
    error(api("GET", "/nothing"), 404, "not_found")
    error(api("GET", "/sessions/a/b/c"), 404, "not_found")
    error(api("PUT", "/sessions"), 405, "method_not_allowed")
    error(api("GET", "/sessions/x/pause"), 405, "method_not_allowed")


# --- stats ------------------------------------------------------------------------------


def test_openapi_description_lists_every_endpoint(api):
    spec = api("GET", "/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["servers"] == [{"url": "http://localhost", "description": "This server"}]
    assert set(spec["paths"]) == {
        f"/api/v1{p}"
        for p in (
            "/sessions",
            "/sessions/{session_id}",
            "/sessions/{session_id}/pause",
            "/sessions/{session_id}/resume",
            "/sessions/{session_id}/complete",
            "/sessions/{session_id}/usage",
            "/patches",
            "/patches/{ledger_id}",
            "/patches/{ledger_id}/history",
            "/patches/{ledger_id}/approve",
            "/patches/{ledger_id}/reject",
            "/patches/{ledger_id}/review",
            "/stats",
            "/openapi.json",
        )
    }
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == 16
    assert {"createSession", "getSession", "approvePatch", "getPatchHistory"} <= set(ids)
    assert "Error" not in spec["components"]["schemas"]
