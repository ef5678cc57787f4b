"""Changes made outside a webhook (API, CLI, dashboard) reach GitHub through the worker.

They enqueue an internal ``minipipe.publish`` delivery in the same inbox, keyed
to the PR, so the check run is updated in order with the PR's other events and
with the same retries, instead of from inside a web request.
"""

from __future__ import annotations

from minipipe_gh.core.events import Event
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import Poke, insert_new, row_for
from minipipe_gh.store.models import AgentSession, Patch
from minipipe_gh.store.registry import new_id

EVENT = "minipipe.publish"
_POKES: dict[str, Poke] = {}  # one per database URL: wakes the workers at once


def publish_later(database: Database, session: AgentSession, patch: Patch) -> str | None:
    """Queue a check-run update for ``patch``; None if the session has no PR or installation."""
    installation_id = session.meta.get("installation_id")
    if session.pr_number is None or installation_id is None:
        return None
    event = Event(
        delivery_id=f"internal-{new_id()}",
        name=EVENT,
        payload={
            "action": "publish",
            "ledger_id": patch.ledger_id,
            "pr_number": session.pr_number,
            "repository": {"full_name": session.project_id, "default_branch": None},
            "installation": {"id": installation_id},
        },
        headers={},
    )
    if insert_new(database.engine, [row_for(event)]):
        _POKES.setdefault(database.url, Poke(database.url))()
    return event.delivery_id
