"""Effect executors: the GitHub writes, performed after a delivery's changes commit.

Each is idempotent, so a retried delivery never posts twice: the check run is
updated in place (its id is kept per SHA; on a retry with no id kept we look
for ours before creating one), reactions are idempotent on GitHub, and a reply
carries a hidden marker we look for before posting again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from . import checkrun, limits
from .effects import EffectContext, executor
from .github_api import RepoAPI
from .ledger import get_patch
from .models import AgentSession, AuditEntry, CheckRunRef
from .patch_states import PatchState

RECENT = 5


def _api(ectx: EffectContext, project: str) -> RepoAPI:
    assert ectx.app is not None and ectx.installation_id is not None
    return ectx.app.repo(ectx.installation_id, project)


@executor("publish")
def publish_check_run(ectx: EffectContext, spec: dict[str, Any]) -> None:
    project = spec["project"]
    with ectx.database.unit(write=False) as s:
        patch = get_patch(s, spec["ledger_id"])
        session = s.get(AgentSession, patch.session_id)
        recent = list(
            s.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity == "patch", AuditEntry.entity_id == patch.ledger_id)
                .order_by(AuditEntry.id.desc())
                .limit(RECENT)
            )
        )[::-1]
        ref = s.get(CheckRunRef, (project, patch.patch_id))
        known = ref.check_run_id if ref else None
        hold = session.meta.get("hold") if session else None
        if patch.state in (PatchState.DROPPED, PatchState.ROLLED_BACK):
            hold = None
        view = checkrun.View(
            required_approvals=spec.get("required_approvals", 1),
            hold=hold,
            policy_error=spec.get("policy_error"),
            stale_approvals=patch.meta.get("stale_approvals", []),
            recent=recent,
        )
        body = checkrun.body(patch, view)
    api = _api(ectx, project)
    if known is None and ectx.retrying:
        own = api.check_runs(
            patch.patch_id, name=checkrun.NAME, app_id=ectx.app.app_id if ectx.app else None
        )
        known = own[0]["id"] if own else None
    if known is not None:
        update = {k: v for k, v in body.items() if k != "head_sha"}
        api.update_check_run(known, update)
        created = None
    else:
        created = api.create_check_run(body)["id"]
    if created is not None or (known is not None and ref is None):
        with ectx.database.unit() as s:
            s.merge(
                CheckRunRef(
                    project_id=project, head_sha=patch.patch_id, check_run_id=created or known
                )
            )


@executor("react")
def react(ectx: EffectContext, spec: dict[str, Any]) -> None:
    _api(ectx, spec["project"]).react(spec["comment_id"], spec["content"])


def reply_marker(delivery_id: str) -> str:
    return f"<!-- minipipe:reply={delivery_id} -->"


@executor("reply")
def reply(ectx: EffectContext, spec: dict[str, Any]) -> None:
    api = _api(ectx, spec["project"])
    marker = reply_marker(ectx.delivery_id)
    if ectx.retrying and api.has_comment_with(spec["number"], marker):
        return
    api.comment(spec["number"], limits.fit(spec["body"], limits.COMMENT_BODY, tail=f"\n\n{marker}"))


@executor("request_reviewers")
def request_reviewers(ectx: EffectContext, spec: dict[str, Any]) -> None:
    if spec["logins"]:
        _api(ectx, spec["project"]).request_reviewers(spec["number"], spec["logins"])


@executor("neutral_check")
def neutral_check(ectx: EffectContext, spec: dict[str, Any]) -> None:
    """A PR that is not an agent session passes the required check at once."""
    api = _api(ectx, spec["project"])
    body = {
        "name": checkrun.NAME,
        "head_sha": spec["sha"],
        "status": "completed",
        "conclusion": "success",
        "output": {
            "title": "Not an agent session",
            "summary": "This pull request is not a minipipe session: no review gate.",
        },
    }
    if ectx.retrying and api.check_runs(spec["sha"], name=checkrun.NAME):
        return
    api.create_check_run(body)


@executor("merge_group_check")
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
