"""Shared fixtures. They read like the product: ``deliver("issue_comment", payload(...))``.

- A real migrated database per test: the schema is migrated once per run
  (Alembic, empty → head) into a template SQLite file that each test copies.
- GitHub is faked at the HTTP layer only (``responses``), so PyGithub's real
  requests run; ``github.requests`` lists what the app sent.
- Webhooks are real recorded payloads, signed as GitHub signs them, posted
  through the Flask app.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from minipipe_gh import config, migrate
from minipipe_gh.config import Settings
from minipipe_gh.db import Database
from minipipe_gh.runtime import Runtime
from minipipe_gh.web import create_app
from tests.support import API, APP_ID, OLD_SECRET, SECRET, Deliver, FakeGitHub

# --- database ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(template_db: Path, tmp_path: Path) -> str:
    path = tmp_path / "minipipe.db"
    shutil.copyfile(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


# --- the app ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def settings(db_url: str, tmp_path: Path, private_key_pem: str) -> Settings:
    return config.load(
        {
            "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_PRIVATE_KEY": private_key_pem,
            "GITHUB_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
            "GITHUB_API_URL": API,
            "DATABASE_URL": db_url,
            "SECRET_KEY": "test",
            "MINIPIPE_MAX_ATTEMPTS": "3",
        },
        instance_path=tmp_path / "instance",
    )


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.build(settings)
    yield runtime
    runtime.stop.set()
    runtime.database.dispose()


@pytest.fixture
def app(rt: Runtime) -> Any:
    return create_app(runtime_obj=rt, test_config={"TESTING": True})


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def deliver(client: Any) -> Deliver:
    return Deliver(client)


# --- GitHub, faked at the HTTP layer ---------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeGitHub(rsps)
