"""GitHub writes performed after a delivery's database changes commit.

The kinds and their executors are one table (``Executors``): ``gh/writes.py`` holds
the app's, and the runtime hands it to the worker. Executors must be idempotent: a
write whose answer was lost (``ectx.retrying``) may be performed again.

Two classes of write, as the check run is the gate:

- **gate** writes (the check run) go first, in the order recorded, and a
  failure stops the delivery for a retry, except a 422: what we sent is
  wrong and sending it again cannot help, so it is audited and left to
  reconciliation instead of holding back the PR's next deliveries;
- **best-effort** writes (a reaction, a reply, a review request) go after.
  One GitHub refuses for good (403, 404, 422 that is no rate limit) is audited,
  logged, counted and skipped: it never keeps a head without its check nor
  kills the delivery.

Each write's outcome is kept in its spec (``"result": "done" | "refused"``)
and saved with the delivery before the next write (``Progress``), so a retry
performs only the writes that have not succeeded yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from github import Github, GithubException, RateLimitExceededException

from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.store.db import Database

log = logging.getLogger(__name__)

Executor = Callable[["EffectContext", dict[str, Any]], None]
Progress = Callable[[list[dict[str, Any]]], None]
REFUSED_FOR_GOOD = (403, 404, 422)
FINISHED = ("done", "refused")


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


@dataclass(frozen=True)
class Executors:
    """Every effect kind the worker can perform, and which of them are best-effort."""

    gate: Mapping[str, Executor]
    best_effort: Mapping[str, Executor]

    def __post_init__(self) -> None:
        both = set(self.gate) & set(self.best_effort)
        if both:
            raise ValueError(f"effect kinds listed as both gate and best-effort: {sorted(both)}")

    def of(self, spec: Mapping[str, Any]) -> Executor:
        kind = str(spec.get("kind"))
        fn = self.gate.get(kind) or self.best_effort.get(kind)
        if fn is None:
            raise LookupError(f"no executor for effect {kind!r}")
        return fn

    def is_best_effort(self, spec: Mapping[str, Any]) -> bool:
        return str(spec.get("kind")) in self.best_effort

    def ordered(self, effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Gate writes first, each class in the order the handlers recorded it."""
        gate = [e for e in effects if not self.is_best_effort(e)]
        return gate + [e for e in effects if self.is_best_effort(e)]

    def refused_for_good(self, spec: Mapping[str, Any], err: BaseException) -> bool:
        """A refusal no retry can fix: 403/404/422 for a best-effort write, 422 for a gate
        write. Rate limits (a 403 with ``Retry-After`` or no requests left) are not."""
        if not isinstance(err, GithubException) or isinstance(err, RateLimitExceededException):
            return False
        headers = {k.lower(): v for k, v in (err.headers or {}).items()}
        if "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0":
            return False
        return err.status in (REFUSED_FOR_GOOD if self.is_best_effort(spec) else (422,))

    def with_kinds(
        self,
        gate: Mapping[str, Executor] | None = None,
        best_effort: Mapping[str, Executor] | None = None,
    ) -> Executors:
        """This table plus more kinds (a test's own)."""
        return Executors({**self.gate, **(gate or {})}, {**self.best_effort, **(best_effort or {})})


def pending(effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in effects if e.get("result") not in FINISHED]


def describe(err: GithubException) -> str:
    data = err.data if isinstance(err.data, dict) else {}
    return f"GitHub answered {err.status}: {data.get('message') or err.message or ''}".strip()


def perform(
    ectx: EffectContext,
    effects: list[dict[str, Any]],
    executors: Executors,
    progress: Progress | None = None,
    refused: Callable[[dict[str, Any], GithubException], None] | None = None,
) -> list[dict[str, Any]]:
    """Perform the writes not yet done; returns the effects with their results.

    ``progress`` saves the list after each write while more follow (a retry
    then skips what succeeded); ``refused`` records a best-effort write GitHub
    refused for good. A gate write's failure, or a best-effort write's
    transient one, propagates after the progress so far is saved.
    """
    state = [dict(e) for e in executors.ordered(effects)]
    todo = [i for i, e in enumerate(state) if e.get("result") not in FINISHED]
    for n, i in enumerate(todo):
        spec = state[i]
        kind = spec.get("kind")
        fn = executors.of(spec)
        work = {k: v for k, v in spec.items() if k != "result"}
        try:
            fn(ectx, work)
        except GithubException as err:
            if not executors.refused_for_good(spec, err):
                raise
            spec["result"] = "refused"
            log.warning("%s skipped: %s", kind, describe(err))
            if refused is not None:
                refused(work, err)
        else:
            spec["result"] = "done"
        if progress is not None and n < len(todo) - 1:
            progress(state)
    return state
