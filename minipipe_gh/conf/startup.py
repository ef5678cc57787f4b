"""Start-up checks for ``run``, ``worker``, the CLI and ``gunicorn app:app``.

Every setting that is present but wrong stops start-up with one message that names the
setting and the fix (a ``ConfigError``); each entry point prints it without a traceback
and exits non-zero. The database is checked here, before anything else opens it, so a
mistyped ``DATABASE_URL`` or a database nobody migrated is a sentence, not 150 lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from minipipe_gh.conf.config import Settings
from minipipe_gh.core.errors import ConfigError
from minipipe_gh.store import migrate

EXAMPLES = "sqlite:////path/to/minipipe.db or postgresql+psycopg://user:password@host/dbname"
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: "configuration error"


def _stop(message: str) -> ConfigError:
    return ConfigError(f"minipipe-gh cannot start:\n  - {message}")


def database_url(settings: Settings) -> URL:
    """``DATABASE_URL`` parsed, or the reason it cannot be."""
    raw = settings.database_url
    scheme = raw.split(":", 1)[0].lower()
    if scheme == "postgres":
        raise _stop(
            "DATABASE_URL starts with postgres://, which SQLAlchemy does not accept: "
            "write postgresql+psycopg:// instead (the rest stays as it is)"
        )
    try:
        url = make_url(raw)
    except ArgumentError:
        raise _stop(f"DATABASE_URL is not a database URL: use {EXAMPLES}") from None
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise _stop(
            f"DATABASE_URL uses the {url.drivername} driver, which minipipe-gh does not "
            "install: write postgresql+psycopg:// (psycopg 3)"
        )
    return url


def check_database(settings: Settings, *, migrated: bool = True) -> None:
    """The database can be reached and, with ``migrated``, carries this release's schema.

    A missing SQLite file is never created here: it usually means the command ran
    outside the app's folder, where ``.env`` and ``instance/`` are.
    """
    url = database_url(settings)
    safe = url.render_as_string(hide_password=True)
    elsewhere = _elsewhere_hint(settings)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.exists():
            folder = path.parent
            made_for_us = folder.resolve() == settings.instance_path.resolve()
            if not migrated and not made_for_us and not folder.is_dir():
                raise _stop(
                    f"DATABASE_URL ({safe}): the folder {folder} does not exist: "
                    "create it, or fix the path"
                )
            if not migrated:
                return  # `db upgrade` and the development server create it
            raise _stop(
                f"DATABASE_URL ({safe}): there is no database at {path}: run "
                f"`minipipe-gh db upgrade` to create it{elsewhere}"
            )
    try:
        engine = create_engine(url, poolclass=NullPool)
    except (NoSuchModuleError, ModuleNotFoundError):
        raise _stop(
            f"DATABASE_URL ({safe}) names a database minipipe-gh cannot open: use {EXAMPLES}"
        ) from None
    try:
        with engine.connect():
            pass
        if not migrated:
            return
        current = migrate.current_revision(engine)
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0][:200]
        raise _stop(
            f"DATABASE_URL ({safe}) cannot be reached: {reason}; check the host, port, "
            "user, password and database name, and that the server is running"
        ) from None
    finally:
        engine.dispose()
    head = migrate.head_revision(settings.database_url)
    if current == head:
        return
    if current is None:
        raise _stop(
            f"the database at {safe} has no minipipe-gh schema: run `minipipe-gh db upgrade` "
            f"(DATABASE_URL chooses the database){elsewhere}"
        )
    if current in _known_revisions(settings.database_url):
        raise _stop(
            f"the database at {safe} is at schema revision {current}, this release needs "
            f"{head}: run `minipipe-gh db upgrade`"
        )
    raise _stop(
        f"the database at {safe} was migrated by a newer minipipe-gh (revision {current}): "
        "install that release, or point DATABASE_URL at this release's database"
    )


def _known_revisions(url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config(url))
    return {s.revision for s in scripts.walk_revisions()}


def _elsewhere_hint(settings: Settings) -> str:
    if settings.env_file is not None and not settings.env_file.is_file():
        return (
            f"; or, if the app lives in another folder, run minipipe-gh there (no "
            f"{settings.env_file.name} here in {Path.cwd()}) or set DATABASE_URL"
        )
    return ""


def check_production(settings: Settings) -> None:
    """``gunicorn app:app`` and ``minipipe-gh worker``: full credentials and a current schema."""
    settings.require_app()
    check_database(settings)


def check_development(settings: Settings) -> None:
    """``minipipe-gh run``: setup mode or right credentials; it migrates the database itself."""
    settings.require_credentials()
    check_database(settings, migrated=False)


def stop_server(err: ConfigError) -> NoReturn:
    """Stop the production web tier with the message alone.

    Under gunicorn a plain exception is a 47-line traceback and a worker that respawns;
    its ``AppImportError`` prints just the message and halts the arbiter ("App failed to
    load", exit 4), and as a ``RuntimeError`` the same holds with ``--preload``. Any
    other server (granian, ``python -c 'import app'``) gets ``SystemExit``.
    """
    import sys

    if "gunicorn.arbiter" in sys.modules:
        from gunicorn.errors import AppImportError

        class StartupFailed(AppImportError, RuntimeError):
            pass

        raise StartupFailed(str(err)) from None
    raise SystemExit(str(err)) from None
