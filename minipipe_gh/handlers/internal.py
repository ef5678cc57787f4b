"""Internal deliveries: check-run updates asked for by the API, CLI or dashboard."""

from __future__ import annotations

from .. import ledger
from ..context import Context
from ..notify import EVENT
from ..routing import Router
from ..workflow import Repo, publish

router = Router()


@router.register(EVENT)
def on_publish(ctx: Context) -> None:
    patch = ledger.find_patch_by_id(ctx.db, ctx.payload.get("ledger_id", ""))
    if patch is None:
        return
    repo = Repo.of(ctx)
    policy, error = repo.policy()
    publish(ctx, repo, patch, policy, error)
