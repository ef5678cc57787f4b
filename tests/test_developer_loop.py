"""Probot's developer loop: ``deliveries send`` to a running app, ``run`` subscribed to a
smee.io-shaped channel (``WEBHOOK_PROXY_URL``), the setup link and a ``SECRET_KEY`` that
survives a restart. Everything on loopback; the real channel would be on the internet."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from dotenv import dotenv_values
from sqlalchemy import select
from werkzeug.serving import make_server

from minipipe_gh.cli import main
from minipipe_gh.core import events
from minipipe_gh.delivery.smee import stringify
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Delivery
from tests.support import APP_ID, FIXTURES, SECRET, payload

MINIPIPE_GH = str(Path(sys.executable).parent / "minipipe-gh")


def stored(database: Database) -> dict[str, Delivery]:
    with database.unit() as s:
        return {d.delivery_id: d for d in s.scalars(select(Delivery))}


# --- deliveries send ---------------------------------------------------------------


@pytest.fixture
def served(app: Any) -> Iterator[str]:
    """The configured app on a loopback port; its webhook URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhook"
    server.shutdown()
    thread.join()


def send(url: str, *args: str, secret: str = SECRET) -> Any:
    env = {"GITHUB_WEBHOOK_SECRET": secret, "MINIPIPE_ENV_FILE": "/nonexistent/.env"}
    return CliRunner().invoke(main, ["deliveries", "send", *args, "--url", url], env=env)


def test_deliveries_send_signs_a_recorded_payload_and_the_running_app_stores_it(served, rt):
    recorded = FIXTURES / "issue_comment.created.payload.json"
    result = send(served, "issue_comment", str(recorded), "--delivery-id", "sent-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('202 Accepted: {"ok":true,"delivery":"sent-1"}')

    row = stored(rt.database)["sent-1"]
    assert (row.event, row.status) == ("issue_comment", "queued")
    assert json.loads(row.payload) == json.loads(recorded.read_bytes())

    again = send(served, "issue_comment", str(recorded), "--delivery-id", "sent-1")
    assert again.exit_code == 0 and '"duplicate":true' in again.stdout


def test_deliveries_send_with_another_secret_is_refused_and_exits_non_zero(served, rt):
    recorded = FIXTURES / "issue_comment.created.payload.json"
    result = send(served, "issue_comment", str(recorded), secret="not the app's")
    assert result.exit_code == 2
    assert result.stdout.startswith("401 Unauthorized")
    assert stored(rt.database) == {}


def test_deliveries_send_says_when_nothing_listens(tmp_path):
    recorded = FIXTURES / "ping.with-app_id.payload.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhook"
    result = send(url, "ping", str(recorded))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot reach {url} (ConnectionError): is `minipipe-gh run` running?\n"
    )


# --- run, subscribed to a smee.io-shaped channel ----------------------------------------


def sse(event: str | None, data: str) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


def smee_message(body: dict[str, Any], delivery_id: str, *, secret: str = SECRET) -> bytes:
    """A delivery as smee.io sends it: lower-cased headers, ``body``, ``query``."""
    signed = events.signature(stringify(body), secret)
    message = {
        "host": "smee.io",
        "x-github-event": "issue_comment",
        "x-github-delivery": delivery_id,
        "x-github-hook-id": "292430182",
        "x-hub-signature-256": signed,
        "content-type": "application/json",
        "user-agent": "GitHub-Hookshot/044aadd",
        "body": body,
        "query": {},
        "timestamp": 1764633600000,
    }
    return sse(None, json.dumps(message))


class Channel(ThreadingHTTPServer):
    """A loopback smee.io channel: connection N gets ``scripts[N]`` (chunked, as smee.io
    streams), then the stream drops abruptly; the last connection is held open."""

    daemon_threads = True

    def __init__(self, scripts: list[list[bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), ChannelHandler)
        self.scripts = scripts
        self.connections = 0
        self.closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/wnRvL1iMtj0Zxtux"


class ChannelHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Channel

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        n = self.server.connections
        self.server.connections += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in self.server.scripts[n] if n < len(self.server.scripts) else []:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if n + 1 < len(self.server.scripts):
            self.connection.shutdown(socket.SHUT_RDWR)  # dropped mid-stream: no last chunk
            self.close_connection = True
            return
        self.server.closing.wait(30)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_env(tmp_path: Path, db_url: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MINIPIPE_"))}
    for name in ("PUBLIC_URL", "WEBHOOK_PROXY_URL", "SECRET_KEY", "DATABASE_URL"):
        base.pop(name, None)
    return {
        **base,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": db_url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / ".env"),
        **extra,
    }


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        proc = subprocess.Popen(
            [MINIPIPE_GH, "run", "--port", str(port), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return proc, port
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        raise AssertionError("minipipe-gh run did not answer")

    yield start
    for proc in procs:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        print(out)  # shown when a test fails


def test_run_takes_deliveries_from_the_smee_channel_and_survives_a_drop(
    start_run, tmp_path, db_url, private_key_pem
):
    first = payload("issue_comment.created", comment__body="/approve ✓ — merci, ça marche")
    second = payload("issue_comment.created", comment__body="/review", comment__id=492700401)
    channel = Channel(
        [
            [
                sse("ready", "{}"),
                sse("ping", "{}"),
                smee_message(first, "smee-1"),
                smee_message(first, "smee-forged", secret="somebody else's"),
            ],
            [sse("ready", "{}"), smee_message(second, "smee-2")],
        ]
    )
    threading.Thread(target=channel.serve_forever, daemon=True).start()
    env = run_env(
        tmp_path,
        db_url,
        GITHUB_APP_ID=str(APP_ID),
        GITHUB_PRIVATE_KEY=private_key_pem,
        GITHUB_WEBHOOK_SECRET=SECRET,
        SECRET_KEY="k",
        WEBHOOK_PROXY_URL=channel.url,
    )
    try:
        start_run(env, "--no-worker")  # the deliveries stay queued: what was stored, as sent
        database = Database(db_url)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "smee-2" not in stored(database):
                time.sleep(0.1)
            rows = stored(database)
        finally:
            database.dispose()
    finally:
        channel.closing.set()
        channel.shutdown()
    assert sorted(rows) == ["smee-1", "smee-2"]  # the forged one failed verification
    assert json.loads(rows["smee-1"].payload) == first
    assert rows["smee-2"].status == "queued"
    assert channel.connections == 2  # it came back after the drop


# --- run in setup mode -------------------------------------------------------------------


def test_run_prints_the_setup_link_and_keeps_its_secret_key_across_restarts(
    start_run, tmp_path, db_url
):
    env = run_env(tmp_path, db_url)
    proc, port = start_run(env)
    first_key = dotenv_values(tmp_path / ".env")["SECRET_KEY"]
    assert first_key and len(first_key) == 64
    link = ""
    while "?token=" not in link:
        link = proc.stdout.readline() if proc.stdout else ""
        assert link, "no setup link printed"
    link = link.strip()
    assert link.startswith(f"http://127.0.0.1:{port}/?token=")

    browser = requests.Session()
    home = browser.get(f"http://127.0.0.1:{port}/")
    assert "Register a GitHub App" not in home.text
    assert "GitHub cannot reach this server" in home.text  # no public URL, no proxy
    page = browser.get(link).text  # redirected home, the token held by this browser
    assert page.index("GitHub cannot reach this server") < page.index("Register a GitHub App")
    proc.terminate()
    proc.wait(10)

    _proc, port = start_run(env)
    assert dotenv_values(tmp_path / ".env")["SECRET_KEY"] == first_key
    # the old cookie still verifies (same SECRET_KEY), but the new run has a new token
    assert "Register a GitHub App" not in browser.get(f"http://127.0.0.1:{port}/").text


# --- the manifest's URLs -------------------------------------------------------------------


def registered_manifest(db_url: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    import html

    from minipipe_gh.conf import config
    from minipipe_gh.delivery.runtime import Runtime
    from minipipe_gh.web import create_app

    settings = config.load(
        {"DATABASE_URL": db_url, "SECRET_KEY": "k", **env}, instance_path=tmp_path / "i"
    )
    rt = Runtime.build(settings)
    try:
        app = create_app(runtime_obj=rt, test_config={"TESTING": True, "WTF_CSRF_ENABLED": False})
        client = app.test_client()
        here = "http://laptop.local:3000"  # the address the setup page was opened at
        client.get(f"/?token={rt.setup_token}", base_url=here)
        form = client.post("/setup/register", base_url=here).text
    finally:
        rt.database.dispose()
    value = form.split('name="manifest" value="', 1)[1].split('"', 1)[0]
    return json.loads(html.unescape(value))


def test_with_a_proxy_github_posts_to_the_channel_and_the_browser_comes_back_here(db_url, tmp_path):
    channel = "https://smee.io/wnRvL1iMtj0Zxtux"
    data = registered_manifest(db_url, tmp_path, WEBHOOK_PROXY_URL=channel)
    assert data["hook_attributes"]["url"] == channel
    assert data["redirect_url"] == "http://laptop.local:3000/setup/callback"
    assert data["callback_urls"] == ["http://laptop.local:3000/auth/github/callback"]
    assert data["default_events"][0] == "issue_comment"  # the rest comes from app.yml


def test_with_a_public_url_everything_points_at_it(db_url, tmp_path):
    data = registered_manifest(db_url, tmp_path, PUBLIC_URL="https://pipe.example.com/")
    assert data["hook_attributes"]["url"] == "https://pipe.example.com/webhook"
    assert data["redirect_url"] == "https://pipe.example.com/setup/callback"
