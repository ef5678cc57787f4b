"""``gh.rest.send_json``: the repository calls on every delivery's path go out through
requests' adapter, but answer as PyGithub's requester would: the same URL, auth and
query, the same exception types (with status, headers and body), redirects on the
same host followed, and every request counted."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import responses
from github import Auth, Github, GithubException, UnknownObjectException

from minipipe_gh.delivery.metrics import counting_github_calls, install_github_counter
from minipipe_gh.delivery.worker import retry_delay
from minipipe_gh.gh.rest import RepoAPI, send_json

BASE = "https://ghe.test/api/v3"
ORIGIN = "https://ghe.test:443/api/v3"  # PyGithub spells the port out; so do we


@pytest.fixture
def gh() -> Iterator[Github]:
    install_github_counter()
    yield Github(auth=Auth.Token("ghs_sometoken"), base_url=BASE, retry=0, lazy=True)


@responses.activate
def test_a_write_carries_pygithubs_auth_user_agent_api_version_and_json_body(gh: Github) -> None:
    responses.patch(f"{ORIGIN}/repos/o/r/check-runs/7", json={"id": 7})
    api = RepoAPI(gh, "o/r")
    assert api.update_check_run(7, {"status": "completed", "conclusion": "success"}) == {"id": 7}
    [call] = responses.calls
    assert call.request.method == "PATCH"
    assert call.request.headers["Authorization"] == "token ghs_sometoken"
    assert call.request.headers["User-Agent"] == "PyGithub/Python"
    assert call.request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(call.request.body) == {"status": "completed", "conclusion": "success"}


@responses.activate
def test_a_query_is_spelled_as_pygithub_spells_it(gh: Github) -> None:
    responses.get(f"{ORIGIN}/repos/o/r/things", json=[])
    send_json(gh.requester, "GET", "/repos/o/r/things", {"per_page": 100, "page": 2, "a": True})
    [call] = responses.calls
    assert call.request.url == f"{ORIGIN}/repos/o/r/things?a=true&page=2&per_page=100"


@responses.activate
def test_a_refusal_raises_pygithubs_exception_with_status_headers_and_body(gh: Github) -> None:
    responses.post(
        f"{ORIGIN}/repos/o/r/check-runs",
        status=422,
        json={"message": "Invalid request.", "errors": [{"field": "output"}]},
    )
    responses.get(f"{ORIGIN}/repos/o/r/pulls/9", status=404, json={"message": "Not Found"})
    api = RepoAPI(gh, "o/r")
    with pytest.raises(GithubException) as refused:
        api.create_check_run({"name": "minipipe/review", "head_sha": "a" * 40})
    assert refused.value.status == 422
    assert refused.value.data["message"] == "Invalid request."
    with pytest.raises(UnknownObjectException) as missing:  # the type the code checks for
        api.pull(9)
    assert missing.value.status == 404


@responses.activate
def test_a_secondary_rate_limit_keeps_its_retry_after_for_the_worker(gh: Github) -> None:
    responses.post(
        f"{ORIGIN}/repos/o/r/issues/comments/5/reactions",
        status=403,
        json={"message": "You have exceeded a secondary rate limit."},
        headers={"Retry-After": "42"},
    )
    with pytest.raises(GithubException) as limited:
        RepoAPI(gh, "o/r").react(5, "+1")
    assert limited.value.status == 403
    assert retry_delay(limited.value, attempt=1) == 42.0


@responses.activate
def test_a_redirect_on_the_same_host_is_followed_with_the_same_verb_and_body(gh: Github) -> None:
    # a renamed repository answers 301 with its new address
    responses.patch(
        f"{ORIGIN}/repos/o/old/check-runs/7",
        status=301,
        headers={"Location": f"{ORIGIN}/repositories/99/check-runs/7"},
    )
    responses.patch(f"{ORIGIN}/repositories/99/check-runs/7", json={"id": 7})
    with counting_github_calls() as calls:
        assert RepoAPI(gh, "o/old").update_check_run(7, {"status": "completed"}) == {"id": 7}
    assert [c.request.method for c in responses.calls] == ["PATCH", "PATCH"]
    assert json.loads(responses.calls[1].request.body) == {"status": "completed"}
    assert calls == [  # each request counts against the rate limit
        "PATCH /api/v3/repos/o/old/check-runs/7",
        "PATCH /api/v3/repositories/99/check-runs/7",
    ]


@responses.activate
def test_a_redirect_to_another_host_is_refused(gh: Github) -> None:
    responses.get(
        f"{ORIGIN}/repos/o/r/pulls/1",
        status=301,
        headers={"Location": "https://elsewhere.test/steal"},
    )
    with pytest.raises(RuntimeError, match="another host"):
        RepoAPI(gh, "o/r").pull(1)
    assert len(responses.calls) == 1  # nothing sent there, token least of all


@responses.activate
def test_each_request_is_counted_with_its_path(gh: Github) -> None:
    responses.get(
        f"{ORIGIN}/repos/o/r/collaborators/alice/permission",
        json={"permission": "write", "role_name": "write", "user": {"id": 1}},
        headers={"x-ratelimit-remaining": "4999"},
    )
    with counting_github_calls() as calls:
        assert RepoAPI(gh, "o/r").permission("alice") == "write"
    assert calls == ["GET /api/v3/repos/o/r/collaborators/alice/permission"]
