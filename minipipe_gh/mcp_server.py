"""``minipipe-gh mcp``: a Model Context Protocol server (stdio) over the bot API.

A thin client of ``/api/v1`` at ``MINIPIPE_URL`` with the bearer token
``MINIPIPE_TOKEN``: it holds no database and no GitHub credentials, so an
agent gets exactly what its token allows. An API error comes back as an MCP
tool error whose text starts with the API's code (``illegal_transition: ...``),
so the model can tell a retryable answer from a final one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from minipipe_gh import __version__

MAX_WAIT = 60  # what the API's long-poll allows per request
# Patch states at which a reviewer (or the checks) has spoken, and what that means for the bot.
VERDICTS = {
    "queued": "approved",
    "applied": "approved",
    "verified": "approved",
    "committed": "approved",
    "quarantined": "checks_failed",
    "rolled_back": "rolled_back",
}


class ApiFailure(Exception):
    """The API answered with its error shape (or not at all)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Client:
    """``/api/v1`` over HTTP, as the token's bot."""

    base_url: str
    token: str
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Client:
        env = os.environ if env is None else env
        url, token = env.get("MINIPIPE_URL", "").strip(), env.get("MINIPIPE_TOKEN", "").strip()
        if not url or not token:
            raise SystemExit(
                "minipipe-gh mcp: set MINIPIPE_URL (the server, e.g. https://minipipe.example.com)"
                " and MINIPIPE_TOKEN (from `minipipe-gh token create NAME --as BOT`)"
            )
        base = url.rstrip("/")
        return cls(base if base.endswith("/api/v1") else f"{base}/api/v1", token)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        sent = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        sent.update(headers or {})
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = requests.request(
                method,
                f"{self.base_url}{path}",
                json=json,
                params=query,
                headers=sent,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as err:
            raise ApiFailure(0, "unreachable", f"{self.base_url} did not answer: {err}") from err
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                raise ApiFailure(resp.status_code, str(err.get("code")), str(err.get("message")))
            raise ApiFailure(resp.status_code, "http_error", f"HTTP {resp.status_code}")
        return data


def verdict(session: dict[str, Any]) -> dict[str, Any]:
    """What the newest patch of a session has been told, in one small dict.

    ``waiting`` is true while no verdict has been given: no patch yet, its
    checks still running, or waiting for a reviewer. ``waiting_for`` is what the patch
    still waits for, as the check run says it; an approved patch under a hold says so
    (``held``): it will not land until the hold is lifted.
    """
    patches = session.get("patches") or []
    if not patches:
        ended = session.get("state") in ("completed", "failed")
        return {
            "verdict": "session_ended" if ended else "no_patch",
            "waiting": not ended,
            "patch": None,
            "review": None,
            "waiting_for": [],
            "held": False,
        }
    patch = max(patches, key=lambda p: p["ledger_id"])
    review = patch.get("review") or {}
    waits = list(patch.get("waiting_for") or [])
    state = patch["state"]
    if review.get("status") == "rejected":
        said = "rejected"
    elif state in VERDICTS:
        said = VERDICTS[state]
    elif state == "dropped":
        said = "dropped"
    elif state == "awaiting_review":
        said = "awaiting_review"
    else:
        said = "checks_pending"
    waiting = said in ("awaiting_review", "checks_pending")
    if waiting and session.get("state") in ("completed", "failed"):
        said, waiting = "session_ended", False
    return {
        "verdict": said,
        "waiting": waiting,
        "patch": {k: patch.get(k) for k in ("ledger_id", "patch_id", "state", "version")},
        "review": review,
        "waiting_for": waits,
        "held": any(w.get("kind") == "hold" for w in waits),
    }


def _fail(err: ApiFailure) -> ToolError:
    return ToolError(str(err))


def build(client: Client) -> MCPServer:
    """The server and its tools; each tool is one or a few API calls."""
    server = MCPServer(
        "minipipe-gh",
        version=__version__,
        instructions=(
            "Track your work as a minipipe-gh session: start_session opens a branch and a draft "
            "PR; push commits to that branch; wait_for_verdict blocks until a reviewer approves "
            "or rejects the pushed patch; report_usage records what the work cost."
        ),
    )

    def api(method: str, path: str, **kw: Any) -> Any:
        try:
            return client.call(method, path, **kw)
        except ApiFailure as err:
            raise _fail(err) from None

    @server.tool()
    def start_session(
        project_id: str,
        agent_type: str,
        title: str,
        base_branch: str | None = None,
        workstream_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Open a session on repository project_id (owner/name): a branch and a draft PR.

        Push your commits to the returned `branch`. Give an idempotency_key to make
        a retry after a failure return the same session instead of a second one.
        """
        body: dict[str, Any] = {"project_id": project_id, "agent_type": agent_type, "title": title}
        for name, value in (
            ("base_branch", base_branch),
            ("workstream_id", workstream_id),
            ("metadata", metadata),
        ):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return api("POST", "/sessions", json=body, headers=headers)

    @server.tool()
    def get_session(session_id: str) -> dict[str, Any]:
        """A session: its state, its patches with their review verdicts and reasons,
        and `verdict`, what its newest patch waits for (checks, a reviewer) or was told."""
        session = api("GET", f"/sessions/{session_id}")
        return {**session, "verdict": verdict(session)}

    @server.tool()
    def wait_for_verdict(session_id: str, timeout_seconds: float = 600) -> dict[str, Any]:
        """Block until the session's newest patch is approved, rejected, dropped or fails
        its checks (or the session ends), up to timeout_seconds; `timed_out` says if none came.

        Uses the API's long-poll, so it returns within a second of the decision.
        """
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        session = api("GET", f"/sessions/{session_id}")
        while True:
            said = verdict(session)
            left = deadline - time.monotonic()
            if not said["waiting"] or left <= 0:
                return {**said, "timed_out": said["waiting"], "session": session}
            wait = min(MAX_WAIT, max(1, int(left)))
            session = api(
                "GET",
                f"/sessions/{session_id}",
                params={"wait": wait, "since": session["version"]},
                timeout=wait + 30,
            )

    @server.tool()
    def list_sessions(
        project_id: str | None = None,
        state: str | None = None,
        agent_type: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """Sessions, newest first, filtered by repository, state or agent type;
        pass `next_cursor` back as cursor for the next page."""
        params = {
            "project_id": project_id,
            "state": state,
            "agent_type": agent_type,
            "cursor": cursor,
            "limit": limit,
        }
        return api("GET", "/sessions", params=params)

    @server.tool()
    def pause_session(session_id: str) -> dict[str, Any]:
        """Pause an active session (its PR stays open)."""
        return api("POST", f"/sessions/{session_id}/pause", json={})

    @server.tool()
    def resume_session(session_id: str) -> dict[str, Any]:
        """Resume a paused session."""
        return api("POST", f"/sessions/{session_id}/resume", json={})

    @server.tool()
    def complete_session(session_id: str, success: bool = True) -> dict[str, Any]:
        """End the session: completed when success, failed otherwise."""
        return api("POST", f"/sessions/{session_id}/complete", json={"success": success})

    @server.tool()
    def report_usage(
        session_id: str,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost_usd: float | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Add what this session's work cost (tokens, USD, model) to its usage totals."""
        body = {
            k: v
            for k, v in (
                ("tokens_in", tokens_in),
                ("tokens_out", tokens_out),
                ("cost_usd", cost_usd),
                ("model", model),
            )
            if v is not None
        }
        return api("POST", f"/sessions/{session_id}/usage", json=body)

    return server


def serve(env: Mapping[str, str] | None = None) -> None:
    """Run on stdio until the client closes it."""
    build(Client.from_env(env)).run("stdio")
