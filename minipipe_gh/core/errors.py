"""One error tree for the core, so every edge (API, CLI, webhook) maps it in one place.

``Refused`` errors are refusals a user should hear about; they carry what the
audit trail must record about the attempt.
"""

from __future__ import annotations

from typing import Any


class MinipipeError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"


class NotFound(MinipipeError):
    code = "not_found"


class Invalid(MinipipeError):
    """Bad input; ``field`` names what was wrong."""

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(MinipipeError):
    """Someone else changed the entity first (optimistic locking)."""

    code = "conflict"


class Refused(MinipipeError):
    """An attempt the rules refuse; the audit trail keeps a row of it."""

    code = "refused"

    def __init__(self, message: str, *, audit: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.audit = audit


class IllegalTransition(Refused):
    """A move that the entity's transition table does not allow."""

    code = "illegal_transition"

    def __init__(
        self, entity: str, entity_id: str, current: str, requested: str, **kw: Any
    ) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.current = current
        self.requested = requested
        move = (
            f"is already {current}"
            if current == requested
            else f"cannot move from {current} to {requested}"
        )
        super().__init__(f"{entity} {entity_id} {move}", **kw)


class PermissionDenied(Refused):
    code = "forbidden"


class ConfigError(MinipipeError):
    """A setting is missing or malformed; the message names it and the fix."""

    code = "config"
