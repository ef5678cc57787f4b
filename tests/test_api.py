"""The bot API (``/api/v1``) and its CLI companions: every endpoint, every error status.

A real migrated database, the real Flask app, GitHub faked at the HTTP layer;
each test asserts what a bot would see and what GitHub was sent.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from minipipe_gh.cli import main
from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.delivery.maintenance import reap_stale
from minipipe_gh.gh.session_pr import branch_name
from minipipe_gh.review.refresh import EVENT as REFRESH_EVENT
from minipipe_gh.store import ledger, registry, tokens
from minipipe_gh.store.models import (
    AgentSession,
    ApiToken,
    AuditEntry,
    Base,
    CheckRunRef,
    Delivery,
    Installation,
    InstalledRepository,
    utcnow,
)
from tests.scenario import REPO, R, user

BASE_SHA = "ba5e" * 10
TREE_SHA = "7ree" * 10
START_SHA = "57a7" * 10
PR_NUMBER = 7
PR_URL = f"https://github.com/{REPO}/pull/{PR_NUMBER}"
HEAD_SHA = "a" * 40
POLICY_PATH = f"{R}/contents/.github/minipipe.yml"


# --- helpers -------------------------------------------------------------------------


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


@pytest.fixture
def api(rt: Any, client: Any, github: Any) -> Api:
    """Installed on Codertocat/Hello-World; a token for the session bot ``agent-bot``."""
    install(rt)
    return Api(client, make_token(rt, "agent", "agent-bot"))


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
    import base64

    path = f"/repos/{repo}/contents/.github/minipipe.yml"
    if text is None:
        github.add("GET", path, {"message": "Not Found"}, status=404)
    else:
        content = base64.b64encode(text.encode()).decode()
        github.add(
            "GET", path, {"type": "file", "sha": "blob1", "encoding": "base64", "content": content}
        )


def serve_permission(github: Any, login: str, role: str) -> None:
    legacy = {"triage": "read", "maintain": "write"}.get(role, role)
    github.add(
        "GET",
        f"{R}/collaborators/{login}/permission",
        {"permission": legacy, "role_name": role, "user": user(login)},
    )


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


# --- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Basic YWdlbnQ6c2VjcmV0", "Bearer", "Bearer    ", "Token mpg_x", "Bearer mpg_unknown"],
)
def test_missing_or_bad_token_is_401(api, header):
    headers = {"Authorization": header} if header is not None else {}
    resp = Api(api.client, None)("GET", "/sessions", headers=headers)
    error(resp, 401, "unauthorized")


def test_every_endpoint_needs_a_token_but_the_description(api):
    anonymous = Api(api.client, None)
    calls = [
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/x"),
        ("DELETE", "/sessions/x"),
        ("POST", "/sessions/x/pause"),
        ("POST", "/sessions/x/resume"),
        ("POST", "/sessions/x/complete"),
        ("GET", "/patches"),
        ("GET", "/patches/x"),
        ("POST", "/patches/x/approve"),
        ("POST", "/patches/x/reject"),
        ("POST", "/patches/x/review"),
        ("GET", "/stats"),
    ]
    for method, path in calls:
        error(anonymous(method, path), 401, "unauthorized")
    assert anonymous("GET", "/openapi.json").status_code == 200


def test_a_revoked_token_is_401_at_once(api, rt):
    assert api("GET", "/sessions").status_code == 200
    with rt.database.unit() as s:
        tokens.revoke(s, "agent")
    err = error(api("GET", "/sessions"), 401, "unauthorized")
    assert "revoked" in err["message"]


def test_a_used_token_records_when(api, rt):
    api("GET", "/stats")
    with rt.database.unit() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "agent")).one()
    assert row.last_used_at is not None


# --- POST /sessions -----------------------------------------------------------------


def test_create_session_opens_a_branch_and_a_draft_pr(api, rt, github):
    serve_session_pr(github)
    resp = api("POST", "/sessions", {**NEW_SESSION, "metadata": {"run": 42}, "workstream_id": "w1"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    sid = body["session_id"]
    branch = f"minipipe/{sid[-8:]}-fix-the-login-form"
    assert branch == branch_name("minipipe/", sid, "Fix the login form!")
    assert (body["state"], body["branch"], body["base_branch"]) == ("created", branch, "main")
    assert (body["pr_number"], body["pr_url"]) == (PR_NUMBER, PR_URL)
    assert (body["project_id"], body["agent_type"], body["workstream_id"]) == (REPO, "claude", "w1")
    assert body["metadata"]["run"] == 42
    assert body["metadata"]["installation_id"] == 1
    assert body["metadata"]["bot_login"] == "agent-bot"
    assert body["metadata"]["bot_id"] == user("agent-bot")["id"]  # the bot by id, not login
    assert body["head_sha"] == START_SHA

    sent = github.api_requests()
    assert [(m, p) for m, p, _ in sent] == [
        ("GET", POLICY_PATH),
        ("GET", f"{R}/collaborators/agent-bot/permission"),
        ("GET", R),
        ("GET", f"{R}/git/ref/heads/main"),
        ("GET", f"{R}/git/commits/{BASE_SHA}"),
        ("POST", f"{R}/git/commits"),
        ("POST", f"{R}/git/refs"),
        ("POST", f"{R}/pulls"),
    ]
    assert sent[5][2] == {
        "message": f"Start minipipe session {sid}\n\nFix the login form!",
        "tree": TREE_SHA,
        "parents": [BASE_SHA],
    }
    assert sent[6][2] == {"ref": f"refs/heads/{branch}", "sha": START_SHA}
    pr = sent[7][2]
    assert (pr["title"], pr["head"], pr["base"], pr["draft"]) == (
        "Fix the login form!",
        branch,
        "main",
        True,
    )
    assert f"<!-- minipipe:session={sid} -->" in pr["body"]
    assert "claude" in pr["body"]

    [row] = sessions_in_db(rt)
    assert (row.session_id, row.pr_number, row.branch, row.state) == (
        sid,
        PR_NUMBER,
        branch,
        "created",
    )
    [created] = audit_rows(rt, entity="session", entity_id=sid)
    assert (created.actor, created.source, created.to_state) == (
        "agent-bot",
        "api:agent",
        "created",
    )


def test_create_session_on_a_given_base_skips_the_default_branch_lookup(api, github):
    serve_session_pr(github, base="develop")
    resp = api("POST", "/sessions", {**NEW_SESSION, "base_branch": "develop"})
    assert resp.status_code == 201
    assert resp.get_json()["base_branch"] == "develop"
    paths = [p for _, p, _ in github.api_requests()]
    assert R not in paths
    assert f"{R}/git/ref/heads/develop" in paths
    [pr] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/pulls")]
    assert pr["base"] == "develop"


@pytest.mark.parametrize("base", ["release/1.2", "feature/login-form_v2", "Hotfix_1", "v1.0"])
def test_a_base_branch_with_slashes_and_dots_is_accepted(api, github, base):
    serve_session_pr(github, base=base)
    resp = api("POST", "/sessions", {**NEW_SESSION, "base_branch": base})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert f"{R}/git/ref/heads/{base}" in [p for _, p, _ in github.api_requests()]


def test_create_session_honours_the_policy_branch_prefix(api, github):
    serve_session_pr(github, policy='sessions:\n  branch_prefix: "bots/"\n')
    body = api("POST", "/sessions", NEW_SESSION).get_json()
    assert body["branch"] == f"bots/{body['session_id'][-8:]}-fix-the-login-form"
    [ref] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/git/refs")]
    assert ref["ref"] == f"refs/heads/{body['branch']}"


def test_idempotency_key_retry_returns_the_same_session_without_calling_github(api, rt, github):
    serve_session_pr(github)
    first = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "run-1"})
    assert first.status_code == 201
    mark = len(github.requests)
    again = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "run-1"})
    assert again.status_code == 200
    assert again.get_json()["session_id"] == first.get_json()["session_id"]
    assert again.get_json()["pr_number"] == PR_NUMBER
    assert github.requests[mark:] == []
    assert len(sessions_in_db(rt)) == 1


def test_idempotency_keys_belong_to_one_token(api, rt, github):
    serve_session_pr(github)
    first = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "same"})
    github.rsps.upsert(
        "POST", github.url(f"{R}/pulls"), json={"number": 8, "html_url": "u"}, status=201
    )
    other = api.as_(make_token(rt, "other", "other-bot"))
    serve_permission(github, "other-bot", "write")
    second = other("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "same"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["session_id"] != second.get_json()["session_id"]
    assert second.get_json()["pr_number"] == 8
    assert len(sessions_in_db(rt)) == 2


def test_concurrent_requests_with_one_idempotency_key_make_one_session(api, rt, github):
    """A bot that times out and retries while its first request still runs: no server error,
    one session per key, and every success names that session."""
    serve_session_pr(github)
    answers: dict[str, list[Any]] = {}
    for i in range(8):
        key = f"race-{i}"
        start = threading.Barrier(2)

        def create(key: str = key, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": key})
            except Exception as err:  # TESTING propagates what would be a 500
                answers.setdefault(key, []).append((500, {"raised": repr(err)[:200]}))
            else:
                answers.setdefault(key, []).append((resp.status_code, resp.get_json()))

        pair = [threading.Thread(target=create) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
    with rt.database.unit() as s:
        keys = [k for (k,) in s.execute(select(AgentSession.idempotency_key))]
    assert sorted(keys) == sorted(f"{token_id(rt, 'agent')}:race-{i}" for i in range(8))
    for key, pair in answers.items():
        assert all(status < 500 for status, _ in pair), (key, pair)
        created = {body["session_id"] for status, body in pair if status in (200, 201)}
        assert len(created) == 1, (key, pair)


def test_github_failure_with_a_key_leaves_a_resumable_session_and_the_retry_finishes_it(
    api, rt, github
):
    serve_session_pr(github, pulls_status=502)
    key = {"Idempotency-Key": "run-7"}
    failed = api("POST", "/sessions", NEW_SESSION, headers=key)
    err = error(failed, 502, "github_error")
    assert "502" in err["message"]
    [row] = sessions_in_db(rt)
    assert (row.state, row.pr_number) == ("created", None)
    assert row.meta["github_error"] == "GitHub answered 502"
    sid = row.session_id
    branch = branch_name("minipipe/", sid, NEW_SESSION["title"])

    # The PR was in fact opened before the answer was lost: GitHub now says both exist.
    github.rsps.upsert(
        "POST",
        github.url(f"{R}/git/refs"),
        json={"message": "Reference already exists"},
        status=422,
    )
    github.rsps.upsert(
        "POST",
        github.url(f"{R}/pulls"),
        json={"message": "Validation Failed", "errors": [{"message": "A pull request exists"}]},
        status=422,
    )
    github.add("GET", f"{R}/pulls", [{"number": PR_NUMBER, "html_url": PR_URL}])
    first_start = "f1" * 20  # the start commit the first try's branch points at
    github.add("GET", f"{R}/git/ref/heads/{branch}", {"object": {"sha": first_start}})
    mark = len(github.api_requests())
    retried = api("POST", "/sessions", NEW_SESSION, headers=key)
    assert retried.status_code == 201, retried.get_json()
    body = retried.get_json()
    assert (body["session_id"], body["pr_number"], body["pr_url"]) == (sid, PR_NUMBER, PR_URL)
    assert (body["state"], body["branch"]) == ("created", branch)
    assert body["metadata"]["github_error"] is None

    sent = github.api_requests()[mark:]
    assert [(m, urlsplit(p).path) for m, p, _ in sent] == [
        ("GET", R),  # the policy is cached from the first try
        ("GET", f"{R}/git/ref/heads/main"),
        ("GET", f"{R}/git/commits/{BASE_SHA}"),
        ("POST", f"{R}/git/commits"),
        ("POST", f"{R}/git/refs"),
        ("GET", f"{R}/git/ref/heads/{branch}"),
        ("POST", f"{R}/pulls"),
        ("GET", f"{R}/pulls"),
    ]
    assert body["head_sha"] == first_start  # the branch's head, not this try's orphan commit
    query = parse_qs(urlsplit(sent[-1][1]).query)
    assert query["head"] == [f"Codertocat:{branch}"]
    assert len(sessions_in_db(rt)) == 1


def test_github_failure_without_a_key_fails_the_session(api, rt, github):
    serve_session_pr(github, pulls_status=500)
    error(api("POST", "/sessions", NEW_SESSION), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert (row.state, row.pr_number) == ("failed", None)
    assert row.meta["github_error"] == "GitHub answered 500"
    moves = [(a.from_state, a.to_state) for a in audit_rows(rt, entity_id=row.session_id)]
    assert moves == [(None, "created"), ("created", "failed")]
    assert audit_rows(rt, entity_id=row.session_id)[-1].reason == "creating the branch or PR failed"


def test_pull_request_422_with_no_existing_pr_is_a_github_error(api, rt, github):
    serve_session_pr(github, pulls_status=422)
    github.add("GET", f"{R}/pulls", [])
    error(api("POST", "/sessions", NEW_SESSION), 502, "github_error")
    [row] = sessions_in_db(rt)
    assert row.state == "failed"


def test_create_session_on_a_repository_without_the_app_is_404(api, rt, github):
    github.add("GET", "/repos/octo/elsewhere/installation", {"message": "Not Found"}, status=404)
    resp = api("POST", "/sessions", {**NEW_SESSION, "project_id": "octo/elsewhere"})
    err = error(resp, 404, "not_installed")
    assert "octo/elsewhere" in err["message"]
    assert sessions_in_db(rt) == []
    # GitHub was asked (as the app) whether it is installed there after all, and only that
    assert github.requests == [("GET", "/repos/octo/elsewhere/installation", None)]
    [call] = github.rsps.calls
    assert call.request.headers["Authorization"].startswith("Bearer ")  # the app's JWT


def test_a_token_scoped_to_another_repository_cannot_create(api, rt, github):
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", ["octo/other"]))
    error(scoped("POST", "/sessions", NEW_SESSION), 403, "forbidden")
    assert sessions_in_db(rt) == []
    assert github.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_type": "claude", "title": "t"}, "project_id"),
        ({**NEW_SESSION, "project_id": 5}, "project_id"),
        ({**NEW_SESSION, "project_id": "no-slash"}, "project_id"),
        ({**NEW_SESSION, "project_id": ""}, "project_id"),
        ({"project_id": REPO, "title": "t"}, "agent_type"),
        ({**NEW_SESSION, "agent_type": ["claude"]}, "agent_type"),
        ({"project_id": REPO, "agent_type": "claude"}, "title"),
        ({**NEW_SESSION, "title": 3}, "title"),
        ({**NEW_SESSION, "title": True}, "title"),
        ({**NEW_SESSION, "title": "   "}, "title"),
        ({**NEW_SESSION, "metadata": [1, 2]}, "metadata"),
        ({**NEW_SESSION, "metadata": "x"}, "metadata"),
        ({**NEW_SESSION, "base_branch": 1}, "base_branch"),
        ({**NEW_SESSION, "workstream_id": {}}, "workstream_id"),
    ],
)
def test_create_session_names_the_bad_field(api, rt, github, body, field):
    error(api("POST", "/sessions", body), 400, "invalid", field)
    assert sessions_in_db(rt) == []
    assert github.requests == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (json.dumps(NEW_SESSION).encode(), "text/plain"),
    ],
)
def test_create_session_body_must_be_a_json_object(api, data, content_type):
    resp = api("POST", "/sessions", data=data, content_type=content_type)
    error(resp, 400, "invalid")


def test_idempotency_key_too_long_is_400(api, github):
    resp = api("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "k" * 151})
    error(resp, 400, "invalid", "Idempotency-Key")
    assert github.requests == []


NUL = "a\x00b"  # PostgreSQL refuses NUL in text and in JSONB; SQLite stores it


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/stats?project_id=a%00b", None),
        ("GET", "/sessions?project_id=a%00b", None),
        ("GET", "/sessions?agent_type=a%00b", None),
        ("GET", "/patches?session_id=a%00b", None),
        ("GET", "/sessions/a%00b", None),
        ("GET", "/patches/a%00b", None),
        ("POST", "/sessions", {**NEW_SESSION, "title": NUL}),
        ("POST", "/sessions", {**NEW_SESSION, "metadata": {"note": NUL}}),
    ],
    ids=[
        "stats",
        "sessions-project",
        "sessions-agent",
        "patches",
        "session",
        "patch",
        "title",
        "meta",
    ],
)
def test_a_nul_character_in_the_input_is_not_a_server_error(api, github, method, path, body):
    serve_session_pr(github)
    resp = api(method, path, body)
    assert resp.status_code < 500
    if resp.status_code >= 400:
        assert resp.get_json()["error"]["code"]


# --- GET /sessions ---------------------------------------------------------------------


def test_list_sessions_filters_and_pages_newest_first(api, rt):
    ids = [seed_session(rt, agent_type="claude") for _ in range(4)]
    paused = seed_session(rt, agent_type="aider", state="paused")
    elsewhere = seed_session(rt, project="octo/other", agent_type="aider", state="created")
    everything = sorted([*ids, paused, elsewhere], reverse=True)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = api("GET", "/sessions", query_string=query)
        assert resp.status_code == 200
        page = resp.get_json()
        assert len(page["items"]) <= 2
        seen += [s["session_id"] for s in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == 3

    def listed(**query: str) -> list[str]:
        return [
            s["session_id"] for s in api("GET", "/sessions", query_string=query).get_json()["items"]
        ]

    assert listed(state="paused") == [paused]
    assert listed(agent_type="aider") == sorted([paused, elsewhere], reverse=True)
    assert listed(project_id="octo/other") == [elsewhere]
    assert listed(project_id=REPO, state="active") == sorted(ids, reverse=True)
    assert listed(agent_type="nobody") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),  # "²": str.isdigit() says yes, int() says no
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "bm90IG9uZSBvZiBvdXJzIQ"}, "cursor"),  # "not one of ours!"
        ({"state": "sleeping"}, "state"),
    ],
)
def test_list_sessions_bad_query_is_400(api, query, field):
    error(api("GET", "/sessions", query_string=query), 400, "invalid", field)


def test_a_scoped_token_sees_only_its_repositories(api, rt):
    mine = seed_session(rt)
    seed_session(rt, project="octo/other")
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    items = scoped("GET", "/sessions").get_json()["items"]
    assert [s["session_id"] for s in items] == [mine]
    error(scoped("GET", "/sessions", query_string={"project_id": "octo/other"}), 403, "forbidden")
    assert scoped("GET", "/sessions", query_string={"project_id": REPO}).status_code == 200


# --- GET / DELETE /sessions/{id} ---------------------------------------------------------


def test_get_session_with_its_patches(api, rt):
    sid, lid = seed_patch(rt)
    body = api("GET", f"/sessions/{sid}").get_json()
    assert (body["session_id"], body["state"], body["pr_number"]) == (sid, "active", 2)
    assert [p["ledger_id"] for p in body["patches"]] == [lid]
    patch = body["patches"][0]
    assert (patch["state"], patch["patch_id"], patch["risk"]["level"]) == (
        "awaiting_review",
        HEAD_SHA,
        "high",
    )


def test_unknown_session_is_404(api):
    error(api("GET", "/sessions/01nosuchsession000000000000"), 404, "not_found")
    error(api("DELETE", "/sessions/01nosuchsession000000000000"), 404, "not_found")
    error(api("POST", "/sessions/01nosuchsession000000000000/pause"), 404, "not_found")


def test_a_session_of_another_repository_is_hidden_from_a_scoped_token(api, rt):
    sid = seed_session(rt, project="octo/other")
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", f"/sessions/{sid}"), 404, "not_found")
    error(scoped("DELETE", f"/sessions/{sid}"), 404, "not_found")
    error(scoped("POST", f"/sessions/{sid}/pause"), 404, "not_found")
    assert api("GET", f"/sessions/{sid}").status_code == 200  # still there


def test_delete_session_removes_it_and_its_patches(api, rt):
    sid, lid = seed_patch(rt)
    resp = api("DELETE", f"/sessions/{sid}")
    assert resp.status_code == 204
    assert resp.get_data() == b""
    error(api("GET", f"/sessions/{sid}"), 404, "not_found")
    error(api("GET", f"/patches/{lid}"), 404, "not_found")
    error(api("DELETE", f"/sessions/{sid}"), 404, "not_found")
    [deleted] = audit_rows(rt, entity_id=sid, reason="session deleted")
    assert (deleted.actor, deleted.outcome) == ("agent-bot", "noted")


# --- moves ------------------------------------------------------------------------------


def serve_bot_write(github: Any, login: str = "agent-bot") -> None:
    """Moves are decided as comments are: the policy and the token user's permission."""
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, login, "write")


def test_pause_resume_complete(api, rt, github):
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    serve_bot_write(github)
    paused = api("POST", f"/sessions/{sid}/pause")
    assert (paused.status_code, paused.get_json()["state"]) == (200, "paused")
    resumed = api("POST", f"/sessions/{sid}/resume", {"version": paused.get_json()["version"]})
    assert (resumed.status_code, resumed.get_json()["state"]) == (200, "active")
    done = api("POST", f"/sessions/{sid}/complete", {"success": True})
    assert (done.status_code, done.get_json()["state"]) == (200, "completed")
    moves = [(a.from_state, a.to_state, a.actor, a.source) for a in audit_rows(rt, entity_id=sid)]
    assert moves[-3:] == [
        ("active", "paused", "agent-bot", "api:agent"),
        ("paused", "active", "agent-bot", "api:agent"),
        ("active", "completed", "agent-bot", "api:agent"),
    ]
    permission = f"{R}/collaborators/agent-bot/permission"
    assert [r[1] for r in github.api_requests() if r[1] == permission] == [permission]  # cached


def test_complete_without_success_fails_the_session(api, rt):
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    resp = api("POST", f"/sessions/{sid}/complete", {"success": False})
    assert resp.get_json()["state"] == "failed"
    default = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    assert api("POST", f"/sessions/{default}/complete").get_json()["state"] == "completed"


def test_an_illegal_move_is_409_and_audited(api, rt, github):
    serve_bot_write(github)
    sid = seed_session(rt, state="created", meta=PR_META, installation_id=PR_INSTALLATION)
    err = error(api("POST", f"/sessions/{sid}/pause"), 409, "illegal_transition")
    assert sid in err["message"] and "created" in err["message"] and "paused" in err["message"]
    with rt.database.unit() as s:
        assert registry.get_session(s, sid).state == "created"
    [refused] = audit_rows(rt, entity_id=sid, outcome="refused")
    assert (refused.from_state, refused.to_state, refused.actor) == (
        "created",
        "paused",
        "agent-bot",
    )

    done = seed_session(rt, state="completed", meta=PR_META, installation_id=PR_INSTALLATION)
    error(api("POST", f"/sessions/{done}/resume"), 409, "illegal_transition")
    error(api("POST", f"/sessions/{done}/complete", {"success": False}), 409, "illegal_transition")


def test_a_stale_version_is_409_conflict(api, rt, github):
    serve_bot_write(github)
    sid = seed_session(rt, meta=PR_META, installation_id=PR_INSTALLATION)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    err = error(api("POST", f"/sessions/{sid}/pause", {"version": version - 1}), 409, "conflict")
    assert f"version {version}" in err["message"]
    assert api("GET", f"/sessions/{sid}").get_json()["state"] == "active"


@pytest.mark.parametrize(
    ("move", "body", "field"),
    [
        ("complete", {"success": "yes"}, "success"),
        ("complete", {"success": 1}, "success"),
        ("pause", {"version": "3"}, "version"),
        ("pause", {"version": True}, "version"),
    ],
)
def test_move_names_the_bad_field(api, rt, move, body, field):
    sid = seed_session(rt)
    error(api("POST", f"/sessions/{sid}/{move}", body), 400, "invalid", field)
    assert api("GET", f"/sessions/{sid}").get_json()["state"] == "active"


def test_move_body_must_be_an_object(api, rt):
    sid = seed_session(rt)
    error(api("POST", f"/sessions/{sid}/pause", [1]), 400, "invalid")


def test_unknown_routes_and_methods_under_the_api_answer_json(api):
    error(api("GET", "/nothing"), 404, "not_found")
    error(api("GET", "/sessions/a/b/c"), 404, "not_found")
    error(api("PUT", "/sessions"), 405, "method_not_allowed")
    error(api("GET", "/sessions/x/pause"), 405, "method_not_allowed")


def test_unknown_action_is_404(api, rt):
    sid, lid = seed_patch(rt)
    error(api("POST", f"/sessions/{sid}/explode"), 404, "not_found")
    error(api("POST", f"/patches/{lid}/merge"), 404, "not_found")


# --- patches ----------------------------------------------------------------------------


def test_list_patches_the_review_queue_and_filters(api, rt, github):
    sid, waiting = seed_patch(rt)
    _, fresh = seed_patch(rt, state=P.CREATED, sha="c" * 40, session_id=sid)
    other = seed_session(
        rt, project="octo/other", pr_number=3, meta=PR_META, installation_id=PR_INSTALLATION
    )
    _, elsewhere = seed_patch(rt, session_id=other, sha="d" * 40)

    def listed(**query: str) -> list[str]:
        resp = api("GET", "/patches", query_string=query)
        assert resp.status_code == 200
        return [p["ledger_id"] for p in resp.get_json()["items"]]

    assert listed() == [waiting, fresh, elsewhere]  # oldest first
    assert listed(state="awaiting_review") == [waiting, elsewhere]
    assert listed(state="awaiting_review", project_id=REPO) == [waiting]
    assert listed(session_id=sid) == [waiting, fresh]
    assert listed(run_id="nope") == []
    assert listed(workstream_id="nope") == []

    first = api("GET", "/patches", query_string={"limit": "2"}).get_json()
    assert [p["ledger_id"] for p in first["items"]] == [waiting, fresh]
    rest = api("GET", "/patches", query_string={"limit": "2", "cursor": first["next_cursor"]})
    assert [p["ledger_id"] for p in rest.get_json()["items"]] == [elsewhere]
    assert rest.get_json()["next_cursor"] is None

    error(api("GET", "/patches", query_string={"state": "merged"}), 400, "invalid", "state")
    error(api("GET", "/patches", query_string={"limit": "x"}), 400, "invalid", "limit")
    error(api("GET", "/patches", query_string={"cursor": "%%%"}), 400, "invalid", "cursor")

    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    queue = scoped("GET", "/patches", query_string={"state": "awaiting_review"}).get_json()
    assert [p["ledger_id"] for p in queue["items"]] == [waiting]
    error(scoped("GET", f"/patches/{elsewhere}"), 404, "not_found")
    error(scoped("POST", f"/patches/{elsewhere}/approve"), 404, "not_found")
    assert github.requests == []


def test_a_scoped_token_filtering_patches_by_another_repository_is_403(api, rt):
    """As GET /sessions?project_id= and GET /stats?project_id= answer: the filter is refused."""
    other = seed_session(
        rt, project="octo/other", pr_number=3, meta=PR_META, installation_id=PR_INSTALLATION
    )
    seed_patch(rt, session_id=other)
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", "/patches", query_string={"project_id": "octo/other"}), 403, "forbidden")


def test_get_patch_with_its_history(api, rt):
    _, lid = seed_patch(rt)
    body = api("GET", f"/patches/{lid}").get_json()
    assert (body["ledger_id"], body["state"]) == (lid, "awaiting_review")
    assert body["risk"] == {
        "level": "high",
        "reasons": ["touches high-risk paths: src/auth/login.py"],
    }
    assert "history" not in body  # paged on its own, never embedded whole
    assert body["review"]["status"] == "pending"
    first = api("GET", f"/patches/{lid}/history", query_string={"limit": 2}).get_json()
    rest = api(
        "GET", f"/patches/{lid}/history", query_string={"limit": 2, "cursor": first["next_cursor"]}
    ).get_json()
    assert rest["next_cursor"] is None
    assert [(h["from"], h["to"], h["outcome"]) for h in first["items"] + rest["items"]] == [
        (None, "created", "moved"),
        ("created", "validated", "moved"),
        ("validated", "awaiting_review", "moved"),
    ]
    error(api("GET", "/patches/01nosuchpatch00000000000000"), 404, "not_found")
    error(api("GET", "/patches/01nosuchpatch00000000000000/history"), 404, "not_found")


def test_approve_by_a_writer_queues_the_patch_and_publishes_through_the_worker(api, rt, github):
    _, lid = seed_patch(rt)
    with rt.database.unit() as s:
        s.add(CheckRunRef(project_id=REPO, head_sha=HEAD_SHA, check_run_id=555))
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    github.add("PATCH", f"{R}/check-runs/555", {"id": 555})
    writer = api.as_(make_token(rt, "writer-token", "writer"))

    resp = writer("POST", f"/patches/{lid}/approve", {"comment": "ship it"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["state"] == "queued"
    assert body["metadata"]["reviewed_by"] == "writer"
    assert body["metadata"]["review_status"] == "approved"
    assert body["metadata"]["approvals"] == ["writer"]
    moved = audit_rows(rt, entity_id=lid, outcome="moved")[-1]
    assert (moved.from_state, moved.to_state, moved.actor, moved.source) == (
        "awaiting_review",
        "queued",
        "writer",
        "api:writer-token",
    )
    assert [(m, p) for m, p, _ in github.api_requests()] == [
        ("GET", POLICY_PATH),
        ("GET", f"{R}/collaborators/writer/permission"),
    ]

    [queued] = publish_deliveries(rt)
    assert queued.status == "queued"
    assert json.loads(queued.payload)["ledger_id"] == lid
    assert queued.order_key == f"{REPO}#2"  # in order with the PR's own events

    mark = len(github.api_requests())
    assert [o.status for o in drain(rt)] == ["done"]
    [update] = github.api_requests()[mark:]
    assert update[:2] == ("PATCH", f"{R}/check-runs/555")
    assert (update[2]["status"], update[2]["conclusion"]) == ("completed", "success")
    assert "head_sha" not in update[2]
    assert publish_deliveries(rt)[0].status == "done"


def test_reject_drops_the_patch_and_the_first_publish_creates_the_check_run(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    github.add("POST", f"{R}/check-runs", {"id": 777}, status=201)
    writer = api.as_(make_token(rt, "writer-token", "writer"))

    resp = writer("POST", f"/patches/{lid}/reject", {"reason": "breaks the session cookie"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "dropped"
    assert body["metadata"]["review_reason"] == "breaks the session cookie"
    assert body["metadata"]["review_status"] == "rejected"

    mark = len(github.api_requests())
    drain(rt)
    [created] = github.api_requests()[mark:]
    assert created[:2] == ("POST", f"{R}/check-runs")
    assert (created[2]["head_sha"], created[2]["conclusion"]) == (HEAD_SHA, "failure")
    assert "breaks the session cookie" in created[2]["output"]["title"]
    with rt.database.unit() as s:
        assert s.get(CheckRunRef, (REPO, HEAD_SHA)).check_run_id == 777


def test_review_sends_a_queued_patch_back_to_review(api, rt, github):
    _, lid = seed_patch(rt, state=P.QUEUED, risk="low")
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    resp = writer("POST", f"/patches/{lid}/review", {"reason": "look at the migration"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["state"] == "awaiting_review"
    assert body["metadata"]["manual_review_required"] is True
    assert body["metadata"]["review_reason"] == "look at the migration"
    assert len(publish_deliveries(rt)) == 1


def test_reject_without_a_reason_is_400_and_touches_nothing(api, rt, github):
    _, lid = seed_patch(rt)
    for body in (None, {}, {"reason": "  "}):
        error(api("POST", f"/patches/{lid}/reject", body), 400, "invalid", "reason")
    error(api("POST", f"/patches/{lid}/reject", {"reason": 5}), 400, "invalid", "reason")
    error(api("POST", f"/patches/{lid}/approve", {"comment": ["x"]}), 400, "invalid", "comment")
    error(api("POST", f"/patches/{lid}/approve", {"version": "1"}), 400, "invalid", "version")
    error(api("POST", f"/patches/{lid}/approve", data=b"nope"), 400, "invalid")
    assert github.requests == []
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"


def test_a_reader_may_not_approve(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "reader", "read")
    reader = api.as_(make_token(rt, "reader-token", "reader"))
    err = error(reader("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "needs `write`" in err["message"]
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"
    [refused] = audit_rows(rt, outcome="refused")
    assert (refused.entity, refused.entity_id, refused.actor, refused.source) == (
        "patch",
        lid,
        "reader",
        "api:reader-token",
    )
    assert publish_deliveries(rt) == []


def test_a_session_bot_may_not_approve_its_own_patch(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "agent-bot", "admin")
    err = error(api("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "cannot approve their own patch" in err["message"]
    [refused] = audit_rows(rt, outcome="refused")
    assert (refused.actor, refused.entity_id) == ("agent-bot", lid)
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"


def test_high_risk_patches_are_for_the_listed_reviewers(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    serve_policy(github, "review:\n  reviewers: [octocat]\n")
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    err = error(writer("POST", f"/patches/{lid}/approve"), 403, "forbidden")
    assert "@octocat" in err["message"]


def test_deciding_a_stale_version_or_a_decided_patch_is_409(api, rt, github):
    _, lid = seed_patch(rt)
    _, dropped = seed_patch(rt, state=P.DROPPED, sha="e" * 40)
    github.allow_token_exchange()
    serve_policy(github)
    serve_permission(github, "writer", "write")
    writer = api.as_(make_token(rt, "writer-token", "writer"))
    version = api("GET", f"/patches/{lid}").get_json()["version"]
    error(writer("POST", f"/patches/{lid}/approve", {"version": version + 1}), 409, "conflict")
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "awaiting_review"
    err = error(writer("POST", f"/patches/{dropped}/approve"), 409, "illegal_transition")
    assert "dropped" in err["message"]
    assert publish_deliveries(rt) == []


def test_deciding_a_patch_of_a_session_without_installation_is_409(api, rt, github):
    bare = seed_session(rt, pr_number=4)
    _, lid = seed_patch(rt, session_id=bare)
    error(api("POST", f"/patches/{lid}/approve"), 409, "no_installation")
    error(api("POST", "/patches/01nosuchpatch00000000000000/approve"), 404, "not_found")
    assert github.requests == []


def test_github_failing_during_a_decision_is_502(api, rt, github):
    _, lid = seed_patch(rt)
    github.allow_token_exchange()
    github.add("GET", POLICY_PATH, {"message": "boom"}, status=500)
    error(api("POST", f"/patches/{lid}/approve"), 502, "github_error")


# --- stats ------------------------------------------------------------------------------


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


def test_stats_per_agent_type(api, rt):
    seed_stats(rt)
    resp = api("GET", "/stats", query_string={"project_id": REPO})
    assert resp.status_code == 200
    items = {row["agent_type"]: row for row in resp.get_json()["items"]}
    assert set(items) == {"aider", "claude"}
    claude = items["claude"]
    assert claude["sessions"] == 4
    assert claude["by_state"] == {"completed": 2, "failed": 1, "active": 1}
    assert claude["success_rate"] == pytest.approx(0.6667)
    assert claude["median_seconds_to_completion"] == pytest.approx(120.0)
    assert claude["patches_decided"] == 6
    assert (claude["approval_rate"], claude["rejection_rate"]) == (0.5, 0.5)
    assert claude["top_rejection_reasons"] == [
        {"reason": "too big", "count": 2},
        {"reason": "breaks tests", "count": 1},
    ]
    aider = items["aider"]
    assert (aider["sessions"], aider["success_rate"], aider["approval_rate"]) == (1, None, None)
    assert aider["median_seconds_to_completion"] is None
    assert aider["top_rejection_reasons"] == []

    everywhere = {r["agent_type"]: r for r in api("GET", "/stats").get_json()["items"]}
    assert everywhere["claude"]["sessions"] == 5
    assert everywhere["claude"]["success_rate"] == 0.75
    assert everywhere["claude"]["median_seconds_to_completion"] == pytest.approx(180.0)
    assert {"reason": "elsewhere", "count": 1} in everywhere["claude"]["top_rejection_reasons"]


def test_stats_of_a_repository_outside_the_token_is_403(api, rt):
    scoped = api.as_(make_token(rt, "scoped", "agent-bot", [REPO]))
    error(scoped("GET", "/stats", query_string={"project_id": "octo/other"}), 403, "forbidden")
    assert scoped("GET", "/stats", query_string={"project_id": REPO}).get_json() == {"items": []}


def test_openapi_description_lists_every_endpoint(api):
    spec = api("GET", "/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["servers"] == [{"url": "http://localhost", "description": "This server"}]
    assert set(spec["paths"]) == {
        f"/api/v1{p}"
        for p in (
            "/sessions",
            "/sessions/{session_id}",
            "/sessions/{session_id}/pause",
            "/sessions/{session_id}/resume",
            "/sessions/{session_id}/complete",
            "/sessions/{session_id}/usage",
            "/patches",
            "/patches/{ledger_id}",
            "/patches/{ledger_id}/history",
            "/patches/{ledger_id}/approve",
            "/patches/{ledger_id}/reject",
            "/patches/{ledger_id}/review",
            "/stats",
            "/openapi.json",
        )
    }
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == 16
    assert {"createSession", "getSession", "approvePatch", "getPatchHistory"} <= set(ids)
    assert "Error" not in spec["components"]["schemas"]


# --- the CLI: tokens, reaping, stats --------------------------------------------------------


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Any:
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


def test_cli_token_create_prints_it_once_and_stores_only_its_hash(cli, api, rt):
    result = cli("token", "create", "ci", "--as", "writer", "--repo", REPO)
    secret = result.stdout.strip()
    assert secret.startswith("mpg_") and "\n" not in secret
    assert "not shown again" in result.stderr and secret not in result.stderr
    with rt.database.unit() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "ci")).one()
    assert (row.login, row.repositories) == ("writer", [REPO])
    assert row.token_hash == tokens.digest(secret) != secret
    with rt.database.unit() as s:  # nowhere in the database, on any backend
        everything = repr([s.execute(select(t)).all() for t in Base.metadata.sorted_tables])
    assert secret not in everything and secret[4:] not in everything
    assert row.token_hash in everything

    # it works against the API, within its repositories
    ci = api.as_(secret)
    assert ci("GET", "/sessions").status_code == 200
    error(ci("GET", "/sessions", query_string={"project_id": "octo/other"}), 403, "forbidden")

    listing = json.loads(cli("token", "list", "--json").stdout)["items"]
    by_name = {t["name"]: t for t in listing}
    assert by_name["ci"]["login"] == "writer"
    assert by_name["ci"]["repositories"] == REPO
    assert by_name["ci"]["revoked"] is False
    assert by_name["ci"]["last_used_at"] is not None
    assert by_name["agent"]["repositories"] == "all"
    table = cli("token", "list").stdout
    for shown in (json.dumps(listing), table):
        assert secret not in shown and row.token_hash not in shown

    cli("token", "create", "ci", "--as", "x", code=2)  # the name is taken

    assert "revoked" in cli("token", "revoke", "ci").stdout
    error(ci("GET", "/sessions"), 401, "unauthorized")
    listing = json.loads(cli("token", "list", "--json").stdout)["items"]
    assert {t["name"]: t["revoked"] for t in listing} == {"agent": False, "ci": True}
    assert "no token named" in cli("token", "revoke", "nope", code=2).stderr


def test_cli_reap_dry_run_then_for_real(cli, rt):
    stale = seed_session(rt, idle=timedelta(hours=2))
    fresh = seed_session(rt, idle=timedelta(minutes=10))
    already = seed_session(rt, state="paused", idle=timedelta(days=3))

    dry = cli("sessions", "reap", "--older-than", "1h", "--dry-run")
    assert stale in dry.stdout and fresh not in dry.stdout and already not in dry.stdout
    assert "would pause 1 stale sessions" in dry.stdout
    with rt.database.unit() as s:
        assert s.get(AgentSession, stale).state == "active"
    assert audit_rows(rt, entity_id=stale, to_state="paused") == []

    done = json.loads(cli("sessions", "reap", "--older-than", "1h", "--json").stdout)
    assert done["dry_run"] is False
    assert [row["session_id"] for row in done["sessions"]] == [stale]
    with rt.database.unit() as s:
        assert [s.get(AgentSession, x).state for x in (stale, fresh, already)] == [
            "paused",
            "active",
            "paused",
        ]
    [pause] = audit_rows(rt, entity_id=stale, to_state="paused")
    assert (pause.reason, pause.actor, pause.source) == ("stale", "minipipe", "cli")

    cli("sessions", "reap", "--older-than", "soon", code=2)


def test_reap_honours_each_repositories_stale_after(rt, github):
    install(rt, REPO, "Codertocat/Other", "Codertocat/Eager")
    at = {"installation_id": 1}
    quick = seed_session(rt, **at, idle=timedelta(hours=3))
    recent = seed_session(rt, **at, idle=timedelta(minutes=90))
    other = seed_session(rt, project="Codertocat/Other", **at, idle=timedelta(hours=3))
    eager = seed_session(rt, project="Codertocat/Eager", **at, idle=timedelta(minutes=70))
    github.allow_token_exchange()
    serve_policy(github, "sessions:\n  stale_after: 2h\n")
    serve_policy(github, None, repo="Codertocat/Other")
    serve_policy(github, "sessions:\n  stale_after: 5m\n", repo="Codertocat/Eager")

    would = reap_stale(rt.database, rt.github, dry_run=True)
    assert sorted(s.session_id for s in would) == sorted([quick, eager])
    reaped = reap_stale(rt.database, rt.github)
    assert sorted(s.session_id for s in reaped) == sorted([quick, eager])
    with rt.database.unit() as s:
        states = {x: s.get(AgentSession, x).state for x in (quick, recent, other, eager)}
    assert states == {quick: "paused", recent: "active", other: "active", eager: "paused"}
    assert [a.reason for a in audit_rows(rt, entity_id=quick, to_state="paused")] == ["stale"]
    policy_reads = [p for m, p, _ in github.api_requests() if p.endswith("/minipipe.yml")]
    assert len(policy_reads) == 3  # once per repository: the policy is cached


def test_cli_sessions_stats_json_matches_the_api(cli, api, rt):
    seed_stats(rt)
    printed = json.loads(cli("sessions", "stats", "--json").stdout)
    assert printed == api("GET", "/stats").get_json()
    mine = json.loads(cli("sessions", "stats", "--project", REPO, "--json").stdout)
    claude = next(r for r in mine["items"] if r["agent_type"] == "claude")
    assert (claude["sessions"], claude["median_seconds_to_completion"]) == (4, 120.0)
    table = cli("sessions", "stats").stdout
    assert "too big (2); breaks tests (1)" in table
