"""Carry out one command for one actor on one PR: the rules every surface shares.

Comments, reviews, check-run buttons, the REST API and the dashboard all
come here, so a decision obeys the same rules wherever it is made. The edges
gather the facts (the actor's role, team memberships); this module checks
them (``authz``) and moves the ledger or registry. GitHub is not touched.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from . import audit, authz, ledger, registry
from .authz import Actor, PullFacts
from .commands import Verb
from .errors import PermissionDenied, Refused
from .models import AgentSession, Patch, utcnow
from .patch_states import MACHINE as PATCH_MACHINE
from .policy import Policy, blocked_by_guardrails
from .session_states import MACHINE as SESSION_MACHINE
from .transitions import note, refusal

NEEDS_PATCH = frozenset({Verb.APPROVE, Verb.APPROVE_CANCEL, Verb.REJECT, Verb.REVIEW})


def facts(session: AgentSession, patch: Patch | None) -> PullFacts:
    return PullFacts(
        author=session.meta.get("pr_author"),
        session_bot=session.meta.get("bot_login"),
        risk=patch.risk if patch else None,
        approve_permission=patch.meta.get("approve_permission") if patch else None,
        blocked=blocked_by_guardrails(patch.meta) if patch else False,
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


def act(
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
    """Do it, or raise ``Refused`` (with its audit row). Returns what happened, for humans."""
    why = authz.refusal(verb, actor, policy, facts(session, patch))
    if why:
        raise _refused(session, patch, actor.login, source, why, PermissionDenied)
    if verb in NEEDS_PATCH and patch is None:
        raise _refused(
            session, None, actor.login, source, "this pull request has no open patch to decide"
        )
    comment = argument or None
    match verb:
        case Verb.APPROVE:
            assert patch is not None
            ledger.approve_patch(
                db,
                patch,
                actor.login,
                comment,
                source=source,
                required_approvals=policy.required_approvals,
            )
            return f"approved by @{actor.login}; patch is {patch.state}"
        case Verb.APPROVE_CANCEL:
            assert patch is not None
            ledger.cancel_approval(
                db, patch, actor.login, source=source, required_approvals=policy.required_approvals
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
            hold = {"by": actor.login, "reason": comment, "at": utcnow().isoformat()}
            session.meta = {**session.meta, "hold": hold}
            _note(db, session, actor.login, source, f"hold: {comment or 'no reason'}")
            return f"held by @{actor.login}"
        case Verb.HOLD_CANCEL:
            if not session.meta.get("hold"):
                raise _refused(session, patch, actor.login, source, "there is no hold to cancel")
            session.meta = {k: v for k, v in session.meta.items() if k != "hold"}
            _note(db, session, actor.login, source, "hold cancelled")
            return f"hold lifted by @{actor.login}"
        case Verb.PAUSE:
            registry.pause_session(db, session.session_id, actor=actor.login, source=source)
            return "session paused"
        case Verb.RESUME:
            registry.resume_session(db, session.session_id, actor=actor.login, source=source)
            return "session resumed"
        case Verb.HELP:
            return "help"
    raise AssertionError(verb)


def _note(db: Session, session: AgentSession, actor: str, source: str, reason: str) -> None:
    note(db, session, SESSION_MACHINE, actor=actor, source=source, reason=reason)
