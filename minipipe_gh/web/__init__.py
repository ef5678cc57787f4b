"""The Flask application factory and the operational endpoints.

``/webhook`` is served by the plain WSGI callable in ``ingest`` (the hot path);
Flask serves everything else.
"""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
)
from flask_wtf.csrf import CSRFProtect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from werkzeug.exceptions import HTTPException, InternalServerError

from minipipe_gh.conf import config, resources, startup
from minipipe_gh.conf.config import Settings
from minipipe_gh.delivery import logs
from minipipe_gh.delivery.ingest import PathDispatcher, WebhookIngest
from minipipe_gh.delivery.metrics import PATCH_WAIT_SECONDS, QUEUE_DEPTH
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.delivery.worker import queue_depth
from minipipe_gh.store.waiting import longest_by_state
from minipipe_gh.web import api, dashboard, oauth, setup

ops = Blueprint("ops", __name__)
MAX_REQUEST_BYTES = 1024 * 1024


def runtime() -> Runtime:
    return current_app.extensions["minipipe"]


def create_app(
    settings: Settings | None = None,
    *,
    production: bool = False,
    test_config: dict[str, Any] | None = None,
    runtime_obj: Runtime | None = None,
) -> Flask:
    """Build the app. ``production`` refuses to start without full credentials."""
    # Before anything opens the database. Production needs everything; otherwise it is
    # setup mode (no credentials at all) or credentials that are all present and right.
    check = startup.check_production if production else config.Settings.require_credentials
    if runtime_obj is None:
        settings = settings or config.load()
        check(settings)
        rt = Runtime.build(settings)
    else:
        rt = runtime_obj
        check(rt.settings)
    logs.setup()
    templates = str(resources.find("templates"))
    app = Flask(__name__, template_folder=templates, instance_path=str(rt.settings.instance_path))
    app.config.update(
        SECRET_KEY=rt.settings.secret_key or pysecrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Secure whenever the browser reaches us over https, even outside production mode
        SESSION_COOKIE_SECURE=production
        or (rt.settings.public_url or "").lower().startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the sign-in, not an hour
        # API calls and forms are small; /webhook (25 MB) never reaches Flask
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["minipipe"] = rt
    app.register_blueprint(ops)
    app.register_blueprint(setup.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(dashboard.bp)
    app.after_request(security_headers)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(InternalServerError, server_error)
    # Every form needs its CSRF token; the bot API authenticates with bearer tokens instead
    # (and /webhook, with its signature, never reaches Flask).
    CSRFProtect(app).exempt(api.bp)
    webhook = WebhookIngest(rt.inbox, lambda: rt.settings.webhook_secrets)
    app.wsgi_app = PathDispatcher(app.wsgi_app, webhook)  # type: ignore[method-assign]
    return app


def _for_the_api() -> bool:
    return request.path.startswith(f"{api.bp.url_prefix}/")


def http_error(err: HTTPException) -> Any:
    """JSON for the bot API, even for URLs it does not know; a page for people."""
    return api.http_error(err) if _for_the_api() else dashboard.http_error_page(err)


def server_error(err: InternalServerError) -> Any:
    if _for_the_api():
        return api.error_response(500, "internal_server_error", dashboard.SERVER_ERROR)
    return dashboard.server_error_page(err)


# Pages load nothing from elsewhere and run no script; the inline <style> of base.html
# is the one exception. No site may frame them (clickjacking the Approve button).
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def security_headers(response: Response) -> Response:
    """Headers every page carries. The setup blueprint sends an auto-submitted form to
    GitHub (the manifest flow), so its pages keep everything but the CSP."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html" and request.blueprint != "setup":
        response.headers.setdefault("Content-Security-Policy", CSP)
    return response


@ops.get("/healthz")
def healthz() -> tuple[Response, int]:
    try:
        with runtime().database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any failure to reach the database is "unhealthy"
        return jsonify(status="unhealthy", database=str(err).splitlines()[0]), 503
    return jsonify(status="ok", database="reachable"), 200


@ops.get("/metrics")
def metrics() -> Response:
    for status, count in queue_depth(runtime().database).items():
        QUEUE_DEPTH.labels(status).set(count)
    with runtime().database.unit() as s:
        for state, seconds in longest_by_state(s).items():
            PATCH_WAIT_SECONDS.labels(state).set(seconds)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@ops.get("/")
def home() -> Any:
    rt = runtime()
    configured = rt.settings.has_app_credentials
    token = request.args.get("token")
    status = 200
    if not configured and token is not None:
        if setup.accept_token(token):
            return redirect("/")  # the token leaves the address bar and the history
        status = 403
    return render_template(
        "home.html",
        settings=rt.settings,
        configured=configured,
        missing=setup.missing_settings(rt.settings),
        can_register=not configured and setup.has_token(),
        bad_token=status == 403,
        unreachable=setup.unreachable(rt.settings),
    ), status
