"""Keep the table of installations and their repositories from GitHub's events.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#installation
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from minipipe_gh.delivery.routing import Router
from minipipe_gh.review.context import Context
from minipipe_gh.store.models import Installation, InstalledRepository, utcnow

router = Router()


def _upsert_installation(ctx: Context) -> Installation:
    data = ctx.payload["installation"]
    inst = ctx.db.get(Installation, data["id"])
    account = data.get("account") or {}
    if inst is None:
        inst = Installation(installation_id=data["id"], account=account.get("login", "?"))
        ctx.db.add(inst)
    inst.account = account.get("login", inst.account)
    inst.account_type = account.get("type")
    inst.repository_selection = data.get("repository_selection")
    inst.updated_at = utcnow()
    return inst


def _add_repos(ctx: Context, installation_id: int, repos: list[dict[str, Any]]) -> None:
    for repo in repos:
        row = ctx.db.get(InstalledRepository, repo["id"])
        if row is None:
            row = InstalledRepository(repository_id=repo["id"], installation_id=installation_id)
            ctx.db.add(row)
        row.installation_id = installation_id
        row.full_name = repo["full_name"]
        row.private = bool(repo.get("private"))


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
def installation_present(ctx: Context) -> None:
    inst = _upsert_installation(ctx)
    inst.suspended_at = None
    ctx.db.flush()
    _add_repos(ctx, inst.installation_id, ctx.payload.get("repositories") or [])
    ctx.log.info("installation %s on %s is active", inst.installation_id, inst.account)


@router.register("installation", action="suspend")
def installation_suspended(ctx: Context) -> None:
    inst = _upsert_installation(ctx)
    inst.suspended_at = utcnow()
    ctx.log.info("installation %s suspended", inst.installation_id)


@router.register("installation", action="deleted")
def installation_deleted(ctx: Context) -> None:
    ident = ctx.payload["installation"]["id"]
    ctx.db.execute(delete(InstalledRepository).where(InstalledRepository.installation_id == ident))
    ctx.db.execute(delete(Installation).where(Installation.installation_id == ident))
    ctx.log.info("installation %s deleted", ident)


@router.register("installation_repositories")
def repositories_changed(ctx: Context) -> None:
    inst = _upsert_installation(ctx)
    ctx.db.flush()
    _add_repos(ctx, inst.installation_id, ctx.payload.get("repositories_added") or [])
    removed = [r["id"] for r in ctx.payload.get("repositories_removed") or []]
    if removed:
        ctx.db.execute(
            delete(InstalledRepository).where(InstalledRepository.repository_id.in_(removed))
        )
