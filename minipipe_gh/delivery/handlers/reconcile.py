"""Repairs found by reconciliation, performed in order with the PR's other deliveries.

The PR is read again here, at its turn: what the reconciler saw may be older
than a delivery handled since. An open PR goes through the ``pull_request``
handler as if its ``synchronize`` (or, for a session never opened, its
``opened``) had arrived; a closed one as its ``closed``. The head's check run
is then written again unless that already happened. Each repair is one
audit row with the source ``reconcile``, and so is every move it makes.
"""

from __future__ import annotations

from minipipe_gh.core.events import Event
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.delivery.handlers import pulls
from minipipe_gh.delivery.reconcile import EVENT, SOURCE
from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.review.refresh import refresh_check_run
from minipipe_gh.store import audit, ledger, registry

router = Router()


@router.register(EVENT)
def on_reconcile(ctx: Context) -> None:
    repo = ctx.repo
    number = int(ctx.payload["pr_number"])
    session = registry.find_by_pr(ctx.db, repo.project, number)
    if session is None:
        return
    pr = repo.api.pull(number)
    if pr.get("state") == "open":
        action = "opened" if session.state == SessionState.CREATED else "synchronize"
    else:
        action = "closed"
    as_pr_event = Event(
        ctx.event.delivery_id,
        "pull_request",
        {**ctx.payload, "action": action, "number": number, "pull_request": pr},
        ctx.event.headers,
    )
    sub = Context(as_pr_event, ctx.db, ctx.app, ctx.log, attempt=ctx.attempt, effects=ctx.effects)
    pulls.on_pull_request(sub)
    patch = ledger.find_patch(ctx.db, repo.project, number, pr["head"]["sha"])
    refreshed = {e.get("ledger_id") for e in ctx.effects if e.get("kind") == "check_run"}
    if action != "closed" and patch is not None and patch.ledger_id not in refreshed:
        policy, error = repo.policy()
        refresh_check_run(ctx, repo, patch, policy, error)
    audit.record(
        ctx.db,
        entity="patch" if patch is not None else "session",
        entity_id=patch.ledger_id if patch is not None else session.session_id,
        project_id=repo.project,
        actor="minipipe",
        source=SOURCE,
        outcome="noted",
        reason=f"reconcile ({ctx.payload.get('action')}): {ctx.payload.get('reason')}; "
        f"handled as pull_request {action}",
        details={"delivery": ctx.event.delivery_id, "pr_number": number},
    )
