"""The dashboard's test side: a signed-in viewer, forms with their CSRF token, and the
repository's side (policy, permissions) as the dashboard suites need them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from minipipe_gh.conf.config import Settings
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Patch
from tests.github_fake import WEB, FakeGitHub, Users
from tests.scenario import REPO, Scenario

OTHER = "octo-org/secret-service"  # installed too, but not everyone may read it
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, client_id="Iv1.dashboard", client_secret="client-secret", web_url=WEB
    )


@pytest.fixture
def users(github: FakeGitHub) -> Users:
    return Users(github)


@pytest.fixture
def sc(deliver: Any, github: FakeGitHub) -> Scenario:
    """The repository's side: policy, permissions, installation tokens."""
    scenario = Scenario(deliver, github)
    scenario.serve_policy(None)
    return scenario


def sign_in(client: Any, users: Users, login: str, repos: list[str] | None = None) -> None:
    users.visible[login] = [REPO] if repos is None else repos
    start = client.get("/auth/github/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    back = client.get(f"/auth/github/callback?code={login}&state={state}")
    assert back.status_code == 302, back.text


def csrf(client: Any, path: str = "/sessions") -> str:
    page = client.get(path)
    found = CSRF_RE.search(page.text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def post(client: Any, path: str, data: dict[str, str] | None = None, *, token_from: str = "/"):
    return client.post(path, data={"csrf_token": csrf(client, token_from), **(data or {})})


def patch_row(database: Database, ledger_id: str) -> Patch:
    with database.unit() as s:
        patch = s.get(Patch, ledger_id)
        assert patch is not None
        return patch
