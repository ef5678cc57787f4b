"""Rewriting a patch's check run: always by the worker, after a delivery commits.

A handler asks for it with ``refresh_check_run`` (a ``check_run`` effect). A decision
made off GitHub (API, CLI, dashboard) asks with ``queue_refresh``: an internal
``minipipe.refresh_check_run`` delivery in the same inbox, keyed to the PR, so the
check run is rewritten in order with the PR's other events and with the same retries,
never from inside a web request.
"""

from __future__ import annotations

from minipipe_gh.core import owners, people
from minipipe_gh.core.authz import PullFacts, needs_reviewer_list
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.events import Event
from minipipe_gh.core.policy import Policy
from minipipe_gh.gh.repo import Repo
from minipipe_gh.review.context import Context
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for, wake_workers
from minipipe_gh.store.models import AgentSession, Patch
from minipipe_gh.store.registry import new_id

EVENT = "minipipe.refresh_check_run"
# the name it had before 0.2: such deliveries may still wait in an inbox after an upgrade
LEGACY_EVENT = "minipipe.publish"


def queue_refresh(database: Database, session: AgentSession, patch: Patch) -> str | None:
    """Queue a check-run refresh for ``patch``; None if the session has no PR or installation."""
    installation_id = session.installation_id
    if session.pr_number is None or installation_id is None:
        return None
    event = Event(
        delivery_id=f"internal-{new_id()}",
        name=EVENT,
        payload={
            "action": "refresh",
            "ledger_id": patch.ledger_id,
            "pr_number": session.pr_number,
            "repository": {"full_name": session.project_id, "default_branch": None},
            "installation": {"id": installation_id},
        },
        headers={},
    )
    if insert_new(database.engine, [row_for(event)]):
        wake_workers(database.url)
    return event.delivery_id


def refresh_check_run(
    ctx: Context, repo: Repo, patch: Patch, policy: Policy, error: str | None
) -> None:
    """Ask for the patch's check run to be rewritten once this delivery commits.

    The patch keeps the approvals count and the reviewer list its check run was last written with,
    so the API, the dashboard and the CLI say what the check run says without reading
    the policy."""
    stamped = people.with_deciders(
        patch.meta, policy.required_approvals, deciders(policy, patch.risk)
    )
    if stamped != patch.meta:
        patch.meta = stamped
    ctx.effect(
        "check_run",
        project=repo.project,
        ledger_id=patch.ledger_id,
        required_approvals=policy.required_approvals,
        policy_error=error,
    )
    if owners.META in patch.meta and patch.pr_number is not None:
        # after the check run, best effort: ask a covering set of owners to review
        ctx.effect("owner_reviews", project=repo.project, ledger_id=patch.ledger_id)


def deciders(policy: Policy, risk: str | None) -> list[str]:
    """The configured reviewers (logins and ``org/team``) when only they may decide this
    patch (``authz.needs_reviewer_list``); empty when anyone with the permission may."""
    facts = PullFacts(author=None, session_bot=None, risk=risk)
    if not needs_reviewer_list(Verb.APPROVE, policy, facts):
        return []
    return [*policy.reviewers, *policy.reviewer_teams]
