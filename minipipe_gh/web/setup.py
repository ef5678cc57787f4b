"""First run, as Probot does it: register the GitHub App from ``app.yml``.

With no credentials, the home page offers GitHub's manifest flow; GitHub
redirects back with a code that we convert (``POST /app-manifests/{code}/conversions``)
into the app id, private key, webhook secret and OAuth client, written to ``.env``.
https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest

A fresh instance is reachable from the internet (GitHub must post to it), so the routes
that write credentials guard themselves: they exist only while the app has none, they
answer only a browser that opened the one-time setup link ``minipipe-gh run`` printed
(Jupyter's token), and they never overwrite credentials already written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import requests
import yaml
from flask import Blueprint, abort, current_app, redirect, request, session
from werkzeug.wrappers import Response

from minipipe_gh.conf import config, resources
from minipipe_gh.conf.config import Settings

bp = Blueprint("setup", __name__)
# GitHub's manifest codes are short hex strings; anything else could steer the URL.
CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_writing = threading.Lock()


def manifest_path() -> Path:
    return resources.find("app.yml")


def missing_settings(settings: Settings) -> list[str]:
    missing = []
    if settings.app_id is None:
        missing.append("GITHUB_APP_ID")
    if not settings.private_key:
        missing.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
    if not settings.webhook_secrets:
        missing.append("GITHUB_WEBHOOK_SECRET")
    return missing + list(settings.problems)


def unreachable(settings: Settings) -> bool:
    """No public URL and no proxy: GitHub has nowhere to send the webhooks."""
    return not settings.public_url and not settings.webhook_proxy_url


def manifest(
    app_url: str, webhook_url: str | None = None, path: Path | None = None
) -> dict[str, Any]:
    """The manifest from ``app.yml`` with this instance's URLs.

    ``app_url`` is where a browser reaches the app (redirect and OAuth callback);
    ``webhook_url`` where GitHub posts: the smee.io channel when there is one.
    """
    data: dict[str, Any] = yaml.safe_load((path or manifest_path()).read_text())
    base = app_url.rstrip("/")
    data["url"] = base
    data["hook_attributes"] = {
        **data.get("hook_attributes", {}),
        "url": webhook_url or f"{base}/webhook",
    }
    data["redirect_url"] = f"{base}/setup/callback"
    data["callback_urls"] = [f"{base}/auth/github/callback"]
    return data


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def accept_token(token: str) -> bool:
    """The home page opened with ``?token=``: remember, in the signed cookie, that this
    browser holds this run's setup token."""
    rt = current_app.extensions["minipipe"]
    if rt.settings.has_app_credentials or not hmac.compare_digest(token, rt.setup_token):
        return False
    session["setup_ok"] = _digest(rt.setup_token)
    return True


def has_token() -> bool:
    rt = current_app.extensions["minipipe"]
    held = session.get("setup_ok")
    return isinstance(held, str) and hmac.compare_digest(held, _digest(rt.setup_token))


@bp.before_request
def guard() -> None:
    """The routes exist only in setup mode, and only for the holder of the setup token."""
    if current_app.extensions["minipipe"].settings.has_app_credentials:
        abort(404)
    if not has_token():
        abort(
            403,
            "open the setup link that `minipipe-gh run` printed on its console "
            "(it ends in ?token=…) to register the GitHub App",
        )


@bp.post("/setup/register")
def register() -> Response:
    """Send the browser to GitHub with the manifest (an auto-submitted form)."""
    rt = current_app.extensions["minipipe"]
    app_url = rt.settings.public_url or request.host_url
    state = secrets.token_urlsafe(24)
    session["setup_state"] = state
    body = json.dumps(manifest(app_url, rt.settings.webhook_proxy_url))
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
    code, state = request.args.get("code", ""), request.args.get("state")
    expected = session.pop("setup_state", None)
    if not state or not isinstance(expected, str) or not hmac.compare_digest(state, expected):
        abort(400, "the registration link is stale or was not started here; start again")
    if not CODE.fullmatch(code):
        abort(400, "GitHub's code is not a manifest code; start the registration again")
    env_file = rt.settings.env_file or Path(".env")
    with _writing:  # two callbacks at once: the second finds the first's credentials
        already = config.env_file_credentials(env_file)
        if rt.settings.has_app_credentials or already:
            abort(
                409,
                f"the app is already configured ({', '.join(already) or 'running'}): "
                "registration never replaces credentials; remove them from .env first",
            )
        resp = requests.post(
            f"{rt.settings.api_url}/app-manifests/{code}/conversions",
            headers={"Accept": "application/vnd.github+json"},
            timeout=15,
        )
        if resp.status_code != 201:
            abort(502, f"GitHub refused the manifest conversion ({resp.status_code})")
        app_data = resp.json()
        config.write_env(
            env_file,
            {
                "GITHUB_APP_ID": str(app_data["id"]),
                "GITHUB_PRIVATE_KEY": app_data["pem"].replace("\n", "\\n"),
                "GITHUB_WEBHOOK_SECRET": app_data["webhook_secret"],
                "GITHUB_CLIENT_ID": app_data.get("client_id") or "",
                "GITHUB_CLIENT_SECRET": app_data.get("client_secret") or "",
            },
        )
        written = config.load(instance_path=rt.settings.instance_path, env_file=env_file)
        rt.reconfigure(
            dataclasses.replace(
                rt.settings,  # keep what this process was started with (--public-url …)
                app_id=written.app_id,
                private_key=written.private_key,
                webhook_secrets=written.webhook_secrets,
                client_id=written.client_id,
                client_secret=written.client_secret,
                credentials_given=written.credentials_given,
                blank=written.blank,
            )
        )
        rt.setup_token = secrets.token_urlsafe(32)  # spent: nobody holds the new one
    session.pop("setup_ok", None)
    return redirect(f"{app_data.get('html_url', rt.settings.web_url)}/installations/new")


def _esc(value: str) -> str:
    from markupsafe import escape

    return str(escape(value))
