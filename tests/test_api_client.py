"""The served OpenAPI description, used by real third-party tooling.

- openapi-python-client generates a Python client from the document the live
  app serves; a bot drives create → wait for the verdict → read the typed
  review through it alone.
- Redocly (``@redocly/cli lint``, recommended rules) finds no problem at all.
- openapi-typescript types a patch's ``review.status`` as a string union.

The Node tools are installed with npm into a folder of this test run (npm and
Node come with the machine; CI has them too).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from minipipe_gh.store import ledger
from tests import fake_github_server as live
from tests.scenario import REPO
from tests.seed import MCP_PR_NUMBER as PR_NUMBER
from tests.seed import add_awaiting_patch, install, make_token

# The live app and its loopback GitHub (tests/fake_github_server.py).
fake_github = live.fake_github
settings = live.settings
site = live.site

NODE_TOOLS = ["@redocly/cli@2.77.0", "openapi-typescript@7.13.0"]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def node_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js 20 and npm (apt-get install nodejs npm)")
    where = tmp_path_factory.mktemp("node-tools")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(where)]
        + NODE_TOOLS,
        check=True,
        timeout=600,
        capture_output=True,
    )
    return where / "node_modules" / ".bin"


@pytest.fixture
def served_spec(site: str, tmp_path: Path) -> Path:
    """The description as the live app serves it, saved to a file."""
    resp = requests.get(f"{site}/api/v1/openapi.json", timeout=10)
    resp.raise_for_status()
    path = tmp_path / "openapi.json"
    path.write_text(resp.text)
    return path


@pytest.fixture
def client_package(served_spec: Path, tmp_path: Path) -> Iterator[Any]:
    """openapi-python-client's client for the served description, imported."""
    out = tmp_path / "generated" / "minipipe_client"
    out.parent.mkdir()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(served_spec),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every schema became a model
    sys.path.insert(0, str(out.parent))
    try:
        yield importlib.import_module("minipipe_client")
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m.split(".")[0] == "minipipe_client"]:
            del sys.modules[name]


def test_a_generated_python_client_creates_waits_and_reads_the_typed_review(
    rt: Any, site: str, client_package: Any
) -> None:
    install(rt)
    token = make_token(rt, "agent", "agent-bot")
    mc = client_package
    create = importlib.import_module("minipipe_client.api.sessions.create_session")
    get_session = importlib.import_module("minipipe_client.api.sessions.get_session")
    get_patch = importlib.import_module("minipipe_client.api.patches.get_patch")
    history = importlib.import_module("minipipe_client.api.patches.get_patch_history")
    models = importlib.import_module("minipipe_client.models")

    client = mc.AuthenticatedClient(base_url=site, token=token, timeout=60)  # the host alone
    body = models.NewSession(project_id=REPO, agent_type="claude", title="Fix the login form")
    created = create.sync_detailed(client=client, body=body, idempotency_key="task-1")
    assert created.status_code == 201
    session = created.parsed
    assert isinstance(session, models.Session)
    assert session.state == models.SessionState.CREATED
    assert session.pr_number == PR_NUMBER
    assert isinstance(session.created_at, datetime)
    assert created.headers["Location"].endswith(f"/api/v1/sessions/{session.session_id}")

    lid = add_awaiting_patch(rt, session.session_id)
    current = get_session.sync(session.session_id, client=client)
    assert isinstance(current, models.Session)
    [waiting] = current.patches
    assert waiting.review.status == models.ReviewStatus.PENDING

    def approve() -> None:
        time.sleep(0.5)
        with rt.database.unit() as s:
            ledger.approve_patch(s, lid, "carol", "ship it", source="test")

    approver = threading.Thread(target=approve)
    approver.start()
    heard = get_session.sync(session.session_id, client=client, wait=30, since=current.version)
    approver.join()
    assert isinstance(heard, models.Session) and heard.version > current.version
    [patch] = heard.patches
    review = patch.review
    assert isinstance(review, models.Review)
    assert review.status == models.ReviewStatus.APPROVED
    assert (review.by, review.comment, review.approvals) == ("carol", "ship it", ["carol"])
    assert isinstance(review.at, datetime)
    assert patch.state == models.PatchState.QUEUED
    assert patch.risk.level == models.RiskLevel.LOW

    one = get_patch.sync(lid, client=client)
    assert isinstance(one, models.Patch) and one.review.status == models.ReviewStatus.APPROVED
    page = history.sync(lid, client=client, limit=2)
    assert isinstance(page, models.AuditPage)
    assert [e.to for e in page.items] == ["created", "validated"] and page.next_cursor

    missing = get_session.sync("01nosuchsession000000000000", client=client)
    assert isinstance(missing, models.ErrorResponse)
    assert missing.error.code == "not_found"


def test_redocly_recommended_rules_find_no_problem(node_tools: Path, served_spec: Path) -> None:
    done = subprocess.run(
        [str(node_tools / "redocly"), "lint", "--format=json", str(served_spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report["problems"]
    assert done.returncode == 0


def test_openapi_typescript_types_the_review_status_as_a_string_union(
    node_tools: Path, served_spec: Path, tmp_path: Path
) -> None:
    out = tmp_path / "api.d.ts"
    subprocess.run(
        [str(node_tools / "openapi-typescript"), str(served_spec), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    types = out.read_text()
    review = types[types.index("        Review: {") :]
    review = review[: review.index("\n        };")]
    assert 'status: "pending" | "approved" | "rejected";' in review
    assert "never" not in review
    patch = types[types.index("        Patch: {") :]
    patch = patch[: patch.index("\n        };")]
    assert 'review: components["schemas"]["Review"];' in patch
    assert 'risk: components["schemas"]["Risk"];' in patch
