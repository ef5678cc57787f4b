"""``/api/v1``: the bot API. Bearer tokens, JSON in and out, errors as the spec fixes them.

Errors are ``{"error": {"code", "message"}}`` (plus ``field`` for a bad one)
with 400 bad input, 401 no or bad token, 403 not allowed, 404, 409 illegal
move or conflict, 502 when GitHub failed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from github import GithubException
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from . import actors, installations, ledger, people, registry, session_limits, stats, tokens
from .authz import SessionMove
from .commands import Verb
from .errors import (
    Conflict,
    IllegalTransition,
    Invalid,
    MinipipeError,
    NotFound,
    PermissionDenied,
    Refused,
)
from .limits import branch_problem
from .models import AgentSession, InstalledRepository, utcnow
from .openapi import SPEC
from .people import Person
from .policy import Policy
from .runtime import Runtime
from .serialize import audit_dict, patch_dict, session_dict
from .session_pr import open_session_pr
from .workflow import load_policy

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
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field
        self.extra = extra or {}


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
    return error_response(err.status, err.code, str(err), err.field, err.extra)


@bp.errorhandler(MinipipeError)
def _core_error(err: MinipipeError) -> Any:
    status = next((s for cls, s in STATUS.items() if isinstance(err, cls)), 400)
    return error_response(status, err.code, str(err), getattr(err, "field", None))


@bp.errorhandler(GithubException)
def _github_error(err: GithubException) -> Any:
    message = (err.data or {}).get("message") if isinstance(err.data, dict) else None
    return error_response(
        502, "github_error", f"GitHub answered {err.status}: {message or 'no message'}"
    )


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> Any:
    return error_response(
        err.code or 500, (err.name or "error").lower().replace(" ", "_"), err.description or ""
    )


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
    r = rt()
    found = installations.look_up(r.database, r.github, project)  # its event may be lost
    if found is None:
        raise ApiError(404, "not_installed", f"the GitHub App is not installed on {project}")
    # read before the row is written: agents.<type>.max_open_sessions may refuse it
    api = r.github.repo(found[0], project)
    policy, _error = load_policy(r.github, api, None)
    try:
        installation_id, session_id = _start_session(
            project, agent_type, title, base, workstream, metadata, scoped_key, policy
        )
    except _Done as done:
        return jsonify(done.session), 200
    except IntegrityError:  # the same key, raced by a concurrent request that won
        raise ApiError(409, "in_progress", IN_PROGRESS) from None
    try:
        _record_bot_id(session_id, api.collaborator(g.token.login).id)
        opened = open_session_pr(
            api,
            session_id=session_id,
            title=title,
            agent_type=agent_type,
            prefix=policy.branch_prefix,
            base_branch=base,
        )
    except GithubException as err:
        _record_failure(session_id, err, resumable=scoped_key is not None)
        raise
    with r.database.unit() as s:
        session = registry.get_session(s, session_id)
        session.branch, session.base_branch = opened.branch, opened.base_branch
        session.pr_number = session.pr_number or opened.pr_number
        session.head_sha = session.head_sha or opened.head_sha
        # the branch's first commit is the app's own (empty, naming the session): it is
        # no foreign commit of the session's patches (people.commit_provenance)
        session.meta = {
            **session.meta,
            "pr_url": opened.pr_url,
            "github_error": None,
            "seed_commit": opened.head_sha,
        }
        result = session_dict(session)
    return jsonify(result), 201


IN_PROGRESS = "a request with this Idempotency-Key is still creating the session; retry shortly"


class _Done(Exception):
    """The key's session exists with its PR: answer it again."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session


def _start_session(
    project: str,
    agent_type: str,
    title: str,
    base: str | None,
    workstream: str | None,
    metadata: dict[str, Any] | None,
    scoped_key: str | None,
    policy: Policy,
) -> tuple[int, str]:
    """The session row, new or the key's earlier one; (installation id, session id).

    A new one is refused (409 ``too_many_sessions``) when the agent type already holds
    ``agents.<type>.max_open_sessions`` open sessions on the repository."""
    with rt().database.unit() as s:
        existing = registry.find_by_idempotency_key(s, scoped_key) if scoped_key else None
        if existing is not None and existing.archived_at is not None:
            raise ApiError(409, "deleted", "the session of this Idempotency-Key was deleted")
        if existing is not None and existing.pr_number is not None:
            raise _Done(session_dict(existing))
        if existing is not None and not existing.meta.get("github_error"):
            raise ApiError(409, "in_progress", IN_PROGRESS)
        inst = s.scalars(
            select(InstalledRepository).where(
                func.lower(InstalledRepository.full_name) == project.lower()
            )
        ).first()
        if inst is None:
            raise ApiError(404, "not_installed", f"the GitHub App is not installed on {project}")
        installation_id = inst.installation_id
        project = inst.full_name  # GitHub's spelling, as webhooks carry it
        if existing is None and policy.guardrails(agent_type).max_open_sessions:
            session_limits.lock_repository(s, project)
            held = session_limits.open_sessions(s, project, agent_type)
            why = session_limits.refusal(policy, agent_type, held)
            if why:
                raise ApiError(
                    409,
                    "too_many_sessions",
                    why,
                    extra={
                        "limit": policy.guardrails(agent_type).max_open_sessions,
                        "open_sessions": [
                            {"session_id": h.session_id, "state": h.state} for h in held
                        ],
                    },
                )
        # The bot (the token's user) and the installation are recorded with the row itself:
        # a webhook for the PR may bind the session before GitHub's answer reaches us, or
        # that answer may be lost, and the session must never be left without its bot.
        bot = Person(g.token.login)
        own = {
            "bot_login": bot.login,
            "bot_token": g.token.name,
            "installation_id": inst.installation_id,
            "token_users": [bot.as_json()],
        }
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
        )
        session_id = session.session_id

    return installation_id, session_id


def _record_bot_id(session_id: str, user_id: int | None) -> None:
    """The bot's GitHub user id, before its PR exists: a renamed bot stays itself."""
    if user_id is None:
        return
    with rt().database.unit() as s:
        session = registry.get_session(s, session_id)
        if session.meta.get("bot_id") is None:
            bot = Person(session.meta["bot_login"], user_id)
            users = [
                u.as_json() if not u.same(bot) else bot.as_json()
                for u in people.token_users(session.meta)
            ]
            session.meta = {**session.meta, "bot_id": user_id, "token_users": users}


def _record_failure(session_id: str, err: GithubException, *, resumable: bool) -> None:
    """No half-made session: resumable with its key, or clearly failed without one."""
    with rt().database.unit() as s:
        session = registry.get_session(s, session_id)
        session.meta = {**session.meta, "github_error": f"GitHub answered {err.status}"}
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
    with rt().database.unit(write=False) as s:
        page = registry.list_sessions(
            s,
            project,
            request.args.get("state"),
            request.args.get("agent_type"),
            cursor=request.args.get("cursor"),
            limit=limit_arg(),
            within=g.token.repositories,
        )
        items = [session_dict(x) for x in page.items]
    return jsonify(items=items, next_cursor=page.next_cursor)


def _session(s: Any, session_id: str) -> AgentSession:
    return actors.visible_session(s, session_id, g.token.allows)


@bp.get("/sessions/<session_id>")
@authenticated
def get_session(session_id: str) -> Any:
    with rt().database.unit(write=False) as s:
        data = session_dict(_session(s, session_id))
        data["patches"] = [
            patch_dict(p) for p in ledger.list_patches(s, session_id=session_id, limit=500).items
        ]
    return jsonify(data)


@bp.delete("/sessions/<session_id>")
@authenticated
def delete_session(session_id: str) -> Any:
    """Archive: for the session's own bot or a maintainer; decided patches are kept."""
    actors.move(
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
    result = actors.move(
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
    with rt().database.unit(write=False) as s:
        page = ledger.list_patches(
            s,
            state=args.get("state"),
            session_id=args.get("session_id"),
            run_id=args.get("run_id"),
            workstream_id=args.get("workstream_id"),
            project_id=args.get("project_id"),
            cursor=args.get("cursor"),
            limit=limit_arg(),
            within=g.token.repositories,
            archived=False,
        )
        items = [patch_dict(p) for p in page.items]
    return jsonify(items=items, next_cursor=page.next_cursor)


@bp.get("/patches/<ledger_id>")
@authenticated
def get_patch(ledger_id: str) -> Any:
    with rt().database.unit(write=False) as s:
        patch = ledger.get_patch(s, ledger_id)
        session = s.get(AgentSession, patch.session_id)
        hidden = session is None or session.archived_at is not None
        if hidden or not g.token.allows(patch.project_id):
            raise NotFound(f"patch {ledger_id} not found")
        data = patch_dict(patch)
        data["history"] = [audit_dict(a) for a in ledger.history(s, ledger_id)]
    return jsonify(data)


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
    result = act_on_patch(
        ledger_id,
        verbs[verb],
        text,
        g.token.login,
        source=f"api:{g.token.name}",
        version=version,
        allowed=g.token.allows,
    )
    return jsonify(result)


def act_on_patch(
    ledger_id: str,
    verb: Verb,
    argument: str,
    login: str,
    *,
    source: str,
    version: int | None = None,
    allowed: Callable[[str], bool] = lambda _: True,
) -> dict[str, Any]:
    """A decision made off GitHub (API, dashboard), under exactly the comment rules."""
    r = rt()
    return actors.decide(
        r.database,
        r.github,
        ledger_id,
        verb,
        argument,
        login,
        source=source,
        version=version,
        allowed=allowed,
    )


# -- stats and the description ----------------------------------------------------------------


@bp.get("/stats")
@authenticated
def get_stats() -> Any:
    project = request.args.get("project_id")
    if project:
        allowed(project)
    with rt().database.unit(write=False) as s:
        items = stats.agent_stats(s, project_id=project, within=g.token.repositories)
        return jsonify(items=items)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(SPEC)
