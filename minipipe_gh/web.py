"""The Flask application factory and the operational endpoints.

``/webhook`` is served by the plain WSGI callable in ``ingest`` (the hot path);
Flask serves everything else.
"""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template
from flask_wtf.csrf import CSRFProtect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from . import api, dashboard, logs, oauth, setup
from .config import Settings
from .ingest import PathDispatcher, WebhookIngest
from .metrics import PATCH_WAIT_SECONDS, QUEUE_DEPTH
from .runtime import Runtime
from .waiting import longest_by_state
from .worker import queue_depth

ops = Blueprint("ops", __name__)


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
    rt = runtime_obj or Runtime.build(settings)
    if production:
        rt.settings.require_app()
    logs.setup()
    import os

    templates = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")
    app = Flask(__name__, template_folder=templates, instance_path=str(rt.settings.instance_path))
    app.config.update(
        SECRET_KEY=rt.settings.secret_key or pysecrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=production,
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the sign-in, not an hour
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["minipipe"] = rt
    app.register_blueprint(ops)
    app.register_blueprint(setup.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(dashboard.bp)
    # Every form needs its CSRF token; the bot API authenticates with bearer tokens instead
    # (and /webhook, with its signature, never reaches Flask).
    CSRFProtect(app).exempt(api.bp)
    webhook = WebhookIngest(rt.inbox, lambda: rt.settings.webhook_secrets)
    app.wsgi_app = PathDispatcher(app.wsgi_app, webhook)  # type: ignore[method-assign]
    return app


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
    with runtime().database.unit(write=False) as s:
        for state, seconds in longest_by_state(s).items():
            PATCH_WAIT_SECONDS.labels(state).set(seconds)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@ops.get("/")
def home() -> str:
    rt = runtime()
    return render_template(
        "home.html",
        settings=rt.settings,
        configured=rt.settings.has_app_credentials,
        missing=setup.missing_settings(rt.settings),
        public_url=rt.settings.public_url,
    )
