"""The patch ledger: record pushed patches and move them through review.

Review metadata lives in ``Patch.meta`` under the spec's keys
(``manual_review_required``, ``review_status``, ``review_reason``,
``reviewed_by``, ``reviewed_at``, ``review_comment``) plus the distinct
approvers of this SHA (``people.approvals``: who, by user id when known, and
the SHA each saw). Functions take the caller's ``Session``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from minipipe_gh.core import owners
from minipipe_gh.core.errors import Invalid, NotFound, Refused
from minipipe_gh.core.patch_states import MACHINE, OPEN, PatchState
from minipipe_gh.core.people import Approval, Person, person, with_approvals
from minipipe_gh.core.people import approvals as _approvals
from minipipe_gh.store import audit, pagination
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch, utcnow
from minipipe_gh.store.pagination import Page
from minipipe_gh.store.registry import OF_PR, new_id
from minipipe_gh.store.transitions import advance, check_attached, check_version, note, refusal

P = PatchState
DECIDABLE = frozenset({P.VALIDATED, P.AWAITING_REVIEW})
PENDING_CHECKS = frozenset({P.CREATED, P.QUARANTINED})


def record_patch(
    db: Session,
    session: AgentSession,
    patch_id: str,
    *,
    actor: str,
    source: str,
    files: int = 0,
    additions: int = 0,
    deletions: int = 0,
    paths: Sequence[str] = (),
    tree_sha: str | None = None,
    run_id: str | None = None,
    risk: str = "low",
    risk_reasons: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> Patch:
    if not patch_id:
        raise Invalid("patch_id (the head SHA) is required", field="patch_id")
    patch = Patch(
        ledger_id=new_id(),
        patch_id=patch_id,
        session_id=session.session_id,
        project_id=session.project_id,
        pr_number=session.pr_number,
        run_id=run_id,
        workstream_id=session.workstream_id,
        state=P.CREATED,
        risk=risk,
        risk_reasons=list(risk_reasons),
        files=files,
        additions=additions,
        deletions=deletions,
        paths=list(paths),
        tree_sha=tree_sha,
        meta={"review_status": "pending", "approvals": [], **(metadata or {})},
    )
    db.add(patch)
    session.head_sha = patch_id
    session.last_activity_at = utcnow()
    audit.record(
        db,
        entity="patch",
        entity_id=patch.ledger_id,
        project_id=patch.project_id,
        to_state=P.CREATED,
        outcome="moved",
        actor=actor,
        source=source,
        reason=f"patch {patch_id[:12]} recorded",
    )
    return patch


def get_patch(db: Session, ledger_id: str) -> Patch:
    patch = db.get(Patch, ledger_id)
    if patch is None:
        raise NotFound(f"patch {ledger_id} not found")
    return patch


def find_patch(db: Session, project_id: str, pr_number: int, sha: str) -> Patch | None:
    return db.scalars(
        select(Patch)
        .where(Patch.project_id == project_id, Patch.pr_number == pr_number, Patch.patch_id == sha)
        .order_by(Patch.ledger_id.desc())
    ).first()


# Built once: on every decision's path, where building it each time cost more than
# running it.
# The open states, one bound value each: a list given to ``in_`` is an expanding
# parameter, whose SQL SQLAlchemy renders again at every execution.
_OPEN_STATES = [literal(str(state)) for state in sorted(OPEN)]


def _newest_open(patch: Any, session_id: Any) -> Select[Any]:
    """A session's open patch: its newest that is still open to review or merge."""
    return (
        select(patch)
        .where(patch.session_id == session_id, patch.state.in_(_OPEN_STATES))
        .order_by(patch.ledger_id.desc())
        .limit(1)
    )


_OPEN_PATCH = _newest_open(Patch, bindparam("session_id"))
_open = aliased(Patch)
# A pull request's session and its open patch in one statement: a comment's two reads.
_PR_AND_OPEN = (
    select(AgentSession, Patch)
    .outerjoin(
        Patch,
        Patch.ledger_id
        == _newest_open(_open, AgentSession.session_id)
        .with_only_columns(_open.ledger_id)
        .correlate(AgentSession)
        .scalar_subquery(),
    )
    .where(*OF_PR)
)


def open_patch(db: Session, session_id: str) -> Patch | None:
    """The session's newest patch that is still open to review or merge."""
    return db.scalars(_OPEN_PATCH, {"session_id": session_id}).first()


def session_and_open_patch(
    db: Session, project_id: str, pr_number: int
) -> tuple[AgentSession | None, Patch | None]:
    """``registry.find_by_pr`` and that session's ``open_patch``, read together."""
    row = db.execute(_PR_AND_OPEN, {"project": project_id, "number": pr_number}).first()
    return (row[0], row[1]) if row is not None else (None, None)


def latest_patch(db: Session, session_id: str) -> Patch | None:
    return db.scalars(
        select(Patch).where(Patch.session_id == session_id).order_by(Patch.ledger_id.desc())
    ).first()


def transition(
    db: Session,
    ledger_id: str | Patch,
    to: str,
    *,
    actor: str,
    source: str,
    reason: str | None = None,
    expected_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> Patch:
    patch = _patch(db, ledger_id)
    advance(
        db,
        patch,
        MACHINE,
        to,
        actor=actor,
        source=source,
        reason=reason,
        expected_version=expected_version,
        details=details,
    )
    return patch


def _patch(db: Session, ledger_id: str | Patch) -> Patch:
    """The patch, as a row of this unit: a row from another unit would take the audit
    row but lose its changes, so it is refused."""
    if isinstance(ledger_id, Patch):
        check_attached(db, ledger_id, MACHINE)
        return ledger_id
    return get_patch(db, ledger_id)


def _review(patch: Patch, **fields: Any) -> None:
    patch.meta = {**patch.meta, **fields}  # reassign: JSON columns track assignment


def _note(db: Session, patch: Patch, actor: str, source: str, reason: str) -> None:
    note(db, patch, MACHINE, actor=actor, source=source, reason=reason)


def mark_for_review(
    db: Session,
    ledger_id: str | Patch,
    reviewer: str,
    reason: str | None = None,
    *,
    source: str = "api",
    expected_version: int | None = None,
) -> Patch:
    """Ask for manual review; before the checks finish it takes effect on validation."""
    patch = _patch(db, ledger_id)
    check_version(patch, MACHINE, expected_version)
    _review(patch, manual_review_required=True, review_status="pending", review_reason=reason)
    if patch.state in PENDING_CHECKS:
        _note(db, patch, reviewer, source, f"manual review requested: {reason or 'no reason'}")
        return patch
    return transition(
        db,
        patch,
        P.AWAITING_REVIEW,
        actor=reviewer,
        source=source,
        reason=reason or "manual review requested",
        expected_version=expected_version,
    )


def approvals(patch: Patch) -> list[str]:
    """The approvers' logins, for display."""
    return [a.who.login for a in _approvals(patch.meta)]


def approvers(patch: Patch) -> list[Approval]:
    return _approvals(patch.meta)


def _who(reviewer: str | Person) -> Person:
    who = person(reviewer)
    if who is None:
        raise Invalid("a reviewer is required", field="reviewer")
    return who


def approve_patch(
    db: Session,
    ledger_id: str | Patch,
    reviewer: str | Person,
    comment: str | None = None,
    *,
    source: str = "api",
    required_approvals: int = 1,
    expected_version: int | None = None,
    as_owners: Sequence[str] = (),
) -> Patch:
    """Add ``reviewer``'s approval of this SHA; enough distinct approvers queue the patch.

    ``as_owners``: the code owners the reviewer stands for (``owners.identities``); with
    code owners required, the patch queues only once every owned path is covered.

    The same person (same user id, or same login in any case) counts once. An
    approval given while the checks still run is kept and takes effect when the
    patch validates (``apply_pending_review``).
    """
    patch = _patch(db, ledger_id)
    who = _who(reviewer)
    check_version(patch, MACHINE, expected_version)
    if patch.state not in DECIDABLE | PENDING_CHECKS | {P.QUEUED}:
        # Decided or merged already: no state here may move to queued, so this
        # raises IllegalTransition carrying its audit row.
        transition(db, patch, P.QUEUED, actor=who.login, source=source)
    given = approvers(patch)
    if not who.among(a.who for a in given):
        given.append(Approval(who, patch.patch_id, utcnow().isoformat(), tuple(as_owners)))
    patch.meta = with_approvals(patch.meta, given)
    _review(patch, review_comment=comment)
    waiting = owners_waiting(patch)
    if patch.state in DECIDABLE and len(given) >= required_approvals and not waiting:
        _review(
            patch,
            review_status="approved",
            reviewed_by=who.login,
            reviewed_at=utcnow().isoformat(),
        )
        return transition(
            db, patch, P.QUEUED, actor=who.login, source=source, reason=comment or "approved"
        )
    _note(
        db,
        patch,
        who.login,
        source,
        f"approval {len(given)} of {required_approvals}"
        + (f"; {waiting}" if waiting else "")
        + (f": {comment}" if comment else ""),
    )
    return patch


def cancel_approval(
    db: Session,
    ledger_id: str | Patch,
    reviewer: str | Person,
    *,
    source: str = "api",
    required_approvals: int = 1,
    reason: str = "approval withdrawn",
) -> Patch:
    patch = _patch(db, ledger_id)
    who = _who(reviewer)
    given = approvers(patch)
    kept = [a for a in given if not a.who.same(who)]
    if len(kept) == len(given):
        raise Refused(
            f"{who.login} has no approval on patch {patch.ledger_id} to withdraw",
            audit=refusal(
                patch,
                MACHINE,
                None,
                actor=who.login,
                source=source,
                reason="no approval to withdraw",
            ),
        )
    patch.meta = with_approvals(patch.meta, kept)
    if patch.state == P.QUEUED and (len(kept) < required_approvals or owners_waiting(patch)):
        _review(patch, review_status="pending", reviewed_by=None, reviewed_at=None)
        return transition(
            db, patch, P.AWAITING_REVIEW, actor=who.login, source=source, reason=reason
        )
    _note(db, patch, who.login, source, reason)
    return patch


def reject_patch(
    db: Session,
    ledger_id: str | Patch,
    reviewer: str,
    reason: str | None,
    *,
    source: str = "api",
    expected_version: int | None = None,
) -> Patch:
    patch = _patch(db, ledger_id)
    if not reason or not reason.strip():
        raise Refused(
            "a rejection needs a reason: /reject <reason>",
            audit=refusal(
                patch,
                MACHINE,
                P.DROPPED,
                actor=reviewer,
                source=source,
                reason="rejection without a reason",
            ),
        )
    transition(
        db,
        patch,
        P.DROPPED,
        actor=reviewer,
        source=source,
        reason=f"rejected: {reason.strip()}",
        expected_version=expected_version,
    )
    _review(
        patch,
        review_status="rejected",
        review_reason=reason.strip(),
        reviewed_by=reviewer,
        reviewed_at=utcnow().isoformat(),
    )
    return patch


def list_patches(
    db: Session,
    *,
    state: str | None = None,
    session_id: str | None = None,
    run_id: str | None = None,
    workstream_id: str | None = None,
    project_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    within: Collection[str] | None = None,
    archived: bool = True,
    where: ColumnElement[bool] | None = None,
) -> Page[Patch]:
    """Oldest first (the review queue's order); ``within`` limits to those repositories.

    ``archived=False`` leaves out the patches of archived (deleted) sessions."""
    pagination.check_limit(limit)
    q = select(Patch)
    if where is not None:
        q = q.where(where)
    if not archived:
        gone = select(AgentSession.session_id).where(AgentSession.archived_at.is_not(None))
        q = q.where(Patch.session_id.not_in(gone))
    if within is not None:
        q = q.where(func.lower(Patch.project_id).in_([w.lower() for w in within]))
    if state is not None:
        if state not in P.__members__.values():
            raise Invalid(f"unknown patch state {state!r}", field="state")
        q = q.where(Patch.state == state)
    for column, value in (
        (Patch.session_id, session_id),
        (Patch.run_id, run_id),
        (Patch.workstream_id, workstream_id),
        (Patch.project_id, project_id),
    ):
        if value is not None:
            q = q.where(column == value)
    after = pagination.decode(cursor)
    if after is not None:
        q = q.where(Patch.ledger_id > after)
    rows = db.scalars(q.order_by(Patch.ledger_id).limit(limit + 1)).all()
    return pagination.page_of(rows, limit, "ledger_id")


def in_review_queue() -> ColumnElement[bool]:
    """``waits.in_review_queue`` in SQL: awaiting review, or open under a session's hold
    (``people.holds`` reads ``holds``, and ``hold`` of earlier versions)."""
    held = select(AgentSession.session_id).where(
        or_(
            AgentSession.meta["holds"].as_string().is_not(None),
            AgentSession.meta["hold"].as_string().is_not(None),
        )
    )
    return or_(
        Patch.state == P.AWAITING_REVIEW,
        and_(Patch.state.in_([str(x) for x in OPEN]), Patch.session_id.in_(held)),
    )


def list_patches_awaiting_review(
    db: Session,
    run_id: str | None = None,
    workstream_id: str | None = None,
    *,
    project_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    within: Collection[str] | None = None,
) -> Page[Patch]:
    """The review queue, oldest first: what needs a human (``in_review_queue``), so a held
    patch stays in it once approved and queued, until the hold is lifted."""
    return list_patches(
        db,
        run_id=run_id,
        workstream_id=workstream_id,
        project_id=project_id,
        cursor=cursor,
        limit=limit,
        within=within,
        where=in_review_queue(),
    )


def history(db: Session, ledger_id: str) -> Sequence[AuditEntry]:
    return audit.history(db, "patch", ledger_id)


def apply_pending_review(
    db: Session,
    patch: Patch,
    *,
    required_approvals: int,
    auto_queue_low_risk: bool,
    source: str,
    actor: str = "minipipe",
) -> Patch:
    """Decide a freshly validated patch: enough approvals, manual review, or auto-queue.

    Approvals and ``/review`` requests given while the checks ran take effect here.
    """
    given = approvals(patch)
    waiting = owners_waiting(patch)
    if waiting:
        return transition(db, patch, P.AWAITING_REVIEW, actor=actor, source=source, reason=waiting)
    if len(given) >= required_approvals:
        _review(
            patch, review_status="approved", reviewed_by=given[-1], reviewed_at=utcnow().isoformat()
        )
        return transition(
            db,
            patch,
            P.QUEUED,
            actor=given[-1],
            source=source,
            reason=f"approved before validation by {', '.join(given)}",
        )
    if patch.risk == "high" or patch.meta.get("manual_review_required") or not auto_queue_low_risk:
        why = "; ".join(patch.risk_reasons) or (
            "manual review requested"
            if patch.meta.get("manual_review_required")
            else "auto-queue is off"
        )
        return transition(db, patch, P.AWAITING_REVIEW, actor=actor, source=source, reason=why)
    return transition(
        db, patch, P.QUEUED, actor=actor, source=source, reason="low risk: queued automatically"
    )


def owners_waiting(patch: Patch) -> str | None:
    """With code owners required: what still waits for them (for the audit trail), else
    None. The rule itself is ``owners.coverage``."""
    found = owners.patch_coverage(patch.meta)
    if found is None or found.complete:
        return None
    paths = found.waiting_paths
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return f"waiting for code owners: {shown}"


def supersede(db: Session, old: Patch, new_sha: str, *, actor: str, source: str) -> Patch:
    """A new push drops the open patch: approvals belong to a SHA."""
    _review(old, drop_reason=f"superseded by {new_sha[:12]}")
    return transition(
        db, old, P.DROPPED, actor=actor, source=source, reason=f"superseded by {new_sha}"
    )


def carry_over_approvals(db: Session, old: Patch, new: Patch, *, why: str, source: str) -> None:
    """Keep the old SHA's approvals on the new one (same tree, or stale approvals kept).

    Each approval still names the SHA its approver saw."""
    given = approvers(old)
    if not given:
        return
    new.meta = with_approvals(new.meta, given)
    _review(new, carried_from=old.patch_id)
    names = ", ".join(a.who.login for a in given)
    _note(
        db,
        new,
        "minipipe",
        source,
        f"approvals of {names} carried over from {old.patch_id[:12]}: {why}",
    )


def find_patch_by_id(db: Session, ledger_id: str) -> Patch | None:
    return db.get(Patch, ledger_id) if ledger_id else None
