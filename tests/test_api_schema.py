"""Schemathesis against ``/api/v1/openapi.json``, in process through the Flask app.

Every operation of the description is called with generated data, valid and
invalid, as a bot with a valid token; GitHub is served in full so no call
fails on its account. No response may be a server error, and every response
must match the description: status code, content type, headers and body schema.

The schema is loaded from the app (``schemathesis.openapi.from_wsgi``) and each
operation's Hypothesis strategy is driven with ``@given`` here, one pytest test
per operation and mode: schemathesis 4's own pytest loader
(``schemathesis.pytest.from_fixture``) relies on a pytest internal that pytest 9
no longer has (``Node._nodeid``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation.modes import GenerationMode

from minipipe_gh.web.openapi import SPEC
from tests.github_fake import WIRE
from tests.scenario import REPO, R, user
from tests.seed import install, make_token, seed_patch, serve_session_pr

MAX_EXAMPLES = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
OPERATIONS = [
    (method.upper(), path) for path, ops in SPEC["paths"].items() for method in sorted(ops)
]
WITH_IDS = [(m, p) for m, p in OPERATIONS if "{" in p]
INVALIDATABLE = [(m, p) for m, p in OPERATIONS if p != "/api/v1/openapi.json"]


def serve_github_generously(github: Any) -> None:
    """Every call the API can make answers as GitHub would for a healthy repository."""
    serve_session_pr(github)
    any_ref = re.compile(re.escape(f"{WIRE}{R}/git/ref/heads/") + r".+")
    github.rsps.add("GET", any_ref, json={"object": {"sha": "ba5e" * 10, "type": "commit"}})
    github.add("GET", f"{R}/pulls", [])
    github.rsps.add(
        "GET",
        re.compile(re.escape(f"{WIRE}{R}/collaborators/") + r"[^/]+/permission"),
        # maintain: the token user may also end and delete another bot's session
        json={"permission": "write", "role_name": "maintain", "user": user("someone")},
    )
    github.add("POST", f"{R}/check-runs", {"id": 555}, status=201)
    github.add("PATCH", f"{R}/check-runs/555", {"id": 555})


@pytest.fixture
def world(app: Any, rt: Any, github: Any) -> dict[str, Any]:
    """The app installed on one repository, one session with a patch awaiting review,
    a maintainer's token, GitHub served, and the schema loaded from the app."""
    install(rt)
    session_id, ledger_id = seed_patch(rt)
    serve_github_generously(github)
    token = make_token(rt, "schemathesis", "writer")
    return {
        "schema": schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app),
        "headers": {"Authorization": f"Bearer {token}"},
        "ids": {"session_id": session_id, "ledger_id": ledger_id},
        "github": github,
    }


def exercise(world: dict[str, Any], method: str, path: str, mode: GenerationMode, **fixed: Any):
    operation = world["schema"][path][method]
    strategy = operation.as_strategy(generation_mode=mode, **fixed)
    seen: list[int] = []

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        body = case.body
        creating = (method, path) == ("POST", "/api/v1/sessions") and isinstance(body, dict)
        if creating and isinstance(body.get("project_id"), str):
            body["project_id"] = REPO  # the repository the app is installed on
        response = case.call_and_validate(headers=world["headers"], checks=CHECKS)
        seen.append(response.status_code)

    run()
    assert seen, "no request was made"
    assert all(status < 500 for status in seen), seen
    return seen


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_valid_requests(world, method, path):
    seen = exercise(world, method, path, GenerationMode.POSITIVE)
    if (method, path) in (
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/patches"),
        ("GET", "/api/v1/stats"),
    ):
        assert 200 in seen
    if (method, path) == ("POST", "/api/v1/sessions"):
        assert 201 in seen  # some generated sessions really were created, and conform


@pytest.mark.parametrize(
    ("method", "path"), INVALIDATABLE, ids=[f"{m} {p}" for m, p in INVALIDATABLE]
)
def test_invalid_requests(world, method, path):
    exercise(world, method, path, GenerationMode.NEGATIVE)


@pytest.mark.parametrize(("method", "path"), WITH_IDS, ids=[f"{m} {p}" for m, p in WITH_IDS])
def test_requests_on_a_real_session_and_patch(world, method, path):
    names = re.findall(r"{(\w+)}", path)
    fixed = {name: world["ids"][name] for name in names}
    seen = exercise(world, method, path, GenerationMode.POSITIVE, path_parameters=fixed)
    assert any(200 <= status < 300 for status in seen) or 409 in seen, seen
