"""Nobody walks around the gate: each test is an attack on `minipipe/review` that must fail.

Real recorded payloads, signed as GitHub signs them, through the webhook; GitHub is
faked at the HTTP layer and the tests assert on the requests the app sent.
"""

from __future__ import annotations

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
