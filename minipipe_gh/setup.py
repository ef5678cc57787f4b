"""First run, as Probot does it: register the GitHub App from ``app.yml``.

With no credentials, the home page offers GitHub's manifest flow; GitHub
redirects back with a code that we convert (``POST /app-manifests/{code}/conversions``)
into the app id, private key, webhook secret and OAuth client, written to ``.env``.
https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import requests
import yaml
from dotenv import set_key
from flask import Blueprint, abort, current_app, redirect, request, session
from werkzeug.wrappers import Response

from . import config
from .config import Settings

bp = Blueprint("setup", __name__)
MANIFEST = Path(__file__).resolve().parent.parent / "app.yml"


def missing_settings(settings: Settings) -> list[str]:
    missing = []
    if settings.app_id is None:
        missing.append("GITHUB_APP_ID")
    if not settings.private_key:
        missing.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
    if not settings.webhook_secrets:
        missing.append("GITHUB_WEBHOOK_SECRET")
    return missing + list(settings.problems)


def manifest(public_url: str, path: Path = MANIFEST) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    base = public_url.rstrip("/")
    data["url"] = base
    data["hook_attributes"] = {**data.get("hook_attributes", {}), "url": f"{base}/webhook"}
    data["redirect_url"] = f"{base}/setup/callback"
    data["callback_urls"] = [f"{base}/auth/github/callback"]
    return data


@bp.post("/setup/register")
def register() -> Response:
    """Send the browser to GitHub with the manifest (an auto-submitted form)."""
    rt = current_app.extensions["minipipe"]
    public_url = rt.settings.public_url or request.host_url
    state = secrets.token_urlsafe(24)
    session["setup_state"] = state
    body = json.dumps(manifest(public_url))
    target = f"{rt.settings.web_url}/settings/apps/new?state={state}"
    html = (
        f'<form id="f" method="post" action="{_esc(target)}">'
        f'<input type="hidden" name="manifest" value="{_esc(body)}"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    return Response(html, mimetype="text/html")


@bp.get("/setup/callback")
def callback() -> Response:
    rt = current_app.extensions["minipipe"]
    code, state = request.args.get("code"), request.args.get("state")
    if not code or not state or state != session.pop("setup_state", None):
        abort(400, "the registration link is stale or was not started here; start again")
    resp = requests.post(
        f"{rt.settings.api_url}/app-manifests/{code}/conversions",
        headers={"Accept": "application/vnd.github+json"},
        timeout=15,
    )
    if resp.status_code != 201:
        abort(502, f"GitHub refused the manifest conversion ({resp.status_code})")
    app_data = resp.json()
    env_file = rt.settings.env_file or Path(".env")
    env_file.touch(mode=0o600, exist_ok=True)
    for key, value in (
        ("GITHUB_APP_ID", str(app_data["id"])),
        ("GITHUB_PRIVATE_KEY", app_data["pem"].replace("\n", "\\n")),
        ("GITHUB_WEBHOOK_SECRET", app_data["webhook_secret"]),
        ("GITHUB_CLIENT_ID", app_data.get("client_id") or ""),
        ("GITHUB_CLIENT_SECRET", app_data.get("client_secret") or ""),
    ):
        set_key(str(env_file), key, value, quote_mode="never")
    rt.reconfigure(config.load(instance_path=rt.settings.instance_path, env_file=env_file))
    return redirect(f"{app_data.get('html_url', rt.settings.web_url)}/installations/new")


def _esc(value: str) -> str:
    from markupsafe import escape

    return str(escape(value))
