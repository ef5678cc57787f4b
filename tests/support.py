"""Test support: recorded payloads, GitHub's signing, and GitHub faked at the HTTP layer."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import responses

from minipipe_gh.core import events

FIXTURES = Path(__file__).parent / "fixtures"
API = "https://ghe.test/api/v3"  # an Enterprise-style base URL: GITHUB_API_URL must be honoured
WIRE = "https://ghe.test:443/api/v3"  # what PyGithub puts on the wire (explicit port)
SECRET = "it's a secret to everybody"
OLD_SECRET = "the secret before rotation"
APP_ID = 29310
INSTALLATION_ID = 1


# --- payloads and signing -----------------------------------------------------------


def payload(name: str, **edits: Any) -> dict[str, Any]:
    """A recorded payload with edits: ``payload("issue_comment.created", comment__body="/x")``."""
    data = json.loads((FIXTURES / f"{name}.payload.json").read_text())
    for path, value in edits.items():
        node = data
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return data


def signed_headers(
    event: str, body: bytes, *, secret: str = SECRET, delivery_id: str | None = None
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": events.signature(body, secret),
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
    }


class Deliver:
    """Post a signed delivery through the Flask app, as GitHub would."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(
        self,
        event: str,
        data: dict[str, Any] | bytes,
        *,
        delivery_id: str | None = None,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        sent = signed_headers(event, body, secret=secret, delivery_id=delivery_id)
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        return self.client.post("/webhook", data=body, headers=sent)


class FakeGitHub:
    """``responses`` with GitHub's shapes; ``requests`` is what the app sent."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.rsps = rsps
        self.token_exchanges = 0

    def url(self, path: str) -> str:
        return f"{WIRE}{path}"

    def add(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.rsps.add(method, self.url(path), json=json_body, status=status, headers=headers)

    def allow_token_exchange(
        self, installation_id: int = INSTALLATION_ID, *, token: str = "ghs_installationtoken"
    ) -> None:
        def reply(request: Any) -> tuple[int, dict[str, str], str]:
            self.token_exchanges += 1
            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return (
                201,
                {},
                json.dumps(
                    {
                        "token": token,
                        "expires_at": expires,
                        "permissions": {},
                        "repository_selection": "all",
                    }
                ),
            )

        self.rsps.add_callback(
            "POST", self.url(f"/app/installations/{installation_id}/access_tokens"), callback=reply
        )

    @property
    def requests(self) -> list[tuple[str, str, Any]]:
        """(method, path below the API root, JSON body or None), token exchanges included."""
        out = []
        for call in self.rsps.calls:
            req = call.request
            path = req.url.removeprefix(WIRE).removeprefix(API)
            body = req.body
            if isinstance(body, bytes):
                body = body.decode()
            try:
                parsed = json.loads(body) if body else None
            except ValueError:  # a form body (OAuth) is kept as text
                parsed = body
            out.append((req.method, path, parsed))
        return out

    def api_requests(self) -> list[tuple[str, str, Any]]:
        """As ``requests``, without the token exchanges."""
        return [r for r in self.requests if "/access_tokens" not in r[1]]
