"""``minipipe-gh mcp`` driven by the official MCP client over stdio, against a live app.

The app serves on a loopback port with GitHub faked on another (the browser
tests' fake, plus the branch and pull-request writes a new session makes);
the MCP server is the real ``minipipe-gh mcp`` process, spoken to with the
SDK's ``stdio_client`` and ``ClientSession``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.store import ledger
from tests import fake_github_server as live
from tests.fake_github_server import FakeGitHub
from tests.scenario import REPO
from tests.seed import MCP_PR_NUMBER as PR_NUMBER
from tests.seed import add_awaiting_patch, install, make_token

# The live app and its loopback GitHub (tests/fake_github_server.py).
fake_github = live.fake_github
settings = live.settings
site = live.site

TOOLS = {
    "start_session",
    "get_session",
    "wait_for_verdict",
    "list_sessions",
    "pause_session",
    "resume_session",
    "complete_session",
    "report_usage",
}


def server_params(url: str, token: str) -> StdioServerParameters:
    script = Path(sys.executable).with_name("minipipe-gh")
    return StdioServerParameters(
        command=str(script),
        args=["mcp"],
        env={"MINIPIPE_URL": url, "MINIPIPE_TOKEN": token, "PATH": os.environ.get("PATH", "")},
    )


def payload(result: Any) -> dict[str, Any]:
    """A tool's answer: its structured content, or its JSON text."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def test_an_agent_starts_a_session_and_waits_for_its_verdict_over_mcp(
    rt: Runtime, site: str, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _ = fake_github
    install(rt)
    token = make_token(rt, "agent", "agent-bot")
    seen: dict[str, Any] = {}

    async def drive() -> None:
        async with (
            stdio_client(server_params(site, token)) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            listed = await client.list_tools()
            seen["tools"] = {t.name for t in listed.tools}

            started = payload(
                await client.call_tool(
                    "start_session",
                    {"project_id": REPO, "agent_type": "claude", "title": "Fix the login form"},
                )
            )
            seen["started"] = started
            sid = started["session_id"]

            # Pausing a session whose PR has not opened yet is illegal: a tool error.
            refused = await client.call_tool("pause_session", {"session_id": sid})
            seen["refused"] = (refused.is_error, refused.content[0].text)
            missing = await client.call_tool("get_session", {"session_id": "01nosuchsession" * 2})
            seen["missing"] = (missing.is_error, missing.content[0].text)

            lid = add_awaiting_patch(rt, sid)
            before = payload(await client.call_tool("get_session", {"session_id": sid}))
            seen["before"] = before["verdict"]

            def approve() -> None:
                time.sleep(1.0)
                with rt.database.unit() as s:
                    ledger.approve_patch(s, lid, "carol", "looks right", source="test")
                seen["approved_at"] = time.monotonic()

            approver = threading.Thread(target=approve)
            approver.start()
            waited = payload(
                await client.call_tool(
                    "wait_for_verdict", {"session_id": sid, "timeout_seconds": 30}
                )
            )
            seen["answered_at"] = time.monotonic()
            approver.join()
            seen["waited"] = waited

            usage = payload(
                await client.call_tool(
                    "report_usage",
                    {"session_id": sid, "tokens_in": 1200, "tokens_out": 300, "cost_usd": 0.42},
                )
            )
            seen["usage"] = usage
            listed_sessions = payload(await client.call_tool("list_sessions", {"limit": 5}))
            seen["listed"] = [x["session_id"] for x in listed_sessions["items"]]

    anyio.run(drive)

    assert seen["tools"] == TOOLS
    started = seen["started"]
    assert (started["state"], started["pr_number"], started["project_id"]) == (
        "created",
        PR_NUMBER,
        REPO,
    )
    assert started["branch"].startswith("minipipe/")
    assert "POST /api/v3/repos/Codertocat/Hello-World/pulls" in gh.paths()
    [pull] = [body for method, path, body in gh.requests if path.endswith("/pulls")]
    assert pull["draft"] is True and pull["head"] == started["branch"]

    is_error, text = seen["refused"]
    assert is_error and "illegal_transition" in text and "created" in text
    is_error, text = seen["missing"]
    assert is_error and "not_found" in text

    assert seen["before"]["verdict"] == "awaiting_review" and seen["before"]["waiting"]
    waited = seen["waited"]
    assert (waited["verdict"], waited["waiting"], waited["timed_out"]) == ("approved", False, False)
    assert waited["review"]["status"] == "approved"
    assert (waited["review"]["by"], waited["review"]["comment"]) == ("carol", "looks right")
    assert waited["patch"]["state"] == P.QUEUED
    assert seen["answered_at"] - seen["approved_at"] < 1.0  # the long-poll, not a slow poll

    assert seen["usage"]["usage"]["tokens_in"] == 1200
    assert seen["listed"] == [started["session_id"]]


def test_the_mcp_server_refuses_to_start_without_its_settings(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).with_name("minipipe-gh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPIPE_")}
    done = subprocess.run(
        [str(script), "mcp"], env=env, capture_output=True, text=True, timeout=60, input=""
    )
    assert done.returncode != 0
    assert "MINIPIPE_URL" in done.stderr and "MINIPIPE_TOKEN" in done.stderr


def test_an_approved_patch_under_a_hold_tells_the_agent_it_is_held() -> None:
    """The verdict is the reviewer's; the hold is what the patch still waits for."""
    from minipipe_gh.mcp_server import verdict

    hold = {"kind": "hold", "summary": "On hold by @carol: release freeze", "who": ["carol"]}
    session = {
        "state": "active",
        "patches": [
            {
                "ledger_id": "01A",
                "patch_id": "a" * 40,
                "state": "queued",
                "version": 3,
                "review": {"status": "approved"},
                "waiting_for": [hold],
            },
        ],
    }
    told = verdict(session)
    assert (told["verdict"], told["waiting"], told["held"]) == ("approved", False, True)
    assert told["waiting_for"] == [hold]

    session["patches"][0]["waiting_for"] = []
    assert verdict(session)["held"] is False
