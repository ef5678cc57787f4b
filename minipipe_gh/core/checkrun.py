"""What the ``minipipe/review`` check run says, computed from the ledger. No I/O.

https://docs.github.com/en/rest/checks/runs
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from minipipe_gh.core import people, waits
from minipipe_gh.core.limits import fit_check_run
from minipipe_gh.core.owners import LOCATIONS, Coverage, patch_coverage
from minipipe_gh.core.patch_states import OPEN, PatchState
from minipipe_gh.core.people import Hold, approvals
from minipipe_gh.core.policy import blocked_by_guardrails


class Patch(Protocol):
    """What the check run reads of a ledger patch (``store.models.Patch`` has it)."""

    ledger_id: str
    patch_id: str
    state: str
    risk: str | None
    risk_reasons: Any
    meta: dict[str, Any]


class AuditEntry(Protocol):
    """What the check run reads of an audit row (``store.models.AuditEntry``)."""

    at: datetime
    actor: str
    outcome: str
    from_state: str | None
    to_state: str | None
    reason: str | None


NAME = "minipipe/review"
P = PatchState
ACTIONS = [
    {"label": "Approve", "description": "Approve this patch", "identifier": "approve"},
    {"label": "Reject", "description": "Reject this patch", "identifier": "reject"},
]


@dataclass(frozen=True)
class View:
    """Everything the check run shows besides the patch itself."""

    required_approvals: int = 1
    holds: Sequence[Hold] = ()  # every hold on the session, one per holder
    policy_error: str | None = None
    stale_approvals: Sequence[str] = ()  # "alice approved abc123" lines from a superseded SHA
    recent: Sequence[AuditEntry] = ()
    owners: Coverage | None = None  # with code owners required (``owners.patch_coverage``)
    details_url: str | None = None  # the patch's dashboard page, when the public URL is set

    def waiting_for(self, patch: Patch) -> list[waits.Wait]:
        """What the patch waits for: the list the API, dashboard and CLI show too."""
        return waits.waiting_for(
            patch.state,
            patch.meta,
            holds=self.holds,
            required_approvals=self.required_approvals,
            policy_error=self.policy_error,
        )

    @classmethod
    def of(
        cls,
        patch: Patch,
        session_meta: dict[str, Any] | None,
        *,
        required_approvals: int,
        policy_error: str | None,
        recent: Sequence[AuditEntry] = (),
        public_url: str | None = None,
    ) -> View:
        """The view every check-run writer shows (after a delivery and in reconciliation alike),
        so both compare the same verdict: a dropped or rolled-back patch shows no hold."""
        ended = patch.state in (P.DROPPED, P.ROLLED_BACK)
        return cls(
            required_approvals=required_approvals,
            holds=[] if ended or session_meta is None else people.holds(session_meta),
            policy_error=policy_error,
            stale_approvals=people.stale_approvals(patch.meta),
            recent=recent,
            owners=patch_coverage(patch.meta),
            details_url=patch_url(public_url, patch.ledger_id),
        )


def patch_url(public_url: str | None, ledger_id: str) -> str | None:
    """The patch's dashboard page (``details_url``): only an https or http public URL."""
    if not public_url or not public_url.startswith(("https://", "http://")):
        return None
    return f"{public_url.rstrip('/')}/patches/{ledger_id}"


def body(patch: Patch, view: View) -> dict[str, Any]:
    """The request body for creating or updating the check run."""
    status, conclusion, title = _state(patch, view)
    out: dict[str, Any] = {
        "name": NAME,
        "head_sha": patch.patch_id,
        "status": status,
        "external_id": patch.ledger_id,
        "output": {"title": title, "summary": summary(patch, view, title)},
    }
    if conclusion:
        out["conclusion"] = conclusion
    if view.details_url:
        out["details_url"] = view.details_url
    buttons = patch.state == P.AWAITING_REVIEW and not view.holds and not view.policy_error
    if buttons:
        out["actions"] = ACTIONS
    elif status == "completed":
        out["actions"] = []
    return fit_check_run(out)


def _state(patch: Patch, view: View) -> tuple[str, str | None, str]:
    given = len(approvals(patch.meta))
    progress = f"{given} of {max(view.required_approvals, given)} approvals"
    if view.owners and view.owners.waiting:
        waiting = len(view.owners.waiting_paths)
        progress += f", {waiting} path{'s' if waiting != 1 else ''} waiting for code owners"
    if view.policy_error and patch.state in OPEN:
        return "completed", "action_required", f"{_invalid_file(view.policy_error)} is invalid"
    if view.holds and patch.state not in (P.DROPPED, P.ROLLED_BACK):
        holders = ", ".join(f"@{h.by.login}" for h in view.holds)
        return "completed", "action_required", f"On hold by {holders}"[:200]
    match patch.state:
        case P.CREATED if not waits.checks_of(patch.meta).get("reported"):
            return "in_progress", None, f"Waiting for checks: {waits.NO_CHECKS}"
        case P.CREATED:
            return "in_progress", None, "Waiting for checks"
        case P.QUARANTINED if blocked_by_guardrails(patch.meta):
            return "completed", "failure", "Blocked by its guardrails"
        case P.QUARANTINED:
            return "completed", "failure", "Checks failed: patch quarantined"
        case P.VALIDATED:
            return "in_progress", None, "Checks passed, deciding"
        case P.AWAITING_REVIEW:
            return "completed", "action_required", f"Awaiting review ({progress})"
        case P.QUEUED:
            return (
                "completed",
                "success",
                f"Approved ({progress})" if given else ("Low risk: queued automatically"),
            )
        case P.APPLIED | P.VERIFIED | P.COMMITTED:
            return "completed", "success", f"Merged ({patch.state})"
        case P.DROPPED:
            rejected = patch.meta.get("review_status") == "rejected"
            reason = (
                patch.meta.get("review_reason") if rejected else patch.meta.get("drop_reason")
            ) or ""
            return "completed", "failure", f"Dropped: {reason}"[:200] if reason else "Dropped"
        case P.ROLLED_BACK:
            return "completed", "failure", "Rolled back"
    raise AssertionError(patch.state)


def summary(patch: Patch, view: View, title: str) -> str:
    lines = [f"**{title}**", ""]
    waiting = view.waiting_for(patch)
    if waiting:
        lines += [f"Next: {waits.next_action(waiting)}", "", "Waits for:", ""]
        for wait in waiting:
            lines.append(f"- {wait.summary}")
            lines += [f"  - {d}" for d in wait.details]
        lines.append("")
    lines += [f"- State: `{patch.state}`", f"- Risk: `{patch.risk}`"]
    for reason in patch.risk_reasons:
        lines.append(f"  - {reason}")
    given = approvals(patch.meta)
    lines.append(
        f"- Approvals: {len(given)} of {max(view.required_approvals, len(given))}"
        + (f" ({', '.join(_approval(a.who.login, a.sha, patch) for a in given)})" if given else "")
    )
    guardrails = patch.meta.get("guardrails") or {}
    if guardrails.get("lines"):
        lines.append(f"- Guardrails: `{guardrails.get('verdict')}`")
        lines += [f"  - {line}" for line in guardrails["lines"]]
    if patch.meta.get("approve_permission"):
        lines.append(f"- Approvers need `{patch.meta['approve_permission']}` or more")
    if view.owners is not None:
        lines += owner_lines(view.owners)
    if patch.meta.get("reviewed_by"):
        lines.append(f"- Reviewer: @{patch.meta['reviewed_by']}")
    if patch.meta.get("review_reason"):
        lines.append(f"- Reason: {patch.meta['review_reason']}")
    for hold in view.holds:
        lines.append(
            f"- Hold: @{hold.by.login} (`{hold.permission}`): {hold.reason or 'no reason'}"
        )
    if view.policy_error:
        lines += ["", f"Policy error: {view.policy_error}", "Nothing moves until it is fixed."]
    for stale in view.stale_approvals:
        lines.append(f"- Earlier approval, not carried over: {stale}")
    if view.recent:
        lines += ["", "Recent transitions:", ""]
        for row in view.recent:
            move = f"{row.from_state or '∅'} → {row.to_state or '∅'}"
            verb = "refused" if row.outcome == "refused" else move
            lines.append(f"- {row.at:%Y-%m-%d %H:%M} {verb} by {row.actor}: {row.reason or ''}")
    return "\n".join(lines)


def _invalid_file(error: str) -> str:
    """Which file an error is about: a CODEOWNERS error names its file first."""
    named = error.split(":", 1)[0]
    return named if named in LOCATIONS else ".github/minipipe.yml"


def owner_lines(cov: Coverage) -> list[str]:
    """The code owners section: what waits, grouped by the owners who could cover it."""
    total = len(cov.covered) + len(cov.waiting_paths)
    where = f" ({cov.file})" if cov.file else " (no CODEOWNERS file on the default branch)"
    lines = [f"- Code owners{where}: {len(cov.covered)} of {total} owned paths covered"]
    for group in cov.waiting:
        paths = ", ".join(f"`{p}`" for p in group.paths)
        lines.append(f"  - waiting: {paths}: any of {', '.join(group.owners)}")
    for path, by in cov.covered:
        lines.append(f"  - covered: `{path}` by @{by}")
    if cov.unowned:
        lines.append(f"  - no owner: {', '.join(f'`{p}`' for p in cov.unowned)}")
    for path, emails in cov.emails:
        lines.append(
            f"  - email owners are not supported, ignored for `{path}`: {', '.join(emails)}"
        )
    return lines


def _approval(login: str, sha: str | None, patch: Patch) -> str:
    """An approval names its SHA when it was given on another one (carried over)."""
    if sha and sha != patch.patch_id:
        return f"@{login} on {sha[:12]}"
    return f"@{login}"
