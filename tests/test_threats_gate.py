"""Nobody walks around the gate: each test is an attack on `minipipe/review` that must fail.

Real recorded payloads, signed as GitHub signs them, through the webhook; GitHub is
faked at the HTTP layer and the tests assert on the requests the app sent.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from minipipe_gh.models import AgentSession, Patch
from tests.scenario import R, Scenario, check_run


def drain(rt):
    return rt.worker().run_once()


def latest_patch(rt) -> Patch:
    with rt.database.unit(write=False) as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def the_session(rt) -> AgentSession:
    with rt.database.unit(write=False) as s:
        return s.scalars(select(AgentSession)).one()


def check_writes(github, since: int = 0) -> list[tuple[str, str, dict]]:
    return [r for r in github.api_requests()[since:] if "/check-runs" in r[1] and r[0] != "GET"]


def conclusions(github, since: int = 0) -> list[str | None]:
    return [body.get("conclusion") for _m, _p, body in check_writes(github, since)]


# --- item 8: a required check can be masked ------------------------------------------------


REQUIRE_TEST = "validation:\n  required_checks: [test]\n"


def test_attack_pr_adds_a_passing_job_named_like_a_failing_required_check_gets_no_green_run(
    rt, deliver, github
):
    """The PR adds a workflow whose job is also called `test`: its newer, passing run must
    not hide the real `test` that failed in CI's own check suite."""
    sc = Scenario(deliver, github)
    sc.serve_policy(REQUIRE_TEST)
    sc.serve_files("src/app.py")
    sc.serve_runs(sc.sha)
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    assert latest_patch(rt).state == "created"

    real = check_run("test", "failure", sha=sc.sha, suite=70, run_id=801)
    mask = check_run("test", "success", sha=sc.sha, suite=71, run_id=802)
    sc.serve_runs(sc.sha, real, mask)
    mark = len(github.api_requests())
    sc.run_completed(mask)
    drain(rt)
    patch = latest_patch(rt)
    assert patch.state == "quarantined"
    assert conclusions(github, mark) == ["failure"]
    read = [p for m, p, _ in github.api_requests()[mark:] if m == "GET"]
    assert [p.split("?")[0] for p in read] == [f"{R}/commits/{sc.sha}/check-runs"]


def test_a_rerun_in_the_same_suite_still_replaces_the_failed_run(rt, deliver, github):
    """De-duplication per suite keeps re-runs working: the newest run of a suite counts."""
    sc = Scenario(deliver, github)
    sc.serve_policy(REQUIRE_TEST)
    sc.serve_files("src/app.py")
    sc.serve_runs(sc.sha)
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    failed = check_run("test", "failure", sha=sc.sha, suite=70, run_id=801)
    rerun = check_run("test", "success", sha=sc.sha, suite=70, run_id=803)
    sc.serve_runs(sc.sha, failed, rerun)
    sc.run_completed(rerun)
    drain(rt)
    assert latest_patch(rt).state == "queued"
    assert conclusions(github)[-1] == "success"


# --- item 9: a replayed body acts again ------------------------------------------------------


def opened_closed_reopened_pushed(rt, sc, github) -> bytes:
    """A session PR closed unmerged, reopened and pushed to again; returns the signed-once
    body of its `closed` delivery, as an attacker who captured it holds it."""
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_suites(sc.sha, None)
    sc.serve_suites("b" * 40, None)
    sc.serve_writes()
    sc.github.add("PATCH", f"{R}/check-runs/556", {"id": 556})
    sc.pr_event("opened")
    drain(rt)
    closed = json.dumps(sc.pr_payload("closed")).encode()
    sc.serve_pull("closed")
    assert sc.deliver("pull_request", closed).status_code == 202
    drain(rt)
    assert latest_patch(rt).state == "dropped"
    sc.serve_pull("open", sha="b" * 40)
    sc.pr_event("reopened")
    sc.github.add("POST", f"{R}/check-runs", {"id": 556}, status=201)
    sc.pr_event("synchronize", sha="b" * 40)
    drain(rt)
    later = latest_patch(rt)
    assert (later.patch_id, later.state) == ("b" * 40, "created")
    return closed


def test_attack_replayed_closed_under_a_new_delivery_id_does_not_drop_a_later_patch(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    closed = opened_closed_reopened_pushed(rt, sc, github)
    mark = len(github.api_requests())
    replay = deliver("pull_request", closed)  # the same bytes, a new X-GitHub-Delivery
    assert replay.status_code == 200 and replay.get_json()["duplicate"] is True
    drain(rt)
    assert latest_patch(rt).state == "created"
    assert github.api_requests()[mark:] == []


def test_attack_closed_that_github_does_not_confirm_moves_nothing(rt, deliver, github):
    """A `closed` body never seen here (another subscription's copy, signed as well) arrives
    after the PR was reopened: GitHub says the PR is open, so nothing moves."""
    sc = Scenario(deliver, github)
    opened_closed_reopened_pushed(rt, sc, github)
    other_copy = sc.pr_payload("closed")
    del other_copy["installation"]["node_id"]  # other bytes than the delivery seen before
    mark = len(github.api_requests())
    assert deliver("pull_request", other_copy).status_code == 202
    drain(rt)
    assert latest_patch(rt).state == "created"
    sent = github.api_requests()[mark:]
    assert [(m, p) for m, p, _ in sent if m != "GET" or "/pulls/2" in p] == [
        ("GET", f"{R}/pulls/2")
    ]
