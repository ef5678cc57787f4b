"""Nobody walks around the gate: each test is an attack on `minipipe/review` that must fail.

Real recorded payloads, signed as GitHub signs them, through the webhook; GitHub is
faked at the HTTP layer and the tests assert on the requests the app sent.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from minipipe_gh.models import AgentSession, NeutralCheckRun, Patch
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


# --- item 2: a green `minipipe/review` on an unapproved head ----------------------------------


def neutral_posts(github, since: int = 0) -> list[dict]:
    return [
        body
        for m, p, body in github.api_requests()[since:]
        if (m, p) == ("POST", f"{R}/check-runs") and body.get("conclusion") == "success"
    ]


def test_attack_session_head_pushed_to_second_branch_gets_no_green_run(rt, deliver, github):
    """The session's unapproved head is pushed to another branch and a PR opened from it:
    that PR is not a session, but its head is the session's patch, so no success is posted."""
    session_pr = Scenario(deliver, github)
    session_pr.serve_policy(None)
    session_pr.serve_files("src/app.py")
    session_pr.serve_suites(session_pr.sha, None)
    session_pr.serve_writes()
    session_pr.pr_event("opened")
    drain(rt)
    assert latest_patch(rt).state == "created"

    copy = Scenario(deliver, github, number=3, branch="copy-of-the-session")
    mark = len(github.api_requests())
    assert copy.pr_event("opened").status_code == 202
    [outcome] = drain(rt)
    assert outcome.status == "done"
    assert neutral_posts(github, mark) == []
    assert check_writes(github, mark) == []


def test_attack_neutral_run_posted_before_the_session_patch_is_withdrawn(rt, deliver, github):
    """The other PR came first and got its neutral success; when the same SHA becomes a
    session's patch, that green run is turned into a failing one (one PATCH, no reads)."""
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_suites(sc.sha, None)
    github.add("POST", f"{R}/check-runs", {"id": 777}, status=201)  # the neutral one
    github.add("PATCH", f"{R}/check-runs/777", {"id": 777})
    sc.serve_writes()
    copy = Scenario(deliver, github, number=3, branch="feature/copy")
    copy.pr_event("opened")
    drain(rt)
    assert [b["head_sha"] for b in neutral_posts(github)] == [sc.sha]

    mark = len(github.api_requests())
    sc.pr_event("opened")
    drain(rt)
    writes = check_writes(github, mark)
    assert [(m, p) for m, p, _ in writes] == [
        ("POST", f"{R}/check-runs"),  # the gate first: the session's run
        ("PATCH", f"{R}/check-runs/777"),  # then the neutral success is withdrawn
    ]
    assert writes[0][2]["status"] == "in_progress"
    assert writes[1][2]["conclusion"] == "cancelled"
    assert "pull request #2" in writes[1][2]["output"]["summary"]
    # withdrawn once: later publishes of the patch leave it alone
    sc.serve_green()
    mark = len(github.api_requests())
    sc.suite_completed()
    drain(rt)
    assert [(m, p) for m, p, _ in check_writes(github, mark)] == [("PATCH", f"{R}/check-runs/555")]


def test_a_pr_that_is_no_session_still_passes_at_once(rt, deliver, github):
    """The neutral run stays for heads no session claims, and is remembered."""
    copy = Scenario(deliver, github, number=3, branch="feature/docs")
    copy.serve_policy(None)
    copy.serve_writes()
    copy.pr_event("opened")
    drain(rt)
    [posted] = neutral_posts(github)
    assert posted["head_sha"] == copy.sha
    assert posted["output"]["title"] == "Not an agent session"
    with rt.database.unit(write=False) as s:
        [row] = s.scalars(select(NeutralCheckRun)).all()
    assert (row.head_sha, row.check_run_id, row.withdrawn) == (copy.sha, 555, False)
