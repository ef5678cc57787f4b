"""The patch state machine: every legal move lives in this one table (h11 style).

This table only says which moves exist. What triggers them is policy and lives in
``review/``: checks, guardrails and pushes in ``patches.py``, commands in
``decisions.py``; every move goes through ``store/transitions.py``.
"""

from __future__ import annotations

import enum

from minipipe_gh.core.machine import Machine


class PatchState(enum.StrEnum):
    CREATED = "created"
    VALIDATED = "validated"
    QUARANTINED = "quarantined"
    AWAITING_REVIEW = "awaiting_review"
    QUEUED = "queued"
    APPLIED = "applied"
    VERIFIED = "verified"
    COMMITTED = "committed"
    DROPPED = "dropped"
    ROLLED_BACK = "rolled_back"


P = PatchState

TRANSITIONS: dict[PatchState, frozenset[PatchState]] = {
    P.CREATED: frozenset({P.VALIDATED, P.QUARANTINED, P.DROPPED}),
    P.VALIDATED: frozenset({P.AWAITING_REVIEW, P.QUEUED, P.DROPPED}),
    P.AWAITING_REVIEW: frozenset({P.QUEUED, P.DROPPED}),
    P.QUEUED: frozenset({P.AWAITING_REVIEW, P.APPLIED, P.DROPPED}),
    P.QUARANTINED: frozenset({P.VALIDATED, P.DROPPED}),
    P.APPLIED: frozenset({P.VERIFIED, P.ROLLED_BACK}),
    P.VERIFIED: frozenset({P.COMMITTED}),
    P.DROPPED: frozenset(),
    P.ROLLED_BACK: frozenset(),
    P.COMMITTED: frozenset(),
}

MACHINE = Machine("patch", PatchState, TRANSITIONS)
TERMINAL = MACHINE.terminal
# Still open to review or merge: a new push supersedes a patch in one of these.
OPEN = frozenset({P.CREATED, P.VALIDATED, P.QUARANTINED, P.AWAITING_REVIEW, P.QUEUED})
