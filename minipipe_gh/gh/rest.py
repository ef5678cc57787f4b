"""Every GitHub REST call the app makes, in one place.

Paths follow https://docs.github.com/en/rest. ``RepoAPI``'s calls, the ones on
every delivery's path, go out through ``send_json``: requests' HTTP adapter on a
keep-alive connection of the thread's, with PyGithub's base URL, auth and error
types (``GithubException`` and its kinds, with the status, headers and body).
PyGithub's ``Requester`` and requests' ``Session`` around it cost about a
millisecond of CPU more per request (environment lookups, cookies, hooks, a
debug dump of every request), as much as the rest of a decision. Conditional
GETs and the app's own calls still use the ``Requester``. Calls are counted per
handled event (``metrics.counting_github_calls``, through ``CALL_OBSERVERS``):
that is the rate limit our users pay, so each method here is one request unless
it says otherwise.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from github import Consts, Github, GithubException
from github.Requester import Requester
from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from minipipe_gh.core.authz import Collaborator

PERMISSION_TTL_S = 60.0
TIMEOUT_S = 15  # every GitHub request's, PyGithub's clients (gh/client.py) included
MAX_REDIRECTS = 3
API_VERSION = Consts.API_VERSION_2022_11_28

# Called with (verb, path and query, status, response headers) after each request
# ``send_json`` makes; the metrics register here (PyGithub's own requests are heard
# through its logger).
CALL_OBSERVERS: list[Callable[[str, str, int, Mapping[str, str]], None]] = []
_local = threading.local()


def _adapter() -> HTTPAdapter:
    """The thread's adapter: its connections stay open between requests. No retries:
    the worker reschedules a failed delivery instead (as with PyGithub's ``retry=0``)."""
    adapter = getattr(_local, "adapter", None)
    if adapter is None:
        adapter = _local.adapter = HTTPAdapter(max_retries=0, pool_maxsize=2)
    return adapter


@functools.lru_cache(maxsize=16)
def _origin(base_url: str) -> str:
    """The base URL with its port spelled out, as PyGithub's connections send it."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}{parts.path.rstrip('/')}"


def send_json(
    requester: Requester,
    verb: str,
    path: str,
    params: Mapping[str, Any] | None = None,
    body: Any = None,
) -> Any:
    """One JSON request as ``requester.requestJsonAndCheck`` makes it (its base URL, auth
    and user agent; a 301/307/308 on the same host followed), without its overhead:
    the decoded answer, or its ``GithubException`` for a status of 400 or more."""
    headers = {"User-Agent": Consts.DEFAULT_USER_AGENT, "X-GitHub-Api-Version": API_VERSION}
    if requester.auth is not None:
        requester.auth.authentication(headers)
    data: bytes | None = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()  # bytes: sent in one packet with the headers
    url = _origin(requester.base_url) + path
    if params:  # as PyGithub spells a query (its order, lower-case booleans)
        url = Requester.add_parameters_to_url(url, dict(params))
    host = urlsplit(url).netloc
    for _hop in range(MAX_REDIRECTS + 1):
        resp = _adapter().send(_prepared(verb, url, headers, data), timeout=TIMEOUT_S)
        status, answer = resp.status_code, resp.content
        lower = {k.lower(): v for k, v in resp.headers.items()}
        parts = urlsplit(url)
        for observe in CALL_OBSERVERS:
            observe(verb, parts.path + (f"?{parts.query}" if parts.query else ""), status, lower)
        location = lower.get("location")
        if status in (301, 307, 308) and location:
            url = urljoin(url, location)
            if urlsplit(url).netloc != host:
                raise RuntimeError(f"GitHub redirected {verb} {path} to another host: {url}")
            continue
        break
    try:
        decoded = json.loads(answer) if answer else None
    except ValueError:
        decoded = {"data": answer.decode(errors="replace")}  # as PyGithub keeps a non-JSON body
    if status >= 400:
        raise Requester.createException(status, lower, decoded)
    if verb == "GET" and isinstance(decoded, dict) and "url" not in decoded:
        decoded["url"] = path  # as PyGithub's answers carry it
    return decoded


def _prepared(verb: str, url: str, headers: dict[str, str], data: bytes | None) -> PreparedRequest:
    """What ``PreparedRequest.prepare`` makes of one of ours (an absolute URL we quoted
    ourselves, our own headers, bytes or no body), without parsing the URL again or
    checking each header (a tenth of its cost)."""
    req = PreparedRequest()
    req.method = verb
    req.url = url
    req.headers = CaseInsensitiveDict(headers)
    if data is not None:
        req.headers["Content-Length"] = str(len(data))
    elif verb not in ("GET", "HEAD"):
        req.headers["Content-Length"] = "0"  # as requests sends a bodiless DELETE
    req.body = data
    return req


class TTLCache:
    """A small thread-safe cache whose entries expire; one per process (``GitHubApp``)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = (time.monotonic(), value)

    def drop(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)


class ETagCache:
    """The last 200 answer of each conditional GET, by URL: GitHub answers an unchanged
    resource with 304 (no body), which does not count against the rate limit.
    https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._data: dict[str, tuple[str, Any, bool]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, Any, bool] | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, etag: str, data: Any, more: bool) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries and key not in self._data:
                self._data.pop(next(iter(self._data)))  # the oldest entry
            self._data[key] = (etag, data, more)


def conditional_get(
    gh_requester: Any, etags: ETagCache | None, path: str, params: dict[str, Any] | None = None
) -> tuple[Any, bool, bool]:
    """GET with ``If-None-Match``: (data, whether it came from the cache, whether the
    ``Link`` header names a next page). Errors raise as PyGithub's would."""
    from github.Requester import Requester

    key = path + "?" + "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
    cached = etags.get(key) if etags is not None else None
    headers = {"If-None-Match": cached[0]} if cached else None
    status, resp_headers, body = gh_requester.requestJson("GET", path, params, headers)
    if status == 304 and cached:
        return cached[1], True, cached[2]
    data = json.loads(body) if body else None
    if status >= 400:
        raise Requester.createException(status, resp_headers, data)
    lower = {k.lower(): v for k, v in resp_headers.items()}
    more = 'rel="next"' in lower.get("link", "")
    if lower.get("etag") and etags is not None:
        etags.put(key, lower["etag"], data, more)
    return data, False, more


def _missing(err: GithubException) -> bool:
    """404, whatever the message (PyGithub types it by message, GitHub Enterprise varies)."""
    return err.status == 404


@dataclass(frozen=True)
class FileChange:
    path: str
    additions: int
    deletions: int
    previous: str | None = None  # a rename's old path: moving a file away touches it too


class RepoAPI:
    """The calls for one repository, acting as the installation (or a user)."""

    def __init__(
        self,
        gh: Github,
        full_name: str,
        *,
        permissions: TTLCache | None = None,
        etags: ETagCache | None = None,
        teams: TTLCache | None = None,
    ) -> None:
        self.gh = gh
        self.permissions = permissions if permissions is not None else TTLCache(PERMISSION_TTL_S)
        self.etags = etags
        self.teams = teams if teams is not None else TTLCache(PERMISSION_TTL_S)
        self.full_name = full_name
        self.base = f"/repos/{full_name}"

    def _call(
        self, verb: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        return send_json(self.gh.requester, verb, path, params, body)

    def _pages(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        max_pages: int = 30,
    ) -> list[dict[str, Any]]:
        """A paginated list (one request per page of 100)."""
        out: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            data = self._call("GET", path, params={**(params or {}), "per_page": 100, "page": page})
            items = data[key] if key else data
            out.extend(items)
            if len(items) < 100:
                break
        return out

    # -- people ---------------------------------------------------------------------

    def permission(self, login: str) -> str:
        """The user's role on the repository, cached briefly (role_name knows triage/maintain)."""
        return self.collaborator(login).role

    def collaborator(self, login: str) -> Collaborator:
        """The user's role and GitHub user id (the permission API returns the user), cached."""
        key = (self.full_name.lower(), login.lower())
        cached = self.permissions.get(key)
        if isinstance(cached, Collaborator):
            return cached
        try:
            data = self._call("GET", f"{self.base}/collaborators/{quote(login)}/permission")
        except GithubException as err:
            if not _missing(err):
                raise
            found = Collaborator("none", None)  # not a collaborator (GitHub answers 404)
        else:
            role = data.get("role_name") or data.get("permission") or "none"
            role = {"pull": "read", "push": "write"}.get(role, role)
            user_id = (data.get("user") or {}).get("id")
            found = Collaborator(str(role), user_id if isinstance(user_id, int) else None)
        self.permissions.put(key, found)
        return found

    def team_members(self, team: str) -> set[str]:
        """The team's members (lower case), cached a few minutes (one request per page)."""
        key = team.lower()
        cached = self.teams.get(key)
        if isinstance(cached, frozenset):
            return set(cached)
        org, slug = team.split("/", 1)
        members = self._pages(f"/orgs/{org}/teams/{slug}/members")
        found = frozenset(m["login"].lower() for m in members)
        self.teams.put(key, found)
        return set(found)

    # -- pull requests ------------------------------------------------------------------

    def pull(self, number: int) -> dict[str, Any]:
        """The pull request as GitHub has it now (state, merged, head)."""
        return self._call("GET", f"{self.base}/pulls/{number}")  # type: ignore[no-any-return]

    def pr_files(self, number: int) -> list[FileChange]:
        files = self._pages(f"{self.base}/pulls/{number}/files")
        return [
            FileChange(
                f["filename"],
                f.get("additions", 0),
                f.get("deletions", 0),
                f.get("previous_filename"),
            )
            for f in files
        ]

    def pr_commits(self, number: int) -> list[dict[str, Any]]:
        """The PR's commits with their author and committer (GitHub lists at most 250),
        one request per page of 100: who stands behind the patch (provenance)."""
        return self._pages(f"{self.base}/pulls/{number}/commits", max_pages=3)

    def commit_tree(self, sha: str) -> str:
        return self._call("GET", f"{self.base}/git/commits/{sha}")["tree"]["sha"]

    def request_reviewers(self, number: int, logins: list[str], teams: Sequence[str] = ()) -> None:
        body: dict[str, Any] = {"reviewers": logins}
        if teams:
            body["team_reviewers"] = list(teams)
        self._call("POST", f"{self.base}/pulls/{number}/requested_reviewers", body=body)

    def remove_requested_reviewers(self, number: int, logins: list[str], teams: list[str]) -> None:
        """Withdraw review requests no longer needed (GitHub's DELETE takes a body)."""
        body = {"reviewers": logins, "team_reviewers": teams}
        self._call("DELETE", f"{self.base}/pulls/{number}/requested_reviewers", body=body)

    def create_pull(
        self, *, title: str, head: str, base: str, body: str, draft: bool = True
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"{self.base}/pulls",
            body={"title": title, "head": head, "base": base, "body": body, "draft": draft},
        )

    def open_pulls(self, max_pages: int = 30) -> list[dict[str, Any]]:
        """Every open PR, one conditional request per page of 100 (a 304 when unchanged);
        the next page is read only when GitHub's ``Link`` header names one."""
        out: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            params = {"state": "open", "per_page": 100, "page": page}
            items, _cached, more = conditional_get(
                self.gh.requester, self.etags, f"{self.base}/pulls", params
            )
            out.extend(items)
            if not more or len(items) < 100:
                break
        return out

    def own_check_runs(self, sha: str, *, name: str, app_id: int | None) -> list[dict[str, Any]]:
        """Our check runs of ``name`` on ``sha``, by one conditional request."""
        params: dict[str, Any] = {"check_name": name, "per_page": 100}
        if app_id:
            params["app_id"] = app_id
        data, _cached, _more = conditional_get(
            self.gh.requester, self.etags, f"{self.base}/commits/{sha}/check-runs", params
        )
        return list(data.get("check_runs") or [])

    def repository(self) -> dict[str, Any]:
        return self._call("GET", self.base)

    def find_pull(self, head_owner: str, branch: str) -> dict[str, Any] | None:
        pulls = self._call(
            "GET", f"{self.base}/pulls", params={"head": f"{head_owner}:{branch}", "state": "all"}
        )
        return pulls[0] if pulls else None

    # -- branches -------------------------------------------------------------------------

    def branch_head(self, branch: str) -> str:
        return self._call("GET", f"{self.base}/git/ref/heads/{quote(branch)}")["object"]["sha"]

    def create_commit(self, *, message: str, tree: str, parents: list[str]) -> str:
        data = self._call(
            "POST",
            f"{self.base}/git/commits",
            body={"message": message, "tree": tree, "parents": parents},
        )
        return str(data["sha"])

    def create_branch(self, branch: str, sha: str) -> None:
        self._call(
            "POST", f"{self.base}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha}
        )

    def default_branch(self) -> str:
        return self._call("GET", self.base)["default_branch"]

    # -- files ---------------------------------------------------------------------------

    def file(self, path: str, ref: str | None = None) -> tuple[str, str] | None:
        """(blob SHA, text) of a file, or None when it does not exist."""
        try:
            data = self._call(
                "GET", f"{self.base}/contents/{path}", params={"ref": ref} if ref else None
            )
        except GithubException as err:
            if not _missing(err):
                raise
            return None
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return data["sha"], base64.b64decode(data.get("content", "")).decode()

    # -- checks ----------------------------------------------------------------------------

    def check_suites(self, sha: str) -> list[dict[str, Any]]:
        return self._pages(f"{self.base}/commits/{sha}/check-suites", key="check_suites")

    def check_runs(
        self, sha: str, *, name: str | None = None, app_id: int | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if name:
            params["check_name"] = name
        if app_id:
            params["app_id"] = app_id
        return self._pages(f"{self.base}/commits/{sha}/check-runs", params, key="check_runs")

    def create_check_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"{self.base}/check-runs", body=body)

    def update_check_run(self, check_run_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"{self.base}/check-runs/{check_run_id}", body=body)

    def is_ancestor(self, sha: str, of: str) -> bool:
        """Whether ``sha`` is contained in ``of``'s history (compare API)."""
        try:
            data = self._call("GET", f"{self.base}/compare/{sha}...{of}")
        except GithubException as err:
            if err.status in (404, 422):
                return False
            raise
        return data.get("status") in ("ahead", "identical")

    # -- comments -----------------------------------------------------------------------------

    def react(self, comment_id: int, content: str) -> None:
        """GitHub answers 200 for a reaction that already exists: safe to repeat."""
        self._call(
            "POST", f"{self.base}/issues/comments/{comment_id}/reactions", body={"content": content}
        )

    def comment(self, number: int, body: str) -> dict[str, Any]:
        return self._call("POST", f"{self.base}/issues/{number}/comments", body={"body": body})

    def has_comment_with(self, number: int, marker: str) -> bool:
        comments = self._pages(f"{self.base}/issues/{number}/comments")
        return any(marker in (c.get("body") or "") for c in comments)


class AppAPI:
    """The calls made as the app itself (its JWT), not as an installation.
    https://docs.github.com/en/rest/apps/webhooks
    """

    def __init__(self, requester: Any) -> None:
        self.requester = requester

    def _call(self, verb: str, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.requester.requestJsonAndCheck(verb, path, parameters=params)

    def installation_of(self, full_name: str) -> dict[str, Any] | None:
        """The installation on a repository, or None when the app is not installed there."""
        try:
            _headers, data = self._call("GET", f"/repos/{full_name}/installation")
        except GithubException as err:
            if not _missing(err):
                raise
            return None
        return data  # type: ignore[no-any-return]

    def hook_deliveries(
        self, cursor: str | None = None, per_page: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the app's webhook delivery log, newest first, and the next cursor."""
        params: dict[str, Any] = {"per_page": per_page}
        if cursor:
            params["cursor"] = cursor
        headers, data = self._call("GET", "/app/hook/deliveries", params=params)
        link = {k.lower(): v for k, v in headers.items()}.get("link", "")
        return list(data or []), _next_cursor(link)

    def redeliver(self, hook_delivery_id: int) -> None:
        self._call("POST", f"/app/hook/deliveries/{hook_delivery_id}/attempts")


def _next_cursor(link: str) -> str | None:
    """The ``cursor`` of the ``rel="next"`` URL in a Link header."""
    from urllib.parse import parse_qs, urlparse

    for part in link.split(","):
        if 'rel="next"' in part and "<" in part:
            url = part[part.index("<") + 1 : part.index(">")]
            found = parse_qs(urlparse(url).query).get("cursor")
            return found[0] if found else None
    return None
