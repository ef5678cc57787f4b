"""Who may act (spec: "Who may act", and `/hold` in "Commands in PR comments")."""

from __future__ import annotations

import pytest

from minipipe_gh.core.authz import (
    Actor,
    PullFacts,
    hold_lift_refusal,
    refusal,
    required_permission,
    session_move_refusal,
)
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.core.policy import PERMISSIONS, Policy, parse

LOW = PullFacts(author="author", session_bot="agent-bot", risk="low")
HIGH = PullFacts(author="author", session_bot="agent-bot", risk="high")
NO_PATCH = PullFacts(author="author", session_bot="agent-bot", risk=None)
DEFAULT = Policy()
WITH_REVIEWERS = parse("review:\n  reviewers: [Alice, carol]\n  reviewer_teams: [acme/security]\n")
ALL_VERBS = list(Verb)


def actor(
    login: str = "dave",
    permission: str = "write",
    *,
    is_bot: bool = False,
    teams: frozenset[str] = frozenset(),
) -> Actor:
    return Actor(login, permission, is_bot=is_bot, teams=teams)


# --- bots -------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_bots_never_act(verb: Verb) -> None:
    bot = actor("minipipe[bot]", "admin", is_bot=True)
    why = refusal(verb, bot, DEFAULT, LOW)
    assert why is not None
    assert "bot" in why


def test_bots_are_refused_even_as_listed_reviewers_with_self_approval_on() -> None:
    policy = parse("review:\n  reviewers: [robot]\n  allow_self_approval: true\n")
    assert refusal(Verb.APPROVE, actor("robot", "admin", is_bot=True), policy, HIGH)


# --- permission levels ------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [Verb.APPROVE, Verb.APPROVE_CANCEL, Verb.REJECT, Verb.REVIEW, Verb.PAUSE, Verb.RESUME],
)
@pytest.mark.parametrize("permission", ["none", "read", "triage"])
def test_below_required_permission_is_refused_naming_both_levels(
    verb: Verb, permission: str
) -> None:
    why = refusal(verb, actor("dave", permission), DEFAULT, LOW)
    assert why is not None
    assert f"`{permission}`" in why
    assert "`write`" in why
    assert "@dave" in why
    assert f"/{verb}" in why


@pytest.mark.parametrize(
    "verb",
    [Verb.APPROVE, Verb.APPROVE_CANCEL, Verb.REJECT, Verb.REVIEW, Verb.PAUSE, Verb.RESUME],
)
@pytest.mark.parametrize("permission", ["write", "maintain", "admin"])
def test_at_or_above_required_permission_is_allowed(verb: Verb, permission: str) -> None:
    assert refusal(verb, actor("dave", permission), DEFAULT, LOW) is None


def test_required_permission_comes_from_the_policy() -> None:
    policy = parse("review:\n  required_permission: maintain\n")
    why = refusal(Verb.APPROVE, actor("dave", "write"), policy, LOW)
    assert why is not None
    assert "`write`" in why and "`maintain`" in why
    assert refusal(Verb.APPROVE, actor("dave", "maintain"), policy, LOW) is None
    lenient = parse("review:\n  required_permission: read\n")
    assert refusal(Verb.REVIEW, actor("dave", "read"), lenient, LOW) is None


def test_unknown_permission_counts_as_none() -> None:
    why = refusal(Verb.APPROVE, actor("dave", "owner"), DEFAULT, LOW)
    assert why is not None
    assert "`write`" in why


# --- /hold --------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [Verb.HOLD, Verb.HOLD_CANCEL])
def test_hold_uses_hold_permission_not_required_permission(verb: Verb) -> None:
    assert required_permission(verb, DEFAULT) == "triage"
    assert refusal(verb, actor("tina", "triage"), DEFAULT, LOW) is None
    why = refusal(verb, actor("rita", "read"), DEFAULT, LOW)
    assert why is not None
    assert "`read`" in why and "`triage`" in why
    assert "`write`" not in why


def test_hold_permission_is_configurable_independently() -> None:
    policy = parse("review:\n  required_permission: read\n  hold_permission: maintain\n")
    assert refusal(Verb.APPROVE, actor("dave", "read"), policy, LOW) is None
    why = refusal(Verb.HOLD, actor("dave", "write"), policy, LOW)
    assert why is not None and "`maintain`" in why
    assert refusal(Verb.HOLD, actor("dave", "maintain"), policy, LOW) is None


def test_hold_is_not_restricted_to_reviewers_nor_by_self_approval() -> None:
    assert refusal(Verb.HOLD, actor("author", "triage"), WITH_REVIEWERS, HIGH) is None
    assert refusal(Verb.HOLD_CANCEL, actor("zed", "triage"), WITH_REVIEWERS, HIGH) is None


# --- reviewers ----------------------------------------------------------------------


@pytest.mark.parametrize("verb", [Verb.APPROVE, Verb.REJECT])
def test_listed_reviewers_alone_decide_high_risk(verb: Verb) -> None:
    why = refusal(verb, actor("dave", "admin"), WITH_REVIEWERS, HIGH)
    assert why is not None
    assert "high risk" in why
    assert "@alice" in why and "@carol" in why and "acme/security" in why
    assert refusal(verb, actor("carol", "write"), WITH_REVIEWERS, HIGH) is None


def test_reviewer_logins_compare_case_insensitively() -> None:
    assert refusal(Verb.APPROVE, actor("ALICE"), WITH_REVIEWERS, HIGH) is None
    assert refusal(Verb.REJECT, actor("alice"), WITH_REVIEWERS, HIGH) is None


@pytest.mark.parametrize("verb", [Verb.APPROVE, Verb.REJECT])
def test_low_risk_decisions_are_not_restricted_to_reviewers(verb: Verb) -> None:
    assert refusal(verb, actor("dave", "write"), WITH_REVIEWERS, LOW) is None
    assert refusal(verb, actor("dave", "write"), WITH_REVIEWERS, NO_PATCH) is None


@pytest.mark.parametrize(
    "verb", [Verb.APPROVE_CANCEL, Verb.REVIEW, Verb.PAUSE, Verb.RESUME, Verb.HELP]
)
def test_only_approve_and_reject_are_reserved_to_reviewers(verb: Verb) -> None:
    assert refusal(verb, actor("dave", "write"), WITH_REVIEWERS, HIGH) is None


def test_team_membership_makes_a_reviewer() -> None:
    member = actor("erin", "write", teams=frozenset({"acme/security"}))
    assert refusal(Verb.APPROVE, member, WITH_REVIEWERS, HIGH) is None
    assert refusal(Verb.REJECT, member, WITH_REVIEWERS, HIGH) is None
    other_team = actor("erin", "write", teams=frozenset({"acme/frontend"}))
    assert refusal(Verb.APPROVE, other_team, WITH_REVIEWERS, HIGH) is not None


def test_teams_only_policy_restricts_too() -> None:
    policy = parse("review:\n  reviewer_teams: [acme/core]\n")
    why = refusal(Verb.APPROVE, actor("dave"), policy, HIGH)
    assert why is not None and "acme/core" in why
    member = actor("dave", teams=frozenset({"acme/core"}))
    assert refusal(Verb.APPROVE, member, policy, HIGH) is None


def test_without_a_reviewer_list_anyone_with_permission_decides_high_risk() -> None:
    assert refusal(Verb.APPROVE, actor("dave"), DEFAULT, HIGH) is None
    assert refusal(Verb.REJECT, actor("dave"), DEFAULT, HIGH) is None


def test_a_listed_reviewer_still_needs_the_permission() -> None:
    why = refusal(Verb.APPROVE, actor("alice", "read"), WITH_REVIEWERS, HIGH)
    assert why is not None
    assert "`read`" in why and "`write`" in why


# --- self-approval ------------------------------------------------------------------


@pytest.mark.parametrize("login", ["author", "Author", "agent-bot", "AGENT-BOT"])
def test_author_and_session_bot_cannot_approve_their_own_patch(login: str) -> None:
    why = refusal(Verb.APPROVE, actor(login, "admin"), DEFAULT, LOW)
    assert why is not None
    assert "own patch" in why
    assert f"@{login}" in why
    assert "allow_self_approval" in why


def test_self_approval_when_allowed() -> None:
    policy = parse("review:\n  allow_self_approval: true\n")
    assert refusal(Verb.APPROVE, actor("author", "write"), policy, LOW) is None
    assert refusal(Verb.APPROVE, actor("agent-bot", "write"), policy, LOW) is None


def test_self_approval_refused_for_a_listed_reviewer_too() -> None:
    policy = parse("review:\n  reviewers: [author]\n")
    assert refusal(Verb.APPROVE, actor("author", "admin"), policy, HIGH) is not None


@pytest.mark.parametrize(
    "verb", [Verb.REJECT, Verb.APPROVE_CANCEL, Verb.REVIEW, Verb.HOLD, Verb.PAUSE, Verb.RESUME]
)
def test_author_may_do_everything_but_approve(verb: Verb) -> None:
    assert refusal(verb, actor("author", "write"), DEFAULT, LOW) is None


def test_other_users_may_approve() -> None:
    assert refusal(Verb.APPROVE, actor("dave", "write"), DEFAULT, LOW) is None


def test_missing_author_and_bot_do_not_match_anyone() -> None:
    facts = PullFacts(author=None, session_bot=None, risk="low")
    assert refusal(Verb.APPROVE, actor("dave"), DEFAULT, facts) is None


# --- help -----------------------------------------------------------------------------


@pytest.mark.parametrize("permission", PERMISSIONS)
def test_help_needs_nothing(permission: str) -> None:
    assert required_permission(Verb.HELP, DEFAULT) is None
    for facts in (LOW, HIGH, NO_PATCH):
        assert refusal(Verb.HELP, actor("author", permission), WITH_REVIEWERS, facts) is None


# --- guardrails: protected paths need a maintainer's approval ---------------------------


PROTECTED = PullFacts(
    author="author", session_bot="agent-bot", risk="low", approve_permission="maintain"
)


@pytest.mark.parametrize(
    ("permission", "allowed"), [("write", False), ("maintain", True), ("admin", True)]
)
def test_a_protected_patch_is_approved_by_maintain_or_more(permission: str, allowed: bool) -> None:
    why = refusal(Verb.APPROVE, actor("dave", permission), DEFAULT, PROTECTED)
    if allowed:
        assert why is None
    else:
        assert why == (
            "@dave has `write` permission; this patch touches protected paths, "
            "so approving it needs `maintain` or more"
        )


@pytest.mark.parametrize("verb", [Verb.REJECT, Verb.REVIEW, Verb.HOLD, Verb.APPROVE_CANCEL])
def test_other_verbs_on_a_protected_patch_keep_their_own_permission(verb: Verb) -> None:
    assert refusal(verb, actor("dave", "write"), DEFAULT, PROTECTED) is None


def test_a_maintainer_still_cannot_approve_their_own_protected_patch() -> None:
    why = refusal(Verb.APPROVE, actor("author", "admin"), DEFAULT, PROTECTED)
    assert why is not None and "own patch" in why


def test_nobody_approves_a_patch_its_guardrails_block() -> None:
    blocked = PullFacts(author="author", session_bot="agent-bot", risk="low", blocked=True)
    why = refusal(Verb.APPROVE, actor("root", "admin"), DEFAULT, blocked)
    assert why is not None and "blocked by its guardrails" in why
    assert refusal(Verb.REJECT, actor("root", "admin"), DEFAULT, blocked) is None


# --- people, holds and session moves (issue 13) -------------------------------------


def test_people_are_one_by_id_and_else_by_login_in_any_case() -> None:
    assert Person("Writer").same(Person("writer"))
    assert Person("renamed", 7).same(Person("old-name", 7))
    assert not Person("writer", 7).same(Person("writer", 8))  # a login reused by another account
    assert not Person("writer").same(None)


def test_a_token_user_of_the_session_cannot_approve_it() -> None:
    facts = PullFacts(
        author="author", session_bot="agent-bot", risk="low", token_users=(Person("helper"),)
    )
    why = refusal(Verb.APPROVE, actor("Helper"), DEFAULT, facts)
    assert why is not None and "own patch" in why


HELD = Hold(Person("maint", 1), "maintain", "freeze", "2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("who", "permission", "allowed"),
    [
        (Person("maint", 1), "triage", True),  # the holder, whatever their permission now
        (Person("boss", 2), "maintain", True),
        (Person("boss", 2), "admin", True),
        (Person("writer", 3), "write", False),
        (Person("author", 4), "admin", False),  # the PR's author
        (Person("agent-bot", 5), "admin", False),  # the session's bot
    ],
)
def test_who_may_lift_a_hold(who: Person, permission: str, allowed: bool) -> None:
    why = hold_lift_refusal(Actor(who.login, permission, id=who.id), HELD, LOW)
    assert (why is None) == allowed


@pytest.mark.parametrize("move", ["complete", "fail", "delete"])
def test_ending_a_session_is_for_its_bot_or_a_maintainer(move: str) -> None:
    assert session_move_refusal(move, actor("agent-bot", "read"), DEFAULT, LOW) is None  # type: ignore[arg-type]
    assert session_move_refusal(move, actor("boss", "maintain"), DEFAULT, LOW) is None  # type: ignore[arg-type]
    why = session_move_refusal(move, actor("other-bot", "write"), DEFAULT, LOW)  # type: ignore[arg-type]
    assert why is not None and "`maintain`" in why


@pytest.mark.parametrize("move", ["pause", "resume"])
def test_pausing_a_session_through_the_api_follows_the_comment_rules(move: str) -> None:
    why = session_move_refusal(move, actor("reader", "read"), DEFAULT, LOW)  # type: ignore[arg-type]
    assert why is not None and "`write`" in why
    assert session_move_refusal(move, actor("writer", "write"), DEFAULT, LOW) is None  # type: ignore[arg-type]
