"""GitHub writes performed after a delivery's database changes commit.

Each kind is registered once by the feature module that owns it. Executors
must be idempotent: a retry (``ectx.retrying``) performs them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from github import Github

from .db import Database
from .github_app import GitHubApp

Executor = Callable[["EffectContext", dict[str, Any]], None]
_EXECUTORS: dict[str, Executor] = {}


@dataclass
class EffectContext:
    database: Database
    app: GitHubApp | None
    installation_id: int | None
    delivery_id: str
    retrying: bool

    @cached_property
    def gh(self) -> Github:
        if self.app is None or self.installation_id is None:
            raise RuntimeError("this delivery has no installation to act for")
        return self.app.client(self.installation_id)


def executor(kind: str) -> Callable[[Executor], Executor]:
    def add(fn: Executor) -> Executor:
        if kind in _EXECUTORS and _EXECUTORS[kind] is not fn:
            raise ValueError(f"effect {kind!r} registered twice")
        _EXECUTORS[kind] = fn
        return fn

    return add


def perform(ectx: EffectContext, effects: list[dict[str, Any]]) -> None:
    for spec in effects:
        kind = spec.get("kind")
        fn = _EXECUTORS.get(str(kind))
        if fn is None:
            raise LookupError(f"no executor for effect {kind!r}")
        fn(ectx, spec)
