"""What a handler gets: the event, a database session, the installation's client, a logger.

GitHub *writes* are not made by handlers directly: a handler records an effect
(``ctx.effect(...)``) that the worker performs after the handler's database
changes commit, so no database lock is held across a network call and a retry
re-runs only the (idempotent) effects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy.orm import Session

from minipipe_gh.core.events import Event
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.repo import Repo


@dataclass
class Context:
    event: Event
    db: Session
    app: GitHubApp | None
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    attempt: int = 1
    effects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        return self.event.payload

    @cached_property
    def repo(self) -> Repo:
        """The repository the delivery concerns (its client and policy, cached)."""
        repo = self.payload["repository"]
        return Repo(
            self.app, self.event.installation_id, repo["full_name"], repo.get("default_branch")
        )

    @property
    def source(self) -> str:
        """What the audit trail names as the source of this delivery's changes."""
        if self.event.delivery_id.startswith("reconcile-"):  # ids GitHub never sends: ours
            return "reconcile"
        return f"delivery:{self.event.delivery_id}"

    def effect(self, kind: str, **args: Any) -> None:
        """Ask the worker to perform a GitHub write once this delivery's changes commit."""
        self.effects.append({"kind": kind, **args})
