"""The suite's GitHub itself: one set of routes, answered alike in-process and on loopback.

Every test of the app trusts tests/github_fake.py; these hold it to its word: the
``responses`` transport and the loopback server give the same answers from the same
state, and the faults fail exactly what they are asked to.
"""

from __future__ import annotations

from typing import Any

import requests
import responses

from tests.fake_github_server import Served, create_app
from tests.github_fake import FAULTS, REPO, WIRE, FakeGitHub, Fault, GitHubState

R = f"/repos/{REPO}"
SHA = "a" * 40


def repository() -> GitHubState:
    gh = GitHubState(policy="review:\n  required_approvals: 2\n", check_run_id=555)
    gh.allow("writer", "write")
    gh.allow("triager", "triage")
    pr = {"number": 2, "state": "open", "user": {"login": "agent-bot"}, "head": {"sha": SHA}}
    gh.prs[2] = pr
    gh.files[2] = [{"filename": "src/app.py", "additions": 1, "deletions": 0}]
    return gh


CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/app/installations/1/access_tokens", {}),
    ("GET", R, None),
    ("GET", f"{R}/collaborators/writer/permission", None),
    ("GET", f"{R}/collaborators/triager/permission", None),
    ("GET", f"{R}/collaborators/stranger/permission", None),
    ("GET", f"{R}/contents/.github/minipipe.yml", None),
    ("GET", f"{R}/contents/README.md", None),
    ("GET", f"{R}/pulls/2", None),
    ("GET", f"{R}/pulls/3", None),
    ("GET", f"{R}/pulls/2/files", None),
    ("GET", f"{R}/pulls/2/commits", None),
    ("GET", f"{R}/commits/{SHA}/check-suites", None),
    ("POST", f"{R}/check-runs", {"name": "minipipe/review", "head_sha": SHA}),
    ("PATCH", f"{R}/check-runs/555", {"conclusion": "success"}),
    ("PATCH", f"{R}/check-runs/999", {"conclusion": "success"}),
    ("GET", f"{R}/commits/{SHA}/check-runs", None),
    ("POST", f"{R}/issues/comments/7/reactions", {"content": "+1"}),
    ("POST", f"{R}/issues/comments/7/reactions", {"content": "+1"}),
    ("POST", f"{R}/issues/2/comments", {"body": "hello"}),
    ("GET", f"{R}/issues/2/comments", None),
    ("GET", f"{R}/git/commits/{SHA}", None),
]


def answers(send: Any) -> list[tuple[int, Any]]:
    out = []
    for method, path, body in CALLS:
        resp = send(method, path, body)
        data = resp.json()
        if isinstance(data, dict):
            data.pop("expires_at", None)  # a time: not the same twice
        out.append((resp.status_code, data))
    return out


def test_responses_and_the_loopback_server_answer_alike_from_the_same_state() -> None:
    in_process, served = repository(), repository()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        FakeGitHub(rsps).serve(in_process)
        through_responses = answers(
            lambda m, p, b: requests.request(m, f"{WIRE}{p}", json=b, timeout=5)
        )
    with Served(create_app(served)) as server:
        on_loopback = answers(
            lambda m, p, b: requests.request(m, f"{server.url}/api/v3{p}", json=b, timeout=5)
        )

    assert through_responses == on_loopback
    statuses = [status for status, _ in on_loopback]
    assert statuses == [
        201, 200, 200, 200, 404, 200, 404, 200, 404, 200, 200, 200,
        201, 200, 404, 200, 201, 200, 201, 200, 200,
    ]  # fmt: skip
    # both kept the same: one check run, updated; one reaction however often posted
    for state in (in_process, served):
        assert state.runs == {
            555: {
                "name": "minipipe/review",
                "head_sha": SHA,
                "conclusion": "success",
                "id": 555,
                "app": {"id": 29310},
            }
        }
        assert state.reactions == [(7, "+1")] and state.reaction_posts[(7, "+1")] == 2
        assert [c["body"] for c in state.posted_comments()] == ["hello"]
    assert on_loopback[3][1]["permission"] == "read"  # triage is read to the legacy field
    assert on_loopback[3][1]["role_name"] == "triage"
    assert served.paths()[:2] == [
        "POST /api/v3/app/installations/1/access_tokens",
        f"GET /api/v3{R}",
    ]


def test_a_queued_fault_fails_the_next_request_on_its_route_only(github: FakeGitHub) -> None:
    gh = github.serve(repository())
    gh.fail_next("create_run", FAULTS["422"])
    gh.fail_next("reply", FAULTS["secondary rate limit"])
    first = requests.post(f"{WIRE}{R}/check-runs", json={"head_sha": SHA}, timeout=5)
    second = requests.post(f"{WIRE}{R}/check-runs", json={"head_sha": SHA}, timeout=5)
    limited = requests.post(f"{WIRE}{R}/issues/2/comments", json={"body": "x"}, timeout=5)

    assert (first.status_code, first.json()) == (422, {"message": "Validation Failed"})
    assert second.status_code == 201 and list(gh.runs) == [555]  # the failed one did nothing
    assert limited.status_code == 403 and limited.headers["Retry-After"] == "60"
    assert "secondary rate limit" in limited.json()["message"]
    assert gh.log == [("create_run", 422), ("create_run", 201), ("reply", 403)]
    assert gh.posted_comments() == []


def test_a_fault_that_took_effect_did_the_write_but_lost_the_answer() -> None:
    gh = repository()
    lost = Fault("lost", 502, "Bad Gateway", took_effect=True)
    gh.fail_next("reply", lost)
    with Served(create_app(gh)) as server:
        resp = requests.post(
            f"{server.url}/api/v3{R}/issues/2/comments", json={"body": "once"}, timeout=5
        )
    assert resp.status_code == 502
    assert [c["body"] for c in gh.posted_comments()] == ["once"]  # GitHub has it all the same


def test_misbehave_is_asked_for_every_write_and_never_for_a_read(github: FakeGitHub) -> None:
    asked: list[str] = []

    def every_other(route: Any, request: Any) -> Any:
        asked.append(route.name)
        return FAULTS["500"] if len(asked) % 2 else None

    gh = github.serve(repository())
    gh.misbehave = every_other
    sent = [
        requests.get(f"{WIRE}{R}/pulls/2", timeout=5),
        requests.post(f"{WIRE}{R}/issues/2/comments", json={"body": "a"}, timeout=5),
        requests.post(f"{WIRE}{R}/issues/2/comments", json={"body": "b"}, timeout=5),
        requests.post(f"{WIRE}/app/installations/1/access_tokens", timeout=5),
    ]
    assert [r.status_code for r in sent] == [200, 500, 201, 201]
    assert asked == ["reply", "reply"]  # not the read, not the token exchange
    assert [c["body"] for c in gh.posted_comments()] == ["b"]


def test_fail_gives_a_canned_answer_a_fault_of_githubs(github: FakeGitHub) -> None:
    github.fail("GET", f"{R}/pulls/2", FAULTS["secondary rate limit"])
    github.fail("GET", f"{R}/pulls/3", FAULTS["timeout"])
    resp = requests.get(f"{WIRE}{R}/pulls/2", timeout=5)
    assert resp.status_code == 403 and resp.headers["Retry-After"] == "60"
    try:
        requests.get(f"{WIRE}{R}/pulls/3", timeout=5)
    except requests.exceptions.ConnectTimeout as err:
        assert "timeout" in str(err)
    else:
        raise AssertionError("a timeout fault must fail the connection")
    assert [(m, p) for m, p, _b in github.requests] == [
        ("GET", f"{R}/pulls/2"),
        ("GET", f"{R}/pulls/3"),
    ]
