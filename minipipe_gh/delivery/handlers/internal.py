"""Internal deliveries: check-run refreshes asked for by the API, CLI or dashboard."""

from __future__ import annotations

from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.review.refresh import EVENT, LEGACY_EVENT, refresh_check_run
from minipipe_gh.store import ledger

router = Router()


@router.register(EVENT)
@router.register(LEGACY_EVENT)
def on_refresh_request(ctx: Context) -> None:
    patch = ledger.find_patch_by_id(ctx.db, ctx.payload.get("ledger_id", ""))
    if patch is None:
        return
    repo = ctx.repo
    policy, error = repo.policy()
    refresh_check_run(ctx, repo, patch, policy, error)
