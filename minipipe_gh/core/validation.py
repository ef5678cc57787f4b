"""Whether the checks on a SHA say a patch is valid. Pure: it reads GitHub's JSON shapes.

Check runs and suites of the app itself never count as validation input.
https://docs.github.com/en/rest/checks/suites
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["pending", "success", "failure"]
PASSING = frozenset({"success", "neutral", "skipped"})


@dataclass(frozen=True)
class Checks:
    """A verdict with the names behind it: which checks fail, which have not finished.

    ``reported`` counts the checks that count (ours excepted); ``required`` is
    whether the policy named them (``validation.required_checks``)."""

    verdict: Verdict
    failing: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    reported: int = 0
    required: bool = False
    passed: tuple[str, ...] = field(default=(), compare=False)

    def as_meta(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "failing": list(self.failing),
            "pending": list(self.pending),
            "reported": self.reported,
            "required": self.required,
        }


def _suite_name(suite: dict[str, Any]) -> str:
    app = suite.get("app") or {}
    return str(app.get("name") or app.get("slug") or f"check suite {suite.get('id')}")


def suites_checks(suites: Iterable[dict[str, Any]], own_app_id: int | None) -> Checks:
    """Every check suite on the SHA (ours excepted) must complete and pass."""
    failing: list[str] = []
    pending: list[str] = []
    reported = 0
    for suite in suites:
        if own_app_id is not None and (suite.get("app") or {}).get("id") == own_app_id:
            continue
        if suite.get("status") != "completed":
            # A suite GitHub made for an app that never ran anything stays "queued"
            # with no runs: it is not a check, so it does not hold the patch back.
            if suite.get("status") == "queued" and suite.get("latest_check_runs_count") == 0:
                continue
            reported += 1
            pending.append(_suite_name(suite))
        else:
            reported += 1
            if suite.get("conclusion") not in PASSING:
                failing.append(_suite_name(suite))
    verdict: Verdict = "failure" if failing else ("pending" if pending else "success")
    return Checks(verdict, tuple(dict.fromkeys(failing)), tuple(dict.fromkeys(pending)), reported)


def suites_verdict(suites: Iterable[dict[str, Any]], own_app_id: int | None) -> Verdict:
    return suites_checks(suites, own_app_id).verdict


def runs_verdict(
    runs: Iterable[dict[str, Any]], required: Iterable[str], own_app_id: int | None
) -> Verdict:
    return runs_checks(runs, required, own_app_id).verdict


def runs_checks(
    runs: Iterable[dict[str, Any]], required: Iterable[str], own_app_id: int | None
) -> Checks:
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
    failing: list[str] = []
    pending: list[str] = []
    reported = 0
    for name in required:
        found = current.get(name, [])
        reported += 1 if found else 0
        done = [r for r in found if r.get("status") == "completed"]
        if any(r.get("conclusion") not in PASSING for r in done):
            failing.append(name)
        elif not found or any(r.get("status") != "completed" for r in found):
            pending.append(name)
    verdict: Verdict = "failure" if failing else ("pending" if pending else "success")
    return Checks(verdict, tuple(failing), tuple(pending), reported, required=True)
