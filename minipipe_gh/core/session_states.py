"""The session state machine: every legal move lives in this one table (h11 style)."""

from __future__ import annotations

import enum

from minipipe_gh.core.machine import Machine


class SessionState(enum.StrEnum):
    CREATED = "created"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


S = SessionState

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.CREATED: frozenset({S.ACTIVE, S.FAILED}),
    S.ACTIVE: frozenset({S.PAUSED, S.COMPLETED, S.FAILED}),
    S.PAUSED: frozenset({S.ACTIVE, S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}

MACHINE = Machine("session", SessionState, TRANSITIONS)
TERMINAL = MACHINE.terminal
OPEN = frozenset(SessionState) - TERMINAL
