"""Prometheus metrics, and counting GitHub API calls per handled event.

PyGithub logs every request it makes at DEBUG on ``github.Requester`` with the
verb, URL, status and response headers; a handler there counts calls and reads
the rate limit, without reaching into PyGithub's internals. The requests that
``gh.rest.send_json`` makes itself reach the same count through
``rest.CALL_OBSERVERS``.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from minipipe_gh.gh import rest

DELIVERIES_RECEIVED = Counter(
    "minipipe_deliveries_received_total", "Webhook deliveries answered", ["event", "outcome"]
)


# The events the app subscribes to (app.yml) and ``ping``: a label is one of these,
# ``other`` (verified, not subscribed) or ``unverified`` (refused before the signature
# was checked or when it did not match). A label never comes from an unverified header:
# each new label value is a new time series kept for the life of the process.
EVENTS = frozenset(
    {
        "ping",
        "issue_comment",
        "pull_request",
        "pull_request_review",
        "check_run",
        "check_suite",
        "installation",
        "installation_repositories",
        "push",
        "merge_group",
        # the app's own, queued by the app (never accepted at /webhook)
        "minipipe.refresh_check_run",
        "minipipe.publish",  # its name before 0.2
    }
)
UNVERIFIED = "unverified"


def event_label(name: str) -> str:
    """The bounded label of a verified event name."""
    return name if name in EVENTS else "other"


@functools.lru_cache(maxsize=256)
def received(event: str, outcome: str) -> Any:
    """The counter child for a delivery: ``labels()`` costs more than the increment, on
    the path every acknowledgement takes. Both arguments come from a bounded set."""
    return DELIVERIES_RECEIVED.labels(event_label(event) if event != UNVERIFIED else event, outcome)


DELIVERIES_PROCESSED = Counter(
    "minipipe_deliveries_processed_total", "Deliveries handled by a worker", ["event", "outcome"]
)
PROCESSING_SECONDS = Histogram(
    "minipipe_processing_seconds", "Time to handle one delivery", ["event"]
)
QUEUE_DEPTH = Gauge("minipipe_queue_depth", "Deliveries by status", ["status"])
GITHUB_CALLS = Counter(
    "minipipe_github_requests_total", "GitHub API requests", ["method", "status"]
)
WRITES_REFUSED = Counter(
    "minipipe_github_writes_refused_total",
    "GitHub writes refused for good (403, 404, 422) and skipped",
    ["kind", "status"],
)
PATCH_WAIT_SECONDS = Gauge(
    "minipipe_patch_wait_seconds",
    "How long the longest-waiting open patch has been in its state",
    ["state"],
)
RATE_LIMIT_REMAINING = Gauge(
    "minipipe_github_rate_limit_remaining", "x-ratelimit-remaining of the last response"
)

_calls: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("gh_calls", default=None)


def _count_call(verb: str, url: str, status: int, headers: Mapping[str, str]) -> None:
    """One GitHub request: the counter, the rate limit left, the handled event's list."""
    GITHUB_CALLS.labels(str(verb), str(status)).inc()
    if "x-ratelimit-remaining" in headers:
        with suppress(ValueError):
            RATE_LIMIT_REMAINING.set(float(headers["x-ratelimit-remaining"]))
    calls = _calls.get()
    if calls is not None:
        calls.append(f"{verb} {url}")


class _GitHubCallCounter(logging.Handler):
    """PyGithub's own requests, heard through its debug log."""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if not isinstance(args, tuple) or len(args) < 8:
            return
        verb, _scheme, _host, url, _rh, _input, status, headers = args[:8]
        _count_call(str(verb), str(url), int(status), headers if isinstance(headers, dict) else {})


_installed = False


def install_github_counter() -> None:
    global _installed
    if _installed:
        return
    log = logging.getLogger("github.Requester")
    log.setLevel(logging.DEBUG)
    log.propagate = False  # keep tokens-masked request dumps out of the app's log
    log.addHandler(_GitHubCallCounter())
    rest.CALL_OBSERVERS.append(_count_call)
    _installed = True


@contextmanager
def counting_github_calls() -> Iterator[list[str]]:
    """Collect ``"VERB /path"`` for each GitHub request made inside the block."""
    calls: list[str] = []
    token = _calls.set(calls)
    try:
        yield calls
    finally:
        _calls.reset(token)
