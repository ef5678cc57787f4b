"""What a state machine is: a name, a states enum and one table of legal moves.

The tables themselves live in ``session_states`` and ``patch_states``; this
module only knows how to look a move up in one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from minipipe_gh.core.errors import IllegalTransition

S = TypeVar("S", bound=enum.StrEnum)


@dataclass(frozen=True)
class Machine(Generic[S]):
    entity: str
    states: type[S]
    table: dict[S, frozenset[S]]

    @property
    def terminal(self) -> frozenset[S]:
        return frozenset(s for s, targets in self.table.items() if not targets)

    def check(self, entity_id: str, current: str, requested: str) -> S:
        """Return the requested state if the table allows the move, else raise."""
        src = self.states(current)
        try:
            dst = self.states(requested)
        except ValueError:
            raise IllegalTransition(self.entity, entity_id, current, requested) from None
        if dst not in self.table[src]:
            raise IllegalTransition(self.entity, entity_id, src.value, dst.value)
        return dst

    def legal_pairs(self) -> list[tuple[S, S]]:
        return [(src, dst) for src, targets in self.table.items() for dst in sorted(targets)]

    def illegal_pairs(self) -> list[tuple[S, S]]:
        return [
            (src, dst) for src in self.states for dst in self.states if dst not in self.table[src]
        ]
