"""What an open patch waits for, and what moves it on: one list per patch, no I/O.

Every surface (the check run, the dashboard, the API's ``waiting_for``, the CLI's
``patches waiting``) shows this list, so they cannot disagree. A wait is a typed
item (kind, summary, who, details): a new kind of wait is one more entry here.
The order is the order of precedence: the first item is the next action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minipipe_gh.core import authz
from minipipe_gh.core.authz import Actor, PullFacts
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.owners import patch_coverage
from minipipe_gh.core.patch_states import OPEN, PatchState
from minipipe_gh.core.people import Hold, approvals, decided_by
from minipipe_gh.core.policy import Policy, blocked_by_guardrails

P = PatchState
KINDS = (
    "policy",
    "hold",
    "guardrails",
    "checks",
    "failing_checks",
    "approvals",
    "code_owners",
    "decision",
    "merge",
)
NO_CHECKS = "no checks reported yet"
REQUIRED_CHECKS_HINT = (
    "with `validation.required_checks` in .github/minipipe.yml the patch waits for those "
    "named checks instead, and does not validate until they pass"
)
_ROLE = {
    "read": "a reader",
    "triage": "a triager",
    "write": "a writer",
    "maintain": "a maintainer",
    "admin": "an admin",
}


@dataclass(frozen=True)
class Wait:
    kind: str
    summary: str  # one line, the next action when it comes first
    who: tuple[str, ...] = ()  # logins who can act, when the app knows them
    details: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "who": list(self.who),
            "details": list(self.details),
        }


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``: every count the app prints goes through here."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def role(permission: str | None) -> str:
    """Who holds a permission, in words: ``write`` → "a writer"."""
    return _ROLE.get(permission or "write", f"someone with `{permission}`")


def checks_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The checks the patch last read (``validation.Checks.as_meta``), or {} before any."""
    raw = meta.get("checks")
    return dict(raw) if isinstance(raw, Mapping) else {}


def waiting_for(
    patch_state: str,
    meta: Mapping[str, Any],
    *,
    holds: Sequence[Hold] = (),
    required_approvals: int = 1,
    policy_error: str | None = None,
    reviewers: Sequence[str] = (),
) -> list[Wait]:
    """What the patch waits for, most pressing first; empty once it has left the gate."""
    state = PatchState(patch_state)
    if state not in OPEN:
        return []
    out: list[Wait] = []
    if policy_error:
        out.append(
            Wait(
                "policy",
                ".github/minipipe.yml is invalid: nothing moves until it is fixed",
                details=(policy_error,),
            )
        )
    for hold in holds:
        out.append(
            Wait(
                "hold",
                f"On hold by @{hold.by.login}: {hold.reason or 'no reason given'}; "
                "it will not land until the hold is lifted (`/hold cancel`)",
                who=(hold.by.login,),
                details=(
                    f"@{hold.by.login} or someone with `{hold.permission}` or more may lift it",
                ),
            )
        )
    guard = meta.get("guardrails") if isinstance(meta.get("guardrails"), Mapping) else {}
    if blocked_by_guardrails(dict(meta)):
        out.append(
            Wait(
                "guardrails",
                "Blocked by its guardrails: a push that complies, or a policy change, releases it",
                details=tuple(str(x) for x in guard.get("lines") or guard.get("reasons") or ()),
            )
        )
    checks = checks_of(meta)
    match state:
        case P.CREATED:
            out.append(_pending_checks(checks))
        case P.QUARANTINED if not blocked_by_guardrails(dict(meta)):
            failing = [str(x) for x in checks.get("failing") or []]
            named = (
                f"{'Failing check' if len(failing) == 1 else 'Failing checks'}: "
                + ", ".join(failing)
                if failing
                else "A required check failed"
            )
            out.append(
                Wait(
                    "failing_checks",
                    f"{named}: fix it and push, or re-run it; the patch validates when it passes",
                )
            )
        case P.VALIDATED:
            out.append(Wait("decision", "Checks passed: the review decision is being recorded"))
        case P.AWAITING_REVIEW:
            listed = reviewers or decided_by(meta)
            out.append(_approvals(meta, required_approvals, listed))
            out += _code_owners(meta)
        case P.QUEUED if approvals(meta):
            out.append(
                Wait("merge", "Approved and queued: it lands when the pull request is merged")
            )
        case P.QUEUED:
            out.append(
                Wait(
                    "merge",
                    "Queued automatically (low risk, no review needed): it lands when the "
                    "pull request is merged",
                )
            )
    if out and state != P.CREATED and checks and not checks.get("reported"):
        # validated on no checks at all: say so rather than "every check succeeded"
        last = out[-1]
        note = f"{NO_CHECKS}: it validated with nothing to wait for; {REQUIRED_CHECKS_HINT}"
        out[-1] = Wait(last.kind, last.summary, last.who, (*last.details, note))
    return out


def _pending_checks(checks: Mapping[str, Any]) -> Wait:
    pending = [str(x) for x in checks.get("pending") or []]
    if pending:
        return Wait("checks", f"Waiting for {plural(len(pending), 'check')}: {', '.join(pending)}")
    if checks.get("required"):
        return Wait("checks", "Waiting for the required checks to report")
    return Wait("checks", f"Waiting for checks: {NO_CHECKS}", details=(REQUIRED_CHECKS_HINT,))


def _approvals(meta: Mapping[str, Any], required: int, reviewers: Sequence[str]) -> Wait:
    given = approvals(meta)
    missing = max(required - len(given), 1)
    who = role(meta.get("approve_permission") or "write")
    if reviewers:
        who = "one of " + ", ".join(f"@{r}" for r in reviewers)
    details = [f"{len(given)} of {max(required, len(given))} approvals"]
    if given:
        details.append("approved so far: " + ", ".join(f"@{a.who.login}" for a in given))
    return Wait(
        "approvals",
        f"Needs {plural(missing, 'approval')} from {who}: comment `/approve`, or use the button",
        who=tuple(reviewers),
        details=tuple(details),
    )


def _code_owners(meta: Mapping[str, Any]) -> list[Wait]:
    """With ``review.require_code_owners``: one wait per owner set still to approve."""
    coverage = patch_coverage(dict(meta))
    if coverage is None:
        return []
    return [
        Wait(
            "code_owners",
            f"{plural(len(group.paths), 'path')} waiting for code owners: an approval by any "
            f"of {', '.join(group.owners)} covers them",
            who=tuple(o.lstrip("@") for o in group.owners),
            details=tuple(group.paths),
        )
        for group in coverage.waiting
    ]


def in_review_queue(patch_state: str, held: bool) -> bool:
    """The review queue is what needs a human: a patch awaiting a decision, and any open
    patch under a hold (someone must lift it, even once it is approved and queued).
    ``store.scoped.review_page`` asks the same in SQL; every surface lists this queue."""
    state = PatchState(patch_state)
    return state == P.AWAITING_REVIEW or (held and state in OPEN)


def waiting_on(
    actor: Actor | None,
    waiting: Sequence[Wait],
    *,
    policy: Policy,
    facts: PullFacts,
    holds: Sequence[Hold] = (),
    approved: Sequence[str] = (),
) -> bool:
    """Whether ``actor`` can move the patch on now, by the rules a comment of theirs would
    meet (``authz``): an approval the patch still needs that they may give (not given yet),
    or a hold they may lift. ``actor`` None: GitHub could not say who they are there."""
    if actor is None:
        return False
    me = actor.login.lower()
    for wait in waiting:
        if wait.kind in ("approvals", "code_owners"):
            if me in (a.lower() for a in approved):
                continue
            owners = {w.lower() for w in wait.who}
            if wait.kind == "code_owners" and not (me in owners or actor.teams & owners):
                continue
            if authz.refusal(Verb.APPROVE, actor, policy, facts) is None:
                return True
    lifts = holds and authz.refusal(Verb.HOLD_CANCEL, actor, policy, facts) is None
    return bool(lifts) and any(authz.hold_lift_refusal(actor, h, facts) is None for h in holds)


def next_action(waits: Sequence[Wait]) -> str | None:
    """The one line that says what to do next."""
    return waits[0].summary if waits else None


def in_words(waits: Sequence[Wait]) -> str:
    """Every wait on one line, for a log, a table cell or the CLI."""
    return "; ".join(w.summary for w in waits) if waits else "nothing"
