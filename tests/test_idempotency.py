"""Creating a session safely: Idempotency-Key semantics, the per-token rate limit, and headers.

- Any failed create (GitHub answered an error, or could not be reached) ends
  as 502 ``github_error``; with a key the same key finishes the job.
- A key's claim (a create under way) answers 409 ``in_progress`` with
  ``Retry-After``, and expires, so a crashed request does not lock the key.
- The same key with another body is 422 ``idempotency_mismatch``.
- Session creation is rate-limited per token: 429 with ``Retry-After`` and
  ``X-RateLimit-*``; GitHub's own ``Retry-After`` is passed through on 502.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from minipipe_gh.conf.config import Settings
from minipipe_gh.store import registry
from minipipe_gh.store.models import AgentSession, utcnow
from minipipe_gh.web import api as api_module
from tests.scenario import REPO, R
from tests.test_api import (
    NEW_SESSION,
    PR_NUMBER,
    Api,
    error,
    install,
    make_token,
    seed_patch,
    serve_permission,
    serve_session_pr,
    sessions_in_db,
    token_id,
)

RATE_LIMIT = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, session_rate_limit=RATE_LIMIT, session_rate_window=600)


@pytest.fixture
def api(rt: Any, client: Any, github: Any) -> Api:
    install(rt)
    return Api(client, make_token(rt, "agent", "agent-bot"))


def fail_pulls_with(github: Any, failure: Exception) -> None:
    github.rsps.upsert("POST", github.url(f"{R}/pulls"), body=failure)


def heal_pulls(github: Any) -> None:
    pr = {"number": PR_NUMBER, "html_url": f"https://github.com/{REPO}/pull/{PR_NUMBER}"}
    github.rsps.upsert("POST", github.url(f"{R}/pulls"), json=pr, status=201)


def test_a_network_failure_is_502_and_the_same_key_finishes_the_session(api, rt, github):
    serve_session_pr(github)
    fail_pulls_with(github, requests.ConnectionError("connection reset by peer"))
    key = {"Idempotency-Key": "net-1"}
    err = error(api("POST", "/sessions", NEW_SESSION, headers=key), 502, "github_error")
    assert "could not be reached" in err["message"]
    [row] = sessions_in_db(rt)
    assert (row.state, row.pr_number) == ("created", None)
    assert row.meta["github_error"] == "GitHub could not be reached (ConnectionError)"

    heal_pulls(github)
    retried = api("POST", "/sessions", NEW_SESSION, headers=key)
    assert retried.status_code == 201, retried.get_json()
    body = retried.get_json()
    assert (body["session_id"], body["pr_number"]) == (row.session_id, PR_NUMBER)
    assert body["metadata"]["github_error"] is None
    assert len(sessions_in_db(rt)) == 1
    again = api("POST", "/sessions", NEW_SESSION, headers=key)
    assert (again.status_code, again.get_json()["session_id"]) == (200, row.session_id)


def test_a_timeout_without_a_key_is_502_and_fails_the_session(api, rt, github):
    serve_session_pr(github)
    fail_pulls_with(github, requests.Timeout("read timed out"))
    error(api("POST", "/sessions", NEW_SESSION), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert (row.state, row.meta["github_error"]) == (
        "failed",
        "GitHub could not be reached (Timeout)",
    )


def test_github_unreachable_for_the_token_exchange_is_502_too(api, rt, github):
    # No token exchange served: the very first GitHub call fails at the network.
    github.rsps.add(
        "POST",
        github.url("/app/installations/1/access_tokens"),
        body=requests.ConnectionError("no route to host"),
    )
    key = {"Idempotency-Key": "net-2"}
    error(api("POST", "/sessions", NEW_SESSION, headers=key), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert row.state == "created" and row.meta["github_error"]


def claimed_session(rt: Any, key: str, *, claimed_ago: timedelta | None) -> str:
    """A session a request claimed for ``key`` and never finished (it died, or still runs)."""
    scoped = f"{token_id(rt, 'agent')}:{key}"
    meta: dict[str, Any] = {"idempotency_fingerprint": api_module._fingerprint(NEW_SESSION)}
    if claimed_ago is not None:
        meta["idempotency_claimed_at"] = (utcnow() - claimed_ago).isoformat()
    with rt.database.unit() as s:
        session = registry.create_session(
            s,
            project_id=REPO,
            agent_type=NEW_SESSION["agent_type"],
            title=NEW_SESSION["title"],
            idempotency_key=scoped,
            actor="agent-bot",
            source="api:agent",
        )
        session.meta = {**session.meta, **meta}
        return session.session_id


def test_a_live_claim_is_409_in_progress_with_retry_after(api, rt, github):
    claimed_session(rt, "busy", claimed_ago=timedelta(seconds=5))
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "busy"})
    error(resp, 409, "in_progress")
    assert 1 <= int(resp.headers["Retry-After"]) <= 5
    assert github.requests == []


def test_an_expired_claim_is_taken_over_by_the_retry(api, rt, github):
    sid = claimed_session(
        rt, "crashed", claimed_ago=timedelta(seconds=api_module.CLAIM_SECONDS + 1)
    )
    serve_session_pr(github)
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "crashed"})
    assert resp.status_code == 201, resp.get_json()
    assert (resp.get_json()["session_id"], resp.get_json()["pr_number"]) == (sid, PR_NUMBER)
    assert len(sessions_in_db(rt)) == 1


def test_a_claim_left_before_claims_were_timed_is_expired(api, rt, github):
    sid = claimed_session(rt, "old", claimed_ago=None)
    serve_session_pr(github)
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "old"})
    assert (resp.status_code, resp.get_json()["session_id"]) == (201, sid)


def test_the_same_key_with_another_body_is_422(api, rt, github):
    serve_session_pr(github)
    key = {"Idempotency-Key": "task-9"}
    assert api("POST", "/sessions", NEW_SESSION, headers=key).status_code == 201
    mark = len(github.requests)
    other = {**NEW_SESSION, "title": "Something else"}
    error(
        api("POST", "/sessions", other, headers=key),
        422,
        "idempotency_mismatch",
        "Idempotency-Key",
    )
    assert github.requests[mark:] == []
    assert len(sessions_in_db(rt)) == 1
    # The same request, the repository spelled another way, is the same request.
    same = {**NEW_SESSION, "project_id": REPO.lower()}
    assert api("POST", "/sessions", same, headers=key).status_code == 200


def test_a_concurrent_request_with_the_key_is_told_to_retry_after(api, rt, github):
    serve_session_pr(github)
    entered, release = threading.Event(), threading.Event()
    pr = {"number": PR_NUMBER, "html_url": f"https://github.com/{REPO}/pull/{PR_NUMBER}"}

    def slow_pull(request: Any) -> tuple[int, dict[str, str], str]:
        entered.set()
        release.wait(10)
        import json

        return 201, {}, json.dumps(pr)

    github.rsps.remove("POST", github.url(f"{R}/pulls"))
    github.rsps.add_callback("POST", github.url(f"{R}/pulls"), callback=slow_pull)
    key = {"Idempotency-Key": "slow"}
    first: dict[str, Any] = {}

    def create() -> None:
        resp = api("POST", "/sessions", NEW_SESSION, headers=key)
        first["status"], first["body"] = resp.status_code, resp.get_json()

    thread = threading.Thread(target=create)
    thread.start()
    assert entered.wait(10)
    try:
        second = api("POST", "/sessions", NEW_SESSION, headers=key)
    finally:
        release.set()
        thread.join(10)
    error(second, 409, "in_progress")
    assert second.headers["Retry-After"].isdigit()
    assert first["status"] == 201
    third = api("POST", "/sessions", NEW_SESSION, headers=key)
    assert (third.status_code, third.get_json()["session_id"]) == (200, first["body"]["session_id"])


def test_creation_is_rate_limited_per_token(api, rt, github):
    serve_session_pr(github)
    remaining = []
    for i in range(RATE_LIMIT):
        resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": f"k{i}"})
        assert resp.status_code == 201
        assert resp.headers["X-RateLimit-Limit"] == str(RATE_LIMIT)
        assert 0 < int(resp.headers["X-RateLimit-Reset"]) <= 600
        remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    mark = len(github.requests)
    refused = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "one-more"})
    err = error(refused, 429, "rate_limited")
    assert str(RATE_LIMIT) in err["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert github.requests[mark:] == []  # no branch, no PR
    assert len(sessions_in_db(rt)) == RATE_LIMIT

    # A retry of a key that already made its session is an answer, not a creation.
    replay = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "k0"})
    assert replay.status_code == 200
    # Another token has its own budget.
    other = api.as_(make_token(rt, "other", "other-bot"))
    serve_permission(github, "other-bot", "write")  # its user id, kept with its session
    assert other("POST", "/sessions", NEW_SESSION).status_code == 201


def test_the_window_frees_old_creations(api, rt, github):
    serve_session_pr(github)
    for _ in range(RATE_LIMIT):
        assert api("POST", "/sessions", NEW_SESSION).status_code == 201
    error(api("POST", "/sessions", NEW_SESSION), 429, "rate_limited")
    # Age the creations past the window (the audit trail is append-only: age the clock instead).
    real_now = api_module.utcnow
    api_module.utcnow = lambda: real_now() + timedelta(seconds=601)
    try:
        assert api("POST", "/sessions", NEW_SESSION).status_code == 201
    finally:
        api_module.utcnow = real_now


def test_githubs_retry_after_is_passed_through_on_502(api, rt, github):
    serve_session_pr(github)
    github.rsps.upsert(
        "POST",
        github.url(f"{R}/pulls"),
        json={"message": "You have exceeded a secondary rate limit."},
        status=403,
        headers={"Retry-After": "37"},
    )
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "busy-gh"})
    error(resp, 502, "github_error")
    assert resp.headers["Retry-After"] == "37"


def test_created_is_201_with_location(api, rt, github):
    serve_session_pr(github)
    resp = api("POST", "/sessions", NEW_SESSION)
    sid = resp.get_json()["session_id"]
    assert resp.headers["Location"] == f"http://localhost/api/v1/sessions/{sid}"
    assert api(
        "GET", resp.headers["Location"].removeprefix("http://localhost/api/v1")
    ).status_code == (200)


def test_project_id_filters_compare_case_insensitively(api, rt):
    sid, lid = seed_patch(rt)
    for spelled in (REPO, REPO.upper(), REPO.lower()):
        sessions = api("GET", "/sessions", query_string={"project_id": spelled}).get_json()
        assert [x["session_id"] for x in sessions["items"]] == [sid], spelled
        patches = api("GET", "/patches", query_string={"project_id": spelled}).get_json()
        assert [x["ledger_id"] for x in patches["items"]] == [lid], spelled
    with rt.database.unit() as s:
        assert s.scalars(select(AgentSession.project_id)).all() == [REPO]


def test_405_names_the_allowed_methods_and_401_the_scheme(api, client):
    resp = api("PUT", "/sessions")
    error(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    anonymous = Api(client, None)("GET", "/sessions")
    error(anonymous, 401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="minipipe-gh"'
    bad = Api(client, "mpg_not-a-token")("GET", "/sessions")
    error(bad, 401, "unauthorized")
    assert bad.headers["WWW-Authenticate"] == 'Bearer realm="minipipe-gh", error="invalid_token"'
