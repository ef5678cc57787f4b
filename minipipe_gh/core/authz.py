"""Who may do what, with no I/O.

The facts only GitHub knows (a person's repository role and id, team memberships)
come through ``Directory``, a narrow interface the edge supplies (``gh.rest.RepoAPI``
in the app, anything with the two methods in a test); ``gather`` asks it only what
the rules at hand need. The rules answer ``None`` (allowed) or the reason it is not.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from minipipe_gh.core.commands import Verb
from minipipe_gh.core.people import Hold, Person, merged, person
from minipipe_gh.core.policy import Policy, permission_at_least

DECISIONS = frozenset({Verb.APPROVE, Verb.REJECT})
SessionMove = Literal["pause", "resume", "complete", "fail", "delete"]
# Ending or deleting a session is for its own bot or a maintainer (README: "For agent bots").
END_PERMISSION = "maintain"


@dataclass(frozen=True)
class Collaborator:
    role: str  # none | read | triage | write | maintain | admin
    id: int | None  # the user's GitHub id, when GitHub named the user


class Directory(Protocol):
    """What the rules must ask about people; the edge answers (and caches)."""

    def collaborator(self, login: str) -> Collaborator: ...

    def team_members(self, team: str) -> Collection[str]: ...


def is_bot(user: Mapping[str, Any] | None) -> bool:
    """A GitHub App or a machine account by its name: their comments are never commands."""
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


@dataclass(frozen=True)
class Actor:
    login: str
    permission: str  # none | read | triage | write | maintain | admin
    is_bot: bool = False
    teams: frozenset[str] = frozenset()  # "org/slug" the actor belongs to, when looked up
    id: int | None = None  # the GitHub user id, when known (payloads and the permission API)

    @property
    def person(self) -> Person:
        return Person(self.login, self.id)


@dataclass(frozen=True)
class PullFacts:
    author: Person | str | None
    session_bot: Person | str | None
    risk: str | None  # of the patch being decided, if any
    # the patch's guardrails may ask more of an approver (protected paths: maintain)
    approve_permission: str | None = None
    blocked: bool = False  # blocked by its guardrails: no approval can queue it
    token_users: tuple[Person, ...] = ()  # whose API tokens created or moved the session
    # every author and committer of the patch's commits (the PR's commits listing)
    commit_people: tuple[Person, ...] = ()
    # those of them who are not the session's bot, under provenance.foreign_commits review
    foreign_people: tuple[Person, ...] = ()
    owner_teams: tuple[str, ...] = ()  # "org/team" code owners of the patch's paths

    @property
    def authors(self) -> list[Person]:
        """Who may not approve as an independent reviewer: author, bot, token users, and
        everyone who authored or committed a commit of the patch."""
        return merged(
            [person(self.author), person(self.session_bot), *self.token_users, *self.commit_people]
        )

    @property
    def bot(self) -> Person | None:
        return person(self.session_bot)


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
    if verb == Verb.APPROVE and actor.person.among(facts.foreign_people):
        return (
            f"@{actor.login} authored or committed a commit of this patch that is not the "
            "session's bot's (provenance.foreign_commits): someone else must approve it"
        )
    if (
        verb == Verb.APPROVE
        and not policy.allow_self_approval
        and actor.person.among(facts.authors)
    ):
        return f"@{actor.login} cannot approve their own patch (allow_self_approval is off)"
    return None


def hold_lift_refusal(actor: Actor, hold: Hold, facts: PullFacts) -> str | None:
    """A holder lifts their own hold; another's needs at least the holder's permission,
    and never the session's bot or the patch's authors."""
    if hold.by.same(actor.person):
        return None
    if actor.person.among(facts.authors):
        return f"@{actor.login} is an author of this patch and cannot lift @{hold.by.login}'s hold"
    if not hold.liftable_by(actor.person, actor.permission):
        return (
            f"@{hold.by.login}'s hold was placed with `{hold.permission}` permission; "
            f"@{actor.login} has `{actor.permission}`"
        )
    return None


def session_move_refusal(
    move: SessionMove, actor: Actor, policy: Policy, facts: PullFacts
) -> str | None:
    """Session moves off GitHub (API): pause and resume as the comments; ending or
    deleting a session only for its own bot or someone with ``maintain``."""
    if move in ("pause", "resume"):
        return refusal(Verb.PAUSE if move == "pause" else Verb.RESUME, actor, policy, facts)
    if actor.is_bot:
        return "bots never act"
    if actor.person.same(facts.bot) or permission_at_least(actor.permission, END_PERMISSION):
        return None
    return (
        f"@{actor.login} has `{actor.permission}` permission and is not this session's bot; "
        f"`{move}` needs the session's own bot or `{END_PERMISSION}`"
    )


def _who(policy: Policy) -> str:
    names = [f"@{r}" for r in policy.reviewers] + [f"@{t}" for t in policy.reviewer_teams]
    return ", ".join(names)


def gather(
    directory: Directory,
    login: str,
    policy: Policy,
    facts: PullFacts,
    verbs: Iterable[Verb] = (),
    *,
    user_id: int | None = None,
    bot: bool = False,
    need_permission: bool = False,
) -> Actor:
    """The actor's facts for these verbs, asked of ``directory`` only as the rules need:
    the role when a verb needs a permission, teams for a reviewer list or code owners."""
    verbs = list(verbs)
    permission, found_id = "none", None
    if need_permission or any(required_permission(v, policy) for v in verbs):
        found = directory.collaborator(login)
        permission, found_id = found.role, found.id
    teams: frozenset[str] = frozenset()
    name = login.lower()
    if any(needs_reviewer_list(v, policy, facts) for v in verbs) and name not in policy.reviewers:
        teams = frozenset(t for t in policy.reviewer_teams if name in directory.team_members(t))
    if Verb.APPROVE in verbs and facts.owner_teams:
        # code owners: the teams among the patch's owners this approver is in
        teams |= frozenset(t for t in facts.owner_teams if name in directory.team_members(t))
    uid = user_id if user_id is not None else found_id
    return Actor(login, permission, is_bot=bot, teams=teams, id=uid)
