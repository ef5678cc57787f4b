"""A tiny GitHub on a loopback port, for the browser tests: real HTTP, no internet.

It serves the OAuth web flow (the authorize page redirects straight back to
the callback, as if the user had clicked "Authorize"), the ``/user*`` reads
of sign-in, installation tokens, collaborator permissions, the policy file
and the check-run writes of a published patch, under ``/api/v3`` like GitHub
Enterprise. ``requests`` records what was asked, in order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request
from werkzeug.serving import BaseWSGIServer, make_server

API = "/api/v3"


@dataclass
class FakeGitHub:
    """Who is signing in, what each user can read and their role on each repository."""

    signing_in_as: str = "carol"
    repos: dict[str, list[str]] = field(default_factory=dict)  # login → readable full names
    roles: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, login) → role
    installation_id: int = 1
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    check_run_id: int = 4242

    def login_of(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("token ")
        login = token.removeprefix("gho_")
        if not token.startswith("gho_") or login not in self.repos:
            abort(401)
        return login

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _body in self.requests]


def create_app(gh: FakeGitHub) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def _record() -> None:
        body = request.get_json(silent=True) if request.is_json else None
        gh.requests.append((request.method, request.path, body))

    @app.get("/login/oauth/authorize")
    def authorize() -> Any:
        back = request.args["redirect_uri"]
        query = urlencode({"code": gh.signing_in_as, "state": request.args.get("state", "")})
        return redirect(f"{back}?{query}")

    @app.post("/login/oauth/access_token")
    def access_token() -> Any:
        code = request.form.get("code", "")
        if code not in gh.repos:
            return jsonify(error="bad_verification_code")
        return jsonify(access_token=f"gho_{code}", token_type="bearer", scope="")

    @app.get(f"{API}/user")
    def user() -> Any:
        return jsonify(login=gh.login_of(request.headers.get("Authorization")))

    @app.get(f"{API}/user/installations")
    def installations() -> Any:
        login = gh.login_of(request.headers.get("Authorization"))
        found = [{"id": gh.installation_id}] if gh.repos[login] else []
        return jsonify(total_count=len(found), installations=found)

    @app.get(f"{API}/user/installations/<int:inst>/repositories")
    def repositories(inst: int) -> Any:
        login = gh.login_of(request.headers.get("Authorization"))
        repos = [{"full_name": name} for name in gh.repos[login]]
        return jsonify(total_count=len(repos), repositories=repos)

    @app.post(f"{API}/app/installations/<int:inst>/access_tokens")
    def installation_token(inst: int) -> Any:
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return jsonify(token=f"ghs_installation{inst}", expires_at=expires, permissions={}), 201

    @app.get(f"{API}/repos/<owner>/<name>/collaborators/<login>/permission")
    def permission(owner: str, name: str, login: str) -> Any:
        role = gh.roles.get((f"{owner}/{name}", login))
        if role is None:
            return jsonify(message="Not Found"), 404
        legacy = {"triage": "read", "maintain": "write"}.get(role, role)
        return jsonify(permission=legacy, role_name=role, user={"login": login})

    @app.get(f"{API}/repos/<owner>/<name>/contents/<path:path>")
    def contents(owner: str, name: str, path: str) -> Any:
        return jsonify(message="Not Found"), 404  # no .github/minipipe.yml: the defaults

    @app.get(f"{API}/repos/<owner>/<name>/commits/<sha>/check-runs")
    def check_runs(owner: str, name: str, sha: str) -> Any:
        return jsonify(total_count=0, check_runs=[])

    @app.post(f"{API}/repos/<owner>/<name>/check-runs")
    def create_check_run(owner: str, name: str) -> Any:
        return jsonify(id=gh.check_run_id), 201

    @app.patch(f"{API}/repos/<owner>/<name>/check-runs/<int:run>")
    def update_check_run(owner: str, name: str, run: int) -> Any:
        return jsonify(id=run)

    @app.post(f"{API}/repos/<owner>/<name>/issues/comments/<int:comment>/reactions")
    def react(owner: str, name: str, comment: int) -> Any:
        return jsonify(id=1, content=(request.get_json(silent=True) or {}).get("content")), 201

    return app


class Served:
    """A WSGI app on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
