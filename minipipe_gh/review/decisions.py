"""Carry out commands for one person on one PR: the rules every surface shares.

``decide`` is the one decision function. PR comments, reviews and check-run buttons
(``delivery/handlers/comments.py``) and the API, the dashboard and the CLI
(``review/off_github.py``) all call it, so a decision obeys the same rules wherever
it is made. What only GitHub knows about the person comes through the edge's
``authz.Directory``, gathered once (``authz.gather``); ``authz`` judges, and ``act``
moves the ledger or the registry. GitHub is never written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from minipipe_gh.core import authz, owners, people
from minipipe_gh.core.authz import Actor, Directory, PullFacts, SessionMove
from minipipe_gh.core.commands import Command, Problem, Verb
from minipipe_gh.core.errors import (
    Conflict,
    IllegalTransition,
    MinipipeError,
    PermissionDenied,
    Refused,
)
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.patch_states import OPEN
from minipipe_gh.core.policy import Policy, blocked_by_guardrails, guard_record
from minipipe_gh.core.session_states import MACHINE as SESSION_MACHINE
from minipipe_gh.store import audit, ledger, registry
from minipipe_gh.store.db import attempt
from minipipe_gh.store.models import AgentSession, Patch, utcnow
from minipipe_gh.store.transitions import check_version, note, refusal


class StalePatch(IllegalTransition):
    """A decision made on a patch that is no longer the session's open one."""

    def __init__(self, message: str, *, audit: dict[str, Any] | None = None) -> None:
        Refused.__init__(self, message, audit=audit)


NEEDS_PATCH = frozenset({Verb.APPROVE, Verb.APPROVE_CANCEL, Verb.REJECT, Verb.REVIEW})
TARGET = {
    Verb.APPROVE: "queued",
    Verb.APPROVE_CANCEL: "awaiting_review",
    Verb.REJECT: "dropped",
    Verb.REVIEW: "awaiting_review",
}


def facts(session: AgentSession, patch: Patch | None) -> PullFacts:
    guard = guard_record(patch.meta) if patch else None
    return PullFacts(
        author=people.pr_author(session.meta),
        session_bot=people.session_bot(session.meta),
        risk=patch.risk if patch else None,
        approve_permission=patch.meta.get("approve_permission") if patch else None,
        blocked=blocked_by_guardrails(patch.meta) if patch else False,
        token_users=tuple(people.token_users(session.meta)),
        commit_people=tuple(people.recorded_people(guard.people)) if guard else (),
        foreign_people=tuple(people.recorded_people(guard.foreign)) if guard else (),
        owner_teams=owners.teams_of(patch.meta) if patch else (),
    )


def _refused(
    session: AgentSession,
    patch: Patch | None,
    actor: str,
    source: str,
    reason: str,
    cls: type[Refused] = Refused,
) -> Refused:
    target: Any = patch if patch is not None else session
    machine: Any = PATCH_MACHINE if patch is not None else SESSION_MACHINE
    return cls(
        reason, audit=refusal(target, machine, None, actor=actor, source=source, reason=reason)
    )


def refuse(
    db: Session, session: AgentSession, patch: Patch | None, actor: str, source: str, reason: str
) -> None:
    """Record a refusal found before any command ran (a malformed or unknown command)."""
    err = _refused(session, patch, actor, source, reason)
    assert err.audit is not None
    audit.record(db, **err.audit)


@dataclass(frozen=True)
class Who:
    """The person deciding, as the surface knows them (a payload's user, a signed-in
    login, a token's user); the rest of their facts come from the ``Directory``."""

    login: str
    id: int | None = None
    bot: bool = False


@dataclass
class Answer:
    """What became of each command: done (in words), refused (why), and the errors."""

    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    help: bool = False
    errors: list[MinipipeError] = field(default_factory=list)


def decide(
    db: Session,
    directory: Directory,
    items: Sequence[Command | Problem],
    who: Who,
    session: AgentSession,
    patch: Patch | None,
    policy: Policy,
    policy_error: str | None = None,
    *,
    source: str,
) -> Answer:
    """Carry out commands in order; each refusal is audited and does not stop the rest.

    ``patch`` is the patch the decision was made on (a button's check run, a review's
    commit, the API's ledger id; a comment's is the open patch). The person's facts
    are gathered once, for every verb at hand, before anything is written.
    """
    verbs = [i.verb for i in items if isinstance(i, Command)]
    actor = authz.gather(
        directory, who.login, policy, facts(session, patch), verbs, user_id=who.id, bot=who.bot
    )
    answer = Answer()
    for item in items:
        if isinstance(item, Problem):
            refuse(db, session, patch, who.login, source, item.message)
            answer.refused.append(item.message)
            continue
        if item.verb == Verb.HELP:
            answer.help = True
            continue
        if policy_error:
            msg = (
                f"`/{item.verb}` is not carried out while the policy file is invalid: "
                f"{policy_error}"
            )
            refuse(db, session, patch, who.login, source, msg)
            answer.refused.append(msg)
            continue
        try:
            with attempt(db):
                answer.done.append(
                    _act(db, item.verb, item.argument, actor, session, patch, policy, source=source)
                )
        except (Refused, Conflict) as err:
            answer.refused.append(f"`/{item.verb}`: {err}")
            answer.errors.append(err)
    return answer


def _act(
    db: Session,
    verb: Verb,
    argument: str,
    actor: Actor,
    session: AgentSession,
    patch: Patch | None,
    policy: Policy,
    *,
    source: str,
) -> str:
    """Do it, or raise ``Refused`` (with its audit row). Returns what happened, for humans.

    ``patch`` is the patch the decision was made on (a button's check run, a
    review's commit, the API's ledger id): a decision acts on that patch only,
    and only while it is the session's open patch.
    """
    known = facts(session, patch)
    why = authz.refusal(verb, actor, policy, known)
    if why:
        raise _refused(session, patch, actor.login, source, why, PermissionDenied)
    if verb in NEEDS_PATCH and patch is None:
        raise _refused(
            session, None, actor.login, source, "this pull request has no open patch to decide"
        )
    if verb in NEEDS_PATCH and patch is not None and patch.state not in OPEN:
        # superseded by a push, decided or merged: never redirected to a newer patch
        current = ledger.open_patch(db, session.session_id)
        now = f"the open patch is {current.patch_id[:12]}" if current else "none is open"
        move = (
            f"is already {patch.state}"
            if patch.state == TARGET[verb]
            else f"cannot move from {patch.state} to {TARGET[verb]}"
        )
        why = (
            f"patch {patch.ledger_id} {move}: "
            f"`/{verb}` was made on {patch.patch_id[:12]}, no longer the open patch "
            f"({now}); a decision counts only for the SHA it was made on"
        )
        raise _refused(session, patch, actor.login, source, why, StalePatch)
    comment = argument or None
    match verb:
        case Verb.APPROVE:
            assert patch is not None
            ledger.approve_patch(
                db,
                patch,
                actor.person,
                comment,
                source=source,
                required_approvals=policy.required_approvals,
                as_owners=owners.identities(actor.login, actor.teams),
            )
            return f"approved by @{actor.login}; patch is {patch.state}{_held(session)}"
        case Verb.APPROVE_CANCEL:
            assert patch is not None
            ledger.cancel_approval(
                db, patch, actor.person, source=source, required_approvals=policy.required_approvals
            )
            return f"approval of @{actor.login} withdrawn; patch is {patch.state}"
        case Verb.REJECT:
            assert patch is not None
            ledger.reject_patch(db, patch, actor.login, argument, source=source)
            return f"rejected by @{actor.login}: {argument}"
        case Verb.REVIEW:
            assert patch is not None
            ledger.mark_for_review(db, patch, actor.login, comment, source=source)
            return f"manual review requested by @{actor.login}"
        case Verb.HOLD:
            return _hold(db, session, actor, comment, source)
        case Verb.HOLD_CANCEL:
            return _lift(db, session, patch, actor, known, source)
        case Verb.PAUSE:
            registry.pause_session(db, session.session_id, actor=actor.login, source=source)
            return "session paused"
        case Verb.RESUME:
            registry.resume_session(db, session.session_id, actor=actor.login, source=source)
            return "session resumed"
        case Verb.HELP:
            return "help"
    raise AssertionError(verb)


def _held(session: AgentSession) -> str:
    """A decision on a held patch says it will not land yet."""
    holds = people.holds(session.meta)
    if not holds:
        return ""
    names = ", ".join(f"@{h.by.login}" for h in holds)
    return f"; on hold by {names}: it will not land until the hold is lifted"


def _hold(db: Session, session: AgentSession, actor: Actor, reason: str | None, source: str) -> str:
    """One hold per holder: holding again replaces your own reason."""
    mine = people.Hold(actor.person, actor.permission, reason, utcnow().isoformat())
    kept = [h for h in people.holds(session.meta) if not h.by.same(actor.person)]
    session.meta = people.with_holds(session.meta, [*kept, mine])
    _note(db, session, actor.login, source, f"hold: {reason or 'no reason'}")
    return f"held by @{actor.login}"


def _lift(
    db: Session,
    session: AgentSession,
    patch: Patch | None,
    actor: Actor,
    known: PullFacts,
    source: str,
) -> str:
    """``/hold cancel``: your own hold, else every hold you may lift (``authz``)."""
    holds = people.holds(session.meta)
    if not holds:
        raise _refused(session, patch, actor.login, source, "there is no hold to cancel")
    own = [h for h in holds if h.by.same(actor.person)]
    if own:
        lifted, kept, why = own, [h for h in holds if h not in own], []
    else:
        refusals = [(h, authz.hold_lift_refusal(actor, h, known)) for h in holds]
        lifted = [h for h, no in refusals if no is None]
        kept = [h for h, no in refusals if no is not None]
        why = [no for _, no in refusals if no is not None]
    if not lifted:
        raise _refused(session, patch, actor.login, source, "; ".join(why), PermissionDenied)
    session.meta = people.with_holds(session.meta, kept)
    names = ", ".join(f"@{h.by.login}" for h in lifted)
    _note(db, session, actor.login, source, f"hold of {names} cancelled")
    left = f"; still held by {', '.join('@' + h.by.login for h in kept)}" if kept else ""
    return f"hold of {names} lifted by @{actor.login}{left}"


def move_session(
    db: Session,
    move: SessionMove,
    actor: Actor,
    session: AgentSession,
    policy: Policy,
    *,
    source: str,
    expected_version: int | None = None,
    by_token: bool = False,
) -> AgentSession:
    """A session move off GitHub, under the rules of ``authz.session_move_refusal``.

    ``by_token``: the actor used an API token, so they count among the session's
    token users, who never approve its patches as independent reviewers.
    """
    why = authz.session_move_refusal(move, actor, policy, facts(session, None))
    if why:
        raise _refused(session, None, actor.login, source, why, PermissionDenied)
    sid = session.session_id
    who: dict[str, Any] = {"actor": actor.login, "source": source}
    if move == "delete":
        check_version(session, SESSION_MACHINE, expected_version)
        moved = registry.delete_session(db, sid, **who)
    else:
        who["expected_version"] = expected_version
        if move == "pause":
            moved = registry.pause_session(db, sid, **who)
        elif move == "resume":
            moved = registry.resume_session(db, sid, **who)
        else:
            moved = registry.complete_session(db, sid, move == "complete", **who)
    if by_token:
        moved.meta = people.with_token_user(moved.meta, actor.person)
        bot = people.session_bot(moved.meta)
        if bot is not None and bot.id is None and actor.id is not None and bot.same(actor.person):
            moved.meta = people.with_bot_id(moved.meta, actor.id)  # by id from now on: renames too
    return moved


def _note(db: Session, session: AgentSession, actor: str, source: str, reason: str) -> None:
    note(db, session, SESSION_MACHINE, actor=actor, source=source, reason=reason)
