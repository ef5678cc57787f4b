"""The bot API's patches: the review queue, a patch's history, and the decisions
(approve, reject, review) with who may make them.

A real migrated database, the real Flask app, GitHub faked at the HTTP layer;
each test asserts what a bot would see and what GitHub was sent.
"""

from __future__ import annotations

import json

from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.store.models import CheckRunRef
from tests.scenario import REPO, R
from tests.seed import (
    HEAD_SHA,
    POLICY_PATH,
    PR_INSTALLATION,
    PR_META,
    audit_rows,
    drain,
    error,
    make_token,
    publish_deliveries,
    seed_patch,
    seed_session,
    serve_permission,
    serve_policy,
)

# --- patches ----------------------------------------------------------------------------


def test_list_patches_the_review_queue_and_filters(api, rt, github):
    sid, waiting = seed_patch(rt)
    _, fresh = seed_patch(rt, state=P.CREATED, sha="c" * 40, session_id=sid)
    other = seed_session(
        rt, project="octo/other", pr_number=3, meta=PR_META, installation_id=PR_INSTALLATION
    )
    _, elsewhere = seed_patch(rt, session_id=other, sha="d" * 40)

    def listed(**query: str) -> list[str]:
        resp = api("GET", "/patches", query_string=query)
        assert resp.status_code == 200
        return [p["ledger_id"] for p in resp.get_json()["items"]]

    assert listed() == [waiting, fresh, elsewhere]  # oldest first
    assert listed(state="awaiting_review") == [waiting, elsewhere]
    assert listed(state="awaiting_review", project_id=REPO) == [waiting]
    assert listed(session_id=sid) == [waiting, fresh]
    assert listed(run_id="nope") == []
    assert listed(workstream_id="nope") == []

    first = api("GET", "/patches", query_string={"limit": "2"}).get_json()
    assert [p["ledger_id"] for p in first["items"]] == [waiting, fresh]
    rest = api("GET", "/patches", query_string={"limit": "2", "cursor": first["next_cursor"]})
    assert [p["ledger_id"] for p in rest.get_json()["items"]] == [elsewhere]
    assert rest.get_json()["next_cursor"] is None

    error(api("GET", "/patches", query_string={"state": "merged"}), 400, "invalid", "state")
    error(api("GET", "/patches", query_string={"limit": "x"}), 400, "invalid", "limit")
    error(api("GET", "/patches", query_string={"cursor": "%%%"}), 400, "invalid", "cursor")

    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    queue = scoped("GET", "/patches", query_string={"state": "awaiting_review"}).get_json()
    assert [p["ledger_id"] for p in queue["items"]] == [waiting]
    error(scoped("GET", f"/patches/{elsewhere}"), 404, "not_found")
    error(scoped("POST", f"/patches/{elsewhere}/approve"), 404, "not_found")
    assert github.requests == []


def test_a_scoped_token_filtering_patches_by_another_repository_is_403(api, rt):
    """As GET /sessions?project_id= and GET /stats?project_id= answer: the filter is refused."""
    other = seed_session(
        rt, project="octo/other", pr_number=3, meta=PR_META, installation_id=PR_INSTALLATION
    )
    seed_patch(rt, session_id=other)
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", "/patches", query_string={"project_id": "octo/other"}), 403, "forbidden")


def test_get_patch_with_its_history(api, rt):
    _, lid = seed_patch(rt)
    body = api("GET", f"/patches/{lid}").get_json()
    assert (body["ledger_id"], body["state"]) == (lid, "awaiting_review")
    assert body["risk"] == {
        "level": "high",
        "reasons": ["touches high-risk paths: src/auth/login.py"],
    }
    assert "history" not in body  # paged on its own, never embedded whole
    assert body["review"]["status"] == "pending"
    first = api("GET", f"/patches/{lid}/history", query_string={"limit": 2}).get_json()
    rest = api(
        "GET", f"/patches/{lid}/history", query_string={"limit": 2, "cursor": first["next_cursor"]}
    ).get_json()
    assert rest["next_cursor"] is None
    assert [(h["from"], h["to"], h["outcome"]) for h in first["items"] + rest["items"]] == [
        (None, "created", "moved"),
        ("created", "validated", "moved"),
        ("validated", "awaiting_review", "moved"),
    ]
    error(api("GET", "/patches/01nosuchpatch00000000000000"), 404, "not_found")
    error(api("GET", "/patches/01nosuchpatch00000000000000/history"), 404, "not_found")


def test_approve_by_a_writer_queues_the_patch_and_publishes_through_the_worker(api, rt, github):
    _, lid = seed_patch(rt)
    with rt.database.unit() as s:
        s.add(CheckRunRef(project_id=REPO, head_sha=HEAD_SHA, check_run_id=555))
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    github.add("PATCH", f"{R}/check-runs/555", {"id": 555})
    writer = api.as_(make_token(rt, "writer-token", "writer"))

    resp = writer("POST", f"/patches/{lid}/approve", {"comment": "ship it"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["state"] == "queued"
    assert body["metadata"]["reviewed_by"] == "writer"
    assert body["metadata"]["review_status"] == "approved"
    assert body["metadata"]["approvals"] == ["writer"]
    moved = audit_rows(rt, entity_id=lid, outcome="moved")[-1]
    assert (moved.from_state, moved.to_state, moved.actor, moved.source) == (
        "awaiting_review",
        "queued",
        "writer",
        "api:writer-token",
    )
    assert [(m, p) for m, p, _ in github.api_requests()] == [
        ("GET", POLICY_PATH),
        ("GET", f"{R}/collaborators/writer/permission"),
    ]

    [queued] = publish_deliveries(rt)
    assert queued.status == "queued"
    assert json.loads(queued.payload)["ledger_id"] == lid
    assert queued.order_key == f"{REPO}#2"  # in order with the PR's own events

    mark = len(github.api_requests())
    assert [o.status for o in drain(rt)] == ["done"]
    [update] = github.api_requests()[mark:]
    assert update[:2] == ("PATCH", f"{R}/check-runs/555")
    assert (update[2]["status"], update[2]["conclusion"]) == ("completed", "success")
    assert "head_sha" not in update[2]
    assert publish_deliveries(rt)[0].status == "done"


def test_reject_drops_the_patch_and_the_first_publish_creates_the_check_run(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    github.add("POST", f"{R}/check-runs", {"id": 777}, status=201)
    writer = api.as_(make_token(rt, "writer-token", "writer"))

    resp = writer("POST", f"/patches/{lid}/reject", {"reason": "breaks the session cookie"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "dropped"
    assert body["metadata"]["review_reason"] == "breaks the session cookie"
    assert body["metadata"]["review_status"] == "rejected"

    mark = len(github.api_requests())
    drain(rt)
    [created] = github.api_requests()[mark:]
    assert created[:2] == ("POST", f"{R}/check-runs")
    assert (created[2]["head_sha"], created[2]["conclusion"]) == (HEAD_SHA, "failure")
    assert "breaks the session cookie" in created[2]["output"]["title"]
    with rt.database.unit() as s:
        assert s.get(CheckRunRef, (REPO, HEAD_SHA)).check_run_id == 777


def test_review_sends_a_queued_patch_back_to_review(api, rt, github):
    _, lid = seed_patch(rt, state=P.QUEUED, risk="low")
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    resp = writer("POST", f"/patches/{lid}/review", {"reason": "look at the migration"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "awaiting_review"
    assert body["metadata"]["manual_review_required"] is True
    assert body["metadata"]["review_reason"] == "look at the migration"
    assert len(publish_deliveries(rt)) == 1


def test_reject_without_a_reason_is_400_and_touches_nothing(api, rt, github):
    _, lid = seed_patch(rt)
    for body in (None, {}, {"reason": "  "}):
        error(api("POST", f"/patches/{lid}/reject", body), 400, "invalid", "reason")
    error(api("POST", f"/patches/{lid}/reject", {"reason": 5}), 400, "invalid", "reason")
    error(api("POST", f"/patches/{lid}/approve", {"comment": ["x"]}), 400, "invalid", "comment")
    error(api("POST", f"/patches/{lid}/approve", {"version": "1"}), 400, "invalid", "version")
    error(api("POST", f"/patches/{lid}/approve", data=b"nope"), 400, "invalid")
    assert github.requests == []
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"


def test_a_reader_may_not_approve(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "reader", "read")
    reader = api.as_(make_token(rt, "reader-token", "reader"))
    err = error(reader("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "needs `write`" in err["message"]
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"
    [refused] = audit_rows(rt, outcome="refused")
    assert (refused.entity, refused.entity_id, refused.actor, refused.source) == (
        "patch",
        lid,
        "reader",
        "api:reader-token",
    )
    assert publish_deliveries(rt) == []


def test_a_session_bot_may_not_approve_its_own_patch(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "agent-bot", "admin")
    err = error(api("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "cannot approve their own patch" in err["message"]
    [refused] = audit_rows(rt, outcome="refused")
    assert (refused.actor, refused.entity_id) == ("agent-bot", lid)
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"


def test_high_risk_patches_are_for_the_listed_reviewers(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github, "review:\n  reviewers: [octocat]\n")
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    err = error(writer("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "@octocat" in err["message"]


def test_deciding_a_stale_version_or_a_decided_patch_is_409(api, rt, github):
    _, lid = seed_patch(rt)
    _, dropped = seed_patch(rt, state=P.DROPPED, sha="e" * 40)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    version = api("GET", f"/patches/{lid}").get_json()["version"]
    error(writer("POST", f"/patches/{lid}/approve", {"version": version + 1}), 409, "conflict")
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"
    err = error(writer("POST", f"/patches/{dropped}/approve"), 409, "illegal_transition")
    assert "dropped" in err["message"]
    assert publish_deliveries(rt) == []


def test_deciding_a_patch_of_a_session_without_installation_is_409(api, rt, github):
    bare = seed_session(rt, pr_number=4)
    _, lid = seed_patch(rt, session_id=bare)
    error(api("POST", f"/patches/{lid}/approve"), 409, "no_installation")
    error(api("POST", "/patches/01nosuchpatch00000000000000/approve"), 404, "not_found")
    assert github.requests == []


def test_github_failing_during_a_decision_is_502(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    github.add("GET", POLICY_PATH, {"message": "boom"}, status=500)
    error(api("POST", f"/patches/{lid}/approve"), 502, "github_error")
