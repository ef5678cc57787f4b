"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

Written for generators (openapi-python-client, openapi-typescript) and linters
(Redocly): every operation has an operationId and a tag, every response a full
schema with ``required`` fields, fixed shapes are closed objects, and every
error code is listed with what a bot should do about it. Paths are absolute
(``/api/v1/...``), so a generated client's base URL is just the host.

Bots depend on this shape: change it only with the spec's "Bot API" table.
"""

from __future__ import annotations

import copy
from typing import Any

from minipipe_gh import __version__
from minipipe_gh.core.waits import KINDS as WAIT_KINDS

PREFIX = "/api/v1"

# Every error code the API answers, its status, and whether (and when) to retry.
ERROR_CODES: list[tuple[str, int, str]] = [
    ("invalid", 400, "Bad JSON, query or field (named in `error.field`). Fix the request."),
    ("unauthorized", 401, "No token, or an unknown or revoked one. Get a new token."),
    ("forbidden", 403, "The token or its user may not do this. Final."),
    ("not_found", 404, "No such session, patch or route (or not visible to this token). Final."),
    ("not_installed", 404, "The GitHub App is not installed on the repository. Final."),
    ("method_not_allowed", 405, "The path exists, the method does not (see `Allow`). Final."),
    ("illegal_transition", 409, "The state machine refuses this move. Final: re-read the state."),
    ("conflict", 409, "Someone changed it first (the `version` moved). Re-read, then retry."),
    ("refused", 409, "The review rules refuse this decision. Final."),
    (
        "in_progress",
        409,
        "A request with this Idempotency-Key is running. Retry after `Retry-After`.",
    ),
    (
        "too_many_sessions",
        409,
        "The agent type holds `agents.<type>.max_open_sessions` open sessions (created, "
        "active, paused) on the repository; `error.limit` and `error.open_sessions` name "
        "them. Retry once one of them has ended.",
    ),
    ("no_installation", 409, "The session is not linked to an installation. Final."),
    ("policy_invalid", 409, "`.github/minipipe.yml` is invalid; fix it, then retry."),
    ("idempotency_mismatch", 422, "The Idempotency-Key was used with another body. Use a new key."),
    ("rate_limited", 429, "Too many sessions created with this token. Retry after `Retry-After`."),
    (
        "github_error",
        502,
        "GitHub failed. Retry (same Idempotency-Key), after `Retry-After` when sent.",
    ),
]
CODE_TABLE = "\n".join(
    f"| `{code}` | {status} | {meaning} |" for code, status, meaning in ERROR_CODES
)

SESSION_STATES = ["created", "active", "paused", "completed", "failed"]
PATCH_STATES = [
    "created",
    "validated",
    "quarantined",
    "awaiting_review",
    "queued",
    "applied",
    "verified",
    "committed",
    "dropped",
    "rolled_back",
]
SESSION_ID_EXAMPLE = "01jf3k9x2m7q8r4t5v6w7y8z9a"
LEDGER_ID_EXAMPLE = "01jf3kb0c1d2e3f4g5h6j7k8m9"
TIME_EXAMPLE = "2026-12-01T21:49:15.123456+00:00"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (OpenAPI 3.1 / JSON Schema type arrays)."""
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


STR = {"type": "string"}
INT = {"type": "integer"}
TIME = {"type": "string", "format": "date-time", "examples": [TIME_EXAMPLE]}
N_STR = _nullable(STR)
N_INT = _nullable(INT)
N_TIME = _nullable(TIME)


def _closed(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A fixed shape: every property listed, all required but ``optional``, nothing else."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if "example" in extra:
        media["example"] = extra.pop("example")
    return {"description": description, "content": {"application/json": media}, **extra}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or STR}


RATE_HEADERS = {
    "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
    "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
    "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
}


def _errors(*statuses: str) -> dict[str, Any]:
    names = {
        "400": "BadRequest",
        "401": "Unauthorized",
        "403": "Forbidden",
        "404": "NotFound",
        "405": "MethodNotAllowed",
        "409": "Conflict",
        "422": "IdempotencyMismatch",
        "429": "RateLimited",
        "502": "GitHubFailed",
    }
    return {s: {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


BASIC = ("400", "401", "403", "404", "405")
PAGE = [
    {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page.",
        "schema": {"type": "string", "maxLength": 200},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Items per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
]
SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "examples": [SESSION_ID_EXAMPLE]},
}
LEDGER_ID = {
    "name": "ledger_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "examples": [LEDGER_ID_EXAMPLE]},
}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "description": "An `ETag` from an earlier read: 304 when nothing changed.",
    "schema": {"type": "string"},
}
ETAG = {"ETag": {"$ref": "#/components/headers/ETag"}}
NOT_MODIFIED = {
    "description": "Not modified: the `ETag` sent in `If-None-Match` is still current.",
    "headers": ETAG,
}


def _op(
    op_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        **extra,
        "responses": responses,
    }


def _body(schema: dict[str, Any], required: bool = True, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": required, "content": {"application/json": media}}


def _session_move(op_id: str, summary: str, description: str, extra: dict[str, Any] | None = None):
    props = {
        "version": {"type": "integer", "description": "Refuse (409 conflict) unless current."},
        **(extra or {}),
    }
    return {
        "post": _op(
            op_id,
            "sessions",
            summary,
            description,
            {
                "200": _json(_ref("Session"), "The session after the move"),
                **_errors(*BASIC, "409", "502"),
            },
            parameters=[SESSION_ID],
            requestBody=_body(
                {"type": "object", "additionalProperties": False, "properties": props},
                required=False,
            ),
        )
    }


def _decision(op_id: str, summary: str, text_field: str, required: bool, what: str):
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            text_field: {"type": "string", "examples": ["looks right"]},
            "version": {"type": "integer", "description": "Refuse (409 conflict) unless current."},
        },
    }
    if required:
        schema["required"] = [text_field]
    return {
        "post": _op(
            op_id,
            "patches",
            summary,
            what + " As the token's user, under exactly the rules of a PR comment.",
            {
                "200": _json(_ref("Patch"), "The patch after the decision"),
                **_errors(*BASIC, "409", "502"),
            },
            parameters=[LEDGER_ID],
            requestBody=_body(schema, required=required),
        )
    }


DESCRIPTION = f"""\
The bot API of minipipe-gh: an agent opens a session (a branch and a draft
PR), pushes commits (each pushed head is a patch in the ledger) and waits for
the verdict.

**Authentication.** Every call but this description needs
`Authorization: Bearer <token>`. An operator makes a token with
`minipipe-gh token create NAME --as GITHUB_LOGIN [--repo owner/name]`; it acts
as that GitHub user, is printed once and stored hashed.

**Waiting for a verdict.** `GET /api/v1/sessions/{{session_id}}?wait=60&since=V`
answers as soon as the session or one of its patches changes after `version` V
(within a second), or after `wait` seconds with the same `version`.

**Idempotency.** `POST /api/v1/sessions` with an `Idempotency-Key` header
(scoped to the token) creates at most one session per key: a retry answers the
same session (200). A retry while the first request still runs gets 409
`in_progress` with `Retry-After`; a claim left by a crashed request expires.
A create that GitHub failed ends as 502 `github_error`, and the same key may
be retried. The same key with another body is 422 `idempotency_mismatch`.

**Errors** are `{{"error": {{"code", "message", "field"?}}}}`:

| code | status | meaning and retry |
|---|---|---|
{CODE_TABLE}
"""

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "minipipe-gh bot API",
        "version": __version__,
        "summary": "Agent sessions as pull requests, every pushed patch gated by review.",
        "description": DESCRIPTION,
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "servers": [
        {
            "url": "{origin}",
            "description": "Where minipipe-gh runs (the served copy names the server itself).",
            "variables": {"origin": {"default": "http://127.0.0.1:3000"}},
        }
    ],
    "security": [{"bearer": []}],
    "tags": [
        {"name": "sessions", "description": "Agent sessions: a branch and a draft PR each."},
        {"name": "patches", "description": "Pushed heads of a session's PR and their review."},
        {"name": "stats", "description": "How each agent type fares, and what it costs."},
        {"name": "meta", "description": "This description."},
    ],
    "paths": {
        f"{PREFIX}/sessions": {
            "post": _op(
                "createSession",
                "sessions",
                "Create a session: a branch and a draft PR",
                "Creates the branch `<prefix><short-id>-<slug>` from the base branch and a "
                "draft PR for it. See Idempotency above for `Idempotency-Key`; session "
                "creation is rate-limited per token (429 with `Retry-After`).",
                {
                    "201": _json(
                        _ref("Session"),
                        "Created",
                        headers={
                            "Location": {"$ref": "#/components/headers/Location"},
                            **RATE_HEADERS,
                        },
                        example={
                            "session_id": SESSION_ID_EXAMPLE,
                            "project_id": "octo/app",
                            "workstream_id": None,
                            "agent_type": "aider",
                            "title": "Fix the login form",
                            "workspace_path": None,
                            "branch": "minipipe/5v6w7y8z-fix-the-login-form",
                            "base_branch": "main",
                            "pr_number": 42,
                            "pr_url": "https://github.com/octo/app/pull/42",
                            "head_sha": "57a757a757a757a757a757a757a757a757a757a7",
                            "state": "created",
                            "metadata": {},
                            "created_at": TIME_EXAMPLE,
                            "updated_at": TIME_EXAMPLE,
                            "last_activity_at": TIME_EXAMPLE,
                            "version": 2,
                        },
                    ),
                    "200": _json(_ref("Session"), "The session this Idempotency-Key created"),
                    **_errors(*BASIC, "409", "422", "429", "502"),
                },
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "Makes a retry return the same session.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 150,
                            "examples": ["task-4711"],
                        },
                    }
                ],
                requestBody=_body(
                    _ref("NewSession"),
                    example={
                        "project_id": "octo/app",
                        "agent_type": "aider",
                        "title": "Fix the login form",
                    },
                ),
            ),
            "get": _op(
                "listSessions",
                "sessions",
                "List sessions, newest first",
                "Keyset-paginated; `project_id` compares case-insensitively, as GitHub does.",
                {"200": _json(_ref("SessionPage"), "A page of sessions"), **_errors(*BASIC)},
                parameters=[
                    {"name": "project_id", "in": "query", "schema": STR},
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": SESSION_STATES},
                    },
                    {"name": "agent_type", "in": "query", "schema": STR},
                    *PAGE,
                ],
            ),
        },
        f"{PREFIX}/sessions/{{session_id}}": {
            "get": _op(
                "getSession",
                "sessions",
                "One session with its patches and usage; long-polls with wait and since",
                "With `wait` (seconds, at most 60) and `since` (a `version`), answers at once "
                "if the session or one of its patches changed after that version, otherwise "
                "as soon as one changes, or after `wait` seconds with the same `version` "
                "(200 either way). Without `wait`, `If-None-Match` gives 304 when unchanged.",
                {
                    "200": _json(_ref("Session"), "The session", headers=ETAG),
                    "304": NOT_MODIFIED,
                    **_errors(*BASIC),
                },
                parameters=[
                    SESSION_ID,
                    {
                        "name": "wait",
                        "in": "query",
                        "description": "Seconds to wait for a change after `since` (capped at 60).",
                        "schema": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 60,
                            "examples": [60],
                        },
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": "The `version` the caller holds.",
                        "schema": {"type": "integer", "minimum": 0, "examples": [7]},
                    },
                    IF_NONE_MATCH,
                ],
            ),
            "delete": _op(
                "deleteSession",
                "sessions",
                "Delete a session",
                "Archives the session: its own bot or someone with `maintain` or more. It "
                "answers 404 from then on, its PR stays bound to it, and its decided patches, "
                "rejection reasons and place in `/stats` are kept.",
                {"204": {"description": "Deleted"}, **_errors(*BASIC, "409", "502")},
                parameters=[SESSION_ID],
            ),
        },
        f"{PREFIX}/sessions/{{session_id}}/pause": _session_move(
            "pauseSession", "Pause", "active → paused, under the rules of a `/pause` comment."
        ),
        f"{PREFIX}/sessions/{{session_id}}/resume": _session_move(
            "resumeSession", "Resume", "paused → active, under the rules of a `/resume` comment."
        ),
        f"{PREFIX}/sessions/{{session_id}}/complete": _session_move(
            "completeSession",
            "Complete (success) or fail",
            "→ completed, or → failed with `success: false`: the session's own bot or someone "
            "with `maintain` or more.",
            {"success": {"type": "boolean", "default": True}},
        ),
        f"{PREFIX}/sessions/{{session_id}}/usage": {
            "post": _op(
                "reportUsage",
                "sessions",
                "Add what a piece of the session's work cost",
                "Adds to the session's usage; `/stats` sums it per agent type and per merged "
                "patch. Send at least one of tokens_in, tokens_out, cost_usd.",
                {
                    "200": _json(_ref("UsageReceipt"), "The session's usage so far"),
                    **_errors(*BASIC),
                },
                parameters=[SESSION_ID],
                requestBody=_body(
                    _ref("UsageReport"),
                    example={"tokens_in": 12000, "tokens_out": 900, "cost_usd": 0.31},
                ),
            )
        },
        f"{PREFIX}/patches": {
            "get": _op(
                "listPatches",
                "patches",
                "List patches, oldest first",
                "`queue=review` is the review queue, as the dashboard shows it: patches "
                "awaiting review, and open patches on hold (approved or not) until the hold "
                "is lifted.",
                {"200": _json(_ref("PatchPage"), "A page of patches"), **_errors(*BASIC)},
                parameters=[
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": PATCH_STATES},
                    },
                    {
                        "name": "queue",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["review"]},
                    },
                    *(
                        {"name": n, "in": "query", "schema": STR}
                        for n in ("session_id", "run_id", "workstream_id", "project_id")
                    ),
                    *PAGE,
                ],
            )
        },
        f"{PREFIX}/patches/{{ledger_id}}": {
            "get": _op(
                "getPatch",
                "patches",
                "A patch with its typed review",
                "The audit history pages at `/history`.",
                {
                    "200": _json(_ref("Patch"), "The patch", headers=ETAG),
                    "304": NOT_MODIFIED,
                    **_errors(*BASIC),
                },
                parameters=[LEDGER_ID, IF_NONE_MATCH],
            ),
        },
        f"{PREFIX}/patches/{{ledger_id}}/history": {
            "get": _op(
                "getPatchHistory",
                "patches",
                "The patch's audit trail, oldest first",
                "Every move and every refused attempt, keyset-paginated.",
                {"200": _json(_ref("AuditPage"), "A page of the audit trail"), **_errors(*BASIC)},
                parameters=[LEDGER_ID, *PAGE],
            )
        },
        f"{PREFIX}/patches/{{ledger_id}}/approve": _decision(
            "approvePatch", "Approve", "comment", False, "Adds the user's approval."
        ),
        f"{PREFIX}/patches/{{ledger_id}}/reject": _decision(
            "rejectPatch", "Reject (reason required)", "reason", True, "Drops the patch."
        ),
        f"{PREFIX}/patches/{{ledger_id}}/review": _decision(
            "requestReview", "Ask for manual review", "reason", False, "Sends it to review."
        ),
        f"{PREFIX}/stats": {
            "get": _op(
                "getStats",
                "stats",
                "Statistics and cost per agent type",
                "Sessions, success rate, time to completion, review outcomes, and the usage "
                "reported, with the cost per merged patch.",
                {
                    "200": _json(
                        _closed({"items": {"type": "array", "items": _ref("AgentStats")}}),
                        "One row per agent type",
                    ),
                    **_errors(*BASIC),
                },
                parameters=[{"name": "project_id", "in": "query", "schema": STR}],
            ),
        },
        f"{PREFIX}/openapi.json": {
            "get": _op(
                "getOpenApi",
                "meta",
                "This description",
                "The OpenAPI 3.1 description of the bot API.",
                {"200": _json({"type": "object"}, "The description"), **_errors("405")},
                security=[],
            ),
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "mpg_<43 url-safe characters>",
                "description": "`minipipe-gh token create NAME --as GITHUB_LOGIN` prints one.",
            }
        },
        "headers": {
            "ETag": _header("The version of what was read; send it back in If-None-Match."),
            "Location": _header("The new session's URL."),
            "Retry-After": _header("Seconds to wait before retrying.", {"type": "integer"}),
            "Allow": _header("The methods the path allows."),
            "WWW-Authenticate": _header("`Bearer` and why the token was refused."),
            "X-RateLimit-Limit": _header(
                "Sessions this token may create per window.", {"type": "integer"}
            ),
            "X-RateLimit-Remaining": _header("Creations left in the window.", {"type": "integer"}),
            "X-RateLimit-Reset": _header(
                "Seconds until the window frees a creation.", {"type": "integer"}
            ),
        },
        "responses": {
            "BadRequest": _json(_ref("ErrorResponse"), "Bad JSON or a bad field: `invalid`"),
            "Unauthorized": _json(
                _ref("ErrorResponse"),
                "No token, or an unknown or revoked one: `unauthorized`",
                headers={"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}},
            ),
            "Forbidden": _json(_ref("ErrorResponse"), "Not allowed: `forbidden`"),
            "NotFound": _json(
                _ref("ErrorResponse"), "No such session or patch: `not_found`, `not_installed`"
            ),
            "MethodNotAllowed": _json(
                _ref("ErrorResponse"),
                "Not a method of this path: `method_not_allowed`",
                headers={"Allow": {"$ref": "#/components/headers/Allow"}},
            ),
            "Conflict": _json(
                _ref("ErrorResponse"),
                "`illegal_transition`, `refused` (final), `conflict` (re-read and retry), "
                "`in_progress` (retry after Retry-After), `too_many_sessions` (the agent "
                "type's open-session limit), `no_installation`, `policy_invalid`",
                headers={"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
            ),
            "IdempotencyMismatch": _json(
                _ref("ErrorResponse"),
                "The Idempotency-Key was used with another body: `idempotency_mismatch`",
            ),
            "RateLimited": _json(
                _ref("ErrorResponse"),
                "Too many creations: `rate_limited`; retry after Retry-After",
                headers={
                    "Retry-After": {"$ref": "#/components/headers/Retry-After"},
                    **RATE_HEADERS,
                },
            ),
            "GitHubFailed": _json(
                _ref("ErrorResponse"),
                "GitHub failed: `github_error`; retry (same Idempotency-Key)",
                headers={"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
            ),
        },
        "schemas": {
            "ErrorResponse": {
                "description": "Every error answer.",
                **_closed({"error": _ref("ErrorBody")}),
            },
            "ErrorBody": {
                "description": "What went wrong; `code` is one of the table in the description.",
                **_closed(
                    {
                        "code": {
                            "type": "string",
                            "description": "Machine-readable; see the error table.",
                            "examples": [c for c, _s, _m in ERROR_CODES],
                        },
                        "message": {"type": "string", "description": "For a human."},
                        "field": {"type": "string", "description": "The bad field (400)."},
                        "limit": {
                            "type": "integer",
                            "description": "too_many_sessions: the agent type's limit.",
                        },
                        "open_sessions": {
                            "type": "array",
                            "description": "too_many_sessions: the open sessions, oldest first.",
                            "items": _closed(
                                {"session_id": {"type": "string"}, "state": {"type": "string"}}
                            ),
                        },
                    },
                    optional=("field", "limit", "open_sessions"),
                ),
            },
            "NewSession": {
                "type": "object",
                "additionalProperties": False,
                "required": ["project_id", "agent_type", "title"],
                "properties": {
                    "project_id": {
                        "type": "string",
                        "description": "The repository, owner/name",
                        "pattern": "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
                        "maxLength": 200,
                        "examples": ["octo/app"],
                    },
                    "agent_type": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 100,
                        "pattern": "\\S",
                        "examples": ["aider"],
                    },
                    "title": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 500,
                        "pattern": "\\S",
                        "examples": ["Fix the login form"],
                    },
                    "base_branch": {"type": "string", "description": "Default: the repo's."},
                    "workstream_id": {"type": "string"},
                    "metadata": {"type": "object", "description": "Yours, kept as given."},
                },
            },
            "Session": {
                "description": "An agent session. `version` grows whenever the session or one "
                "of its patches changes; `patches` and `usage` come with a single session.",
                **_closed(
                    {
                        "session_id": {"type": "string", "examples": [SESSION_ID_EXAMPLE]},
                        "project_id": {"type": "string", "examples": ["octo/app"]},
                        "workstream_id": N_STR,
                        "agent_type": STR,
                        "title": STR,
                        "workspace_path": N_STR,
                        "branch": N_STR,
                        "base_branch": N_STR,
                        "pr_number": N_INT,
                        "pr_url": N_STR,
                        "head_sha": N_STR,
                        "state": {"type": "string", "enum": SESSION_STATES},
                        "metadata": {"type": "object"},
                        "created_at": TIME,
                        "updated_at": TIME,
                        "last_activity_at": TIME,
                        "version": INT,
                        "patches": {"type": "array", "items": _ref("Patch")},
                        "usage": _ref("SessionUsage"),
                    },
                    optional=("patches", "usage"),
                ),
            },
            "Risk": _closed(
                {
                    "level": {"type": "string", "enum": ["low", "high"]},
                    "reasons": {"type": "array", "items": STR},
                }
            ),
            "Review": {
                "description": "The verdict on a patch.",
                **_closed(
                    {
                        "status": {"type": "string", "enum": ["pending", "approved", "rejected"]},
                        "manual_review_required": {"type": "boolean"},
                        "reason": N_STR,
                        "comment": N_STR,
                        "by": N_STR,
                        "at": N_TIME,
                        "approvals": {
                            "type": "array",
                            "items": STR,
                            "description": "Distinct approvers of this head SHA",
                        },
                    }
                ),
            },
            "Wait": {
                "description": (
                    "One thing an open patch waits for, most pressing first: the first "
                    "one's summary is the next action, as the check run states it."
                ),
                **_closed(
                    {
                        "kind": {"type": "string", "enum": list(WAIT_KINDS)},
                        "summary": STR,
                        "who": {
                            "type": "array",
                            "items": STR,
                            "description": "Logins who can act, when known",
                        },
                        "details": {"type": "array", "items": STR},
                    }
                ),
            },
            "Patch": {
                "description": "One pushed head of a session's PR.",
                **_closed(
                    {
                        "ledger_id": {"type": "string", "examples": [LEDGER_ID_EXAMPLE]},
                        "patch_id": {"type": "string", "description": "The head SHA"},
                        "session_id": STR,
                        "project_id": STR,
                        "pr_number": N_INT,
                        "run_id": N_STR,
                        "workstream_id": N_STR,
                        "state": {"type": "string", "enum": PATCH_STATES},
                        "risk": _ref("Risk"),
                        "files": INT,
                        "additions": INT,
                        "deletions": INT,
                        "paths": {"type": "array", "items": STR},
                        "review": _ref("Review"),
                        "waiting_for": {
                            "type": "array",
                            "items": _ref("Wait"),
                            "description": "What the patch waits for; empty once it left the gate",
                        },
                        "metadata": {"type": "object"},
                        "created_at": TIME,
                        "updated_at": TIME,
                        "version": INT,
                    }
                ),
            },
            "AuditEntry": {
                "description": "One row of the append-only audit trail.",
                **_closed(
                    {
                        "id": INT,
                        "entity": STR,
                        "entity_id": STR,
                        "project_id": N_STR,
                        "from": N_STR,
                        "to": N_STR,
                        "outcome": {"type": "string", "enum": ["moved", "refused", "noted"]},
                        "actor": STR,
                        "source": STR,
                        "reason": N_STR,
                        "details": {"type": "object"},
                        "at": TIME,
                    }
                ),
            },
            "UsageReport": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "anyOf": [
                    {"required": ["tokens_in"]},
                    {"required": ["tokens_out"]},
                    {"required": ["cost_usd"]},
                ],
                "properties": {
                    "tokens_in": {"type": "integer", "minimum": 0, "maximum": 10**12},
                    "tokens_out": {"type": "integer", "minimum": 0, "maximum": 10**12},
                    "cost_usd": {"type": "number", "minimum": 0, "maximum": 10**9},
                    "model": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            },
            "Usage": _closed(
                {
                    "tokens_in": INT,
                    "tokens_out": INT,
                    "cost_usd": {"type": "number"},
                    "reports": INT,
                }
            ),
            "SessionUsage": {
                "description": "A session's usage, in total and per model.",
                **_closed(
                    {
                        "tokens_in": INT,
                        "tokens_out": INT,
                        "cost_usd": {"type": "number"},
                        "reports": INT,
                        "models": {"type": "object", "additionalProperties": _ref("Usage")},
                    }
                ),
            },
            "UsageReceipt": _closed({"session_id": STR, "usage": _ref("SessionUsage")}),
            "SessionPage": _closed(
                {"items": {"type": "array", "items": _ref("Session")}, "next_cursor": N_STR}
            ),
            "PatchPage": _closed(
                {"items": {"type": "array", "items": _ref("Patch")}, "next_cursor": N_STR}
            ),
            "AuditPage": _closed(
                {"items": {"type": "array", "items": _ref("AuditEntry")}, "next_cursor": N_STR}
            ),
            "RejectionReason": _closed({"reason": STR, "count": INT}),
            "AgentStats": {
                "description": "How one agent type fares, and what its work cost.",
                **_closed(
                    {
                        "agent_type": STR,
                        "sessions": INT,
                        "by_state": {"type": "object", "additionalProperties": INT},
                        "success_rate": _nullable({"type": "number"}),
                        "median_seconds_to_completion": _nullable({"type": "number"}),
                        "patches_decided": INT,
                        "approval_rate": _nullable({"type": "number"}),
                        "rejection_rate": _nullable({"type": "number"}),
                        "top_rejection_reasons": {
                            "type": "array",
                            "items": _ref("RejectionReason"),
                        },
                        "usage": _ref("Usage"),
                        "merged_patches": INT,
                        "landed_cost_usd": {"type": "number"},
                        "cost_per_merged_patch": _nullable({"type": "number"}),
                    }
                ),
            },
        },
    },
}


def served(origin: str) -> dict[str, Any]:
    """The description as served: its server is the origin it was fetched from."""
    spec = copy.deepcopy(SPEC)
    spec["servers"] = [{"url": origin.rstrip("/"), "description": "This server"}]
    return spec
