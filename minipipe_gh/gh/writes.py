"""Effect executors: the GitHub writes, performed after a delivery's changes commit.

Each is idempotent, so a retried delivery never posts twice: the check run is
updated in place (its id is kept per SHA; on a retry with no id kept we look
for ours before creating one), reactions are idempotent on GitHub, and a reply
carries a hidden marker we look for before posting again.
"""

from __future__ import annotations

import logging
from typing import Any

from github import GithubException
from sqlalchemy import bindparam, false, select, true

from minipipe_gh.core import checkrun, limits, owners, people
from minipipe_gh.core.errors import NotFound
from minipipe_gh.core.markers import reply_marker
from minipipe_gh.core.patch_states import OPEN, TERMINAL
from minipipe_gh.gh.effects import EffectContext, Executors
from minipipe_gh.gh.rest import RepoAPI
from minipipe_gh.store.ledger import get_patch
from minipipe_gh.store.models import (
    AgentSession,
    AuditEntry,
    CheckRunRef,
    NeutralCheckRun,
    Patch,
    ReviewRequest,
)

RECENT = 5
log = logging.getLogger(__name__)


def _api(ectx: EffectContext, project: str) -> RepoAPI:
    assert ectx.app is not None and ectx.installation_id is not None
    return ectx.app.repo(ectx.installation_id, project)


_p, _s = Patch.__table__, AgentSession.__table__
_ref, _stray, _audit = CheckRunRef.__table__, NeutralCheckRun.__table__, AuditEntry.__table__


def _on_sha(column: Any, *also: Any) -> Any:
    """``column`` of the row kept for the patch's SHA (the table's key: project, SHA), as
    a lookup of its own for the patch's row. As a join, PostgreSQL planned it, on tables
    without statistics yet, as a scan of every row of the project (149 of them read for
    each check run in ``bench/decisions.py``); a correlated lookup is the key's."""
    table = column.table
    return (
        select(column)
        .where(table.c.project_id == bindparam("project"), table.c.head_sha == _p.c.patch_id, *also)
        .scalar_subquery()
    )


# What a check run shows of a patch, its session, and the check runs known on its SHA:
# one prebuilt Core read (rows have the attributes ``checkrun.Patch`` asks for).
_SHOWN = (
    select(
        *(_p.c[k] for k in ("ledger_id", "patch_id", "state", "risk", "risk_reasons")),
        _p.c.metadata.label("meta"),  # the column behind ``Patch.meta``
        _p.c.pr_number,
        _s.c.metadata.label("session_meta"),
        _on_sha(_ref.c.check_run_id).label("known"),
        # our neutral success on the SHA, while it is not withdrawn: one lookup
        _on_sha(_stray.c.check_run_id, _stray.c.withdrawn.is_(false())).label("stray_id"),
    )
    .select_from(_p.outerjoin(_s, _s.c.session_id == _p.c.session_id))
    .where(_p.c.ledger_id == bindparam("ledger_id"))
)
_RECENT = (
    select(
        *(_audit.c[k] for k in ("id", "at", "actor", "outcome", "from_state", "to_state", "reason"))
    )
    .where(_audit.c.entity == "patch", _audit.c.entity_id == bindparam("ledger_id"))
    .order_by(_audit.c.id.desc())
    .limit(RECENT)
).subquery("recent")
# Both in one statement, so one snapshot without a transaction around two: the patch's
# columns on each of its recent audit rows, oldest first (once, with NULLs, if none).
_shown = _SHOWN.subquery("shown")
_SHOWN_RECENT = (
    select(_shown, _RECENT).select_from(_shown.outerjoin(_RECENT, true())).order_by(_RECENT.c.id)
)


def check_run(ectx: EffectContext, spec: dict[str, Any]) -> None:
    project = spec["project"]
    params = {"project": project, "ledger_id": spec["ledger_id"]}
    shown = ectx.database.read(_SHOWN_RECENT, params)  # prebuilt, on the driver's cursor
    if not shown:
        raise NotFound(f"patch {spec['ledger_id']} not found")
    patch = shown[0]
    recent = [row for row in shown if row.id is not None]
    known = patch.known
    stray_id = patch.stray_id
    view = checkrun.View.of(
        patch,
        patch.session_meta,
        required_approvals=spec.get("required_approvals", 1),
        policy_error=spec.get("policy_error"),
        recent=recent,
        public_url=ectx.app.public_url if ectx.app else None,
    )
    body = checkrun.body(patch, view)
    api = _api(ectx, project)
    if known is None and ectx.retrying:
        own = api.check_runs(
            patch.patch_id, name=checkrun.NAME, app_id=ectx.app.app_id if ectx.app else None
        )
        # a session's run carries its ledger id; our neutral success on the SHA does not
        sessions = [r for r in own if r.get("external_id")]
        known = sessions[0]["id"] if sessions else None
    created = write_check_run(api, known, body)
    if created is not None or (known is not None and patch.known is None):
        with ectx.database.unit() as s:
            s.merge(
                CheckRunRef(
                    project_id=project, head_sha=patch.patch_id, check_run_id=created or known
                )
            )
    if stray_id is not None and stray_id != (created or known):
        _withdraw_neutral(ectx, api, project, patch.patch_id, stray_id, patch.pr_number)


def write_check_run(api: RepoAPI, known: int | None, body: dict[str, Any]) -> int | None:
    """Update our check run in place, or create it; the id of a new one, else None.

    A check run deleted on GitHub (404 on the update) is created again. A body
    GitHub refuses (422: a bug in what we sent, which no retry fixes) is sent
    once more reduced to the verdict, so the head still gets its gate.
    """
    try:
        if known is not None:
            try:
                api.update_check_run(known, {k: v for k, v in body.items() if k != "head_sha"})
                return None
            except GithubException as err:
                if err.status != 404:
                    raise
        return int(api.create_check_run(body)["id"])
    except GithubException as err:
        if err.status != 422 or body.get("output", {}).get("title") == REDUCED:
            raise
        return write_check_run(api, known, reduced(body))


REDUCED = "The full text of this check run was refused by GitHub"


def reduced(body: dict[str, Any]) -> dict[str, Any]:
    """The verdict alone: status, conclusion and a fixed title, no text, no buttons."""
    fields = ("name", "head_sha", "status", "conclusion", "external_id")
    keep = {k: body[k] for k in fields if k in body}
    summary = f"{body.get('output', {}).get('title', '')}"[:200] or "See the pull request."
    return {**keep, "output": {"title": REDUCED, "summary": summary}, "actions": []}


def react(ectx: EffectContext, spec: dict[str, Any]) -> None:
    _api(ectx, spec["project"]).react(spec["comment_id"], spec["content"])


def reply(ectx: EffectContext, spec: dict[str, Any]) -> None:
    api = _api(ectx, spec["project"])
    marker = reply_marker(ectx.delivery_id)
    if ectx.retrying and api.has_comment_with(spec["number"], marker):
        return
    api.comment(spec["number"], limits.fit(spec["body"], limits.COMMENT_BODY, tail=f"\n\n{marker}"))


def request_reviewers(ectx: EffectContext, spec: dict[str, Any]) -> None:
    if spec["logins"]:
        _api(ectx, spec["project"]).request_reviewers(spec["number"], spec["logins"])


def owner_reviews(ectx: EffectContext, spec: dict[str, Any]) -> None:
    """Ask a small covering set of code owners to review what still waits, never an
    author; a request made before (``ReviewRequest``) is not sent again, and one whose
    paths are covered since is withdrawn. Best effort (``effects``): GitHub refusing
    for good (403, 404, 422: not a collaborator, a team without access) is audited and
    skipped, and asked again at the next change."""
    project = spec["project"]
    with ectx.database.unit() as s:
        patch = get_patch(s, spec["ledger_id"])
        session = s.get(AgentSession, patch.session_id)
        cov = owners.patch_coverage(patch.meta)
        if session is None or patch.pr_number is None or cov is None or patch.state not in OPEN:
            return  # a superseded patch: the new one's effect asks
        number = patch.pr_number
        asked = list(
            s.scalars(
                select(ReviewRequest.reviewer)
                .where(ReviewRequest.project_id == project, ReviewRequest.pr_number == number)
                .order_by(ReviewRequest.created_at, ReviewRequest.reviewer)
            )
        )
        authors = [p.login for p in people.authors(session.meta)]
        want = list(owners.suggest(cov, authors, asked))
        # asked again already by this push (the stale-approval rule): not sent twice
        rerequested = {f"@{login.lower()}" for login in people.rerequested(patch.meta)}
    add = [o for o in want if o not in asked]
    drop = [o for o in asked if o not in want]
    api = _api(ectx, project)
    send = [o for o in add if o not in rerequested]
    if send:
        users, teams = owners.split(send)
        api.request_reviewers(number, users, teams)  # refused for good: audited, skipped
    if add:
        with ectx.database.unit() as s:
            for owner in add:
                s.merge(ReviewRequest(project_id=project, pr_number=number, reviewer=owner))
    if drop:
        users, teams = owners.split(drop)
        api.remove_requested_reviewers(number, users, teams)
        with ectx.database.unit() as s:
            for owner in drop:
                row = s.get(ReviewRequest, (project, number, owner))
                if row is not None:
                    s.delete(row)


def _gated(ectx: EffectContext, project: str, sha: str) -> Patch | None:
    """The open patch of a session whose head is ``sha``, if any: no neutral success there."""
    with ectx.database.unit() as s:
        return s.scalars(
            select(Patch)
            .where(
                Patch.project_id == project,
                Patch.patch_id == sha,
                Patch.state.not_in([str(state) for state in TERMINAL]),
            )
            .limit(1)
        ).first()


def _withdraw_neutral(
    ectx: EffectContext, api: RepoAPI, project: str, sha: str, run_id: int, pr: int | None
) -> None:
    """Turn our neutral success on a session's patch into a failing conclusion (one PATCH):
    a check run belongs to the SHA, so it would pass every PR with that head."""
    where = f"pull request #{pr}" if pr else "a minipipe session"
    api.update_check_run(
        run_id,
        {
            "status": "completed",
            "conclusion": "cancelled",
            "output": {
                "title": "Withdrawn: this commit is a session's patch",
                "summary": (
                    f"This commit is the head of {where}, a minipipe session. It passes only "
                    f"when that patch is approved: see its `{checkrun.NAME}` check run."
                ),
            },
            "actions": [],
        },
    )
    with ectx.database.unit() as s:
        row = s.get(NeutralCheckRun, (project, sha))
        if row is not None and row.check_run_id == run_id:
            row.withdrawn = True
    log.info("withdrew neutral check run %s on %s: it is a session's patch", run_id, sha[:12])


def neutral_check(ectx: EffectContext, spec: dict[str, Any]) -> None:
    """A PR that is not an agent session passes the required check at once, unless its
    head is an open patch of a session in the repository: that SHA passes only through
    the session's own check run (checked before and after posting, so a patch recorded
    meanwhile withdraws it)."""
    project, sha = spec["project"], spec["sha"]
    if _gated(ectx, project, sha) is not None:
        log.info("no neutral check on %s: it is an open session patch", sha[:12])
        return
    api = _api(ectx, project)
    body = {
        "name": checkrun.NAME,
        "head_sha": sha,
        "status": "completed",
        "conclusion": "success",
        "output": {
            "title": "Not an agent session",
            "summary": "This pull request is not a minipipe session: no review gate.",
        },
    }
    run_id: int | None = None
    if ectx.retrying:
        found = api.check_runs(sha, name=checkrun.NAME)
        if any(r.get("external_id") for r in found):
            return  # a session's run stands there
        run_id = found[0]["id"] if found else None
    if run_id is None:
        run_id = api.create_check_run(body)["id"]
    with ectx.database.unit() as s:
        s.merge(NeutralCheckRun(project_id=project, head_sha=sha, check_run_id=run_id))
    patch = _gated(ectx, project, sha)
    if patch is not None:
        _withdraw_neutral(ectx, api, project, sha, run_id, patch.pr_number)


def merge_group_check(ectx: EffectContext, spec: dict[str, Any]) -> None:
    api = _api(ectx, spec["project"])
    body = {
        "name": checkrun.NAME,
        "head_sha": spec["sha"],
        "status": "completed",
        "conclusion": spec["conclusion"],
        "output": {"title": spec["title"], "summary": spec["summary"]},
    }
    if ectx.retrying and api.check_runs(spec["sha"], name=checkrun.NAME):
        return
    api.create_check_run(limits.fit_check_run(body))


EXECUTORS = Executors(
    gate={
        "check_run": check_run,
        "publish": check_run,  # the kind's name before 0.2: deliveries may still carry it
        "neutral_check": neutral_check,
        "merge_group_check": merge_group_check,
    },
    best_effort={
        "react": react,
        "reply": reply,
        "request_reviewers": request_reviewers,
        "owner_reviews": owner_reviews,
    },
)
