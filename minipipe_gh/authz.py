"""Who may do what: the rules of the spec's "Who may act", with no I/O.

Inputs are facts the edges gathered (the actor's repository role, team
memberships); the answer is ``None`` (allowed) or the reason it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import Verb
from .policy import Policy, permission_at_least

DECISIONS = frozenset({Verb.APPROVE, Verb.REJECT})


@dataclass(frozen=True)
class Actor:
    login: str
    permission: str  # none | read | triage | write | maintain | admin
    is_bot: bool = False
    teams: frozenset[str] = frozenset()  # "org/slug" the actor belongs to, when looked up


@dataclass(frozen=True)
class PullFacts:
    author: str | None
    session_bot: str | None
    risk: str | None  # of the patch being decided, if any
    # the patch's guardrails may ask more of an approver (protected paths: maintain)
    approve_permission: str | None = None
    blocked: bool = False  # blocked by its guardrails: no approval can queue it


def required_permission(verb: Verb, policy: Policy) -> str | None:
    if verb == Verb.HELP:
        return None
    if verb in (Verb.HOLD, Verb.HOLD_CANCEL):
        return policy.hold_permission
    return policy.required_permission


def needs_reviewer_list(verb: Verb, policy: Policy, facts: PullFacts) -> bool:
    """High-risk decisions are reserved to the configured reviewers, if any are listed."""
    listed = bool(policy.reviewers or policy.reviewer_teams)
    return verb in DECISIONS and facts.risk == "high" and listed


def refusal(verb: Verb, actor: Actor, policy: Policy, facts: PullFacts) -> str | None:
    if actor.is_bot:
        return "comments by bots are never commands"
    needed = required_permission(verb, policy)
    if needed and not permission_at_least(actor.permission, needed):
        return (
            f"@{actor.login} has `{actor.permission}` permission; "
            f"`/{verb}` needs `{needed}` or more"
        )
    if verb == Verb.APPROVE and facts.blocked:
        return (
            "this patch is blocked by its guardrails (see the check run): no approval can "
            "queue it; a push that complies, or a policy change, releases it"
        )
    if (
        verb == Verb.APPROVE
        and facts.approve_permission
        and not permission_at_least(actor.permission, facts.approve_permission)
    ):
        return (
            f"@{actor.login} has `{actor.permission}` permission; this patch touches "
            f"protected paths, so approving it needs `{facts.approve_permission}` or more"
        )
    if needs_reviewer_list(verb, policy, facts):
        login = actor.login.lower()
        if login not in policy.reviewers and not (actor.teams & set(policy.reviewer_teams)):
            return (
                f"this patch is high risk: only the configured reviewers "
                f"({_who(policy)}) may {verb} it"
            )
    if verb == Verb.APPROVE and not policy.allow_self_approval:
        mine = {x.lower() for x in (facts.author, facts.session_bot) if x}
        if actor.login.lower() in mine:
            return f"@{actor.login} cannot approve their own patch (allow_self_approval is off)"
    return None


def _who(policy: Policy) -> str:
    names = [f"@{r}" for r in policy.reviewers] + [f"@{t}" for t in policy.reviewer_teams]
    return ", ".join(names)
