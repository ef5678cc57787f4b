"""``WEBHOOK_PROXY_URL``: take GitHub's deliveries from a smee.io channel, as Probot does.

GitHub posts to the channel (it is the manifest's webhook URL); ``minipipe-gh run``
subscribes to it (server-sent events) and feeds each delivery through the same
``/webhook`` code: the same signature check, the same inbox. It reconnects whenever the
stream drops. The channel is never the app's public URL: browsers never go there.

Each message is what smee-client forwards: the delivery's headers, lower-cased, plus
``body`` (the parsed JSON) and ``query``; events named ``ready`` and ``ping`` carry no
delivery. smee re-serialises the body, so the bytes GitHub signed are gone: like
smee-client and Probot, we verify against ``JSON.stringify(body)``, which is
``json.dumps(body, separators=(",", ":"), ensure_ascii=False)``. A payload whose
re-serialised form differs from what GitHub sent (numbers such as ``1.0``) fails
verification and is refused, as it would be under Probot.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import requests
from sseclient import SSEClient

from minipipe_gh.delivery.ingest import WebhookIngest

log = logging.getLogger(__name__)
NO_DELIVERY = ("ready", "ping")


def stringify(body: Any) -> bytes:
    """JavaScript's ``JSON.stringify(body)``: what smee-client posts and Probot verifies."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def environ_for(message: dict[str, Any]) -> dict[str, Any]:
    """A smee message as the WSGI request smee-client would have made of it."""
    headers = {k: v for k, v in message.items() if k not in ("body", "query", "timestamp")}
    raw = stringify(message.get("body"))
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhook",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    for name, value in headers.items():
        if isinstance(value, str | int) and name.lower() not in ("content-length", "host"):
            environ["HTTP_" + name.upper().replace("-", "_")] = str(value)
    return environ


class Relay:
    """One subscription to a channel: read, hand each delivery to the ingest, reconnect."""

    def __init__(
        self,
        url: str,
        ingest: WebhookIngest,
        stop: threading.Event,
        *,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        self.url = url
        self.ingest = ingest
        self.stop = stop
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.connections = 0

    def handle(self, event: str, data: str) -> str | None:
        """One server-sent event; the HTTP status ``/webhook`` would have answered."""
        if event in NO_DELIVERY:
            return None
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("smee: a message that is not JSON, ignored")
            return None
        if not isinstance(message, dict) or "body" not in message:
            return None
        status, reply = self.ingest.handle(environ_for(message))
        delivery = message.get("x-github-delivery", "-")
        if status.startswith(("200", "202")):
            log.info("smee: delivery %s %s: %s", delivery, message.get("x-github-event"), status)
        else:
            log.warning("smee: delivery %s refused, %s: %s", delivery, status, reply.get("error"))
        return status

    def events(self) -> Iterator[tuple[str, str, int | None]]:
        """The channel's events over one connection, until it drops."""
        resp = requests.get(
            self.url,
            stream=True,
            headers={"Accept": "text/event-stream"},
            timeout=(10, 120),  # smee sends a ping every ~30 s; silence past that is a drop
        )
        try:
            resp.raise_for_status()
            self.connections += 1
            log.info("smee: connected to %s", self.url)
            for ev in SSEClient(resp).events():
                retry = int(ev.retry) if ev.retry and str(ev.retry).isdigit() else None
                yield ev.event, ev.data, retry
        finally:
            resp.close()

    def run(self) -> None:
        delay = self.retry_seconds
        while not self.stop.is_set():
            try:
                for event, data, retry in self.events():
                    delay = retry / 1000 if retry else self.retry_seconds  # connected: reset
                    self.handle(event, data)
                    if self.stop.is_set():
                        return
                log.warning("smee: the stream ended; reconnecting in %.0f s", delay)
            except requests.RequestException as err:
                log.warning("smee: %s; reconnecting in %.0f s", err, delay)
            if self.stop.wait(delay):
                return
            delay = min(delay * 2, self.max_retry_seconds)


def subscribe(rt: Any, url: str) -> threading.Thread:
    """Start relaying ``url`` into ``rt``'s inbox, verified with its current secrets."""
    relay = Relay(url, WebhookIngest(rt.inbox, lambda: rt.settings.webhook_secrets), rt.stop)
    thread = threading.Thread(target=relay.run, name="minipipe-smee", daemon=True)
    thread.start()
    return thread
