"""Start-up errors: a setting present but wrong stops ``run``, ``worker`` and the production
app factory (``gunicorn app:app``) with one message naming it and the fix, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from minipipe_gh.cli import main
from minipipe_gh.conf import config
from minipipe_gh.conf.startup import EXIT_CONFIG
from minipipe_gh.core.errors import ConfigError
from minipipe_gh.web import create_app
from tests.github_fake import APP_ID
from tests.support import SECRET

ROOT = Path(__file__).resolve().parent.parent
HEAD = "minipipe-gh cannot start:\n  - "
BAD_PEM = (
    "is not a PEM private key: paste the whole .pem GitHub gave you, "
    "from -----BEGIN RSA PRIVATE KEY----- to the END line"
)
SECRET_FIX = (
    "use the webhook secret from the app's settings page (comma-separate several while rotating)"
)


@pytest.fixture
def env(db_url: str, private_key_pem: str, tmp_path: Path) -> dict[str, str]:
    """A complete configuration with its (empty) .env; each case spoils one setting."""
    (tmp_path / ".env").write_text("")
    return {
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": db_url,
        "SECRET_KEY": "shared",
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / ".env"),
    }


def spoil(env: dict[str, str], tmp_path: Path, case: str) -> str:
    """Spoil ``env`` as ``case`` says; return the exact problem line expected."""
    if case == "pem missing":
        del env["GITHUB_PRIVATE_KEY"]
        env["GITHUB_PRIVATE_KEY_PATH"] = path = str(tmp_path / "gone.pem")
        return (
            f"GITHUB_PRIVATE_KEY_PATH ({path}) cannot be read: No such file or directory; "
            "check the path"
        )
    if case == "pem unreadable":
        del env["GITHUB_PRIVATE_KEY"]
        env["GITHUB_PRIVATE_KEY_PATH"] = path = str(tmp_path)
        return f"GITHUB_PRIVATE_KEY_PATH ({path}) cannot be read: Is a directory; check the path"
    if case == "pem not a key":
        env["GITHUB_PRIVATE_KEY"] = "-----BEGIN RSA PRIVATE KEY-----\ngarbage\n"
        return f"GITHUB_PRIVATE_KEY {BAD_PEM}"
    if case == "empty secret":
        env["GITHUB_WEBHOOK_SECRET"] = ""
        return f"GITHUB_WEBHOOK_SECRET is empty: {SECRET_FIX}"
    if case == "bad database url":
        env["DATABASE_URL"] = "minipipe.db"
        return (
            "DATABASE_URL is not a database URL: use sqlite:////path/to/minipipe.db or "
            "postgresql+psycopg://user:password@host/dbname"
        )
    if case == "postgres scheme":
        env["DATABASE_URL"] = "postgres://u:pw@db.example/minipipe"
        return (
            "DATABASE_URL starts with postgres://, which SQLAlchemy does not accept: "
            "write postgresql+psycopg:// instead (the rest stays as it is)"
        )
    if case == "unknown driver":
        env["DATABASE_URL"] = "postgresql://u:pw@db.example/minipipe"
        return (
            "DATABASE_URL uses the postgresql driver, which minipipe-gh does not install: "
            "write postgresql+psycopg:// (psycopg 3)"
        )
    raise AssertionError(case)


CASES = [
    "pem missing",
    "pem unreadable",
    "pem not a key",
    "empty secret",
    "bad database url",
    "postgres scheme",
    "unknown driver",
]


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_stopped(result: Result, line: str) -> None:
    assert result.exit_code == EXIT_CONFIG, result.output
    assert result.stderr == f"{HEAD}{line}\n"
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("case", CASES)
def test_run_stops_with_the_one_message(env, tmp_path, case):
    line = spoil(env, tmp_path, case)
    assert_stopped(invoke(env, "run", "--port", "1"), line)
    assert (tmp_path / ".env").read_text() == ""  # nothing written on the way out


@pytest.mark.parametrize("case", CASES)
def test_worker_stops_with_the_one_message(env, tmp_path, case):
    line = spoil(env, tmp_path, case)
    assert_stopped(invoke(env, "worker"), line)
    assert_stopped(invoke(env, "worker", "--once"), line)


@pytest.mark.parametrize("case", CASES)
def test_the_production_app_factory_stops_with_the_one_message(env, tmp_path, case):
    line = spoil(env, tmp_path, case)
    with pytest.raises(ConfigError) as err:
        create_app(config.load(env, instance_path=tmp_path / "instance"), production=True)
    assert str(err.value) == f"{HEAD}{line}"


def unreachable(env: dict[str, str]) -> str:
    env["DATABASE_URL"] = "postgresql+psycopg://u:pw@127.0.0.1:1/minipipe"
    return "DATABASE_URL (postgresql+psycopg://u:***@127.0.0.1:1/minipipe) cannot be reached: "


def assert_unreachable(message: str, prefix: str) -> None:
    assert message.startswith(f"{HEAD}{prefix}")
    assert message.endswith(
        "; check the host, port, user, password and database name, and that the server is running"
    )
    assert message.count("\n") == 1 and "pw" not in message


def test_an_unreachable_database_stops_run_worker_and_the_factory(env, tmp_path):
    prefix = unreachable(env)
    for args in (("run", "--port", "1"), ("worker",), ("worker", "--once")):
        result = invoke(env, *args)
        assert result.exit_code == EXIT_CONFIG
        assert_unreachable(result.stderr.rstrip("\n"), prefix)
    with pytest.raises(ConfigError) as err:
        create_app(config.load(env, instance_path=tmp_path / "instance"), production=True)
    assert_unreachable(str(err.value), prefix)


def test_a_database_never_migrated_stops_the_worker_and_the_factory(env, tmp_path, empty_db_url):
    env["DATABASE_URL"] = empty_db_url
    if empty_db_url.startswith("sqlite"):
        Path(empty_db_url.removeprefix("sqlite:///")).touch()
    shown = empty_db_url.split("://", 1)[0]
    for args in (("worker",), ("worker", "--once"), ("sessions", "list")):
        result = invoke(env, *args)
        assert result.exit_code == EXIT_CONFIG, result.output
        assert result.stderr.startswith(f"{HEAD}the database at {shown}")
        assert result.stderr.endswith(
            "has no minipipe-gh schema: run `minipipe-gh db upgrade` "
            "(DATABASE_URL chooses the database)\n"
        )
    with pytest.raises(
        ConfigError, match="has no minipipe-gh schema: run `minipipe-gh db upgrade`"
    ):
        create_app(config.load(env, instance_path=tmp_path / "instance"), production=True)


def test_the_cli_outside_the_apps_folder_says_where_to_run_it(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = {"MINIPIPE_ENV_FILE": ".env", "DATABASE_URL": "", "MINIPIPE_INSTANCE_PATH": ""}
    db = elsewhere / "instance" / "minipipe.db"
    for args in (("worker", "--once"), ("reviews", "list"), ("deliveries", "list")):
        result = invoke(env, *args)
        assert result.exit_code == EXIT_CONFIG, result.output
        assert result.stderr == (
            f"{HEAD}DATABASE_URL (sqlite:///{db}): there is no database at {db}: run "
            "`minipipe-gh db upgrade` to create it; or, if the app lives in another folder, "
            f"run minipipe-gh there (no .env here in {elsewhere}) or set DATABASE_URL\n"
        )
    assert not db.exists()  # nothing created where the app is not


def test_some_credentials_are_not_setup_mode(env, tmp_path):
    del env["GITHUB_PRIVATE_KEY"], env["GITHUB_WEBHOOK_SECRET"]
    result = invoke(env, "run", "--port", "1")
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr == (
        f"{HEAD}GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is not set: generate a private "
        "key on the app's settings page and point GITHUB_PRIVATE_KEY_PATH at the .pem\n"
        f"  - GITHUB_WEBHOOK_SECRET is not set: {SECRET_FIX}\n"
    )


def server(args: list[str], env: dict[str, str]) -> Callable[[], subprocess.CompletedProcess[str]]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )

    return go


@pytest.mark.parametrize("preload", [False, True])
def test_gunicorn_stops_with_the_message_and_no_traceback(env, tmp_path, preload):
    line = spoil(env, tmp_path, "pem not a key")
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    args = [gunicorn, "app:app", "-b", "127.0.0.1:0", *(["--preload"] if preload else [])]
    done = server(args, env)()
    assert done.returncode != 0
    assert f"{HEAD}{line}" in done.stderr
    assert done.stderr.count("minipipe-gh cannot start") == 1
    assert "Traceback" not in done.stderr


def test_importing_app_elsewhere_exits_with_the_message(env, tmp_path):
    line = spoil(env, tmp_path, "empty secret")
    done = server([sys.executable, "-c", "import app"], env)()
    assert done.returncode == 1
    assert done.stderr == f"{HEAD}{line}\n"


def test_db_upgrade_into_a_folder_that_does_not_exist_names_it(tmp_path):
    db = tmp_path / "nowhere" / "minipipe.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", "MINIPIPE_ENV_FILE": str(tmp_path / ".env")}
    for args in (("db", "upgrade"), ("run", "--port", "1")):
        result = invoke({**env, "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance")}, *args)
        assert result.exit_code == EXIT_CONFIG, result.output
        assert result.stderr == (
            f"{HEAD}DATABASE_URL (sqlite:///{db}): the folder {db.parent} does not exist: "
            "create it, or fix the path\n"
        )
