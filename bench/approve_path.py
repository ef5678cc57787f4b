"""The modules an approval crosses: a signed ``/approve`` comment, and a dashboard Approve.

Why: "how many modules does one decision walk through" is a claim about the code's
shape that is easy to make and hard to check by reading. This script measures it on
the running app instead: the real Flask app (``minipipe_gh.web.create_app``) in
process, SQLite in a temporary directory, GitHub faked at the HTTP layer with
``responses``, and every Python call and return whose code lives in the
``minipipe_gh`` package traced with ``sys.setprofile``.

Each path starts from the same state, built untraced through the app itself: a
session PR opened by a signed ``pull_request.opened`` (a high-risk file, CI green),
handled by the worker, so its patch awaits review and its check run exists.

- ``approve``: ``POST /webhook`` of a signed ``issue_comment`` ``/approve`` by a
  writer, then the worker handling it, up to the check-run PATCH that turns it green.
- ``dashboard``: ``POST /patches/<id>/approve`` by a signed-in writer (the test
  client's session cookie, CSRF token read beforehand), then the worker publishing
  the decision, up to the same check-run PATCH.

Tracing stops the moment the check-run PATCH is sent. For each path it prints the
distinct project modules entered (in order of first entry) and the "returns to a
module already visited": calls whose callee module differs from the caller's (the
nearest project frame below it on the stack) and was already entered on the path.
Calls from outside the package (Flask, the script) into it are entries, not
transitions; module bodies run by an import are not calls on the path; a generator
resumed (a ``with`` block's exit, the next item) is counted apart from calls.

It works on the flat layout (``minipipe_gh/worker.py``, ``publish.py``...) and the
layered one (``minipipe_gh/delivery/worker.py``, ``gh/writes.py``...), so the same
script measures before and after a move: point ``PYTHONPATH`` at the other checkout.

Usage::

    .venv/bin/python bench/approve_path.py                 # both paths, this checkout
    .venv/bin/python bench/approve_path.py --path approve  # one of them
    .venv/bin/python bench/approve_path.py --edges         # and each return, caller → callee
    .venv/bin/python bench/approve_path.py --json          # machine-readable
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/approve_path.py
"""

from __future__ import annotations

import argparse
import dis
import hashlib
import hmac
import importlib
import json
import re
import sys
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

API = "https://ghe.test/api/v3"
WIRE = "https://ghe.test:443/api/v3"  # what PyGithub puts on the wire (explicit port)
WEB = "https://ghe.test"
SECRET = "it's a secret to everybody"
APP_ID = 29310
INSTALLATION_ID = 1
REPO = "Codertocat/Hello-World"
R = f"/repos/{REPO}"
NUMBER = 2
BRANCH = "minipipe/01abc-fix-login"
SHA = "a" * 40
CHECK_RUN_ID = 555
AUTHOR = "agent-bot"
WRITER = "writer"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PATHS = ("approve", "dashboard")


# -- the two layouts -------------------------------------------------------------------


def _first(root: Path, *names: str) -> ModuleType:
    """The first of ``names`` whose file is in this checkout: the layered name, then the flat.

    Decided by the files under ``root``, not by trying imports: an editable install of
    another checkout would otherwise answer for a name this one does not have.
    """
    for name in names:
        rel = Path(*name.split(".")[1:])
        if (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file():
            return importlib.import_module(name)
    raise ModuleNotFoundError(f"none of {', '.join(names)} under {root}")


@dataclass(frozen=True)
class Layout:
    """The few project modules the script drives, wherever this checkout keeps them."""

    package: ModuleType
    config: ModuleType
    migrate: ModuleType
    models: ModuleType
    runtime: ModuleType
    web: ModuleType

    @classmethod
    def load(cls) -> Layout:
        package = importlib.import_module("minipipe_gh")
        root = Path(package.__file__).resolve().parent
        return cls(
            package=package,
            config=_first(root, "minipipe_gh.conf.config", "minipipe_gh.config"),
            migrate=_first(root, "minipipe_gh.store.migrate", "minipipe_gh.migrate"),
            models=_first(root, "minipipe_gh.store.models", "minipipe_gh.models"),
            runtime=_first(root, "minipipe_gh.delivery.runtime", "minipipe_gh.runtime"),
            web=_first(root, "minipipe_gh.web"),
        )

    @property
    def root(self) -> Path:
        """The ``minipipe_gh`` directory: code under it is the project's."""
        return Path(self.package.__file__).resolve().parent

    @property
    def fixtures(self) -> Path:
        """Recorded payloads of the checkout measured, else of this script's own."""
        for base in (self.root.parent, Path(__file__).resolve().parents[1]):
            if (base / "tests" / "fixtures").is_dir():
                return base / "tests" / "fixtures"
        raise FileNotFoundError("no tests/fixtures next to minipipe_gh or this script")

    @property
    def name(self) -> str:
        return "layered" if (self.root / "delivery").is_dir() else "flat"


# -- the tracer ------------------------------------------------------------------------

_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_RESUME = dis.opmap.get("RESUME")


def _resumed(frame: FrameType) -> bool:
    """A generator frame carrying on after a ``yield``, not a new call (3.11+: the
    RESUME it stopped at says why it resumes; 0 is a function's start)."""
    if not frame.f_code.co_flags & _GENERATOR_FLAGS:
        return False
    code, at = frame.f_code.co_code, frame.f_lasti
    if _RESUME is not None and 0 <= at < len(code) - 1 and code[at] == _RESUME:
        return code[at + 1] != 0
    return at > 0


@dataclass
class PathTrace:
    """What one path crossed, in the package's own module names (``core/authz``)."""

    name: str
    modules: list[str] = field(default_factory=list)  # in order of first entry
    returns: int = 0  # calls into another module already entered on the path
    returns_by_edge: dict[str, int] = field(default_factory=dict)  # "caller → callee": n
    transitions: int = 0  # calls into another module, first entries included
    entries_from_outside: int = 0  # calls into the package with no project frame below
    resumptions: int = 0  # generator resumes into another module already entered
    calls: int = 0  # project function calls, same-module ones included
    requests: list[tuple[str, str]] = field(default_factory=list)  # GitHub, on the path
    ended_on: tuple[str, str] | None = None  # the request that stopped the trace

    @property
    def count(self) -> int:
        return len(self.modules)

    @property
    def return_edges(self) -> int:
        """Distinct caller → callee pairs among the returns (each counted once)."""
        return len(self.returns_by_edge)


class Tracer:
    """``sys.setprofile`` (and ``threading.setprofile``) on every project call until stopped."""

    def __init__(self, root: Path, trace: PathTrace) -> None:
        self.root = str(root) + "/"
        self.trace = trace
        self.seen: set[str] = set()
        self.active = False
        self._names: dict[str, str | None] = {}
        self._before: tuple[Any, Any] = (None, None)  # profilers set before ours

    def module_of(self, filename: str) -> str | None:
        """``.../minipipe_gh/core/authz.py`` → ``core/authz``; a package is its directory."""
        try:
            return self._names[filename]
        except KeyError:
            pass
        name = None
        if filename.startswith(self.root) and filename.endswith(".py"):
            rel = filename[len(self.root) : -3]
            name = rel.removesuffix("/__init__") if rel != "__init__" else "minipipe_gh"
        self._names[filename] = name
        return name

    def _caller(self, frame: FrameType) -> str | None:
        """The module of the nearest project frame below ``frame``, if any."""
        back = frame.f_back
        while back is not None:
            name = self.module_of(back.f_code.co_filename)
            if name is not None:
                return name
            back = back.f_back
        return None

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.active or event != "call":
            return
        callee = self.module_of(frame.f_code.co_filename)
        if callee is None or frame.f_code.co_name == "<module>":
            return
        caller = self._caller(frame)
        t = self.trace
        if _resumed(frame):
            if caller is not None and caller != callee and callee in self.seen:
                t.resumptions += 1
            return
        t.calls += 1
        if caller is None:
            t.entries_from_outside += 1
        elif caller != callee:
            t.transitions += 1
            if callee in self.seen:
                t.returns += 1
                edge = f"{caller} → {callee}"
                t.returns_by_edge[edge] = t.returns_by_edge.get(edge, 0) + 1
        if callee not in self.seen:
            self.seen.add(callee)
            t.modules.append(callee)

    def __enter__(self) -> Tracer:
        self._before = (sys.getprofile(), threading.getprofile())
        self.active = True
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        return self

    def stop(self) -> None:
        """Called from inside the traced code (the PATCH's fake response): nothing after counts."""
        if not self.active:
            return
        self.active = False
        sys.setprofile(self._before[0])
        threading.setprofile(self._before[1])

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- GitHub, faked at the HTTP layer ---------------------------------------------------


def _json(status: int, data: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(data)


def _user(login: str) -> dict[str, Any]:
    return {"login": login, "id": int(hashlib.sha1(login.encode()).hexdigest()[:7], 16)}


class FakeGitHub:
    """The endpoints the PR's life reads and writes, and the dashboard's sign-in."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.rsps = rsps
        self.on_check_run_patch: list[Any] = []  # callbacks run as the PATCH arrives
        add = rsps.add

        def url(path: str) -> str:
            return f"{WIRE}{path}"

        def token(_request: Any) -> tuple[int, dict[str, str], str]:
            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return _json(201, {"token": "ghs_installation", "expires_at": expires})

        rsps.add_callback("POST", url(f"/app/installations/{INSTALLATION_ID}/access_tokens"), token)
        add(
            "GET",
            url(f"{R}/contents/.github/minipipe.yml"),
            json={"message": "Not Found"},
            status=404,
        )
        add(
            "GET",
            url(f"{R}/pulls/{NUMBER}/files"),
            json=[
                {
                    "filename": "src/auth/login.py",
                    "additions": 10,
                    "deletions": 0,
                    "status": "modified",
                }
            ],
        )
        person = {"name": AUTHOR, "email": f"{AUTHOR}@example.com", "date": "2026-12-01T10:00:00Z"}
        add(
            "GET",
            url(f"{R}/pulls/{NUMBER}/commits"),
            json=[
                {
                    "sha": SHA,
                    "commit": {
                        "message": "Fix the login form",
                        "author": person,
                        "committer": person,
                    },
                    "author": _user(AUTHOR),
                    "committer": _user(AUTHOR),
                    "parents": [],
                }
            ],
        )
        suite = {"id": 1, "status": "completed", "conclusion": "success", "app": {"id": 42}}
        add(
            "GET",
            url(f"{R}/commits/{SHA}/check-suites"),
            json={"total_count": 1, "check_suites": [{**suite, "head_sha": SHA}]},
        )
        add(
            "GET",
            url(f"{R}/collaborators/{WRITER}/permission"),
            json={"permission": "write", "role_name": "write", "user": _user(WRITER)},
        )
        add("POST", url(f"{R}/check-runs"), json={"id": CHECK_RUN_ID}, status=201)
        rsps.add_callback("PATCH", url(f"{R}/check-runs/{CHECK_RUN_ID}"), self._check_run_patch)
        add(
            "POST",
            re.compile(re.escape(url(R)) + r"/issues/comments/\d+/reactions"),
            json={"id": 1, "content": "+1"},
            status=201,
        )
        add("POST", url(f"{R}/issues/{NUMBER}/comments"), json={"id": 1}, status=201)
        add("POST", url(f"{R}/pulls/{NUMBER}/requested_reviewers"), json={}, status=201)
        # the dashboard's sign-in: GitHub's web flow, then what the user may read
        rsps.add_callback("POST", f"{WEB}/login/oauth/access_token", self._oauth_token)
        add("GET", url("/user"), json={"login": WRITER})
        add(
            "GET",
            url("/user/installations"),
            json={"total_count": 1, "installations": [{"id": INSTALLATION_ID}]},
        )
        add(
            "GET",
            url(f"/user/installations/{INSTALLATION_ID}/repositories"),
            json={"total_count": 1, "repositories": [{"full_name": REPO}]},
        )

    def _oauth_token(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = request.body if isinstance(request.body, str) else request.body.decode()
        code = parse_qs(body).get("code", [""])[0]
        return _json(200, {"access_token": f"gho_{code}", "token_type": "bearer"})

    def _check_run_patch(self, _request: Any) -> tuple[int, dict[str, str], str]:
        for callback in self.on_check_run_patch:
            callback()
        return _json(200, {"id": CHECK_RUN_ID})

    def sent(self, since: int = 0) -> list[tuple[str, str, Any]]:
        """(method, path below the API root, JSON body or None) of each request after ``since``."""
        out = []
        for call in self.rsps.calls[since:]:
            req = call.request
            body = req.body.decode() if isinstance(req.body, bytes) else req.body
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = body
            out.append((req.method, req.url.removeprefix(WIRE).removeprefix(API), parsed))
        return out


# -- the app and its one PR ------------------------------------------------------------


class World:
    """A fresh app on a fresh database, with one session PR whose patch awaits review."""

    def __init__(self, layout: Layout, workdir: Path, github: FakeGitHub) -> None:
        self.layout = layout
        self.github = github
        self.fixtures = layout.fixtures
        db_url = f"sqlite:///{workdir / 'minipipe.db'}"
        layout.migrate.upgrade(db_url)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        settings = layout.config.load(
            {
                "GITHUB_APP_ID": str(APP_ID),
                "GITHUB_PRIVATE_KEY": pem,
                "GITHUB_WEBHOOK_SECRET": SECRET,
                "GITHUB_API_URL": API,
                "GITHUB_WEB_URL": WEB,
                "GITHUB_CLIENT_ID": "Iv1.bench",
                "GITHUB_CLIENT_SECRET": "client-secret",
                "DATABASE_URL": db_url,
                "SECRET_KEY": "bench",
            },
            instance_path=workdir / "instance",
        )
        self.rt = layout.runtime.Runtime.build(settings)
        app = layout.web.create_app(runtime_obj=self.rt, test_config={"TESTING": True})
        self.client = app.test_client()

    def close(self) -> None:
        self.rt.stop.set()
        self.rt.database.dispose()

    def payload(self, name: str) -> dict[str, Any]:
        return json.loads((self.fixtures / f"{name}.payload.json").read_text())

    def deliver(self, event: str, data: dict[str, Any]) -> Any:
        """Post as GitHub does: the body signed with the webhook secret."""
        body = json.dumps(data).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "292430182",
            "X-Hub-Signature-256": f"sha256={digest}",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "Content-Type": "application/json",
        }
        resp = self.client.post("/webhook", data=body, headers=headers)
        if resp.status_code != 202:
            raise RuntimeError(f"{event} webhook answered {resp.status_code}: {resp.text}")
        return resp

    def work(self) -> list[Any]:
        return self.rt.worker().run_once()

    def open_pr(self) -> str:
        """The PR opened and handled (CI already green, high risk): its patch's ledger id."""
        data = self.payload("pull_request.opened")
        data["installation"] = {"id": INSTALLATION_ID}
        data["number"] = NUMBER
        pr = data["pull_request"]
        pr.update(number=NUMBER, body="", draft=False, merged=False, user=_user(AUTHOR))
        pr["title"] = "Fix the login form"
        pr["head"].update(ref=BRANCH, sha=SHA)
        pr["head"]["repo"]["full_name"] = REPO
        self.deliver("pull_request", data)
        self.work()
        patch = self.patch()
        if patch.state != "awaiting_review":
            raise RuntimeError(f"the seeded patch is {patch.state}, not awaiting_review")
        return str(patch.ledger_id)

    def patch(self) -> Any:
        from sqlalchemy import select

        Patch = self.layout.models.Patch
        with self.rt.database.unit() as s:
            return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()

    def approve_comment(self) -> dict[str, Any]:
        data = self.payload("issue_comment.created.with-installation")
        data["installation"] = {"id": INSTALLATION_ID}
        data["issue"].update(number=NUMBER, pull_request={"url": f"{API}{R}/pulls/{NUMBER}"})
        data["comment"].update(id=9001, body="/approve ship it", user=_user(WRITER))
        data["comment"]["html_url"] = f"https://github.com/{REPO}/pull/{NUMBER}#issuecomment-1"
        data["sender"] = _user(WRITER)
        data["repository"]["full_name"] = REPO
        return data

    def sign_in(self, login: str) -> None:
        start = self.client.get("/auth/github/login")
        state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
        back = self.client.get(f"/auth/github/callback?code={login}&state={state}")
        if back.status_code != 302:
            raise RuntimeError(f"sign-in answered {back.status_code}: {back.text[:300]}")

    def csrf(self, path: str) -> str:
        found = CSRF_RE.search(self.client.get(path).text)
        if not found:
            raise RuntimeError(f"no CSRF token on {path}")
        return found.group(1)


def _run(layout: Layout, name: str) -> PathTrace:
    trace = PathTrace(name)
    with (
        tempfile.TemporaryDirectory(prefix=f"approve-path-{name}-") as tmp,
        responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
    ):
        github = FakeGitHub(rsps)
        world = World(layout, Path(tmp), github)
        try:
            ledger_id = world.open_pr()
            if name == "dashboard":
                world.sign_in(WRITER)
                token = world.csrf(f"/patches/{ledger_id}")
            worker = world.rt.worker()  # built at start-up in a real worker, not per delivery
            tracer = Tracer(layout.root, trace)
            github.on_check_run_patch.append(tracer.stop)
            mark = len(rsps.calls)
            with tracer:
                if name == "approve":
                    world.deliver("issue_comment", world.approve_comment())
                else:
                    resp = world.client.post(
                        f"/patches/{ledger_id}/approve",
                        data={"csrf_token": token, "comment": "ship it"},
                    )
                    if resp.status_code != 303:
                        raise RuntimeError(
                            f"Approve answered {resp.status_code}: {resp.text[:300]}"
                        )
                worker.run_once()
            sent = github.sent(mark)
            stop = next(
                (i for i, (m, p, _b) in enumerate(sent) if m == "PATCH" and "/check-runs/" in p),
                None,
            )
            if stop is None:
                raise RuntimeError(f"{name}: no check-run PATCH was sent: {sent}")
            body = sent[stop][2] or {}
            if body.get("conclusion") != "success":
                raise RuntimeError(f"{name}: the check run did not turn green: {body}")
            trace.requests = [(m, p) for m, p, _b in sent[: stop + 1]]
            trace.ended_on = trace.requests[-1]
            if world.patch().state != "queued":
                raise RuntimeError(f"{name}: the patch is {world.patch().state}, not queued")
        finally:
            world.close()
    return trace


def measure(paths: tuple[str, ...] = PATHS) -> dict[str, PathTrace]:
    """Trace each path on a fresh app; what :func:`main` prints, for scripts and tests."""
    layout = Layout.load()
    return {name: _run(layout, name) for name in paths}


def report(layout: Layout, traces: dict[str, PathTrace], *, edges: bool = False) -> str:
    lines = [f"minipipe_gh at {layout.root} ({layout.name} layout)"]
    for t in traces.values():
        lines += [
            "",
            f"== {t.name}: {t.count} modules, {t.returns} returns to a module already visited",
            f"   over {t.return_edges} distinct caller → callee pairs; "
            f"{t.transitions} module-to-module calls, {t.entries_from_outside} entries from "
            f"outside the package, {t.resumptions} generator resumptions into a visited module, "
            f"{t.calls} project calls",
            f"   GitHub: {', '.join(f'{m} {p}' for m, p in t.requests)}",
            "   modules in order of first entry:",
        ]
        lines += [f"   {i:3d}. {m}" for i, m in enumerate(t.modules, 1)]
        if edges:
            lines.append("   returns, caller → callee:")
            ranked = sorted(t.returns_by_edge.items(), key=lambda kv: (-kv[1], kv[0]))
            lines += [f"   {n:5d}  {edge}" for edge, n in ranked]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=PATHS, action="append", help="one path (default both)")
    parser.add_argument("--edges", action="store_true", help="list each return, caller → callee")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    layout = Layout.load()
    traces = {name: _run(layout, name) for name in tuple(args.path or PATHS)}
    if args.json:
        out = {"root": str(layout.root), "layout": layout.name}
        out["paths"] = {
            n: {**asdict(t), "count": t.count, "return_edges": t.return_edges}
            for n, t in traces.items()
        }
        print(json.dumps(out, indent=2))
    else:
        print(report(layout, traces, edges=args.edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
