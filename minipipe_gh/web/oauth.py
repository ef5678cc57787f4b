"""Sign-in with GitHub through the app's OAuth client, and who the current viewer is.

The web flow: https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app
``/auth/github/login`` sends the browser to ``{GITHUB_WEB_URL}/login/oauth/authorize``
with a random ``state`` kept in the session; ``/auth/github/callback`` checks it,
trades the code for a user token and reads which of the app's installations'
repositories the user can see (``GET /user/installations`` and
``GET /user/installations/{id}/repositories``). That list is the user's whole
view of the dashboard; it is read again every few minutes with their token.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from flask import Blueprint, abort, current_app, g, redirect, request, url_for
from flask import session as cookie
from github import Github, GithubException
from werkzeug.wrappers import Response

from minipipe_gh.conf.config import Settings
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.store import signins
from minipipe_gh.store.signins import Repo, Viewer

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, url_prefix="/auth")

TIMEOUT_S = 15
MAX_PAGES = 10  # 1,000 installations or repositories per installation is plenty for a dashboard
DEFAULT_NEXT = "/sessions"
# https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-authorization-request-errors
OAUTH_ERRORS = {
    "access_denied": "the request to sign in was declined",
    "application_suspended": "this app is suspended on GitHub",
    "redirect_uri_mismatch": "the callback URL does not match the app's settings",
}


def rt() -> Runtime:
    return current_app.extensions["minipipe"]


# -- pure pieces ----------------------------------------------------------------------------


def authorize_url(web_url: str, client_id: str, state: str, redirect_uri: str) -> str:
    query = urlencode({"client_id": client_id, "state": state, "redirect_uri": redirect_uri})
    return f"{web_url}/login/oauth/authorize?{query}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(target: str | None) -> str:
    """Only a path on this site: ``//evil.example`` or ``https://…`` would be an open redirect.

    Browsers drop tabs and newlines from a URL and read ``\\`` as ``/``, so
    ``/%09/evil.example`` is ``//evil.example`` to them: the target is rebuilt from
    the parsed URL with those removed, and refused if anything names a scheme or host.
    """
    cleaned = _CONTROL.sub("", target or "").replace("\\", "/")
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return DEFAULT_NEXT
    if parts.path.startswith("//"):
        return DEFAULT_NEXT
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def redirect_uri(settings: Settings) -> str:
    """The manifest registers ``{public_url}/auth/github/callback``; GitHub wants it exactly."""
    if settings.public_url:
        return f"{settings.public_url.rstrip('/')}/auth/github/callback"
    return url_for("auth.callback", _external=True)


# -- GitHub ---------------------------------------------------------------------------------


def exchange_code(settings: Settings, code: str, redirect: str) -> str:
    """Trade the callback's code for a user token (GitHub answers errors with 200 and JSON)."""
    try:
        resp = requests.post(
            f"{settings.web_url}/login/oauth/access_token",
            data={
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
                "code": code,
                "redirect_uri": redirect,
            },
            headers={"Accept": "application/json"},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as err:
        abort(502, f"GitHub could not be reached to finish signing in ({type(err).__name__})")
    data: Any = None
    with contextlib.suppress(ValueError):
        data = resp.json()
    if not isinstance(data, dict):
        data = {}
    token = data.get("access_token")
    if resp.status_code != 200 or not token:
        why = data.get("error_description") or data.get("error") or f"HTTP {resp.status_code}"
        abort(502, f"GitHub refused the sign-in code ({why}); sign in again")
    return str(token)


def _pages(gh: Github, path: str, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        _headers, data = gh.requester.requestJsonAndCheck(
            "GET", path, parameters={"per_page": 100, "page": page}
        )
        items = data.get(key, [])
        out.extend(items)
        if len(items) < 100:
            break
    return out


def user_login(gh: Github) -> str:
    _headers, data = gh.requester.requestJsonAndCheck("GET", "/user")
    return str(data["login"])


def readable_repos(gh: Github) -> list[Repo]:
    """The repositories of the app's installations that this user can read."""
    repos: list[Repo] = []
    for inst in _pages(gh, "/user/installations", "installations"):
        path = f"/user/installations/{int(inst['id'])}/repositories"
        repos.extend(
            Repo(r["full_name"], int(inst["id"])) for r in _pages(gh, path, "repositories")
        )
    return repos


# -- the current viewer ---------------------------------------------------------------------


def current_viewer() -> Viewer | None:
    """The signed-in user of this request, their repository list re-read when it is stale."""
    if "viewer" in g:
        return g.viewer  # type: ignore[no-any-return]
    g.viewer = _load_viewer(cookie.get("sid"))
    return g.viewer  # type: ignore[no-any-return]


def _load_viewer(sid: str | None) -> Viewer | None:
    r = rt()
    with r.database.unit() as s:
        row = signins.find(s, sid)
        if row is None:
            return None
        viewer = signins.viewer_of(row)
        stale = signins.needs_refresh(row)
        token = signins.token_of(row, current_app.config["SECRET_KEY"]) if stale else None
    if not stale:
        return viewer
    assert sid is not None
    if token is None:  # stored under another SECRET_KEY: sign in again
        _forget(sid)
        return None
    try:
        repos = readable_repos(r.github.user_client(token))
    except GithubException as err:
        if err.status == 401:  # revoked or expired: the sign-in ends with it
            _forget(sid)
            return None
        log.warning("could not re-read %s's repositories (GitHub answered %s)", viewer.login, err)
        return viewer
    except requests.RequestException as err:
        log.warning("could not re-read %s's repositories: %s", viewer.login, err)
        return viewer
    with r.database.unit() as s:
        signins.update_repos(s, sid, repos)
    return Viewer(viewer.login, tuple(repos))


def _forget(sid: str) -> None:
    with rt().database.unit() as s:
        signins.remove(s, sid)
    cookie.pop("sid", None)


# -- routes ---------------------------------------------------------------------------------


@bp.get("/github/login")
def login() -> Response:
    settings = rt().settings
    if not settings.client_id or not settings.client_secret:
        abort(
            503,
            "Sign-in with GitHub is not configured: set GITHUB_CLIENT_ID and "
            "GITHUB_CLIENT_SECRET to the Client ID and a client secret from the app's "
            "settings page (registering the app from the setup page writes them to .env).",
        )
    state = secrets.token_urlsafe(32)
    cookie["oauth_state"] = state
    cookie["oauth_next"] = safe_next(request.args.get("next"))
    return redirect(
        authorize_url(settings.web_url, settings.client_id, state, redirect_uri(settings))
    )


@bp.get("/github/callback")
def callback() -> Response:
    expected = cookie.pop("oauth_state", None)
    target = safe_next(cookie.pop("oauth_next", None))
    if request.args.get("error"):
        # The query is anyone's to write: only a fixed sentence reaches the page.
        why = OAUTH_ERRORS.get(request.args["error"], "GitHub sent an error back")
        abort(403, f"GitHub did not sign you in: {why}. Sign in again.")
    state = request.args.get("state") or ""
    if not expected or not hmac.compare_digest(state.encode(), str(expected).encode()):
        abort(
            400,
            "This sign-in link is stale or was not started here (its state does not match); "
            "sign in again.",
        )
    code = request.args.get("code")
    if not code:
        abort(400, "GitHub sent no code back; sign in again.")
    r = rt()
    token = exchange_code(r.settings, code, redirect_uri(r.settings))
    gh = r.github.user_client(token)
    login_name = user_login(gh)
    repos = readable_repos(gh)
    with r.database.unit() as s:
        sid = signins.create(
            s,
            login=login_name,
            token=token,
            repos=repos,
            secret_key=current_app.config["SECRET_KEY"],
        )
    cookie.clear()  # a fresh session on sign-in: nothing from before carries over
    cookie["sid"] = sid
    log.info("%s signed in to the dashboard; %d repositories visible", login_name, len(repos))
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    with rt().database.unit() as s:
        signins.remove(s, cookie.get("sid"))
    cookie.clear()
    return redirect("/")
