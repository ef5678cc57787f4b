"""The suite's GitHub (tests/github_fake.py) on a loopback port: real HTTP, no internet.

The same ``GitHubState`` and ``ROUTES`` the in-process tests answer through
``responses``, served by a small Flask app: the OAuth web flow at the root (the
authorize page redirects straight back to the callback, as if the user had
clicked "Authorize"), the REST API under ``/api/v3`` like GitHub Enterprise.
``state.requests`` records what was asked, in order (full paths). For the
browser and MCP tests, the bench, and subprocess workers (give each the URL).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, make_server

from minipipe_gh.conf.config import Settings
from minipipe_gh.web import create_app as create_web_app
from tests.github_fake import REPO, Fault, GitHubState, Request, _parse_body

API = "/api/v3"
FakeGitHub = GitHubState  # the loopback's name for it (tests/test_browser_waits.py imports it)
METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


def create_app(gh: GitHubState) -> Flask:
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def answer(path: str) -> Any:
        raw = request.get_data()
        body = _parse_body(raw, request.content_type or "")
        gh.requests.append((request.method, request.path, body if request.is_json else None))
        web = not request.path.startswith(f"{API}/")
        below = request.path if web else request.path.removeprefix(API)
        found = gh.match(request.method, below, web=web)
        if found is None:
            return Response('{"message": "Not Found"}', 404, mimetype="application/json")
        rt, params = found
        asked = Request(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(),
            headers=dict(request.headers),
            body=body,
            params=params,
        )
        answer = gh.handle(rt, asked)
        status, headers, data = answer.reply() if isinstance(answer, Fault) else answer
        if isinstance(data, str):
            return Response(data, status, headers=headers)
        return Response(app.json.dumps(data), status, headers=headers, mimetype="application/json")

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


# --- fixtures: the live app against this GitHub (import them into a test module) ---------


@pytest.fixture
def fake_github() -> Iterator[tuple[GitHubState, str]]:
    """This GitHub on a loopback port; the session bot may write (it may pause its session)."""
    gh = GitHubState()
    gh.allow("agent-bot", "write", REPO)
    with Served(create_app(gh)) as served:
        yield gh, served.url


@pytest.fixture
def settings(settings: Settings, fake_github: tuple[GitHubState, str]) -> Settings:
    _gh, url = fake_github
    return dataclasses.replace(settings, api_url=f"{url}/api/v3", web_url=url)


@pytest.fixture
def site(rt: Any) -> Iterator[str]:
    """The app on a loopback port: a real HTTP server, as gunicorn would serve it."""
    with Served(create_web_app(runtime_obj=rt)) as served:
        yield served.url
