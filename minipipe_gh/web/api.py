"""``/api/v1``: the bot API. Bearer tokens, JSON in and out, errors as the spec fixes them.

Errors are ``{"error": {"code", "message"}}`` (plus ``field`` for a bad one)
with 400 bad input, 401 no or bad token, 403 not allowed, 404, 409 illegal
move or conflict, 502 when GitHub failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

import requests
from flask import Blueprint, current_app, g, jsonify, request, url_for
from github import GithubException
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from minipipe_gh.core import people
from minipipe_gh.core.authz import SessionMove
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.errors import (
    Conflict,
    IllegalTransition,
    Invalid,
    MinipipeError,
    NotFound,
    PermissionDenied,
    Refused,
)
from minipipe_gh.core.limits import branch_problem
from minipipe_gh.core.people import Person
from minipipe_gh.core.policy import Policy
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.gh import installations
from minipipe_gh.gh.repo import load_policy
from minipipe_gh.gh.session_pr import open_session_pr
from minipipe_gh.review import off_github
from minipipe_gh.store import ledger, registry, session_limits, stats, tokens
from minipipe_gh.store.models import AgentSession, AuditEntry, InstalledRepository, utcnow
from minipipe_gh.store.pagination import check_limit, decode, encode
from minipipe_gh.store.serialize import audit_dict, change_version, patch_dict, session_dict
from minipipe_gh.web.openapi import served

bp = Blueprint("api", __name__, url_prefix="/api/v1")
STATUS = {
    Invalid: 400,
    PermissionDenied: 403,
    NotFound: 404,
    IllegalTransition: 409,
    Conflict: 409,
    Refused: 409,
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field
        self.extra = extra or {}
        self.headers = headers or {}


def rt() -> Runtime:
    return current_app.extensions["minipipe"]


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    err.update(extra or {})
    return jsonify(error=err), status


@bp.errorhandler(ApiError)
def _api_error(err: ApiError) -> Any:
    resp, status = error_response(err.status, err.code, str(err), err.field, err.extra)
    resp.headers.update(err.headers)
    if status == 401:  # RFC 6750: say which scheme, and why the token was refused
        why = ', error="invalid_token"' if request.headers.get("Authorization") else ""
        resp.headers["WWW-Authenticate"] = f'Bearer realm="minipipe-gh"{why}'
    return resp, status


@bp.errorhandler(MinipipeError)
def _core_error(err: MinipipeError) -> Any:
    status = next((s for cls, s in STATUS.items() if isinstance(err, cls)), 400)
    return error_response(status, err.code, str(err), getattr(err, "field", None))


@bp.errorhandler(GithubException)
def _github_error(err: GithubException) -> Any:
    resp, status = error_response(502, "github_error", _upstream_message(err))
    resp.headers.update(_retry_after(err))
    return resp, status


@bp.errorhandler(HTTPException)
def http_error(err: HTTPException) -> Any:
    """The JSON error for a routing or HTTP error (the dashboard's app handler calls it
    for URLs under the API it does not route): keeps 405's ``Allow``."""
    resp, status = error_response(
        err.code or 500, (err.name or "error").lower().replace(" ", "_"), err.description or ""
    )
    for name, value in err.get_headers():  # 405's Allow, and the like
        if name.lower() != "content-type":
            resp.headers[name] = value
    return resp, status


def authenticated(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        with rt().database.unit() as s:
            row = tokens.verify(s, token.strip())
            if row is None:
                raise ApiError(401, "unauthorized", "the token is unknown or revoked")
            row.last_used_at = utcnow()
            g.token = row
        return fn(*a, **kw)

    return wrapper


def allowed(project_id: str) -> None:
    if not g.token.allows(project_id):
        raise ApiError(403, "forbidden", f"this token may not act on {project_id}")


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and not request.data:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object")
    _no_nul(data, "body")
    return data


@bp.before_request
def _clean_input() -> None:
    """NUL is no character of any id, name or text here (and PostgreSQL refuses it)."""
    for name, value in [*request.args.items(multi=True), *(request.view_args or {}).items()]:
        _no_nul(value, name)


def _no_nul(value: Any, name: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(400, "invalid", f"{name} must not contain NUL characters", name)
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, name)
            _no_nul(item, f"{name}.{key}" if name != "body" else str(key))
    elif isinstance(value, list):
        for item in value:
            _no_nul(item, name)


def field(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, "invalid", f"{name} is required", name)
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiError(400, "invalid", f"{name} must be of type {names}", name)
    return value


def limit_arg() -> int:
    raw = request.args.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, "invalid", "limit must be a whole number", "limit")
    return int(raw)


# -- sessions -------------------------------------------------------------------------


@bp.post("/sessions")
@authenticated
def create_session() -> Any:
    data = body()
    project = registry.check_project_id(field(data, "project_id", str, required=True))
    allowed(project)
    agent_type = field(data, "agent_type", str, required=True)
    title = field(data, "title", str, required=True)
    base = field(data, "base_branch", str)
    if base is not None and (why := branch_problem(base)):
        # it becomes a path under /git/ref/heads/: ".." would reach another endpoint
        raise ApiError(400, "invalid", f"base_branch {why}", "base_branch")
    workstream = field(data, "workstream_id", str)
    if workstream is not None and len(workstream) > 200:
        raise ApiError(
            400, "invalid", "workstream_id must be at most 200 characters", "workstream_id"
        )
    metadata = field(data, "metadata", dict)
    registry.check_caller_metadata(metadata)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 150:
        raise ApiError(
            400, "invalid", "Idempotency-Key must be 1-150 characters", "Idempotency-Key"
        )
    scoped_key = f"{g.token.id}:{key}" if key else None
    registry.check_session_fields(agent_type, title)
    fingerprint = _fingerprint(data)
    r = rt()
    found = installations.look_up(r.database, r.github, project)  # its event may be lost
    if found is None:
        raise ApiError(404, "not_installed", f"the GitHub App is not installed on {project}")
    limits = _limits_policy(found[0], project, scoped_key)
    try:
        installation_id, session_id, limit_headers = _start_session(
            project,
            agent_type,
            title,
            base,
            workstream,
            metadata,
            scoped_key,
            fingerprint,
            limits,
        )
    except _Done as done:
        return jsonify(done.session), 200
    except (IntegrityError, Conflict):  # the same key, raced by a concurrent request that won
        raise ApiError(409, "in_progress", IN_PROGRESS, headers={"Retry-After": "1"}) from None
    try:
        api = r.github.repo(installation_id, project)
        policy, _error = load_policy(r.github, api, None)
        _record_bot_id(session_id, api.collaborator(g.token.login).id)
        opened = open_session_pr(
            api,
            session_id=session_id,
            title=title,
            agent_type=agent_type,
            prefix=policy.branch_prefix,
            base_branch=base,
        )
    except UPSTREAM_ERRORS as err:
        short = f"GitHub answered {err.status}" if isinstance(err, GithubException) else None
        message = _upstream_message(err)
        _record_failure(session_id, short or message, resumable=scoped_key is not None)
        raise ApiError(502, "github_error", message, headers=_retry_after(err)) from err
    with r.database.unit() as s:
        session = registry.get_session(s, session_id)
        session.branch, session.base_branch = opened.branch, opened.base_branch
        session.pr_number = session.pr_number or opened.pr_number
        session.head_sha = session.head_sha or opened.head_sha
        # the branch's first commit is the app's own (empty, naming the session): it is
        # no foreign commit of the session's patches (people.commit_provenance)
        session.meta = people.with_seed_commit(
            {**session.meta, "pr_url": opened.pr_url, "github_error": None}, opened.head_sha
        )
        result = session_dict(session)
    resp = jsonify(result)
    resp.headers["Location"] = url_for("api.get_session", session_id=session_id, _external=True)
    resp.headers.update(limit_headers)
    return resp, 201


IN_PROGRESS = "a request with this Idempotency-Key is still creating the session; retry shortly"
# A claim on a key (a create under way) older than this was left by a request that died:
# the next retry takes it over. Opening the branch and PR is safe to repeat.
CLAIM_SECONDS = 120
# A failed create: GitHub answered an error, or could not be reached at all.
UPSTREAM_ERRORS = (GithubException, requests.RequestException, OSError)


class _Done(Exception):
    """The key's session exists with its PR: answer it again."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session


def _fingerprint(data: dict[str, Any]) -> str:
    """What a create asked for, so a key reused with another body is told so."""
    fields = ("project_id", "agent_type", "title", "base_branch", "workstream_id", "metadata")
    asked = {k: data.get(k) for k in fields}
    asked["project_id"] = str(asked["project_id"]).lower()  # GitHub's names are case-blind
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _upstream_message(err: BaseException) -> str:
    if isinstance(err, GithubException):
        message = (err.data or {}).get("message") if isinstance(err.data, dict) else None
        return f"GitHub answered {err.status}: {message or 'no message'}"
    return f"GitHub could not be reached ({type(err).__name__})"


def _retry_after(err: BaseException) -> dict[str, str]:
    """GitHub's own ``Retry-After`` (its secondary rate limits send one), passed through."""
    headers = getattr(err, "headers", None) or {}
    value = next((str(v) for k, v in headers.items() if k.lower() == "retry-after"), None)
    return {"Retry-After": value} if value and value.isdigit() else {}


def _claim_left(meta: dict[str, Any]) -> float:
    """Seconds until the key's claim expires (0 or less: expired, or never recorded)."""
    raw = meta.get("idempotency_claimed_at")
    try:
        claimed = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        claimed = None
    if claimed is None:
        return 0.0
    return CLAIM_SECONDS - (utcnow() - claimed).total_seconds()


def _rate_limit(s: Any) -> dict[str, str]:
    """Refuse a creation over the token's limit (429); the ``X-RateLimit-*`` of this one.

    The count is the token's session creations in the window, read from the
    audit trail, so every web process, on any host, sees the same one.
    """
    settings = rt().settings
    limit, window = settings.session_rate_limit, settings.session_rate_window
    since = utcnow() - timedelta(seconds=window)
    times = list(
        s.scalars(
            select(AuditEntry.at)
            .where(
                AuditEntry.entity == "session",
                AuditEntry.from_state.is_(None),
                AuditEntry.to_state == "created",
                AuditEntry.source == f"api:{g.token.name}",
                AuditEntry.at > since,
            )
            .order_by(AuditEntry.at)
            .limit(limit)
        )
    )
    reset = window if not times else max(1, math.ceil((times[0] - since).total_seconds()))
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - len(times) - 1)),
        "X-RateLimit-Reset": str(reset),
    }
    if len(times) >= limit:
        raise ApiError(
            429,
            "rate_limited",
            f"this token created {limit} sessions in the last {window} s; retry in {reset} s",
            headers={**headers, "X-RateLimit-Remaining": "0", "Retry-After": str(reset)},
        )
    return headers


def _start_session(
    project: str,
    agent_type: str,
    title: str,
    base: str | None,
    workstream: str | None,
    metadata: dict[str, Any] | None,
    scoped_key: str | None,
    fingerprint: str,
    policy: Policy | None,
) -> tuple[int, str, dict[str, str]]:
    """The session row, new or the key's earlier one, claimed by this request.

    Returns (installation id, session id, rate-limit headers). A key's session
    is answered again once its PR exists; a key whose create failed, or whose
    claim expired, is taken over by this retry; a live claim is 409 in_progress.
    A new one is refused (409 ``too_many_sessions``) when the agent type already
    holds ``agents.<type>.max_open_sessions`` open sessions on the repository.
    """
    with rt().database.unit() as s:
        existing = registry.find_by_idempotency_key(s, scoped_key) if scoped_key else None
        if existing is not None and existing.archived_at is not None:
            raise ApiError(409, "deleted", "the session of this Idempotency-Key was deleted")
        if existing is not None:
            known = existing.meta.get("idempotency_fingerprint")
            if known is not None and known != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_mismatch",
                    "this Idempotency-Key was used with another body; use a new key",
                    "Idempotency-Key",
                )
            if existing.pr_number is not None:
                raise _Done(session_dict(existing))
            left = _claim_left(existing.meta)
            if not existing.meta.get("github_error") and left > 0:
                retry = str(max(1, min(5, math.ceil(left))))
                raise ApiError(409, "in_progress", IN_PROGRESS, headers={"Retry-After": retry})
        inst = s.scalars(
            select(InstalledRepository).where(
                func.lower(InstalledRepository.full_name) == project.lower()
            )
        ).first()
        if inst is None:
            raise ApiError(404, "not_installed", f"the GitHub App is not installed on {project}")
        installation_id = inst.installation_id
        project = inst.full_name  # GitHub's spelling, as webhooks carry it
        if policy is not None and (existing is None or not existing.meta.get("limit_checked")):
            _over_limit(s, policy, project, agent_type, existing)
        # The bot (the token's user) and the installation are recorded with the row itself:
        # a webhook for the PR may bind the session before GitHub's answer reaches us, or
        # that answer may be lost, and the session must never be left without its bot.
        bot = Person(g.token.login)
        own = people.with_token_user(people.with_bot({}, bot, token=g.token.name), bot)
        headers: dict[str, str] = {}
        if existing is None:
            headers = _rate_limit(s)
        session = existing or registry.create_session(
            s,
            project_id=project,
            agent_type=agent_type,
            title=title,
            base_branch=base,
            workstream_id=workstream,
            metadata={**(metadata or {}), **own},
            idempotency_key=scoped_key,
            actor=g.token.login,
            source=f"api:{g.token.name}",
            installation_id=installation_id,
        )
        if existing is not None and people.session_bot(existing.meta) is None:
            existing.meta = {**own, **existing.meta}  # a row older than the bot's record
        if session.installation_id is None:
            session.installation_id = installation_id
        if policy is not None:  # admitted under agents.<type>.max_open_sessions
            session.meta = {**session.meta, "limit_checked": True}
        if scoped_key:  # the claim; a concurrent takeover loses on the row's version
            session.meta = {
                **session.meta,
                "idempotency_fingerprint": fingerprint,
                "idempotency_claimed_at": utcnow().isoformat(),
            }
        session_id = session.session_id

    return installation_id, session_id, headers


def _limits_policy(installation_id: int, project: str, scoped_key: str | None) -> Policy | None:
    """The policy for ``agents.<type>.max_open_sessions``, read before any row is written,
    when this request may make a session that was never checked against the limit.

    None when no check is due (the key's session passed it already) or GitHub cannot be
    reached now: the create then fails at GitHub, records ``github_error``, and the retry
    that takes the row over is checked (``limit_checked`` in the session metadata)."""
    if scoped_key:
        with rt().database.unit() as s:
            existing = registry.find_by_idempotency_key(s, scoped_key)
            if existing is not None and (
                existing.archived_at is not None
                or existing.pr_number is not None
                or existing.meta.get("limit_checked")
                or not existing.meta.get("github_error")
            ):
                return None  # answered, refused or claimed by the rules below, not the limit
    try:
        policy, _error = load_policy(rt().github, rt().github.repo(installation_id, project), None)
    except UPSTREAM_ERRORS:
        return None
    return policy


def _over_limit(
    s: Any, policy: Policy, project: str, agent_type: str, existing: AgentSession | None
) -> None:
    """409 ``too_many_sessions`` naming the limit and the open sessions, if the agent type
    holds its ``max_open_sessions`` already (a row this request takes over excepted, and
    failed so it holds nothing)."""
    limit = policy.guardrails(agent_type).max_open_sessions
    if not limit:
        return
    session_limits.lock_repository(s, project)
    held = [
        h
        for h in session_limits.open_sessions(s, project, agent_type)
        if existing is None or h.session_id != existing.session_id
    ]
    why = session_limits.refusal(policy, agent_type, held)
    if not why:
        return
    if existing is not None:
        registry.complete_session(
            s,
            existing.session_id,
            success=False,
            actor="minipipe",
            source="api",
            reason=f"too_many_sessions: {why}",
        )
        s.commit()  # the refusal stands: the taken-over row holds no session any more
    raise ApiError(
        409,
        "too_many_sessions",
        why,
        extra={
            "limit": limit,
            "open_sessions": [{"session_id": h.session_id, "state": h.state} for h in held],
        },
    )


def _record_bot_id(session_id: str, user_id: int | None) -> None:
    """The bot's GitHub user id, before its PR exists: a renamed bot stays itself."""
    if user_id is None:
        return
    with rt().database.unit() as s:
        session = registry.get_session(s, session_id)
        bot = people.session_bot(session.meta)
        if bot is not None and bot.id is None:
            session.meta = people.with_bot_id(session.meta, user_id)


def _record_failure(session_id: str, message: str, *, resumable: bool) -> None:
    """No half-made session: resumable with its key, or clearly failed without one."""
    with rt().database.unit() as s:
        session = registry.get_session(s, session_id)
        session.meta = {**session.meta, "github_error": message}
        if not resumable:
            registry.complete_session(
                s,
                session_id,
                success=False,
                actor="minipipe",
                source="api",
                reason="creating the branch or PR failed",
            )


@bp.get("/sessions")
@authenticated
def list_sessions() -> Any:
    project = request.args.get("project_id")
    if project:
        allowed(project)
    with rt().database.unit() as s:
        page = registry.list_sessions(
            s,
            _spelled(s, project),
            request.args.get("state"),
            request.args.get("agent_type"),
            cursor=request.args.get("cursor"),
            limit=limit_arg(),
            within=g.token.repositories,
        )
        items = [session_dict(x) for x in page.items]
    return jsonify(items=items, next_cursor=page.next_cursor)


def _spelled(s: Any, project: str | None) -> str | None:
    """A ``project_id`` filter as GitHub spells the repository: names compare case-blind."""
    if not project:
        return project
    name = s.scalars(
        select(InstalledRepository.full_name).where(
            func.lower(InstalledRepository.full_name) == project.lower()
        )
    ).first()
    return name or project


def _session(s: Any, session_id: str) -> AgentSession:
    return off_github.visible_session(s, session_id, g.token.allows)


MAX_WAIT = 60.0
POLL_EVERY = 0.15  # seconds between two cheap version reads while a bot waits


def _wait_args() -> tuple[float, int | None]:
    """``wait`` (seconds, capped at MAX_WAIT) and ``since`` (a version) of a long-poll."""
    raw_wait, raw_since = request.args.get("wait"), request.args.get("since")
    wait = 0.0
    if raw_wait is not None:
        try:
            wait = float(raw_wait)
        except ValueError:
            raise ApiError(400, "invalid", "wait must be a number of seconds", "wait") from None
        if not 0 <= wait < float("inf"):
            raise ApiError(400, "invalid", "wait must be 0 to 60 seconds", "wait")
    since = None
    if raw_since is not None:
        if not (raw_since.isascii() and raw_since.isdigit()) or len(raw_since) > 18:
            raise ApiError(400, "invalid", "since must be a version (a whole number)", "since")
        since = int(raw_since)
    return min(wait, MAX_WAIT), since


def _await_change(session_id: str, since: int, wait: float) -> None:
    """Return once the session's version differs from ``since``, or after ``wait`` seconds.

    Each look is one short read; no connection is held while sleeping, so a
    change made by any process (web or worker, SQLite or PostgreSQL) is seen
    within POLL_EVERY.
    """
    deadline = time.monotonic() + wait
    db = rt().database
    while True:
        with db.unit() as s:
            version = change_version(s, session_id)
        left = deadline - time.monotonic()
        if version is None or version != since or left <= 0:
            return
        time.sleep(min(POLL_EVERY, left))


def _etag(kind: str, ident: str, version: int) -> str:
    """The entity tag (unquoted): the version changes with every change of the body."""
    return f"{kind}-{ident}-{version}"


def _conditional(data: dict[str, Any], etag: str, *, allow_304: bool = True) -> Any:
    """200 with an ``ETag``, or 304 when the caller already holds this version."""
    if allow_304 and request.if_none_match.contains_weak(etag):  # RFC 9110: weak comparison
        resp = current_app.response_class(status=304)
    else:
        resp = jsonify(data)
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = "private, no-cache"
    return resp


@bp.get("/sessions/<session_id>")
@authenticated
def get_session(session_id: str) -> Any:
    wait, since = _wait_args()
    if since is not None and wait > 0:
        with rt().database.unit() as s:
            _session(s, session_id)  # 404 before anyone waits on a session they cannot see
        _await_change(session_id, since, wait)
    with rt().database.unit() as s:
        data = session_dict(_session(s, session_id))
        data["patches"] = [
            patch_dict(p) for p in ledger.list_patches(s, session_id=session_id, limit=500).items
        ]
        data["usage"] = stats.session_usage(s, session_id)
    # A long-poll always answers 200 (the same version when nothing changed).
    # Usage reports change the body but not the version (they wake no waiting bot).
    etag = f"{_etag('session', session_id, data['version'])}-u{data['usage']['reports']}"
    return _conditional(data, etag, allow_304="wait" not in request.args)


MAX_TOKENS = 10**12
MAX_COST = 10.0**9


@bp.post("/sessions/<session_id>/usage")
@authenticated
def report_usage(session_id: str) -> Any:
    """Add what a piece of the session's work cost; answers the session's totals."""
    data = body()
    counts = {}
    for name in ("tokens_in", "tokens_out"):
        value = field(data, name, int)
        if value is not None and not 0 <= value <= MAX_TOKENS:
            raise ApiError(400, "invalid", f"{name} must be 0 to {MAX_TOKENS}", name)
        counts[name] = value or 0
    cost = field(data, "cost_usd", (int, float))
    if cost is not None and not 0 <= cost <= MAX_COST:  # NaN fails both comparisons
        raise ApiError(400, "invalid", f"cost_usd must be 0 to {MAX_COST:.0f}", "cost_usd")
    model = field(data, "model", str)
    if model is not None and not 0 < len(model) <= 200:
        raise ApiError(400, "invalid", "model must be 1-200 characters", "model")
    if not any(data.get(k) is not None for k in ("tokens_in", "tokens_out", "cost_usd")):
        raise ApiError(400, "invalid", "report tokens_in, tokens_out or cost_usd", "tokens_in")
    with rt().database.unit() as s:
        _session(s, session_id)
        stats.record_usage(s, session_id, cost_usd=float(cost or 0), model=model, **counts)
        s.flush()
        usage = stats.session_usage(s, session_id)
    return jsonify(session_id=session_id, usage=usage)


@bp.delete("/sessions/<session_id>")
@authenticated
def delete_session(session_id: str) -> Any:
    """Archive: for the session's own bot or a maintainer; decided patches are kept."""
    off_github.move(
        rt().database,
        rt().github,
        session_id,
        "delete",
        g.token.login,
        source=f"api:{g.token.name}",
        allowed=g.token.allows,
    )
    return "", 204


@bp.post("/sessions/<session_id>/<move>")
@authenticated
def move_session(session_id: str, move: str) -> Any:
    """Pause and resume as ``/pause`` ``/resume`` comments; complete only for the
    session's own bot or a maintainer (``authz.session_move_refusal``)."""
    if move not in ("pause", "resume", "complete"):
        raise ApiError(404, "not_found", f"no such action: {move}")
    data = body()
    success = field(data, "success", bool)
    version = field(data, "version", int)
    what: SessionMove = move  # type: ignore[assignment]
    if move == "complete" and success is False:
        what = "fail"
    result = off_github.move(
        rt().database,
        rt().github,
        session_id,
        what,
        g.token.login,
        source=f"api:{g.token.name}",
        version=version,
        allowed=g.token.allows,
    )
    return jsonify(result)


# -- patches -----------------------------------------------------------------------------


@bp.get("/patches")
@authenticated
def list_patches() -> Any:
    args = request.args
    if args.get("project_id"):
        allowed(args["project_id"])
    queue = args.get("queue")
    if queue not in (None, "", "review"):
        raise ApiError(400, "invalid", "queue must be `review` (the review queue)", "queue")
    with rt().database.unit() as s:
        page = ledger.list_patches(
            s,
            state=args.get("state"),
            session_id=args.get("session_id"),
            run_id=args.get("run_id"),
            workstream_id=args.get("workstream_id"),
            project_id=_spelled(s, args.get("project_id")),
            cursor=args.get("cursor"),
            limit=limit_arg(),
            within=g.token.repositories,
            archived=False,
            where=ledger.in_review_queue() if queue == "review" else None,
        )
        items = [patch_dict(p) for p in page.items]
    return jsonify(items=items, next_cursor=page.next_cursor)


def _patch(s: Any, ledger_id: str) -> Any:
    """A patch the token may see: in its repositories, of a session not deleted."""
    patch = ledger.get_patch(s, ledger_id)
    session = s.get(AgentSession, patch.session_id)
    hidden = session is None or session.archived_at is not None
    if hidden or not g.token.allows(patch.project_id):
        raise NotFound(f"patch {ledger_id} not found")
    return patch


@bp.get("/patches/<ledger_id>")
@authenticated
def get_patch(ledger_id: str) -> Any:
    """The patch and its typed review; the audit history pages at ``/history``."""
    with rt().database.unit() as s:
        patch = _patch(s, ledger_id)
        data = patch_dict(patch)
    return _conditional(data, _etag("patch", ledger_id, patch.version))


@bp.get("/patches/<ledger_id>/history")
@authenticated
def patch_history(ledger_id: str) -> Any:
    """The patch's audit trail, oldest first, keyset-paged on the entry id."""
    limit = check_limit(limit_arg())
    after = decode(request.args.get("cursor"))
    if after is not None and not after.isdigit():
        raise ApiError(400, "invalid", "cursor is not one this server gave out", "cursor")
    with rt().database.unit() as s:
        _patch(s, ledger_id)
        q = (
            select(AuditEntry)
            .where(AuditEntry.entity == "patch", AuditEntry.entity_id == ledger_id)
            .order_by(AuditEntry.id)
            .limit(limit + 1)
        )
        if after is not None:
            q = q.where(AuditEntry.id > int(after))
        rows = list(s.scalars(q))
        items = [audit_dict(a) for a in rows[:limit]]
    next_cursor = encode(str(rows[limit - 1].id)) if len(rows) > limit else None
    return jsonify(items=items, next_cursor=next_cursor)


@bp.post("/patches/<ledger_id>/<verb>")
@authenticated
def decide(ledger_id: str, verb: str) -> Any:
    verbs = {"approve": Verb.APPROVE, "reject": Verb.REJECT, "review": Verb.REVIEW}
    if verb not in verbs:
        raise ApiError(404, "not_found", f"no such action: {verb}")
    data = body()
    text = field(data, "reason" if verb != "approve" else "comment", str) or ""
    if verb == "reject" and not text.strip():
        raise ApiError(400, "invalid", "reason is required to reject a patch", "reason")
    version = field(data, "version", int)
    r = rt()
    result = off_github.decide(
        r.database,
        r.github,
        ledger_id,
        verbs[verb],
        text,
        g.token.login,
        source=f"api:{g.token.name}",
        version=version,
        allowed=g.token.allows,
    )
    return jsonify(result)


# -- stats and the description ----------------------------------------------------------------


@bp.get("/stats")
@authenticated
def get_stats() -> Any:
    project = request.args.get("project_id")
    if project:
        allowed(project)
    with rt().database.unit() as s:
        items = stats.agent_stats(s, project_id=project, within=g.token.repositories)
        return jsonify(items=items)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(served(request.host_url))
