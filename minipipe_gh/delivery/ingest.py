"""``POST /webhook`` as a plain WSGI callable: the acknowledging hot path.

It skips Flask's request machinery: read the body, verify, parse, store
durably, answer. Everything else is left to the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from minipipe_gh.core import events
from minipipe_gh.delivery import metrics
from minipipe_gh.store.inbox import Inbox

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebhookIngest:
    """The webhook endpoint. ``secrets`` empty means setup mode: 503 until configured."""

    def __init__(self, inbox: Inbox, secrets: Callable[[], tuple[str, ...]]) -> None:
        self.inbox = inbox
        self.secrets = secrets

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, body = self.handle(environ)
        payload = orjson.dumps(body)
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def handle(self, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "use POST"}
        secrets = self.secrets()
        if not secrets:
            return "503 Service Unavailable", {
                "error": "minipipe-gh is in setup mode: no webhook secret is configured. "
                "Open the home page to register the GitHub App, or set GITHUB_WEBHOOK_SECRET."
            }
        headers = _headers(environ)
        raw = _read_body(environ)
        if raw is None:
            metrics.received(metrics.UNVERIFIED, "refused_413").inc()
            return "413 Content Too Large", {"error": "body is over the 25 MB limit"}
        try:
            event = events.parse(headers, raw, secrets)
        except events.IngressError as err:
            # A 400 comes after the signature matched, but its headers may still be
            # malformed: no refused request picks its own label.
            metrics.received(metrics.UNVERIFIED, f"refused_{err.status}").inc()
            log.info("refused delivery %r: %s", headers.get("X-GitHub-Delivery", "-")[:100], err)
            return _status(err.status), {"error": str(err)}
        if event.name == "ping":
            metrics.received("ping", "pong").inc()
            return "200 OK", {"ok": True, "zen": event.payload.get("zen")}
        new = self.inbox.store(event, raw)
        metrics.received(event.name, "accepted" if new else "duplicate").inc()
        if new:
            return "202 Accepted", {"ok": True, "delivery": event.delivery_id}
        return "200 OK", {"ok": True, "delivery": event.delivery_id, "duplicate": True}


_ENVIRON_KEYS = tuple(
    (name, "HTTP_" + name.upper().replace("-", "_")) for name in events.READ_HEADERS
)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The headers ``events.parse`` reads, under their canonical names (a plain dict:
    a case-insensitive view of the whole environ costs more than the HMAC)."""
    return {name: environ[key] for name, key in _ENVIRON_KEYS if key in environ}


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The body, or None when it is over the limit (checked before reading it all)."""
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > events.MAX_BODY:
        return None
    if length >= 0:
        return stream.read(length)
    if not environ.get("wsgi.input_terminated"):
        return b""
    raw = stream.read(events.MAX_BODY + 1)  # chunked: read at most one byte past the cap
    return None if len(raw) > events.MAX_BODY else raw


def _status(code: int) -> str:
    return {400: "400 Bad Request", 401: "401 Unauthorized", 413: "413 Content Too Large"}[code]


class PathDispatcher:
    """Send ``/webhook`` to the fast callable and everything else to Flask."""

    def __init__(self, app: WSGIApp, webhook: WSGIApp, path: str = "/webhook") -> None:
        self.app = app
        self.webhook = webhook
        self.path = path

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.path:
            return self.webhook(environ, start_response)
        return self.app(environ, start_response)
