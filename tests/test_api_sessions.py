"""The bot API's sessions: ``POST/GET /sessions``, ``GET/DELETE /sessions/{id}`` and the
moves (pause, resume, complete), every error status.

A real migrated database, the real Flask app, GitHub faked at the HTTP layer;
each test asserts what a bot would see and what GitHub was sent.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from minipipe_gh.gh.session_pr import branch_name
from minipipe_gh.store import registry
from minipipe_gh.store.models import AgentSession
from tests.scenario import REPO, R, user
from tests.seed import (
    BASE_SHA,
    HEAD_SHA,
    NEW_SESSION,
    POLICY_PATH,
    PR_INSTALLATION,
    PR_META,
    PR_NUMBER,
    PR_URL,
    START_SHA,
    TREE_SHA,
    audit_rows,
    error,
    make_token,
    seed_patch,
    seed_session,
    serve_permission,
    serve_policy,
    serve_session_pr,
    sessions_in_db,
    token_id,
)

# --- POST /sessions -----------------------------------------------------------------


def test_create_session_opens_a_branch_and_a_draft_pr(api, rt, github):
    serve_session_pr(github)
    resp = api("POST", "/sessions", {**NEW_SESSION, "metadata": {"run": 42}, "workstream_id": "w1"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    sid = body["session_id"]
    branch = f"minipipe/{sid[-8:]}-fix-the-login-form"
    assert branch == branch_name("minipipe/", sid, "Fix the login form!")
    assert (body["state"], body["branch"], body["base_branch"]) == ("created", branch, "main")
    assert (body["pr_number"], body["pr_url"]) == (PR_NUMBER, PR_URL)
    assert (body["project_id"], body["agent_type"], body["workstream_id"]) == (REPO, "claude", "w1")
    assert body["metadata"]["run"] == 42
    assert body["metadata"]["installation_id"] == 1
    assert body["metadata"]["bot_login"] == "agent-bot"
    assert body["metadata"]["bot_id"] == user("agent-bot")["id"]  # the bot by id, not login
    assert body["head_sha"] == START_SHA

    sent = github.api_requests()
    assert [(m, p) for m, p, _ in sent] == [
        ("GET", POLICY_PATH),
        ("GET", f"{R}/collaborators/agent-bot/permission"),
        ("GET", R),
        ("GET", f"{R}/git/ref/heads/main"),
        ("GET", f"{R}/git/commits/{BASE_SHA}"),
        ("POST", f"{R}/git/commits"),
        ("POST", f"{R}/git/refs"),
        ("POST", f"{R}/pulls"),
    ]
    assert sent[5][2] == {
        "message": f"Start minipipe session {sid}\n\nFix the login form!",
        "tree": TREE_SHA,
        "parents": [BASE_SHA],
    }
    assert sent[6][2] == {"ref": f"refs/heads/{branch}", "sha": START_SHA}
    pr = sent[7][2]
    assert (pr["title"], pr["head"], pr["base"], pr["draft"]) == (
        "Fix the login form!",
        branch,
        "main",
        True,
    )
    assert f"<!-- minipipe:session={sid} -->" in pr["body"]
    assert "claude" in pr["body"]

    [row] = sessions_in_db(rt)
    assert (row.session_id, row.pr_number, row.branch, row.state) == (
        sid,
        PR_NUMBER,
        branch,
        "created",
    )
    [created] = audit_rows(rt, entity="session", entity_id=sid)
    assert (created.actor, created.source, created.to_state) == (
        "agent-bot",
        "api:agent",
        "created",
    )


def test_create_session_on_a_given_base_skips_the_default_branch_lookup(api, github):
    serve_session_pr(github, base="develop")
    resp = api("POST", "/sessions", {**NEW_SESSION, "base_branch": "develop"})
    assert resp.status_code == 201
    assert resp.get_json()["base_branch"] == "develop"
    paths = [p for _, p, _ in github.api_requests()]
    assert R not in paths
    assert f"{R}/git/ref/heads/develop" in paths
    [pr] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/pulls")]
    assert pr["base"] == "develop"


@pytest.mark.parametrize("base", ["release/1.2", "feature/login-form_v2", "Hotfix_1", "v1.0"])
def test_a_base_branch_with_slashes_and_dots_is_accepted(api, github, base):
    serve_session_pr(github, base=base)
    resp = api("POST", "/sessions", {**NEW_SESSION, "base_branch": base})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert f"{R}/git/ref/heads/{base}" in [p for _, p, _ in github.api_requests()]


def test_create_session_honours_the_policy_branch_prefix(api, github):
    serve_session_pr(github, policy='sessions:\n  branch_prefix: "bots/"\n')
    body = api("POST", "/sessions", NEW_SESSION).get_json()
    assert body["branch"] == f"bots/{body['session_id'][-8:]}-fix-the-login-form"
    [ref] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/git/refs")]
    assert ref["ref"] == f"refs/heads/{body['branch']}"


def test_idempotency_key_retry_returns_the_same_session_without_calling_github(api, rt, github):
    serve_session_pr(github)
    first = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "run-1"})
    assert first.status_code == 201
    mark = len(github.requests)
    again = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "run-1"})
    assert again.status_code == 200
    assert again.get_json()["session_id"] == first.get_json()["session_id"]
    assert again.get_json()["pr_number"] == PR_NUMBER
    assert github.requests[mark:] == []
    assert len(sessions_in_db(rt)) == 1


def test_idempotency_keys_belong_to_one_token(api, rt, github):
    serve_session_pr(github)
    first = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "same"})
    github.rsps.upsert(
        "POST", github.url(f"{R}/pulls"), json={"number": 8, "html_url": "u"}, status=201
    )
    other = api.as_(make_token(rt, "other", "other-bot"))
    serve_permission(github, "other-bot", "write")
    second = other("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "same"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["session_id"] != second.get_json()["session_id"]
    assert second.get_json()["pr_number"] == 8
    assert len(sessions_in_db(rt)) == 2


def test_concurrent_requests_with_one_idempotency_key_make_one_session(api, rt, github):
    """A bot that times out and retries while its first request still runs: no server error,
    one session per key, and every success names that session."""
    serve_session_pr(github)
    answers: dict[str, list[Any]] = {}
    for i in range(8):
        key = f"race-{i}"
        start = threading.Barrier(2)

        def create(key: str = key, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": key})
            except Exception as err:  # TESTING propagates what would be a 500
                answers.setdefault(key, []).append((500, {"raised": repr(err)[:200]}))
            else:
                answers.setdefault(key, []).append((resp.status_code, resp.get_json()))

        pair = [threading.Thread(target=create) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
    with rt.database.unit() as s:
        keys = [k for (k,) in s.execute(select(AgentSession.idempotency_key))]
    assert sorted(keys) == sorted(f"{token_id(rt, 'agent')}:race-{i}" for i in range(8))
    for key, pair in answers.items():
        assert all(status < 500 for status, _ in pair), (key, pair)
        created = {body["session_id"] for status, body in pair if status in (200, 201)}
        assert len(created) == 1, (key, pair)


def test_github_failure_with_a_key_leaves_a_resumable_session_and_the_retry_finishes_it(
    api, rt, github
):
    serve_session_pr(github, pulls_status=502)
    key = {"Idempotency-Key": "run-7"}
    failed = api("POST", "/sessions", NEW_SESSION, headers=key)
    err = error(failed, 502, "github_error")
    assert "502" in err["message"]
    [row] = sessions_in_db(rt)
    assert (row.state, row.pr_number) == ("created", None)
    assert row.meta["github_error"] == "GitHub answered 502"
    sid = row.session_id
    branch = branch_name("minipipe/", sid, NEW_SESSION["title"])

    # The PR was in fact opened before the answer was lost: GitHub now says both exist.
    github.rsps.upsert(
        "POST",
        github.url(f"{R}/git/refs"),
        json={"message": "Reference already exists"},
        status=422,
    )
    github.rsps.upsert(
        "POST",
        github.url(f"{R}/pulls"),
        json={"message": "Validation Failed", "errors": [{"message": "A pull request exists"}]},
        status=422,
    )
    github.add("GET", f"{R}/pulls", [{"number": PR_NUMBER, "html_url": PR_URL}])
    first_start = "f1" * 20  # the start commit the first try's branch points at
    github.add("GET", f"{R}/git/ref/heads/{branch}", {"object": {"sha": first_start}})
    mark = len(github.api_requests())
    retried = api("POST", "/sessions", NEW_SESSION, headers=key)
    assert retried.status_code == 201, retried.get_json()
    body = retried.get_json()
    assert (body["session_id"], body["pr_number"], body["pr_url"]) == (sid, PR_NUMBER, PR_URL)
    assert (body["state"], body["branch"]) == ("created", branch)
    assert body["metadata"]["github_error"] is None

    sent = github.api_requests()[mark:]
    assert [(m, urlsplit(p).path) for m, p, _ in sent] == [
        ("GET", R),  # the policy is cached from the first try
        ("GET", f"{R}/git/ref/heads/main"),
        ("GET", f"{R}/git/commits/{BASE_SHA}"),
        ("POST", f"{R}/git/commits"),
        ("POST", f"{R}/git/refs"),
        ("GET", f"{R}/git/ref/heads/{branch}"),
        ("POST", f"{R}/pulls"),
        ("GET", f"{R}/pulls"),
    ]
    assert body["head_sha"] == first_start  # the branch's head, not this try's orphan commit
    query = parse_qs(urlsplit(sent[-1][1]).query)
    assert query["head"] == [f"Codertocat:{branch}"]
    assert len(sessions_in_db(rt)) == 1


def test_github_failure_without_a_key_fails_the_session(api, rt, github):
    serve_session_pr(github, pulls_status=500)
    error(api("POST", "/sessions", NEW_SESSION), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert (row.state, row.pr_number) == ("failed", None)
    assert row.meta["github_error"] == "GitHub answered 500"
    moves = [(a.from_state, a.to_state) for a in audit_rows(rt, entity_id=row.session_id)]
    assert moves == [(None, "created"), ("created", "failed")]
    assert audit_rows(rt, entity_id=row.session_id)[-1].reason == "creating the branch or PR failed"


def test_pull_request_422_with_no_existing_pr_is_a_github_error(api, rt, github):
    serve_session_pr(github, pulls_status=422)
    github.add("GET", f"{R}/pulls", [])
    error(api("POST", "/sessions", NEW_SESSION), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert row.state == "failed"


def test_create_session_on_a_repository_without_the_app_is_404(api, rt, github):
    github.add("GET", "/repos/octo/elsewhere/installation", {"message": "Not Found"}, status=404)
    resp = api("POST", "/sessions", {**NEW_SESSION, "project_id": "octo/elsewhere"})
    err = error(resp, 404, "not_installed")
    assert "octo/elsewhere" in err["message"]
    assert sessions_in_db(rt) == []
    # GitHub was asked (as the app) whether it is installed there after all, and only that
    assert github.requests == [("GET", "/repos/octo/elsewhere/installation", None)]
    [call] = github.rsps.calls
    assert call.request.headers["Authorization"].startswith("Bearer ")  # the app's JWT


def test_a_token_scoped_to_another_repository_cannot_create(api, rt, github):
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", ["octo/other"]))
    error(scoped("POST", "/sessions", NEW_SESSION), 403, "forbidden")
    assert sessions_in_db(rt) == []
    assert github.requests == []


DEEP = functools.reduce(lambda inner, _: [inner], range(40), {})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_type": "claude", "title": "t"}, "project_id"),
        ({**NEW_SESSION, "project_id": 5}, "project_id"),
        ({**NEW_SESSION, "project_id": "no-slash"}, "project_id"),
        ({**NEW_SESSION, "project_id": ""}, "project_id"),
        ({"project_id": REPO, "title": "t"}, "agent_type"),
        ({**NEW_SESSION, "agent_type": ["claude"]}, "agent_type"),
        ({"project_id": REPO, "agent_type": "claude"}, "title"),
        ({**NEW_SESSION, "title": 3}, "title"),
        ({**NEW_SESSION, "title": True}, "title"),
        ({**NEW_SESSION, "title": "   "}, "title"),
        ({**NEW_SESSION, "metadata": [1, 2]}, "metadata"),
        ({**NEW_SESSION, "metadata": "x"}, "metadata"),
        ({**NEW_SESSION, "metadata": {"run": 2**64}}, "metadata"),  # would come back a float
        ({**NEW_SESSION, "metadata": {"runs": [{"n": -(2**63) - 1}]}}, "metadata"),
        (
            {**NEW_SESSION, "metadata": functools.reduce(lambda v, _: [v], range(40), {})},
            "metadata",
        ),
        ({**NEW_SESSION, "base_branch": 1}, "base_branch"),
        ({**NEW_SESSION, "workstream_id": {}}, "workstream_id"),
    ],
)
def test_create_session_names_the_bad_field(api, rt, github, body, field):
    error(api("POST", "/sessions", body), 400, "invalid", field)
    assert sessions_in_db(rt) == []
    assert github.requests == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (json.dumps(NEW_SESSION).encode(), "text/plain"),
    ],
)
def test_create_session_body_must_be_a_json_object(api, data, content_type):
    resp = api("POST", "/sessions", data=data, content_type=content_type)
    error(resp, 400, "invalid")


def test_idempotency_key_too_long_is_400(api, github):
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "k" * 151})
    error(resp, 400, "invalid", "Idempotency-Key")
    assert github.requests == []


# --- GET /sessions ---------------------------------------------------------------------


def test_list_sessions_filters_and_pages_newest_first(api, rt):
    ids = [seed_session(rt, agent_type="claude") for _ in range(4)]
    paused = seed_session(rt, agent_type="aider", state="paused")
    elsewhere = seed_session(rt, project="octo/other", agent_type="aider", state="created")
    everything = sorted([*ids, paused, elsewhere], reverse=True)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = api("GET", "/sessions", query_string=query)
        assert resp.status_code == 200
        page = resp.get_json()
        assert len(page["items"]) <= 2
        seen += [s["session_id"] for s in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == 3

    def listed(**query: str) -> list[str]:
        return [
            s["session_id"] for s in api("GET", "/sessions", query_string=query).get_json()["items"]
        ]

    assert listed(state="paused") == [paused]
    assert listed(agent_type="aider") == sorted([paused, elsewhere], reverse=True)
    assert listed(project_id="octo/other") == [elsewhere]
    assert listed(project_id=REPO, state="active") == sorted(ids, reverse=True)
    assert listed(agent_type="nobody") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),  # "²": str.isdigit() says yes, int() says no
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "bm90IG9uZSBvZiBvdXJzIQ"}, "cursor"),  # "not one of ours!"
        ({"state": "sleeping"}, "state"),
    ],
)
def test_list_sessions_bad_query_is_400(api, query, field):
    error(api("GET", "/sessions", query_string=query), 400, "invalid", field)


def test_a_scoped_token_sees_only_its_repositories(api, rt):
    mine = seed_session(rt)
    seed_session(rt, project="octo/other")
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    items = scoped("GET", "/sessions").get_json()["items"]
    assert [s["session_id"] for s in items] == [mine]
    error(scoped("GET", "/sessions", query_string={"project_id": "octo/other"}), 403, "forbidden")
    assert scoped("GET", "/sessions", query_string={"project_id": REPO}).status_code == 200


# --- GET / DELETE /sessions/{id} ---------------------------------------------------------


def test_get_session_with_its_patches(api, rt):
    sid, lid = seed_patch(rt)
    body = api("GET", f"/sessions/{sid}").get_json()
    assert (body["session_id"], body["state"], body["pr_number"]) == (sid, "active", 2)
    assert [p["ledger_id"] for p in body["patches"]] == [lid]
    patch = body["patches"][0]
    assert (patch["state"], patch["patch_id"], patch["risk"]["level"]) == (
        "awaiting_review",
        HEAD_SHA,
        "high",
    )


def test_unknown_session_is_404(api):
    error(api("GET", "/sessions/01nosuchsession000000000000"), 404, "not_found")
    error(api("DELETE", "/sessions/01nosuchsession000000000000"), 404, "not_found")
    error(api("POST", "/sessions/01nosuchsession000000000000/pause"), 404, "not_found")


def test_a_session_of_another_repository_is_hidden_from_a_scoped_token(api, rt):
    sid = seed_session(rt, project="octo/other")
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", f"/sessions/{sid}"), 404, "not_found")
    error(scoped("DELETE", f"/sessions/{sid}"), 404, "not_found")
    error(scoped("POST", f"/sessions/{sid}/pause"), 404, "not_found")
    assert api("GET", f"/sessions/{sid}").status_code == 200  # still there


def test_delete_session_removes_it_and_its_patches(api, rt):
    sid, lid = seed_patch(rt)
    resp = api("DELETE", f"/sessions/{sid}")
    assert resp.status_code == 204
    assert resp.get_data() == b""
    error(api("GET", f"/sessions/{sid}"), 404, "not_found")
    error(api("GET", f"/patches/{lid}"), 404, "not_found")
    error(api("DELETE", f"/sessions/{sid}"), 404, "not_found")
    [deleted] = audit_rows(rt, entity_id=sid, reason="session deleted")
    assert (deleted.actor, deleted.outcome) == ("agent-bot", "noted")


# --- moves ------------------------------------------------------------------------------


def serve_bot_write(github: Any, login: str = "agent-bot") -> None:
    """Moves are decided as comments are: the policy and the token user's permission."""
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, login, "write")


def test_pause_resume_complete(api, rt, github):
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    serve_bot_write(github)
    paused = api("POST", f"/sessions/{sid}/pause")
    assert (paused.status_code, paused.get_json()["state"]) == (200, "paused")
    resumed = api("POST", f"/sessions/{sid}/resume", {"version": paused.get_json()["version"]})
    assert (resumed.status_code, resumed.get_json()["state"]) == (200, "active")
    done = api("POST", f"/sessions/{sid}/complete", {"success": True})
    assert (done.status_code, done.get_json()["state"]) == (200, "completed")
    moves = [(a.from_state, a.to_state, a.actor, a.source) for a in audit_rows(rt, entity_id=sid)]
    assert moves[-3:] == [
        ("active", "paused", "agent-bot", "api:agent"),
        ("paused", "active", "agent-bot", "api:agent"),
        ("active", "completed", "agent-bot", "api:agent"),
    ]
    permission = f"{R}/collaborators/agent-bot/permission"
    assert [r[1] for r in github.api_requests() if r[1] == permission] == [permission]  # cached


def test_complete_without_success_fails_the_session(api, rt):
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    resp = api("POST", f"/sessions/{sid}/complete", {"success": False})
    assert resp.get_json()["state"] == "failed"
    default = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    assert api("POST", f"/sessions/{default}/complete").get_json()["state"] == "completed"


def test_an_illegal_move_is_409_and_audited(api, rt, github):
    serve_bot_write(github)
    sid = seed_session(rt, state="created", meta=PR_META, installation_id=PR_INSTALLATION)
    err = error(api("POST", f"/sessions/{sid}/pause"), 409, "illegal_transition")
    assert sid in err["message"] and "created" in err["message"] and "paused" in err["message"]
    with rt.database.unit() as s:
        assert registry.get_session(s, sid).state == "created"
    [refused] = audit_rows(rt, entity_id=sid, outcome="refused")
    assert (refused.from_state, refused.to_state, refused.actor) == (
        "created",
        "paused",
        "agent-bot",
    )

    done = seed_session(rt, state="completed", meta=PR_META, installation_id=PR_INSTALLATION)
    error(api("POST", f"/sessions/{done}/resume"), 409, "illegal_transition")
    error(api("POST", f"/sessions/{done}/complete", {"success": False}), 409, "illegal_transition")


def test_a_stale_version_is_409_conflict(api, rt, github):
    serve_bot_write(github)
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    err = error(api("POST", f"/sessions/{sid}/pause", {"version": version - 1}), 409, "conflict")
    assert f"version {version}" in err["message"]
    assert api("GET", f"/sessions/{sid}").get_json()["state"] == "active"


@pytest.mark.parametrize(
    ("move", "body", "field"),
    [
        ("complete", {"success": "yes"}, "success"),
        ("complete", {"success": 1}, "success"),
        ("pause", {"version": "3"}, "version"),
        ("pause", {"version": True}, "version"),
    ],
)
def test_move_names_the_bad_field(api, rt, move, body, field):
    sid = seed_session(rt)
    error(api("POST", f"/sessions/{sid}/{move}", body), 400, "invalid", field)
    assert api("GET", f"/sessions/{sid}").get_json()["state"] == "active"


def test_move_body_must_be_an_object(api, rt):
    sid = seed_session(rt)
    error(api("POST", f"/sessions/{sid}/pause", [1]), 400, "invalid")


def test_unknown_action_is_404(api, rt):
    sid, lid = seed_patch(rt)
    error(api("POST", f"/sessions/{sid}/explode"), 404, "not_found")
    error(api("POST", f"/patches/{lid}/merge"), 404, "not_found")
