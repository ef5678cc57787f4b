"""A small fake GitHub REST API on loopback, with a fixed added latency per request.

    .venv/bin/python bench/fake_github.py --port P [--latency-ms 20]

It serves what one session PR's life reads and writes (see ``tests/scenario.py``)
for any repository, in GitHub's shapes:

* ``POST /app/installations/{id}/access_tokens`` (a token valid for an hour),
* ``GET  /repos/{o}/{r}/contents/{path}`` (404: no policy file, the defaults apply),
* ``GET  /repos/{o}/{r}/pulls/{n}/files`` (one high-risk and one ordinary file),
* ``GET  /repos/{o}/{r}/pulls/{n}/commits`` (one commit by the session's bot, ``agent-bot``),
* ``GET  /repos/{o}/{r}/commits/{sha}/check-suites`` (one CI suite, in progress
  until ``POST /_fake/ci`` says it finished) and ``.../check-runs`` (ours),
* ``GET  /repos/{o}/{r}/collaborators/{login}/permission`` (``write``),
* ``POST /repos/{o}/{r}/check-runs``, ``PATCH /repos/{o}/{r}/check-runs/{id}``,
* ``POST /repos/{o}/{r}/issues/comments/{id}/reactions``,
* ``POST``/``GET /repos/{o}/{r}/issues/{n}/comments``,
  ``POST /repos/{o}/{r}/pulls/{n}/requested_reviewers``,
* ``GET  /app/hook/deliveries`` (the app's delivery log: empty, nothing failed),
* ``GET  /repos/{o}/{r}/pulls`` (the open PRs seeded with ``POST /_fake/pulls``,
  paginated by ``page``/``per_page``) and ``GET /repos/{o}/{r}/pulls/{n}`` (a PR
  not seeded is one the drive merged: closed, merged, as its last webhook says).

Conditional requests, as GitHub answers them: every 200 to a GET carries an
``ETag`` (a hash of the body), and a GET whose ``If-None-Match`` matches is
answered ``304 Not Modified`` with no body (counted apart: a 304 does not
count against GitHub's rate limit). ``POST /_fake/etags`` ``{"enabled": false}``
turns ETags off, to measure the same traffic without 304s.

With ``--owners``: the policy says ``review.require_code_owners: true``, there is a
``.github/CODEOWNERS`` (a default owner per reviewer, a team for ``src/auth/``),
``GET /orgs/{org}/teams/{slug}/members`` lists every reviewer, and
``DELETE .../requested_reviewers`` withdraws a request.

Every API request waits ``--latency-ms`` before it is answered (GitHub's round
trip; the requests themselves run concurrently). It counts requests by
(method, route), logs each one with its arrival time (``time.time()``, so a
benchmark on the same machine can line it up with its own clock) and what it
concerns (a PR number, SHA, login or comment id), and records every check-run
write per head SHA. Anything else is answered 404 and counted as unexpected.

Control endpoints, answered at once: ``POST /_fake/ci`` ``{"sha", "conclusion"}``
(CI finished on a SHA), ``POST /_fake/pulls`` ``{"repo", "pulls": [{"number",
"sha", "ref", "check": [status, conclusion] or null}]}`` (open PRs, each with our
check run on its head), ``GET /_fake/stats`` (everything recorded, as JSON),
``POST /_fake/reset`` (forget it all); and ``GET /_fake/decided?sha=&since=`` (a
long-poll: answers once that SHA's check run passed).

One asyncio process with hand-rolled HTTP/1.1 (keep-alive, Content-Length
bodies), so hundreds of concurrent requests cost little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import itertools
import json
import re
import signal
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

HOST = "127.0.0.1"
CI_APP_ID = 42  # the CI's app, never ours
REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_TABLE = (  # method, route (as counted), path pattern below the API root
    (
        "POST",
        "app/installations/{id}/access_tokens",
        r"/app/installations/(?P<id>\d+)/access_tokens",
    ),
    ("GET", "contents/{path}", REPO + r"/contents/(?P<path>.+)"),
    ("GET", "pulls/{n}/files", REPO + r"/pulls/(?P<pr>\d+)/files"),
    ("GET", "pulls/{n}/commits", REPO + r"/pulls/(?P<pr>\d+)/commits"),
    ("GET", "commits/{sha}/check-suites", REPO + r"/commits/(?P<sha>[^/]+)/check-suites"),
    ("GET", "commits/{sha}/check-runs", REPO + r"/commits/(?P<sha>[^/]+)/check-runs"),
    (
        "GET",
        "collaborators/{login}/permission",
        REPO + r"/collaborators/(?P<login>[^/]+)/permission",
    ),
    ("POST", "check-runs", REPO + r"/check-runs"),
    ("PATCH", "check-runs/{id}", REPO + r"/check-runs/(?P<run>\d+)"),
    (
        "POST",
        "issues/comments/{id}/reactions",
        REPO + r"/issues/comments/(?P<comment>\d+)/reactions",
    ),
    ("POST", "issues/{n}/comments", REPO + r"/issues/(?P<pr>\d+)/comments"),
    ("GET", "issues/{n}/comments", REPO + r"/issues/(?P<pr>\d+)/comments"),
    ("POST", "pulls/{n}/requested_reviewers", REPO + r"/pulls/(?P<pr>\d+)/requested_reviewers"),
    (
        "DELETE",
        "pulls/{n}/requested_reviewers",
        REPO + r"/pulls/(?P<pr>\d+)/requested_reviewers",
    ),
    ("GET", "orgs/{org}/teams/{slug}/members", r"/orgs/[^/]+/teams/(?P<team>[^/]+)/members"),
    ("GET", "pulls", REPO + r"/pulls"),
    ("GET", "app/hook/deliveries", r"/app/hook/deliveries"),
    ("GET", "pulls/{n}", REPO + r"/pulls/(?P<pr>\d+)"),
)
OWNERS = {"on": False}  # --owners
POLICY_YML = "review:\n  require_code_owners: true\n"
CODEOWNERS = "*  @reviewer-0 @reviewer-1 @reviewer-2\n/src/auth/  @Codertocat/security\n"
TEAM = [{"login": f"reviewer-{i}", "id": 100 + i} for i in range(10)]
ROUTES = [(m, name, re.compile(f"^{rx}$")) for m, name, rx in _TABLE]
FILES = [
    {"filename": "src/auth/login.py", "additions": 12, "deletions": 3, "status": "modified"},
    {"filename": "README.md", "additions": 2, "deletions": 0, "status": "modified"},
]
REASONS = {
    200: "OK",
    201: "Created",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
}


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.connections = 0  # TCP connections that sent an API request
        self.log: list[list[Any]] = []  # [t, method, route, key]
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.writes: dict[str, list[list[Any]]] = collections.defaultdict(list)
        self.ci: dict[str, str] = {}
        self.ids = itertools.count(1000)
        self.pulls: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
        self.etags = True
        self.not_modified: collections.Counter[tuple[str, str]] = collections.Counter()
        # SHA -> futures of ``GET /_fake/decided`` calls waiting for its check run to pass
        self.waiting: dict[str, list[asyncio.Future[float]]] = collections.defaultdict(list)

    def stats(self) -> dict[str, Any]:
        return {
            "counts": [[m, r, n] for (m, r), n in sorted(self.counts.items())],
            "not_modified": [[m, r, n] for (m, r), n in sorted(self.not_modified.items())],
            "connections": self.connections,
            "log": self.log,
            "check_run_writes": self.writes,
        }


STATE = State()
EXTRA_HEADERS: dict[str, str] = {}  # set by the request being answered (no await between)


def handle(method: str, path: str, body: bytes, query: str = "") -> tuple[int, Any, bool]:
    """(status, JSON body, whether to add the latency)."""
    now = time.time()
    if path.startswith("/_fake/"):
        return (*_control(method, path, body), False)
    for m, name, rx in ROUTES:
        if m != method:
            continue
        match = rx.match(path)
        if match is None:
            continue
        g = match.groupdict()
        STATE.counts[(method, name)] += 1
        key = _key(g)
        entry = [now, method, name, key]
        STATE.log.append(entry)
        g["_query"] = query
        status, data = _api(name, g, body, now)
        if name in ("check-runs", "check-runs/{id}") and isinstance(data, dict):
            entry[3] = f"sha:{data.get('head_sha')}"
        return status, data, True
    STATE.counts[(method, "UNEXPECTED " + path)] += 1
    STATE.log.append([now, method, "UNEXPECTED " + path, None])
    return 404, {"message": "Not Found", "documentation_url": "fake"}, True


def _key(g: dict[str, str]) -> str | None:
    for name in ("pr", "sha", "login", "comment", "id", "path", "team"):
        if g.get(name):
            return f"{name}:{g[name]}"
    return None  # a check run: its SHA is filled in once known


def _api(name: str, g: dict[str, str], raw: bytes, now: float) -> tuple[int, Any]:
    body: Any = json.loads(raw) if raw else None
    if name == "app/installations/{id}/access_tokens":
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        token = f"ghs_fake{next(STATE.ids)}"
        return 201, {
            "token": token,
            "expires_at": expires,
            "permissions": {"checks": "write", "pull_requests": "write"},
            "repository_selection": "all",
        }
    if name == "contents/{path}":
        text = {".github/minipipe.yml": POLICY_YML, ".github/CODEOWNERS": CODEOWNERS}.get(g["path"])
        if not OWNERS["on"] or text is None:
            return 404, {"message": "Not Found", "documentation_url": "fake", "status": "404"}
        blob = hashlib.sha1(text.encode()).hexdigest()
        content = base64.b64encode(text.encode()).decode()
        return 200, {"type": "file", "sha": blob, "encoding": "base64", "content": content}
    if name == "orgs/{org}/teams/{slug}/members":
        return 200, TEAM
    if name == "pulls/{n}/files":
        return 200, FILES
    if name == "pulls/{n}/commits":
        bot = {"login": "agent-bot", "type": "User"}  # the PR's author in tests/scenario.py
        git = {
            "name": "agent-bot",
            "email": "agent-bot@example.com",
            "date": "2026-12-01T10:00:00Z",
        }
        commit = {"message": "fix", "author": git, "committer": git}
        return 200, [{"sha": "f" * 40, "commit": commit, "author": bot, "committer": bot}]
    if name == "commits/{sha}/check-suites":
        conclusion = STATE.ci.get(g["sha"])
        suite = {
            "id": 7000,
            "head_sha": g["sha"],
            "status": "completed" if conclusion else "in_progress",
            "conclusion": conclusion,
            "app": {"id": CI_APP_ID, "slug": "ci"},
            "latest_check_runs_count": 1,
        }
        return 200, {"total_count": 1, "check_suites": [suite]}
    if name == "commits/{sha}/check-runs":
        runs = [r for r in STATE.check_runs.values() if r["head_sha"] == g["sha"]]
        return 200, {"total_count": len(runs), "check_runs": runs}
    if name == "collaborators/{login}/permission":
        user = {"login": g["login"], "id": 1, "type": "User"}
        return 200, {"permission": "write", "role_name": "write", "user": user}
    if name == "check-runs":
        run_id = next(STATE.ids)
        run = {**(body or {}), "id": run_id, "app": {"id": 0}}
        STATE.check_runs[run_id] = run
        sha = str(run.get("head_sha"))
        _wrote(sha, [now, "POST", run.get("status"), run.get("conclusion")])
        return 201, run
    if name == "check-runs/{id}":
        run = STATE.check_runs.get(int(g["run"]))
        if run is None:
            return 404, {"message": "Not Found"}
        run.update(body or {})
        _wrote(str(run["head_sha"]), [now, "PATCH", run.get("status"), run.get("conclusion")])
        return 200, run
    if name == "issues/comments/{id}/reactions":
        return 201, {"id": next(STATE.ids), "content": (body or {}).get("content")}
    if name == "issues/{n}/comments":
        if body is None:
            return 200, []
        return 201, {"id": next(STATE.ids), "body": body.get("body")}
    if name == "pulls/{n}/requested_reviewers":
        return 201, {"number": int(g["pr"])}
    if name == "app/hook/deliveries":
        return 200, []  # the worker's recovery at start: GitHub failed no delivery here
    if name == "pulls":
        q = dict(part.split("=", 1) for part in g["_query"].split("&") if "=" in part)
        page, per_page = int(q.get("page", 1)), int(q.get("per_page", 30))
        repo = f"{g['owner']}/{g['repo']}"
        pulls = [p for _n, p in sorted(STATE.pulls[repo].items()) if p["state"] == "open"]
        if page * per_page < len(pulls):  # as GitHub: a Link header names the next page
            EXTRA_HEADERS["Link"] = (
                f"<http://{HOST}/repos/{repo}/pulls?state=open&per_page={per_page}"
                f'&page={page + 1}>; rel="next"'
            )
        return 200, pulls[(page - 1) * per_page : page * per_page]
    if name == "pulls/{n}":
        pull = STATE.pulls[f"{g['owner']}/{g['repo']}"].get(int(g["pr"]))
        if pull is None:  # a PR of the drive: read only when its closed+merged arrives
            user = {"login": "maintainer", "id": 2, "type": "User"}
            pull = {"number": int(g["pr"]), "state": "closed", "merged": True, "merged_by": user}
            pull["merge_commit_sha"] = "m" * 40
        return 200, pull
    raise AssertionError(name)


def etag_of(data: Any) -> str:
    return '"' + hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest() + '"'


def _seed_pulls(body: dict[str, Any]) -> None:
    """Open PRs in GitHub's shape, each with our check run on its head if ``check``."""
    repo = body["repo"]
    owner = repo.split("/", 1)[0]
    for item in body["pulls"]:
        sha, number = item["sha"], int(item["number"])
        head = {"sha": sha, "ref": item["ref"], "repo": {"full_name": repo}}
        STATE.pulls[repo][number] = {
            "number": number,
            "state": "open",
            "draft": False,
            "merged": False,
            "title": f"PR {number}",
            "body": "",
            "user": {"login": "agent-bot", "type": "User"},
            "head": head,
            "base": {"ref": "main", "repo": {"full_name": repo}},
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "merge_commit_sha": None,
            "merged_by": None,
            "owner": owner,
        }
        if item.get("check"):
            status, conclusion = item["check"]
            run_id = next(STATE.ids)
            STATE.check_runs[run_id] = {
                "id": run_id,
                "name": "minipipe/review",
                "head_sha": sha,
                "status": status,
                "conclusion": conclusion,
                "external_id": item.get("external_id"),
                "app": {"id": 0},
            }


def _wrote(sha: str, write: list[Any]) -> None:
    """Record a check-run write; a success wakes who waits for that SHA's decision."""
    STATE.writes[sha].append(write)
    if write[2] == "completed" and write[3] == "success":
        for fut in STATE.waiting.pop(sha, []):
            if not fut.done():
                fut.set_result(write[0])


def _decided_at(sha: str, since: float) -> float | None:
    for t, _method, status, conclusion in STATE.writes.get(sha, []):
        if t >= since and status == "completed" and conclusion == "success":
            return float(t)
    return None


async def _wait_decided(query: str) -> tuple[int, Any]:
    """``GET /_fake/decided?sha=&since=&timeout=``: answers once the check run on ``sha``
    was written ``completed``/``success`` at or after ``since`` (or at the timeout, with
    null): a client that waits for its decision before its next comment."""
    q = urllib.parse.parse_qs(query)
    sha, since = q["sha"][0], float(q.get("since", ["0"])[0])
    at = _decided_at(sha, since)
    if at is None:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        STATE.waiting[sha].append(fut)
        try:
            at = await asyncio.wait_for(fut, float(q.get("timeout", ["30"])[0]))
        except TimeoutError:
            at = None
    return 200, {"decided_at": at}


def _control(method: str, path: str, raw: bytes) -> tuple[int, Any]:
    if method == "POST" and path == "/_fake/ci":
        body = json.loads(raw)
        STATE.ci[body["sha"]] = body.get("conclusion", "success")
        return 200, {"ok": True}
    if method == "POST" and path == "/_fake/pulls":
        _seed_pulls(json.loads(raw))
        return 200, {"ok": True}
    if method == "POST" and path == "/_fake/etags":
        STATE.etags = bool(json.loads(raw).get("enabled", True))
        return 200, {"ok": True}
    if method == "GET" and path == "/_fake/stats":
        return 200, STATE.stats()
    if method == "POST" and path == "/_fake/reset":
        STATE.reset()
        return 200, {"ok": True}
    return 404, {"message": "no such control endpoint"}


async def serve_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency_s: float
) -> None:
    counted = False
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                status, data, delay = 411, {"message": "send a Content-Length"}, False
                body = b""
            else:
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                path, _, query = target.partition("?")
                if not counted and not path.startswith("/_fake/"):
                    counted = True
                    STATE.connections += 1
                try:
                    if method == "GET" and path == "/_fake/decided":
                        status, data = await _wait_decided(query)
                        delay = False
                    else:
                        status, data, delay = handle(method, path, body, query)
                except (ValueError, KeyError) as err:
                    status, data, delay = 400, {"message": f"bad request: {err}"}, False
            extra = "".join(f"{k}: {v}\r\n" for k, v in EXTRA_HEADERS.items())
            EXTRA_HEADERS.clear()
            if method == "GET" and status == 200 and delay and STATE.etags:
                etag = etag_of(data)
                extra += f"ETag: {etag}\r\n"
                if headers.get("if-none-match") == etag:
                    status, data = 304, None
                    _t, m, route, _k = STATE.log[-1]  # handle() just logged this request
                    STATE.not_modified[(m, route)] += 1
            if delay and latency_s > 0:
                await asyncio.sleep(latency_s)
            payload = b"" if status == 304 else json.dumps(data).encode()
            close = headers.get("connection", "").lower() == "close"
            writer.write(
                (
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                    "Content-Type: application/json; charset=utf-8\r\n"
                    f"{extra}"
                    f"Content-Length: {len(payload)}\r\n"
                    "X-RateLimit-Limit: 5000\r\nX-RateLimit-Remaining: 4999\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                ).encode()
                + payload
            )
            await writer.drain()
            if close:
                return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main_async(port: int, latency_s: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_conn(r, w, latency_s), HOST, port, backlog=1024, limit=1 << 20
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake GitHub on http://{HOST}:{port} (+{latency_s * 1000:g} ms)", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added to every API request")
    ap.add_argument("--owners", action="store_true", help="code owners required (CODEOWNERS)")
    args = ap.parse_args(argv)
    OWNERS["on"] = args.owners
    asyncio.run(main_async(args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
