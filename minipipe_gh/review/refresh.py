"""A check-run refresh for decisions made off GitHub (API, CLI, dashboard).

They enqueue an internal ``minipipe.refresh_check_run`` delivery in the same inbox,
keyed to the PR, so the check run is rewritten in order with the PR's other events
and with the same retries, instead of from inside a web request.
"""

from __future__ import annotations

from minipipe_gh.core.events import Event
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for
from minipipe_gh.store.models import AgentSession, Patch
from minipipe_gh.store.registry import new_id

EVENT = "minipipe.refresh_check_run"
# the name it had before 0.2: such deliveries may still wait in an inbox after an upgrade
LEGACY_EVENT = "minipipe.publish"


def queue_refresh(database: Database, session: AgentSession, patch: Patch) -> str | None:
    """Queue a check-run refresh for ``patch``; None if the session has no PR or installation."""
    installation_id = session.meta.get("installation_id")
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
    insert_new(database.engine, [row_for(event)])
    return event.delivery_id
