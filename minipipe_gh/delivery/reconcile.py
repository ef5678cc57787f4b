"""Reconciliation: compare GitHub with the ledger for every open session PR, and repair.

Webhooks are edges and edges get lost, so this works level-triggered, as
Kubernetes controllers and Prow's tide do. Per repository it reads the open
pulls (one conditional request per 100 PRs: a 304 when nothing changed) and,
per open session PR, our check run on its head (conditional too). It finds:

- ``head``: the PR's head has no patch (its ``synchronize`` never came);
- ``check``: the head's ``minipipe/review`` is missing on GitHub, or says
  something other than the ledger;
- ``closed``: the PR was closed or merged without an event.

It repairs nothing itself: each finding becomes an internal delivery
(``minipipe.reconcile``) on the PR's order key, so the worker performs the
repair in order with the PR's other deliveries, never at the same time as one
of them. PRs with a delivery still pending are left to it (and looked at next
run). The repair's audit rows carry the source ``reconcile``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from github import GithubException
from sqlalchemy import select

from minipipe_gh.core import checkrun
from minipipe_gh.core.events import Event
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.gh import installations
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.repo import load_policy
from minipipe_gh.store import ledger
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for, wake_workers
from minipipe_gh.store.models import AgentSession, CheckRunRef, Delivery
from minipipe_gh.store.registry import new_id

log = logging.getLogger(__name__)
EVENT = "minipipe.reconcile"
SOURCE = "reconcile"
DELIVERY_PREFIX = "reconcile-"
OPEN_SESSIONS = (SessionState.CREATED, SessionState.ACTIVE, SessionState.PAUSED)


@dataclass(frozen=True)
class Repair:
    project: str
    pr_number: int
    session_id: str
    kind: str  # head | check | closed
    detail: str
    delivery_id: str | None = None  # the internal delivery that performs it


@dataclass
class Report:
    repositories: int = 0
    pulls: int = 0
    repairs: list[Repair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a repository or PR was not looked at

    def as_dict(self) -> dict[str, Any]:
        return {
            "repositories": self.repositories,
            "pulls": self.pulls,
            "repairs": [asdict(r) for r in self.repairs],
            "skipped": self.skipped,
        }


def order_key(project: str, number: int) -> str:
    return f"{project}#{number}"


def reconcile(database: Database, app: GitHubApp, *, repo: str | None = None) -> Report:
    """One pass over every open session PR (of ``repo`` only, if given)."""
    report = Report()
    with database.unit() as s:
        q = select(AgentSession).where(
            AgentSession.state.in_([str(x) for x in OPEN_SESSIONS]),
            AgentSession.pr_number.is_not(None),
        )
        by_project: dict[str, list[AgentSession]] = defaultdict(list)
        for session in s.scalars(q.order_by(AgentSession.session_id)):
            if repo is None or session.project_id.lower() == repo.lower():
                s.expunge(session)
                by_project[session.project_id].append(session)
    for project, sessions in sorted(by_project.items()):
        try:
            _repository(database, app, project, sessions, report)
        except GithubException as err:
            report.skipped.append(f"{project}: GitHub answered {err.status}")
            log.warning("reconciling %s failed: GitHub answered %s", project, err.status)
    for repair in report.repairs:
        log.info(
            "reconcile %s#%d: %s (%s)", repair.project, repair.pr_number, repair.kind, repair.detail
        )
    return report


def _installation(
    database: Database, app: GitHubApp, project: str, sessions: list[AgentSession]
) -> int | None:
    for session in sessions:
        if session.installation_id:
            return session.installation_id
    found = installations.look_up(database, app, project)
    return found[0] if found else None


def _repository(
    database: Database,
    app: GitHubApp,
    project: str,
    sessions: list[AgentSession],
    report: Report,
) -> None:
    installation_id = _installation(database, app, project, sessions)
    if installation_id is None:
        report.skipped.append(f"{project}: the app is not installed there")
        return
    report.repositories += 1
    api = app.repo(installation_id, project)
    pulls = {p["number"]: p for p in api.open_pulls()}
    policy_of: list[tuple[Any, str | None]] = []  # read when first needed (cached a while)
    busy = _pending_keys(database, [order_key(project, s.pr_number or 0) for s in sessions])
    found: list[Repair] = []
    for session in sessions:
        number = int(session.pr_number or 0)
        if order_key(project, number) in busy:
            report.skipped.append(f"{project}#{number}: a delivery is pending")
            continue
        report.pulls += 1
        pr = pulls.get(number)
        if pr is None:
            found.append(Repair(project, number, session.session_id, "closed", "PR not open"))
            continue
        sha = pr["head"]["sha"]
        with database.unit() as s:
            patch = ledger.find_patch(s, project, number, sha)
            if patch is not None:
                s.expunge(patch)
            ref = s.get(CheckRunRef, (project, sha))
            ref_id = ref.check_run_id if ref else None
        if patch is None:
            found.append(
                Repair(project, number, session.session_id, "head", f"head {sha[:12]} not recorded")
            )
            continue
        runs = api.own_check_runs(sha, name=checkrun.NAME, app_id=app.app_id)
        if not policy_of:
            policy_of.append(load_policy(app, api, None))
        policy, error = policy_of[0]
        view = checkrun.View.of(
            patch,
            session.meta,
            required_approvals=policy.required_approvals,
            policy_error=error,
            public_url=app.public_url,
        )
        want = checkrun.body(patch, view)
        want_says = (want["status"], want.get("conclusion"))
        # the session's own run carries its ledger id (a neutral or withdrawn one does not)
        runs = sorted(
            (r for r in runs if r.get("external_id")),
            key=lambda r: (r.get("external_id") != patch.ledger_id, r["id"] != ref_id),
        )
        if not runs:
            found.append(
                Repair(project, number, session.session_id, "check", f"no check run on {sha[:12]}")
            )
            continue
        ours = runs[0]
        says = (ours.get("status"), ours.get("conclusion"))
        if says != want_says:
            found.append(
                Repair(
                    project,
                    number,
                    session.session_id,
                    "check",
                    f"check run says {_say(says)}, the ledger {_say(want_says)}",
                )
            )
        if ref_id != ours["id"]:
            with database.unit() as s:  # ours on GitHub: update it in place from now on
                s.merge(CheckRunRef(project_id=project, head_sha=sha, check_run_id=ours["id"]))
    report.repairs.extend(_enqueue(database, installation_id, found))


def _say(pair: tuple[Any, Any]) -> str:
    return "/".join(str(x) for x in pair if x)


def _pending_keys(database: Database, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    with database.unit() as s:
        rows = s.scalars(
            select(Delivery.order_key).where(
                Delivery.order_key.in_(keys), Delivery.status.in_(("queued", "effects"))
            )
        )
        return {k for k in rows if k}


def _enqueue(database: Database, installation_id: int, found: list[Repair]) -> list[Repair]:
    """One internal delivery per repair, on the PR's order key."""
    rows, out = [], []
    for repair in found:
        event = Event(
            delivery_id=f"{DELIVERY_PREFIX}{new_id()}",
            name=EVENT,
            payload={
                "action": repair.kind,
                "pr_number": repair.pr_number,
                "session_id": repair.session_id,
                "reason": repair.detail,
                "repository": {"full_name": repair.project, "default_branch": None},
                "installation": {"id": installation_id},
            },
            headers={},
        )
        row = row_for(event)
        row["order_key"] = order_key(repair.project, repair.pr_number)
        rows.append(row)
        out.append(
            Repair(
                repair.project,
                repair.pr_number,
                repair.session_id,
                repair.kind,
                repair.detail,
                event.delivery_id,
            )
        )
    if rows and insert_new(database.engine, rows):
        wake_workers(database.url)
    return out
