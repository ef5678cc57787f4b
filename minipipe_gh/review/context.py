"""What a handler gets: the event, a database session, the installation's client, a logger.

GitHub *writes* are not made by handlers directly: a handler records an effect
(``ctx.effect(...)``) that the worker performs after the handler's database
changes commit, so no database lock is held across a network call and a retry
re-runs only the (idempotent) effects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from minipipe_gh.core.events import Event
from minipipe_gh.gh.client import GitHubApp


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

    def effect(self, kind: str, **args: Any) -> None:
        """Ask the worker to perform a GitHub write once this delivery's changes commit."""
        self.effects.append({"kind": kind, **args})
