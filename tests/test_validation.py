"""Whether the checks on a SHA validate a patch (spec: "The check run", `validation`).

Inputs use GitHub's REST shapes for check suites and check runs.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest

from minipipe_gh.core.validation import runs_verdict, suites_verdict

OWN = 4242
CI = 15368  # GitHub Actions
OTHER = 777
SUITE_IDS = count(1)


def suite(
    status: str = "completed",
    conclusion: str | None = "success",
    app: int | None = CI,
    runs: int = 1,
) -> dict[str, Any]:
    return {
        "id": next(SUITE_IDS),
        "status": status,
        "conclusion": conclusion if status == "completed" else None,
        "app": {"id": app, "slug": f"app-{app}"} if app is not None else None,
        "latest_check_runs_count": runs,
    }


def run(
    name: str,
    status: str = "completed",
    conclusion: str | None = "success",
    *,
    run_id: int = 1,
    app: int | None = CI,
    suite_id: int | None = None,
) -> dict[str, Any]:
    out = {
        "id": run_id,
        "name": name,
        "status": status,
        "conclusion": conclusion if status == "completed" else None,
        "app": {"id": app} if app is not None else None,
    }
    if suite_id is not None:
        out["check_suite"] = {"id": suite_id}
    return out


FAILING = ["failure", "timed_out", "cancelled", "action_required", "stale"]
PASSING = ["success", "neutral", "skipped"]
NOT_DONE = ["queued", "in_progress", "requested", "waiting", "pending"]


# --- suites -----------------------------------------------------------------------------


@pytest.mark.parametrize("conclusion", PASSING)
def test_suites_passing_conclusions(conclusion: str) -> None:
    assert suites_verdict([suite(conclusion=conclusion), suite()], OWN) == "success"


@pytest.mark.parametrize("conclusion", FAILING)
def test_suites_failing_conclusions(conclusion: str) -> None:
    assert suites_verdict([suite(), suite(conclusion=conclusion)], OWN) == "failure"


@pytest.mark.parametrize("status", NOT_DONE)
def test_suites_pending_while_any_is_not_completed(status: str) -> None:
    assert suites_verdict([suite(), suite(status=status)], OWN) == "pending"


def test_suites_failure_wins_over_pending_in_any_order() -> None:
    a, b = suite(status="in_progress"), suite(conclusion="failure")
    assert suites_verdict([a, b], OWN) == "failure"
    assert suites_verdict([b, a], OWN) == "failure"


def test_suites_of_our_own_app_are_ignored() -> None:
    mine_failing = suite(conclusion="failure", app=OWN)
    mine_pending = suite(status="in_progress", app=OWN)
    assert suites_verdict([suite(), mine_failing, mine_pending], OWN) == "success"
    assert suites_verdict([suite(status="queued"), mine_failing], OWN) == "pending"


def test_suites_of_other_apps_count() -> None:
    assert suites_verdict([suite(), suite(conclusion="failure", app=OTHER)], OWN) == "failure"


def test_without_an_own_app_id_every_suite_counts() -> None:
    assert suites_verdict([suite(conclusion="failure", app=OWN)], None) == "failure"


def test_suite_without_app_still_counts() -> None:
    assert suites_verdict([suite(conclusion="failure", app=None)], OWN) == "failure"


def test_empty_queued_suite_does_not_block() -> None:
    empty = suite(status="queued", app=OTHER, runs=0)
    assert suites_verdict([suite(), empty], OWN) == "success"
    assert suites_verdict([empty, suite(conclusion="failure")], OWN) == "failure"


def test_queued_suite_with_runs_still_blocks() -> None:
    assert suites_verdict([suite(), suite(status="queued", runs=2)], OWN) == "pending"


def test_in_progress_suite_without_runs_still_blocks() -> None:
    assert suites_verdict([suite(status="in_progress", runs=0)], OWN) == "pending"


def test_queued_suite_with_unknown_run_count_blocks() -> None:
    empty = suite(status="queued")
    del empty["latest_check_runs_count"]
    assert suites_verdict([empty], OWN) == "pending"


def test_suites_verdict_reads_any_iterable() -> None:
    assert suites_verdict(iter([suite(), suite(conclusion="skipped")]), OWN) == "success"


# --- runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("conclusion", PASSING)
def test_runs_passing_conclusions(conclusion: str) -> None:
    runs = [run("test", conclusion=conclusion, run_id=1), run("lint", run_id=2)]
    assert runs_verdict(runs, ["test", "lint"], OWN) == "success"


@pytest.mark.parametrize("conclusion", FAILING)
def test_runs_failing_conclusions(conclusion: str) -> None:
    runs = [run("test", conclusion=conclusion, run_id=1), run("lint", run_id=2)]
    assert runs_verdict(runs, ["test", "lint"], OWN) == "failure"


@pytest.mark.parametrize("status", NOT_DONE)
def test_runs_pending_while_a_required_run_is_not_completed(status: str) -> None:
    runs = [run("test", status=status, run_id=1), run("lint", run_id=2)]
    assert runs_verdict(runs, ["test", "lint"], OWN) == "pending"


def test_a_required_run_that_never_started_is_pending() -> None:
    assert runs_verdict([run("lint")], ["test", "lint"], OWN) == "pending"


def test_failure_wins_over_a_missing_run() -> None:
    runs = [run("lint", conclusion="failure")]
    assert runs_verdict(runs, ["test", "lint"], OWN) == "failure"
    assert runs_verdict(runs, ["lint", "test"], OWN) == "failure"


def test_unrequired_names_are_ignored() -> None:
    runs = [
        run("test", run_id=1),
        run("flaky-optional", conclusion="failure", run_id=2),
        run("slow-optional", status="in_progress", run_id=3),
    ]
    assert runs_verdict(runs, ["test"], OWN) == "success"


@pytest.mark.parametrize("order", [1, -1])
def test_the_newest_run_of_a_name_counts(order: int) -> None:
    rerun_passed = [
        run("test", conclusion="failure", run_id=10),
        run("test", conclusion="success", run_id=11),
    ][::order]
    assert runs_verdict(rerun_passed, ["test"], OWN) == "success"
    rerun_failed = [
        run("test", conclusion="success", run_id=10),
        run("test", conclusion="failure", run_id=11),
    ][::order]
    assert runs_verdict(rerun_failed, ["test"], OWN) == "failure"
    rerun_going = [
        run("test", conclusion="failure", run_id=10),
        run("test", status="in_progress", run_id=12),
    ][::order]
    assert runs_verdict(rerun_going, ["test"], OWN) == "pending"


def test_runs_of_our_own_app_are_ignored() -> None:
    ours = run("minipipe/review", conclusion="action_required", run_id=5, app=OWN)
    assert runs_verdict([run("test"), ours], ["test"], OWN) == "success"
    # Even when its name is listed, our own run cannot satisfy (or fail) a requirement.
    assert runs_verdict([ours], ["minipipe/review"], OWN) == "pending"
    ours_ok = run("test", run_id=99, app=OWN)
    theirs_bad = run("test", conclusion="failure", run_id=1)
    assert runs_verdict([theirs_bad, ours_ok], ["test"], OWN) == "failure"


def test_without_an_own_app_id_every_run_counts() -> None:
    assert runs_verdict([run("test", conclusion="failure", app=OWN)], ["test"], None) == "failure"


def test_no_required_names_is_success() -> None:
    assert runs_verdict([run("test", conclusion="failure")], [], OWN) == "success"


def test_runs_verdict_reads_any_iterables() -> None:
    runs = iter([run("a", run_id=1), run("b", run_id=2)])
    assert runs_verdict(runs, iter(["a", "b"]), OWN) == "success"


@pytest.mark.parametrize("order", [1, -1])
def test_a_newer_run_of_the_same_name_in_another_suite_cannot_mask_a_failure(order: int) -> None:
    real = run("test", conclusion="failure", run_id=10, suite_id=1)
    mask = run("test", conclusion="success", run_id=11, suite_id=2)
    assert runs_verdict([real, mask][::order], ["test"], OWN) == "failure"
    other_app = run("test", conclusion="success", run_id=12, suite_id=3, app=OTHER)
    assert runs_verdict([real, other_app][::order], ["test"], OWN) == "failure"


@pytest.mark.parametrize("order", [1, -1])
def test_reruns_are_deduplicated_within_their_suite(order: int) -> None:
    failed = run("test", conclusion="failure", run_id=10, suite_id=1)
    rerun = run("test", conclusion="success", run_id=11, suite_id=1)
    assert runs_verdict([failed, rerun][::order], ["test"], OWN) == "success"
    elsewhere_going = run("test", status="in_progress", run_id=12, suite_id=2)
    assert runs_verdict([failed, rerun, elsewhere_going][::order], ["test"], OWN) == "pending"
