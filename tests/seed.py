"""Seeding in one place: rows put straight into the real database, and the small
readers and request helpers the test modules share.

Two ways in: the bot API's (``seed_session``/``seed_patch`` through the runtime ``rt``)
and the dashboard's (``seed_installation``/``seed_web_patch`` on a ``Database``).
GitHub's side (what a test serves) is in tests/github_fake.py and tests/scenario.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from minipipe_gh.cli import main
from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.review.refresh import EVENT as REFRESH_EVENT
from minipipe_gh.store import ledger, registry, tokens
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import (
    AgentSession,
    ApiToken,
    AuditEntry,
    Delivery,
    Installation,
    InstalledRepository,
    Patch,
    utcnow,
)
from tests.github_fake import INSTALLATION_ID
from tests.scenario import REPO, R

BASE_SHA = "ba5e" * 10
TREE_SHA = "7ree" * 10
START_SHA = "57a7" * 10
PR_NUMBER = 7
PR_URL = f"https://github.com/{REPO}/pull/{PR_NUMBER}"
HEAD_SHA = "a" * 40
POLICY_PATH = f"{R}/contents/.github/minipipe.yml"
MCP_PR_NUMBER = 12  # the PR the loopback GitHub opens for a session (MCP, API client)


# --- the bot API: installation, tokens, sessions, patches ------------------------------


def drain(rt: Any) -> list[Any]:
    return rt.worker().run_once()


def install(rt: Any, *repos: str) -> None:
    """The app is installed (installation 1) on these repositories."""
    with rt.database.unit() as s:
        s.add(Installation(installation_id=1, account="Codertocat"))
        s.flush()
        for i, name in enumerate(repos or (REPO,), start=1):
            s.add(InstalledRepository(repository_id=i, installation_id=1, full_name=name))


def token_id(rt: Any, name: str) -> int:
    with rt.database.unit() as s:
        return s.scalars(select(ApiToken.id).where(ApiToken.name == name)).one()


def make_token(rt: Any, name: str, login: str, repositories: list[str] | None = None) -> str:
    with rt.database.unit() as s:
        _row, secret = tokens.create(s, name, login=login, repositories=repositories)
    return secret


class Api:
    """The Flask test client speaking to ``/api/v1`` with one bearer token."""

    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client
        self.token = token

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        sent.update(headers or {})
        if body is not None:
            kw["json"] = body
        return self.client.open(f"/api/v1{path}", method=method, headers=sent, **kw)

    def as_(self, token: str) -> Api:
        return Api(self.client, token)


def error(resp: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """Assert the spec's error shape and return ``error``."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    err = resp.get_json()["error"]
    assert err["code"] == code, err
    assert err.get("field") == field, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def seed_session(
    rt: Any,
    *,
    project: str = REPO,
    agent_type: str = "claude",
    title: str = "Fix the login form",
    state: str = "active",
    pr_number: int | None = None,
    meta: dict[str, Any] | None = None,
    idle: timedelta | None = None,
    installation_id: int | None = None,
) -> str:
    with rt.database.unit() as s:
        session = registry.create_session(
            s,
            project_id=project,
            agent_type=agent_type,
            title=title,
            actor="agent-bot",
            source="test",
            pr_number=pr_number,
            metadata=meta,
            installation_id=installation_id,
        )
        sid = session.session_id
        s.flush()
        for to in {"active": ["active"], "paused": ["active", "paused"]}.get(state, []):
            registry.update_session_state(s, sid, to, actor="t", source="test")
        if state in ("completed", "failed"):
            registry.update_session_state(s, sid, "active", actor="t", source="test")
            registry.update_session_state(s, sid, state, actor="t", source="test")
        if idle is not None:
            session.last_activity_at = utcnow() - idle
    return sid


PR_META = {"bot_login": "agent-bot", "pr_author": "agent-bot"}
PR_INSTALLATION = 1  # the installation PR_META's sessions are reached through


def seed_patch(
    rt: Any,
    *,
    state: str = P.AWAITING_REVIEW,
    sha: str = HEAD_SHA,
    risk: str = "high",
    session_id: str | None = None,
) -> tuple[str, str]:
    """An active session on PR 2 (installation 1, bot agent-bot) and one patch in ``state``."""
    sid = session_id or seed_session(rt, pr_number=2, meta=PR_META, installation_id=PR_INSTALLATION)
    path = {
        P.CREATED: [],
        P.VALIDATED: [P.VALIDATED],
        P.AWAITING_REVIEW: [P.VALIDATED, P.AWAITING_REVIEW],
        P.QUEUED: [P.VALIDATED, P.QUEUED],
        P.DROPPED: [P.DROPPED],
    }[state]
    with rt.database.unit() as s:
        session = registry.get_session(s, sid)
        patch = ledger.record_patch(
            s,
            session,
            sha,
            actor="agent-bot",
            source="test",
            files=1,
            additions=3,
            paths=["src/auth/login.py"],
            risk=risk,
            risk_reasons=["touches high-risk paths: src/auth/login.py"] if risk == "high" else [],
        )
        for to in path:
            ledger.transition(s, patch, to, actor="github", source="test", reason="seed")
        lid = patch.ledger_id
    return sid, lid


def serve_policy(github: Any, text: str | None = None, repo: str = REPO) -> None:
    github.serve_policy(text, repo)


def serve_permission(github: Any, login: str, role: str) -> None:
    github.serve_permission(login, role)


def serve_session_pr(
    github: Any,
    *,
    number: int = PR_NUMBER,
    base: str = "main",
    pulls_status: int = 201,
    policy: str | None = None,
) -> None:
    """Everything creating a session reads and writes on GitHub, answering as GitHub does."""
    github.allow_token_exchange()
    serve_policy(github, policy)
    serve_permission(github, "agent-bot", "write")  # the bot's user id, kept with the session
    github.add("GET", R, {"full_name": REPO, "default_branch": "main"})
    github.add(
        "GET",
        f"{R}/git/ref/heads/{base}",
        {"ref": f"refs/heads/{base}", "object": {"sha": BASE_SHA, "type": "commit"}},
    )
    github.add("GET", f"{R}/git/commits/{BASE_SHA}", {"sha": BASE_SHA, "tree": {"sha": TREE_SHA}})
    github.add("POST", f"{R}/git/commits", {"sha": START_SHA}, status=201)
    github.add("POST", f"{R}/git/refs", {"ref": "refs/heads/x", "object": {}}, status=201)
    pr = {"number": number, "html_url": f"https://github.com/{REPO}/pull/{number}", "draft": True}
    github.add(
        "POST",
        f"{R}/pulls",
        pr if pulls_status < 300 else {"message": "Server Error"},
        status=pulls_status,
    )


NEW_SESSION = {"project_id": REPO, "agent_type": "claude", "title": "Fix the login form!"}


def sessions_in_db(rt: Any) -> list[AgentSession]:
    with rt.database.unit() as s:
        return list(s.scalars(select(AgentSession)))


def audit_rows(rt: Any, **where: Any) -> list[AuditEntry]:
    with rt.database.unit() as s:
        q = select(AuditEntry).order_by(AuditEntry.id)
        for k, v in where.items():
            q = q.where(getattr(AuditEntry, k) == v)
        return list(s.scalars(q))


def publish_deliveries(rt: Any) -> list[Delivery]:
    with rt.database.unit() as s:
        return list(s.scalars(select(Delivery).where(Delivery.event == REFRESH_EVENT)))


def seed_stats(rt: Any) -> None:
    """claude: 2 completed (60 s, 180 s), 1 failed, 1 active; 3 approved, 3 rejected patches.
    aider: 1 active session, nothing decided. Another repository: 1 completed claude session."""
    t0 = utcnow() - timedelta(days=1)
    spans = {}
    for state, seconds in (("completed", 60), ("completed", 180), ("failed", 30), ("active", 5)):
        spans[seed_session(rt, agent_type="claude", state=state, pr_number=2)] = seconds
    spans[seed_session(rt, agent_type="aider")] = 10
    spans[seed_session(rt, project="octo/other", agent_type="claude", state="completed")] = 999
    with rt.database.unit() as s:
        for sid, seconds in spans.items():
            row = s.get(AgentSession, sid)
            row.created_at, row.updated_at = t0, t0 + timedelta(seconds=seconds)
    claude = sorted(k for k, v in spans.items() if v in (60, 180, 30, 5))
    reviews = [
        ("approved", None),
        ("approved", None),
        ("approved", None),
        ("rejected", "too big"),
        ("rejected", "too big"),
        ("rejected", "breaks tests"),
    ]
    with rt.database.unit() as s:
        session = s.get(AgentSession, claude[0])
        for i, (status, reason) in enumerate(reviews):
            patch = ledger.record_patch(s, session, f"{i:040d}", actor="bot", source="test")
            patch.meta = {**patch.meta, "review_status": status, "review_reason": reason}
        other = s.get(AgentSession, next(k for k, v in spans.items() if v == 999))
        patch = ledger.record_patch(s, other, "f" * 40, actor="bot", source="test")
        patch.meta = {**patch.meta, "review_status": "rejected", "review_reason": "elsewhere"}


# --- the review workflow: reading back what the worker did -------------------------------


def only_patch(rt: Any) -> Patch:
    """The newest patch (most tests have one)."""
    with rt.database.unit() as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def the_session(rt: Any) -> AgentSession:
    with rt.database.unit() as s:
        return s.scalars(select(AgentSession)).one()


def writes(github: Any, since: int = 0) -> list[tuple[str, str, Any]]:
    """What the app wrote to GitHub (every request but the reads), from ``since`` on."""
    return [r for r in github.api_requests()[since:] if r[0] != "GET"]


def check_run_bodies(github: Any, since: int = 0) -> list[Any]:
    return [b for m, p, b in github.api_requests()[since:] if "/check-runs" in p and m != "GET"]


def opened_and_validated(
    rt: Any, sc: Any, github: Any, *paths: str, policy: str | None = None
) -> Patch:
    """A session PR opened with CI green on ``paths``; the worker has validated its patch."""
    sc.serve_policy(policy)
    sc.serve_files(*(paths or ("src/auth/login.py",)))
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    return only_patch(rt)


def serve_tree(github: Any, sha: str, tree: str) -> None:
    github.add("GET", f"{R}/git/commits/{sha}", {"sha": sha, "tree": {"sha": tree}})


def policy_changed_to(sc: Any, text: str | None) -> None:
    """The policy file on the default branch now says ``text`` (None: it was removed),
    and the push that changed it arrives."""
    url = sc.github.url(f"{R}/contents/.github/minipipe.yml")
    if text is None:
        sc.github.rsps.replace("GET", url, status=404, json={"message": "Not Found"})
    else:
        content = base64.b64encode(text.encode()).decode()
        sc.github.rsps.replace("GET", url, json={"type": "file", "sha": "b2", "content": content})
    assert sc.policy_pushed(".github/minipipe.yml").status_code == 202


def add_awaiting_patch(rt: Any, session_id: str) -> str:
    """The bot pushed: a patch, validated, waiting for a reviewer (as the worker records it)."""
    with rt.database.unit() as s:
        session = registry.get_session(s, session_id)
        patch = ledger.record_patch(
            s, session, "c" * 40, actor="agent-bot", source="test", files=1, additions=2
        )
        for to in (P.VALIDATED, P.AWAITING_REVIEW):
            ledger.transition(s, patch, to, actor="github", source="test")
        return patch.ledger_id


# --- the dashboard (and the browser tests) ---------------------------------------------------


def seed_installation(database: Database, *repos: str, installation_id: int = INSTALLATION_ID):
    with database.unit() as s:
        if s.get(Installation, installation_id) is None:
            s.add(Installation(installation_id=installation_id, account=repos[0].split("/")[0]))
            s.flush()
        for i, name in enumerate(repos):
            s.add(
                InstalledRepository(
                    repository_id=installation_id * 1000 + i,
                    installation_id=installation_id,
                    full_name=name,
                )
            )


def seed_web_patch(
    database: Database,
    *,
    repo: str = REPO,
    title: str = "Fix the login form",
    agent: str = "claude",
    pr_number: int = 2,
    state: str = "awaiting_review",
    sha: str = "a" * 40,
    installation_id: int | None = INSTALLATION_ID,
) -> tuple[str, str]:
    """An active session with one patch, moved along the ledger to ``state``."""
    meta: dict[str, Any] = {
        "pr_author": "agent-bot",
        "bot_login": "agent-bot",
        "pr_url": "javascript:alert(1)",  # metadata is the bot's to write: never a link
    }
    with database.unit() as s:
        session = registry.create_session(
            s,
            project_id=repo,
            agent_type=agent,
            title=title,
            actor="agent-bot",
            source="test",
            branch=f"minipipe/{pr_number:05d}-fix-login",
            base_branch="main",
            pr_number=pr_number,
            metadata=meta,
            installation_id=installation_id,
        )
        registry.resume_session(s, session.session_id, actor="agent-bot", source="test")
        patch = ledger.record_patch(
            s,
            session,
            sha,
            actor="agent-bot",
            source="test",
            files=2,
            additions=40,
            deletions=3,
            paths=["src/auth/login.py", "README.md"],
            risk="high",
            risk_reasons=["touches high-risk paths: src/auth/login.py"],
        )
        path = {
            "created": [],
            "validated": ["validated"],
            "awaiting_review": ["validated", "awaiting_review"],
            "dropped": ["dropped"],
        }[state]
        for to in path:
            ledger.transition(s, patch, to, actor="minipipe", source="test", reason="seeded")
        return session.session_id, patch.ledger_id


def seed_dead_delivery(database: Database, *, repo: str = REPO, status: str = "dead") -> str:
    ident = f"dead-{registry.new_id()}"
    with database.unit() as s:
        s.add(
            Delivery(
                delivery_id=ident,
                event="pull_request",
                action="synchronize",
                installation_id=INSTALLATION_ID,
                repository=repo,
                order_key=f"{repo}#2",
                payload="{}",
                status=status,
                attempts=3,
                last_error="github.GithubException.GithubException: 502 Bad Gateway",
            )
        )
    return ident


# --- the CLI ---------------------------------------------------------------------------------


def cli_runner(db_url: str, tmp_path: Path) -> Callable[..., Any]:
    """``minipipe-gh`` in-process on the test's database; ``code`` is the exit code expected."""
    env = {
        "DATABASE_URL": db_url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "cli-instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
        "GITHUB_APP_ID": "",
        "GITHUB_PRIVATE_KEY": "",
        "GITHUB_PRIVATE_KEY_PATH": "",
    }
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return run


# --- time ---------------------------------------------------------------------------------


class Clock:
    """Real time plus an offset that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
