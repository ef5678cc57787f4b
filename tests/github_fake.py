"""The suite's one GitHub: faked at the HTTP layer, so PyGithub's real requests run.

Two ways to answer, one set of routes:

- ``FakeGitHub`` is ``responses`` (in-process tests): a test serves canned answers
  (``github.add(...)``) and asserts on ``github.requests`` (method, path, body).
- ``GitHubState`` is what GitHub keeps for a repository (pull requests, check runs,
  comments, reactions, roles, who signs in) with the routes that read and write it
  (``ROUTES``). ``github.serve(state)`` answers those routes through ``responses``;
  tests/fake_github_server.py serves the very same state and routes on a loopback port
  (browser, MCP, subprocess workers).

Making GitHub misbehave is here too: ``FAULTS`` (5xx, 422, 404, 401, a timeout, the
secondary rate limit), queued per route with ``state.fail_next(route, fault)`` or
decided per write by ``state.misbehave``, and ``github.fail(method, path, fault)`` for
a canned answer.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
import responses

API = "https://ghe.test/api/v3"  # an Enterprise-style base URL: GITHUB_API_URL must be honoured
WIRE = "https://ghe.test:443/api/v3"  # what PyGithub puts on the wire (explicit port)
WEB = "https://ghe.test"  # GITHUB_WEB_URL: where sign-in goes
APP_ID = 29310
INSTALLATION_ID = 1
REPO = "Codertocat/Hello-World"

Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON body (a str is sent as is)


def account(login: str, *, bot: bool = False, user_id: int | None = None) -> dict[str, Any]:
    """A GitHub user; one account whatever the case of its login, as on GitHub."""
    uid = user_id if user_id is not None else abs(hash(login.lower())) % 10**8
    return {"login": login, "id": uid, "type": "Bot" if bot else "User"}


def _expires() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- making GitHub misbehave ---------------------------------------------------------------


SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


@dataclass(frozen=True)
class Fault:
    """How GitHub fails one request (and what the app must make of it)."""

    name: str
    status: int = 0
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    exception: type[Exception] | None = None  # responses only: the connection fails
    took_effect: bool = False  # GitHub did the write; only the answer was lost
    error: str = ""  # what the delivery's last_error must mention
    wait: tuple[float, float] = (0.0, 0.0)  # the backoff the worker must choose

    def reply(self) -> Reply:
        status = self.status or 502  # a failed connection, on a real socket: a bad gateway
        return status, dict(self.headers), {"message": self.message or self.name}

    def answer(self, request: Any) -> Any:
        """As a ``responses`` callback answers (an exception is raised by responses)."""
        if self.exception is not None:
            return self.exception(f"fake {self.name}", request=request)
        status, headers, body = self.reply()
        return status, headers, json.dumps(body)


FAULTS = {
    "500": Fault("500", 500, "Server Error", error="500", wait=(1.6, 2.4)),
    "502": Fault("502", 502, "Bad Gateway", error="502", wait=(1.6, 2.4)),
    "timeout": Fault(
        "timeout", exception=requests.exceptions.ConnectTimeout, error="Timeout", wait=(1.6, 2.4)
    ),
    "401": Fault("401", 401, "Bad credentials", error="BadCredentials"),
    "404": Fault("404", 404, "Not Found"),
    "422": Fault("422", 422, "Validation Failed"),
    "secondary rate limit": Fault(
        "secondary rate limit",
        403,
        SECONDARY_RATE_LIMIT,
        headers=(("Retry-After", "60"),),
        error="RateLimitExceeded",
        wait=(60.0, 60.0),
    ),
}


# --- a request, as either transport received it ----------------------------------------------


@dataclass
class Request:
    method: str
    path: str  # below the API root (or the web root), without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, the form (dict) of a form post, or None
    params: dict[str, str] = field(default_factory=dict)  # the route's named groups


def _parse_body(raw: bytes | str | None, content_type: str) -> Any:
    if raw is None or raw == b"" or raw == "":
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    if "form" in content_type:
        return {k: v[0] for k, v in parse_qs(text).items()}
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- what GitHub keeps, and the routes that read and write it ----------------------------------


@dataclass
class Route:
    name: str
    method: str
    path: str  # a regex with named groups, below the API root (or the web root if ``web``)
    handler: Callable[[GitHubState, Request], Reply]
    web: bool = False  # on the web host (OAuth), not under the API root

    @property
    def write(self) -> bool:
        return self.method != "GET" and not self.web and self.name != "installation_token"


ROUTES: list[Route] = []
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"


def route(
    name: str, method: str, path: str, *, web: bool = False
) -> Callable[[Callable[..., Reply]], Callable[..., Reply]]:
    def add(fn: Callable[..., Reply]) -> Callable[..., Reply]:
        ROUTES.append(Route(name, method, path.replace("{repo}", _REPO), fn, web))
        return fn

    return add


def _json(data: Any, status: int = 200, **headers: str) -> Reply:
    return status, dict(headers), data


NOT_FOUND: Reply = (404, {}, {"message": "Not Found"})


@dataclass
class GitHubState:
    """One GitHub's memory. Every field is what a test sets up or reads back."""

    # who is who
    roles: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, login) → role
    signing_in_as: str = "carol"  # the OAuth authorize page signs this user in
    repos: dict[str, list[str]] = field(default_factory=dict)  # login → repos they can read
    revoked: set[str] = field(default_factory=set)  # OAuth tokens GitHub no longer accepts
    down: bool = False  # GitHub answers 500 to the /user/installations reads
    installation_id: int = INSTALLATION_ID
    # the repository
    policy: str | None = None  # .github/minipipe.yml on the default branch (None: none)
    prs: dict[int, dict[str, Any]] = field(default_factory=dict)  # number → GET /pulls/{n}
    files: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    commits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # default: 1, author
    suites: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # default: CI green
    base_sha: str = "ba5e" * 10  # the default branch's head, where a session starts
    start_sha: str = "57a7" * 10  # a session's empty first commit
    pr_number: int = 12  # the draft PR opening a session makes
    # what the app wrote, as GitHub keeps it
    check_run_id: int = 4242  # the first check run's id
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    run_posts: list[dict[str, Any]] = field(default_factory=list)  # accepted creations
    run_patches: list[dict[str, Any]] = field(default_factory=list)  # accepted updates
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # number → posted
    reactions: list[tuple[int, str]] = field(default_factory=list)  # each once, as on GitHub
    reaction_posts: Counter[tuple[int, str]] = field(default_factory=Counter)
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # writes performed
    # what was asked, and faults
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # loopback: full path
    log: list[tuple[str, int | str]] = field(default_factory=list)  # (route, status)
    pending: dict[str, list[Fault]] = field(default_factory=dict)
    misbehave: Callable[[Route, Request], Fault | None] | None = None  # asked for every write
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._run_ids = itertools.count(self.check_run_id)

    # -- set up ------------------------------------------------------------------------------

    def allow(self, login: str, role: str, repo: str = REPO) -> None:
        self.roles[(repo, login)] = role

    def fail_next(self, route_name: str, fault: Fault) -> None:
        """The next request on ``route_name`` (a ``ROUTES`` name) fails with ``fault``."""
        self.pending.setdefault(route_name, []).append(fault)

    # -- read back ---------------------------------------------------------------------------

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _body in self.requests]

    def posted_comments(self) -> list[dict[str, Any]]:
        """Every comment the app posted, on any PR, in order."""
        return sorted((c for cs in self.comments.values() for c in cs), key=lambda c: c["id"])

    def successful_run_updates(self) -> list[str | None]:
        return [b.get("conclusion") for b in self.run_patches]

    # -- answering -----------------------------------------------------------------------------

    def handle(self, rt: Route, request: Request) -> Reply | Fault:
        """Answer ``request`` on ``rt``: a queued fault, the misbehaviour's, or the handler's."""
        with self.lock:
            fault = None
            queued = self.pending.get(rt.name)
            if queued:
                fault = queued.pop(0)
            elif rt.write and self.misbehave is not None:
                fault = self.misbehave(rt, request)
            if fault is not None:
                if fault.took_effect:
                    rt.handler(self, request)
                self.log.append(
                    (rt.name, fault.exception.__name__ if fault.exception else fault.status)
                )
                return fault
            reply = rt.handler(self, request)
            self.log.append((rt.name, reply[0]))
            if rt.write and reply[0] < 300:
                body = json.dumps(request.body, sort_keys=True) if request.body else ""
                self.accepted.append((request.method, request.path, body))
            return reply

    def match(self, method: str, path: str, *, web: bool) -> tuple[Route, dict[str, str]] | None:
        for rt in ROUTES:
            if rt.method == method and rt.web == web:
                found = re.fullmatch(rt.path, path)
                if found:
                    return rt, found.groupdict()
        return None

    # -- who the OAuth token is -----------------------------------------------------------------

    def login_of(self, request: Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("token ")
        login = token.removeprefix("gho_")
        if not token.startswith("gho_") or token in self.revoked or login not in self.repos:
            return None
        return login


# -- sign-in: the OAuth web flow and the /user reads ---------------------------------------------


@route("authorize", "GET", r"/login/oauth/authorize", web=True)
def _authorize(gh: GitHubState, req: Request) -> Reply:
    """The user clicks "Authorize" at once: back to the callback with their login as code."""
    query = urlencode({"code": gh.signing_in_as, "state": req.query.get("state", "")})
    return 302, {"Location": f"{req.query['redirect_uri']}?{query}"}, ""


@route("oauth_token", "POST", r"/login/oauth/access_token", web=True)
def _oauth_token(gh: GitHubState, req: Request) -> Reply:
    assert req.headers.get("Accept") == "application/json"
    code = (req.body or {}).get("code", "")
    if code not in gh.repos:
        return _json({"error": "bad_verification_code"})
    return _json({"access_token": f"gho_{code}", "token_type": "bearer", "scope": ""})


@route("user", "GET", r"/user")
def _user(gh: GitHubState, req: Request) -> Reply:
    login = gh.login_of(req)
    return _json({"message": "Bad credentials"}, 401) if login is None else _json({"login": login})


@route("user_installations", "GET", r"/user/installations")
def _user_installations(gh: GitHubState, req: Request) -> Reply:
    if gh.down:
        return _json({"message": "Server Error"}, 500)
    login = gh.login_of(req)
    if login is None:
        return _json({"message": "Bad credentials"}, 401)
    found = [{"id": gh.installation_id}] if gh.repos[login] else []
    return _json({"total_count": len(found), "installations": found})


@route("user_repositories", "GET", r"/user/installations/(?P<inst>\d+)/repositories")
def _user_repositories(gh: GitHubState, req: Request) -> Reply:
    login = gh.login_of(req)
    if login is None:
        return _json({"message": "Bad credentials"}, 401)
    listed = [{"full_name": n} for n in gh.repos[login]]
    return _json({"total_count": len(listed), "repositories": listed})


# -- the app -------------------------------------------------------------------------------------


@route("installation_token", "POST", r"/app/installations/(?P<inst>\d+)/access_tokens")
def _installation_token(gh: GitHubState, req: Request) -> Reply:
    inst = req.params["inst"]
    body = {"token": f"ghs_installation{inst}", "expires_at": _expires(), "permissions": {}}
    return _json(body, 201)


@route("hook_deliveries", "GET", r"/app/hook/deliveries")
def _hook_deliveries(gh: GitHubState, req: Request) -> Reply:
    return _json([])


# -- the repository -------------------------------------------------------------------------------


@route("repo", "GET", r"{repo}")
def _repo(gh: GitHubState, req: Request) -> Reply:
    p = req.params
    return _json({"full_name": f"{p['owner']}/{p['name']}", "default_branch": "main"})


@route("permission", "GET", r"{repo}/collaborators/(?P<login>[^/]+)/permission")
def _permission(gh: GitHubState, req: Request) -> Reply:
    p = req.params
    role = gh.roles.get((f"{p['owner']}/{p['name']}", p["login"]))
    if role is None:
        return NOT_FOUND
    legacy = {"triage": "read", "maintain": "write"}.get(role, role)
    return _json({"permission": legacy, "role_name": role, "user": account(p["login"])})


@route("contents", "GET", r"{repo}/contents/(?P<path>.+)")
def _contents(gh: GitHubState, req: Request) -> Reply:
    if req.params["path"] != ".github/minipipe.yml" or gh.policy is None:
        return NOT_FOUND  # no policy file: the defaults
    content = base64.b64encode(gh.policy.encode()).decode()
    return _json({"type": "file", "sha": "blob1", "encoding": "base64", "content": content})


@route("pulls", "GET", r"{repo}/pulls")
def _pulls(gh: GitHubState, req: Request) -> Reply:
    """The open PRs, with an ETag (reconciliation reads this conditionally)."""
    open_ = [p for p in gh.prs.values() if p["state"] == "open"]
    etag = f'"{hash(json.dumps(open_, sort_keys=True))}"'
    if req.headers.get("If-None-Match") == etag:
        return 304, {"ETag": etag}, ""
    return 200, {"ETag": etag}, open_


@route("pull", "GET", r"{repo}/pulls/(?P<number>\d+)")
def _pull(gh: GitHubState, req: Request) -> Reply:
    pr = gh.prs.get(int(req.params["number"]))
    return NOT_FOUND if pr is None else _json(pr)


@route("pull_files", "GET", r"{repo}/pulls/(?P<number>\d+)/files")
def _pull_files(gh: GitHubState, req: Request) -> Reply:
    return _json(gh.files.get(int(req.params["number"]), []))


@route("pull_commits", "GET", r"{repo}/pulls/(?P<number>\d+)/commits")
def _pull_commits(gh: GitHubState, req: Request) -> Reply:
    number = int(req.params["number"])
    if number in gh.commits:
        return _json(gh.commits[number])
    pr = gh.prs.get(number)
    if pr is None:
        return NOT_FOUND
    git = {"name": pr["user"]["login"], "email": "bot@example.com", "date": "2026"}
    one = {  # one commit, by the PR's author (the session's bot)
        "sha": pr["head"]["sha"],
        "commit": {"author": git, "committer": git},
        "author": pr["user"],
        "committer": pr["user"],
    }
    return _json([one])


@route("check_suites", "GET", r"{repo}/commits/(?P<sha>\w+)/check-suites")
def _check_suites(gh: GitHubState, req: Request) -> Reply:
    sha = req.params["sha"]
    green = {"id": 1, "status": "completed", "conclusion": "success", "app": {"id": 42}}
    listed = gh.suites.get(sha, [{**green, "head_sha": sha}])
    return _json({"total_count": len(listed), "check_suites": listed})


@route("list_runs", "GET", r"{repo}/commits/(?P<sha>\w+)/check-runs")
def _list_runs(gh: GitHubState, req: Request) -> Reply:
    listed = [r for r in gh.runs.values() if r["head_sha"] == req.params["sha"]]
    return _json({"total_count": len(listed), "check_runs": listed})


@route("create_run", "POST", r"{repo}/check-runs")
def _create_run(gh: GitHubState, req: Request) -> Reply:
    ident = next(gh._run_ids)
    gh.runs[ident] = {**req.body, "id": ident, "app": {"id": APP_ID}}
    gh.run_posts.append(req.body)
    return _json(gh.runs[ident], 201)


@route("update_run", "PATCH", r"{repo}/check-runs/(?P<ident>\d+)")
def _update_run(gh: GitHubState, req: Request) -> Reply:
    ident = int(req.params["ident"])
    if ident not in gh.runs:
        return NOT_FOUND
    gh.runs[ident].update(req.body)
    gh.run_patches.append(req.body)
    return _json(gh.runs[ident])


@route("reaction", "POST", r"{repo}/issues/comments/(?P<comment>\d+)/reactions")
def _reaction(gh: GitHubState, req: Request) -> Reply:
    key = (int(req.params["comment"]), req.body["content"])
    gh.reaction_posts[key] += 1
    if key in gh.reactions:
        return _json({"id": 1, "content": key[1]})  # GitHub: "reaction exists"
    gh.reactions.append(key)
    return _json({"id": 1, "content": key[1]}, 201)


@route("reply", "POST", r"{repo}/issues/(?P<number>\d+)/comments")
def _reply(gh: GitHubState, req: Request) -> Reply:
    posted = gh.comments.setdefault(int(req.params["number"]), [])
    total = sum(len(c) for c in gh.comments.values())
    posted.append({"id": 9100 + total - 1, "body": req.body["body"]})
    return _json(posted[-1], 201)


@route("list_comments", "GET", r"{repo}/issues/(?P<number>\d+)/comments")
def _list_comments(gh: GitHubState, req: Request) -> Reply:
    return _json(gh.comments.get(int(req.params["number"]), []))


@route("reviewers", "POST", r"{repo}/pulls/(?P<number>\d+)/requested_reviewers")
def _reviewers(gh: GitHubState, req: Request) -> Reply:
    return _json({}, 201)


# -- git: a session's branch and draft PR, and the trees a push is compared by -------------------


@route("git_ref", "GET", r"{repo}/git/ref/heads/(?P<branch>.+)")
def _git_ref(gh: GitHubState, req: Request) -> Reply:
    ref = f"refs/heads/{req.params['branch']}"
    return _json({"ref": ref, "object": {"sha": gh.base_sha, "type": "commit"}})


@route("git_commit", "GET", r"{repo}/git/commits/(?P<sha>\w+)")
def _git_commit(gh: GitHubState, req: Request) -> Reply:
    sha = req.params["sha"]
    return _json({"sha": sha, "tree": {"sha": f"tree-of-{sha}"}})


@route("new_commit", "POST", r"{repo}/git/commits")
def _new_commit(gh: GitHubState, req: Request) -> Reply:
    return _json({"sha": gh.start_sha}, 201)


@route("new_ref", "POST", r"{repo}/git/refs")
def _new_ref(gh: GitHubState, req: Request) -> Reply:
    return _json({"ref": req.body["ref"], "object": {"sha": gh.start_sha}}, 201)


@route("new_pull", "POST", r"{repo}/pulls")
def _new_pull(gh: GitHubState, req: Request) -> Reply:
    p = req.params
    url = f"https://github.com/{p['owner']}/{p['name']}/pull/{gh.pr_number}"
    return _json({"number": gh.pr_number, "html_url": url, "draft": True}, 201)


# --- responses: canned answers, the state's routes, and what the app sent ------------------------


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

    def fail(self, method: str, path: str, fault: Fault) -> None:
        """``path`` answers with ``fault`` (a ``FAULTS`` entry), once per registration."""
        if fault.exception is not None:
            self.rsps.add(method, self.url(path), body=fault.exception(f"fake {fault.name}"))
            return
        status, headers, body = fault.reply()
        self.add(method, path, body, status=status, headers=headers)

    def serve_policy(self, text: str | None, repo: str = REPO) -> None:
        """``.github/minipipe.yml`` on the default branch says ``text`` (None: there is none)."""
        path = f"/repos/{repo}/contents/.github/minipipe.yml"
        if text is None:
            self.add("GET", path, {"message": "Not Found"}, status=404)
            return
        content = base64.b64encode(text.encode()).decode()
        self.add(
            "GET", path, {"type": "file", "sha": "blob1", "encoding": "base64", "content": content}
        )

    def serve_permission(self, login: str, role: str, repo: str = REPO) -> None:
        """``login``'s role on ``repo``, as the collaborator permission endpoint says it."""
        legacy = {"triage": "read", "maintain": "write"}.get(role, role)
        self.add(
            "GET",
            f"/repos/{repo}/collaborators/{login}/permission",
            {"permission": legacy, "role_name": role, "user": account(login)},
        )

    def serve_manifest_conversion(self, code: str, created: dict[str, Any]) -> str:
        """GitHub turns the manifest flow's ``code`` into the app ``created`` (its id, key,
        secrets). The setup page posts with plain ``requests``: the URL has no port."""
        url = f"{API}/app-manifests/{code}/conversions"
        self.rsps.add("POST", url, status=201, json=created)
        return url

    def allow_token_exchange(
        self, installation_id: int = INSTALLATION_ID, *, token: str = "ghs_installationtoken"
    ) -> None:
        def reply(request: Any) -> tuple[int, dict[str, str], str]:
            self.token_exchanges += 1
            body = {
                "token": token,
                "expires_at": _expires(),
                "permissions": {},
                "repository_selection": "all",
            }
            return 201, {}, json.dumps(body)

        self.rsps.add_callback(
            "POST", self.url(f"/app/installations/{installation_id}/access_tokens"), callback=reply
        )

    def serve(self, state: GitHubState, *names: str) -> GitHubState:
        """Answer the routes ``names`` (default: every route) from ``state``."""
        for rt in ROUTES:
            if names and rt.name not in names:
                continue
            base = re.escape(WEB if rt.web else WIRE)
            pattern = re.compile(base + rt.path + r"(?:\?.*)?$")
            self.rsps.add_callback(
                rt.method, pattern, callback=_responses_callback(state, rt, pattern, rt.web)
            )
        return state

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


def _responses_callback(
    state: GitHubState, rt: Route, pattern: re.Pattern[str], web: bool
) -> Callable[[Any], Any]:
    def serve(prepared: Any) -> Any:
        url = urlsplit(prepared.url)
        base = WEB if web else WIRE
        path = prepared.url.removeprefix(base).split("?", 1)[0]
        found = re.fullmatch(rt.path, path)
        assert found is not None, (rt.name, prepared.url)
        request = Request(
            method=prepared.method,
            path=path,
            query={k: v[0] for k, v in parse_qs(url.query).items()},
            headers=dict(prepared.headers),
            body=_parse_body(prepared.body, prepared.headers.get("Content-Type", "")),
            params=found.groupdict(),
        )
        answer = state.handle(rt, request)
        if isinstance(answer, Fault):
            return answer.answer(prepared)
        status, headers, body = answer
        text = body if isinstance(body, str) else json.dumps(body)
        return status, {"Content-Type": "application/json", **headers}, text

    return serve


class Users:
    """GitHub's OAuth and ``/user*`` endpoints for a few users; the code is the login.

    The sign-in routes of a ``GitHubState``, answered through ``responses``.
    """

    def __init__(self, github: FakeGitHub) -> None:
        self.github = github
        self.state = github.serve(
            GitHubState(), "oauth_token", "user", "user_installations", "user_repositories"
        )

    @property
    def visible(self) -> dict[str, list[str]]:
        """login → full names they can read."""
        return self.state.repos

    @property
    def revoked(self) -> set[str]:
        """Tokens GitHub no longer accepts."""
        return self.state.revoked

    @property
    def down(self) -> bool:
        """GitHub answers 500 to the /user/installations reads."""
        return self.state.down

    @down.setter
    def down(self, value: bool) -> None:
        self.state.down = value
