"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

Bots depend on this shape: change it only with the spec's "Bot API" table.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    code: {"$ref": f"#/components/responses/{name}"}
    for code, name in (
        ("400", "BadRequest"),
        ("401", "Unauthorized"),
        ("403", "Forbidden"),
        ("404", "NotFound"),
    )
}
CONFLICT = {"409": {"$ref": "#/components/responses/Conflict"}}
GITHUB = {"502": {"$ref": "#/components/responses/GitHubFailed"}}
PAGE = [
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
]
SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
LEDGER_ID = {"name": "ledger_id", "in": "path", "required": True, "schema": {"type": "string"}}
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


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _session_move(summary: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {"version": {"type": "integer"}, **(extra or {})}
    return {
        "post": {
            "summary": summary,
            "parameters": [SESSION_ID],
            "requestBody": _body({"type": "object", "properties": props}, required=False),
            "responses": {"200": _json(_ref("Session")), **ERRORS, **CONFLICT, **GITHUB},
        }
    }


def _decision(summary: str, text_field: str, required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {text_field: {"type": "string"}, "version": {"type": "integer"}},
    }
    if required:
        schema["required"] = [text_field]
    return {
        "post": {
            "summary": summary,
            "parameters": [LEDGER_ID],
            "requestBody": _body(schema, required=required),
            "responses": {"200": _json(_ref("Patch")), **ERRORS, **CONFLICT, **GITHUB},
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "minipipe-gh bot API", "version": "1"},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/sessions": {
            "post": {
                "summary": "Create a session: a branch and a draft PR",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 150},
                    }
                ],
                "requestBody": _body(_ref("NewSession")),
                "responses": {
                    "201": _json(_ref("Session"), "Created"),
                    "200": _json(_ref("Session"), "The session this key created"),
                    **ERRORS,
                    "409": {"$ref": "#/components/responses/SessionConflict"},
                    **GITHUB,
                },
            },
            "get": {
                "summary": "List sessions, newest first",
                "parameters": [
                    {"name": "project_id", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": SESSION_STATES},
                    },
                    {"name": "agent_type", "in": "query", "schema": {"type": "string"}},
                    *PAGE,
                ],
                "responses": {"200": _json(_ref("SessionPage")), **ERRORS},
            },
        },
        "/sessions/{session_id}": {
            "get": {
                "summary": "One session with its patches",
                "parameters": [SESSION_ID],
                "responses": {"200": _json(_ref("Session")), **ERRORS},
            },
            "delete": {
                "summary": "Delete (archive) a session: its own bot or a maintainer; "
                "its PR stays bound and its decided patches are kept",
                "parameters": [SESSION_ID],
                "responses": {
                    "204": {"description": "Deleted"},
                    **ERRORS,
                    **CONFLICT,
                    **GITHUB,
                },
            },
        },
        "/sessions/{session_id}/pause": _session_move("Pause (the /pause comment rules)"),
        "/sessions/{session_id}/resume": _session_move("Resume (the /resume comment rules)"),
        "/sessions/{session_id}/complete": _session_move(
            "Complete (success) or fail: the session's own bot or a maintainer",
            {"success": {"type": "boolean"}},
        ),
        "/patches": {
            "get": {
                "summary": "List patches, oldest first; state=awaiting_review is the review queue",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": PATCH_STATES},
                    },
                    *(
                        {"name": n, "in": "query", "schema": {"type": "string"}}
                        for n in ("session_id", "run_id", "workstream_id", "project_id")
                    ),
                    *PAGE,
                ],
                "responses": {"200": _json(_ref("PatchPage")), **ERRORS},
            }
        },
        "/patches/{ledger_id}": {
            "get": {
                "summary": "A patch with its audit history",
                "parameters": [LEDGER_ID],
                "responses": {"200": _json(_ref("Patch")), **ERRORS},
            },
        },
        "/patches/{ledger_id}/approve": _decision("Approve as the token's user", "comment", False),
        "/patches/{ledger_id}/reject": _decision("Reject (reason required)", "reason", True),
        "/patches/{ledger_id}/review": _decision("Ask for manual review", "reason", False),
        "/stats": {
            "get": {
                "summary": "Statistics per agent type",
                "parameters": [{"name": "project_id", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _ref("AgentStats")}},
                        }
                    ),
                    **ERRORS,
                },
            },
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            },
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "BadRequest": _error("Bad JSON or a bad field (named in error.field)"),
            "Unauthorized": _error("No token, or an unknown or revoked one"),
            "Forbidden": _error("The token or its user may not do this"),
            "NotFound": _error("No such session or patch"),
            "Conflict": _error("An illegal state move, or someone changed it first"),
            "SessionConflict": _error(
                "A request with this Idempotency-Key is still running (in_progress) or its "
                "session was deleted (deleted); or too_many_sessions: the agent type already "
                "holds agents.<type>.max_open_sessions open sessions (created, active, "
                "paused) on the repository, named in error.limit and error.open_sessions"
            ),
            "GitHubFailed": _error("GitHub failed; retry with the same Idempotency-Key"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                            "limit": {"type": "integer"},
                            "open_sessions": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "session_id": {"type": "string"},
                                        "state": {"type": "string"},
                                    },
                                },
                            },
                        },
                    }
                },
            },
            "NewSession": {
                "type": "object",
                "required": ["project_id", "agent_type", "title"],
                "properties": {
                    "project_id": {
                        "type": "string",
                        "description": "owner/name",
                        "pattern": "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
                        "maxLength": 200,
                    },
                    "agent_type": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 100,
                        "pattern": "\\S",
                    },
                    "title": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"},
                    "base_branch": {"type": "string"},
                    "workstream_id": {"type": "string"},
                    "metadata": {"type": "object"},
                },
            },
            "Session": {
                "type": "object",
                "required": ["session_id", "project_id", "agent_type", "state"],
                "properties": {
                    "session_id": {"type": "string"},
                    "project_id": {"type": "string"},
                    "agent_type": {"type": "string"},
                    "title": {"type": "string"},
                    "state": {"type": "string", "enum": SESSION_STATES},
                    "branch": {"type": ["string", "null"]},
                    "base_branch": {"type": ["string", "null"]},
                    "pr_number": {"type": ["integer", "null"]},
                    "pr_url": {"type": ["string", "null"]},
                    "head_sha": {"type": ["string", "null"]},
                    "workstream_id": {"type": ["string", "null"]},
                    "metadata": {"type": "object"},
                    "version": {"type": "integer"},
                    "patches": {"type": "array", "items": _ref("Patch")},
                },
            },
            "Patch": {
                "type": "object",
                "required": ["ledger_id", "patch_id", "session_id", "state"],
                "properties": {
                    "ledger_id": {"type": "string"},
                    "patch_id": {"type": "string"},
                    "session_id": {"type": "string"},
                    "project_id": {"type": "string"},
                    "pr_number": {"type": ["integer", "null"]},
                    "state": {"type": "string", "enum": PATCH_STATES},
                    "risk": {"type": "object"},
                    "metadata": {"type": "object"},
                    "version": {"type": "integer"},
                    "history": {"type": "array", "items": {"type": "object"}},
                },
            },
            "SessionPage": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": _ref("Session")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "PatchPage": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": _ref("Patch")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "AgentStats": {
                "type": "object",
                "properties": {
                    "agent_type": {"type": "string"},
                    "sessions": {"type": "integer"},
                    "success_rate": {"type": ["number", "null"]},
                    "median_seconds_to_completion": {"type": ["number", "null"]},
                    "approval_rate": {"type": ["number", "null"]},
                    "rejection_rate": {"type": ["number", "null"]},
                    "top_rejection_reasons": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}
