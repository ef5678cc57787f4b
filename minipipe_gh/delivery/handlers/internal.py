"""Internal deliveries: check-run updates asked for by the API, CLI or dashboard."""

from __future__ import annotations

from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.review.notify import EVENT
from minipipe_gh.review.workflow import Repo, publish
from minipipe_gh.store import ledger

router = Router()


@router.register(EVENT)
def on_publish(ctx: Context) -> None:
    patch = ledger.find_patch_by_id(ctx.db, ctx.payload.get("ledger_id", ""))
    if patch is None:
        return
    repo = Repo.of(ctx)
    policy, error = repo.policy()
    publish(ctx, repo, patch, policy, error)
