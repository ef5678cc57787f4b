"""Recovery of missed deliveries: GitHub never redelivers by itself.

The app reads its own webhook delivery log (``GET /app/hook/deliveries``, app
JWT, newest first, cursor-paginated) back to the window and asks for a
redelivery (``POST /app/hook/deliveries/{id}/attempts``) of every delivery
GitHub marks failed whose GUID the inbox lacks and that has no later
successful attempt. The redelivery arrives with the same GUID and goes through
the normal verified path. Each run is bounded (pages read, redeliveries asked);
a run that stops early leaves the rest to the next one.

https://docs.github.com/en/rest/apps/webhooks#list-deliveries-for-an-app-webhook
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Delivery, utcnow

log = logging.getLogger(__name__)
WINDOW = timedelta(hours=72)  # how long GitHub keeps the log and redelivers
MAX_PAGES = 20
MAX_REDELIVERIES = 50
ASK_AGAIN_AFTER = timedelta(minutes=15)  # a redelivery asked for may take a while to land
OVERLAP = timedelta(minutes=10)  # later runs read back past the newest entry of the last


@dataclass
class RecoveryMemo:
    """What one process's earlier runs saw: how far back the log was read, and what was
    asked for when (the log shows an asked-for redelivery only once GitHub made it)."""

    newest_seen: datetime | None = None
    asked_at: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Recovery:
    examined: int = 0
    pages: int = 0
    failed: int = 0  # GUIDs GitHub failed to deliver, in the window read
    in_inbox: list[str] = field(default_factory=list)  # failed on GitHub, but stored here
    asked: list[str] = field(default_factory=list)  # GUIDs asked to be redelivered
    left: int = 0  # not asked for this run: over the bound, or asked for recently

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "pages": self.pages,
            "failed": self.failed,
            "in_inbox": self.in_inbox,
            "asked": self.asked,
            "left": self.left,
        }


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def succeeded(entry: dict[str, Any]) -> bool:
    code = entry.get("status_code")
    return isinstance(code, int) and 200 <= code < 300


def recover(
    database: Database,
    app: GitHubApp,
    *,
    since: timedelta = WINDOW,
    memo: RecoveryMemo | None = None,
    max_pages: int = MAX_PAGES,
    max_redeliveries: int = MAX_REDELIVERIES,
    now: datetime | None = None,
) -> Recovery:
    now = now or utcnow()
    cutoff = now - min(since, WINDOW)
    if memo is not None and memo.newest_seen is not None:
        cutoff = max(cutoff, memo.newest_seen - OVERLAP)
    api = app.as_app()
    result = Recovery()
    by_guid: dict[str, list[dict[str, Any]]] = {}
    order: list[str] = []
    newest: datetime | None = None
    cursor: str | None = None
    complete = False  # read back to the cutoff (or the log's end), not stopped by the bound
    while result.pages < max_pages:
        page, cursor = api.hook_deliveries(cursor)
        result.pages += 1
        done = not page or cursor is None
        for entry in page:
            at = parse_time(entry.get("delivered_at"))
            if at is not None and at < cutoff:
                done = True
                break
            if at is not None and (newest is None or at > newest):
                newest = at
            result.examined += 1
            guid = str(entry.get("guid") or "")
            if not guid:
                continue
            if guid not in by_guid:
                by_guid[guid] = []
                order.append(guid)
            by_guid[guid].append(entry)
        if done:
            complete = True
            break
    failed = [g for g in order if not any(succeeded(e) for e in by_guid[g])]
    result.failed = len(failed)
    held = _in_inbox(database, failed)
    result.in_inbox = [g for g in failed if g in held]
    for guid in failed:
        if guid in held:
            continue
        last = memo.asked_at.get(guid) if memo else None
        if len(result.asked) >= max_redeliveries or (last and now - last < ASK_AGAIN_AFTER):
            result.left += 1
            continue
        original = by_guid[guid][-1]  # the oldest attempt of it in the log
        api.redeliver(int(original["id"]))
        result.asked.append(guid)
        if memo is not None:
            memo.asked_at[guid] = now
    if memo is not None:
        if complete and newest is not None and result.left == 0:
            memo.newest_seen = max(memo.newest_seen or newest, newest)
        for guid, at in list(memo.asked_at.items()):
            if now - at > WINDOW:
                del memo.asked_at[guid]
    if result.asked:
        log.info("asked GitHub to redeliver %s", ", ".join(result.asked))
    return result


def _in_inbox(database: Database, guids: list[str]) -> set[str]:
    held: set[str] = set()
    with database.unit() as s:
        for i in range(0, len(guids), 500):
            chunk = guids[i : i + 500]
            held.update(
                s.scalars(select(Delivery.delivery_id).where(Delivery.delivery_id.in_(chunk)))
            )
    return held
