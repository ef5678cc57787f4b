"""Shared fixtures. They read like the product: ``deliver("issue_comment", payload(...))``.

- A real migrated database per test: the schema is migrated once per run
  (Alembic, empty → head) into a template SQLite file that each test copies.
- GitHub is faked at the HTTP layer only (tests/github_fake.py: ``responses``
  in-process, the same routes on loopback for subprocesses), so PyGithub's real
  requests run; ``github.requests`` lists what the app sent.
- Seeding rows and reading them back: tests/seed.py.
- Webhooks are real recorded payloads, signed as GitHub signs them, posted
  through the Flask app.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from minipipe_gh.conf import config
from minipipe_gh.conf.config import Settings
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.store import migrate
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import wake_folder
from minipipe_gh.web import create_app
from tests.github_fake import API, APP_ID, FakeGitHub
from tests.pg import Cluster
from tests.seed import Api, install, make_token
from tests.support import OLD_SECRET, SECRET, Deliver

# --- database ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgres"),
        default=os.environ.get("MINIPIPE_TEST_DB", "sqlite"),
        help="backend for every test's database (default sqlite; postgres starts a cluster)",
    )


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def pg_cluster(backend: str) -> Iterator[Cluster | None]:
    if backend != "postgres":
        yield None
        return
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster | None) -> str:
    """Migrated once (Alembic, empty → head); each test starts from it, emptied.

    SQLite: each test gets a copy of the file. PostgreSQL: one working database
    cloned from it, emptied (TRUNCATE) before each test, far quicker than creating one.
    """
    if pg_cluster is not None:
        name = pg_cluster.create()
        migrate.upgrade(pg_cluster.url(name))
        return name
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(scope="session")
def make_db(
    template_db: str, tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster | None
) -> Callable[[], str]:
    """A new database, migrated, for fixtures that keep one for a whole module."""

    def make() -> str:
        if pg_cluster is not None:
            return pg_cluster.url(pg_cluster.create(template=template_db))
        path = tmp_path_factory.mktemp("db") / "minipipe.db"
        shutil.copyfile(template_db, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture(scope="session")
def pg_work_db(template_db: str, pg_cluster: Cluster | None) -> str | None:
    """PostgreSQL: the one database the tests share, emptied before each test."""
    return pg_cluster.create(template=template_db) if pg_cluster is not None else None


@pytest.fixture
def db_url(
    template_db: str, tmp_path: Path, pg_cluster: Cluster | None, pg_work_db: str | None
) -> Iterator[str]:
    if pg_cluster is not None and pg_work_db is not None:
        pg_cluster.reset(pg_work_db)
        url = pg_cluster.url(pg_work_db)
    else:
        path = tmp_path / "minipipe.db"
        shutil.copyfile(template_db, path)
        url = f"sqlite:///{path}"
    yield url
    with contextlib.suppress(OSError):  # the workers' poke folder, once they left it empty
        wake_folder(url).rmdir()


@pytest.fixture
def empty_db_url(tmp_path: Path, pg_cluster: Cluster | None) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    if pg_cluster is not None:
        name = pg_cluster.create()
        yield pg_cluster.url(name)
        pg_cluster.drop(name)
        return
    yield f"sqlite:///{tmp_path / 'empty.db'}"


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


# --- the bot API ------------------------------------------------------------------------


@pytest.fixture
def api(rt: Runtime, client: Any, github: FakeGitHub) -> Api:
    """Installed on Codertocat/Hello-World; a token for the session bot ``agent-bot``."""
    install(rt)
    return Api(client, make_token(rt, "agent", "agent-bot"))
