"""GitHub writes performed after a delivery's database changes commit.

Each kind is registered once by the feature module that owns it. Executors
must be idempotent: a write whose answer was lost (``ectx.retrying``) may be
performed again.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from github import Github, GithubException, RateLimitExceededException

from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.store.db import Database

log = logging.getLogger(__name__)

Executor = Callable[["EffectContext", dict[str, Any]], None]
Progress = Callable[[list[dict[str, Any]]], None]
_EXECUTORS: dict[str, Executor] = {}
_BEST_EFFORT: set[str] = set()
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


def executor(kind: str, *, best_effort: bool = False) -> Callable[[Executor], Executor]:
    """Register the executor of ``kind``; ``best_effort`` writes may be refused and skipped."""

    def add(fn: Executor) -> Executor:
        if kind in _EXECUTORS and _EXECUTORS[kind] is not fn:
            raise ValueError(f"effect {kind!r} registered twice")
        _EXECUTORS[kind] = fn
        if best_effort:
            _BEST_EFFORT.add(kind)
        return fn

    return add


def is_best_effort(spec: dict[str, Any]) -> bool:
    return str(spec.get("kind")) in _BEST_EFFORT


def ordered(effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gate writes first, each class in the order the handlers recorded it."""
    return [e for e in effects if not is_best_effort(e)] + [e for e in effects if is_best_effort(e)]


def pending(effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in effects if e.get("result") not in FINISHED]


def refused_for_good(spec: dict[str, Any], err: BaseException) -> bool:
    """A refusal no retry can fix: 403/404/422 for a best-effort write, 422 for a gate
    write. Rate limits (a 403 with ``Retry-After`` or no requests left) are not."""
    if not isinstance(err, GithubException) or isinstance(err, RateLimitExceededException):
        return False
    headers = {k.lower(): v for k, v in (err.headers or {}).items()}
    if "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0":
        return False
    return err.status in (REFUSED_FOR_GOOD if is_best_effort(spec) else (422,))


def describe(err: GithubException) -> str:
    data = err.data if isinstance(err.data, dict) else {}
    return f"GitHub answered {err.status}: {data.get('message') or err.message or ''}".strip()


def perform(
    ectx: EffectContext,
    effects: list[dict[str, Any]],
    progress: Progress | None = None,
    refused: Callable[[dict[str, Any], GithubException], None] | None = None,
) -> list[dict[str, Any]]:
    """Perform the writes not yet done; returns the effects with their results.

    ``progress`` saves the list after each write while more follow (a retry
    then skips what succeeded); ``refused`` records a best-effort write GitHub
    refused for good. A gate write's failure, or a best-effort write's
    transient one, propagates after the progress so far is saved.
    """
    state = [dict(e) for e in ordered(effects)]
    todo = [i for i, e in enumerate(state) if e.get("result") not in FINISHED]
    for n, i in enumerate(todo):
        spec = state[i]
        kind = spec.get("kind")
        fn = _EXECUTORS.get(str(kind))
        if fn is None:
            raise LookupError(f"no executor for effect {kind!r}")
        work = {k: v for k, v in spec.items() if k != "result"}
        try:
            fn(ectx, work)
        except GithubException as err:
            if not refused_for_good(spec, err):
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
