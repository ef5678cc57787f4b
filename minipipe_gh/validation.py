"""Whether the checks on a SHA say a patch is valid. Pure: it reads GitHub's JSON shapes.

Check runs and suites of the app itself never count as validation input.
https://docs.github.com/en/rest/checks/suites
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

Verdict = Literal["pending", "success", "failure"]
PASSING = frozenset({"success", "neutral", "skipped"})


def suites_verdict(suites: Iterable[dict[str, Any]], own_app_id: int | None) -> Verdict:
    """Every check suite on the SHA (ours excepted) must complete and pass."""
    verdict: Verdict = "success"
    for suite in suites:
        if own_app_id is not None and (suite.get("app") or {}).get("id") == own_app_id:
            continue
        if suite.get("status") != "completed":
            # A suite GitHub made for an app that never ran anything stays "queued"
            # with no runs: it is not a check, so it does not hold the patch back.
            if suite.get("status") == "queued" and suite.get("latest_check_runs_count") == 0:
                continue
            verdict = "pending"
        elif suite.get("conclusion") not in PASSING:
            return "failure"
    return verdict


def runs_verdict(
    runs: Iterable[dict[str, Any]], required: Iterable[str], own_app_id: int | None
) -> Verdict:
    """Every current run of each named check must have completed and passed.

    Re-runs are de-duplicated per check suite (the newest run of a name in a suite
    counts), never across suites: a job a PR adds under a required name, in a
    workflow or app of its own, cannot hide a failing run of that name elsewhere.
    """
    newest: dict[tuple[str, Any], dict[str, Any]] = {}
    for run in runs:
        if own_app_id is not None and (run.get("app") or {}).get("id") == own_app_id:
            continue
        key = (run.get("name", ""), (run.get("check_suite") or {}).get("id"))
        if key not in newest or run.get("id", 0) > newest[key].get("id", 0):
            newest[key] = run
    current: dict[str, list[dict[str, Any]]] = {}
    for (name, _suite), run in newest.items():
        current.setdefault(name, []).append(run)
    verdict: Verdict = "success"
    for name in required:
        found = current.get(name, [])
        done = [r for r in found if r.get("status") == "completed"]
        if any(r.get("conclusion") not in PASSING for r in done):
            return "failure"
        if not found or any(r.get("status") != "completed" for r in found):
            verdict = "pending"
    return verdict
