"""Smoke-run an installed wheel, from a folder that is not the checkout.

Run with the fresh virtualenv's python (``.ci/run`` builds the wheel and installs it
there). Three starts, as a new user would make them:

1. ``minipipe-gh run`` with no credentials: setup mode, the setup link, the Register button;
2. ``minipipe-gh db upgrade`` on a new database;
3. ``gunicorn minipipe_gh.wsgi:app`` configured: every page answers without a server error,
   the dashboard's pages as a signed-in viewer.

Prints one line per check; exits non-zero at the first failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
passed = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global passed
    if not ok:
        print(f"FAIL {name} {detail}", flush=True)
        print(f"wheel smoke: {passed} checks passed, then one failed")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(args: list[str], env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            check(f"{args[0]} starts", False, proc.stdout.read() if proc.stdout else "")
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return proc
        except requests.RequestException:  # not listening yet, or its worker still booting
            time.sleep(0.1)
    check(f"{args[0]} answers", False)
    raise AssertionError


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    return out


def clean_env(folder: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MINIPIPE_"))}
    for name in ("DATABASE_URL", "SECRET_KEY", "PUBLIC_URL", "WEBHOOK_PROXY_URL"):
        keep.pop(name, None)
    return {**keep, "PYTHONUNBUFFERED": "1", **extra}


def setup_mode(root: Path) -> None:
    folder = root / "first-run"
    folder.mkdir()
    port = free_port()
    proc = serve(
        [str(BIN / "minipipe-gh"), "run", "--port", str(port)], clean_env(folder), folder, port
    )
    try:
        browser = requests.Session()
        home = browser.get(f"http://127.0.0.1:{port}/", timeout=10)
        check("setup mode: the home page", home.status_code == 200 and "Setup mode" in home.text)
        check("setup mode: GitHub cannot reach it, said", "GitHub cannot reach" in home.text)
    finally:
        out = stop(proc)
    link = next((line.strip() for line in out.splitlines() if "?token=" in line), "")
    check("setup mode: run printed the setup link", link.startswith("http://127.0.0.1:"), out)
    proc = serve(
        [str(BIN / "minipipe-gh"), "run", "--port", str(port)], clean_env(folder), folder, port
    )
    try:
        out_link = ""
        assert proc.stdout is not None
        while "?token=" not in out_link:
            out_link = proc.stdout.readline()
        page = browser.get(out_link.strip(), timeout=10)
        check("setup mode: the link offers to register", "Register a GitHub App" in page.text)
        check("setup mode: SECRET_KEY kept in .env", "SECRET_KEY=" in (folder / ".env").read_text())
    finally:
        stop(proc)


def upgrade(root: Path) -> str:
    folder = root / "app"
    folder.mkdir()
    url = f"sqlite:///{folder / 'minipipe.db'}"
    done = subprocess.run(
        [str(BIN / "minipipe-gh"), "db", "upgrade"],
        cwd=folder,
        env=clean_env(folder, DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    check("db upgrade", done.returncode == 0 and "database at head" in done.stdout, done.stderr)
    return url


def configured(root: Path, url: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    from minipipe_gh.store import ledger, registry, signins
    from minipipe_gh.store.db import Database
    from minipipe_gh.store.signins import Repo

    folder = root / "app"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    (folder / "app.pem").write_text(pem)
    secret_key = "smoke-secret-key"
    env = clean_env(
        folder,
        DATABASE_URL=url,
        GITHUB_APP_ID="1",
        GITHUB_PRIVATE_KEY_PATH=str(folder / "app.pem"),
        GITHUB_WEBHOOK_SECRET="smoke",
        GITHUB_CLIENT_ID="Iv1.smoke",
        GITHUB_CLIENT_SECRET="smoke",
        SECRET_KEY=secret_key,
    )

    database = Database(url)
    try:
        with database.unit() as db:
            session = registry.create_session(
                db,
                project_id="octo/app",
                agent_type="aider",
                title="smoke",
                actor="bot",
                source="smoke",
                branch="minipipe/smoke",
                pr_number=1,
            )
            patch = ledger.record_patch(db, session, "a" * 40, actor="bot", source="smoke")
            sid = signins.create(
                db,
                login="octocat",
                token="gho_smoke",
                repos=[Repo("octo/app", 1)],
                secret_key=secret_key,
            )
            ids = (session.session_id, patch.ledger_id)
    finally:
        database.dispose()
    signer = Flask("smoke")
    signer.secret_key = secret_key
    cookie = SecureCookieSessionInterface().get_signing_serializer(signer).dumps({"sid": sid})

    port = free_port()
    args = [str(BIN / "gunicorn"), "minipipe_gh.wsgi:app", "-b", f"127.0.0.1:{port}", "-w", "1"]
    proc = serve(args, env, folder, port)
    pages: list[tuple[str, Callable[[requests.Response], bool]]] = [
        ("/", lambda r: r.status_code == 200 and "minipipe-gh" in r.text),
        ("/healthz", lambda r: r.status_code == 200),
        ("/metrics", lambda r: r.status_code == 200),
        ("/api/v1/openapi.json", lambda r: r.status_code == 200),
        ("/sessions", lambda r: r.status_code == 200 and "smoke" in r.text),
        (f"/sessions/{ids[0]}", lambda r: r.status_code == 200),
        ("/review", lambda r: r.status_code == 200),
        (f"/patches/{ids[1]}", lambda r: r.status_code == 200),
        ("/deliveries", lambda r: r.status_code == 200),
        ("/stats", lambda r: r.status_code == 200),
        ("/no-such-page", lambda r: r.status_code == 404),
    ]
    try:
        anonymous = requests.get(f"http://127.0.0.1:{port}/sessions", timeout=10)
        check("configured: sign-in page for a stranger", anonymous.status_code == 401)
        browser = requests.Session()
        browser.headers["Cookie"] = f"session={cookie}"  # signed in as octocat
        for path, ok in pages:
            resp = browser.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            check(f"configured: GET {path} -> {resp.status_code}", ok(resp), resp.text[:300])
        hook = requests.post(f"http://127.0.0.1:{port}/webhook", data=b"{}", timeout=10)
        check("configured: /webhook refuses an unsigned body", hook.status_code == 401)
    finally:
        stop(proc)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="minipipe-smoke-") as tmp:
        root = Path(tmp)
        os.chdir(root)  # nowhere near the checkout: only the installed package is there
        import minipipe_gh

        where = Path(minipipe_gh.__file__).resolve()
        check("the package is the installed wheel", "site-packages" in str(where), str(where))
        check("templates inside the package", (where.parent / "templates" / "error.html").is_file())
        check("app.yml inside the package", (where.parent / "app.yml").is_file())
        setup_mode(root)
        configured(root, upgrade(root))
    print(f"wheel smoke: all {passed} checks passed")


if __name__ == "__main__":
    main()
