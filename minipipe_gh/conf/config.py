"""Settings from the environment (and a ``.env`` in development), read when asked, never at import.

Every check names the setting and says how to fix it, for operators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from minipipe_gh.core.errors import ConfigError

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_WEB_URL = "https://github.com"


# Every setting ``load`` reads: (name, default, meaning). The docs' settings table is
# generated from this one (``minipipe_gh.reference``); a test checks nothing is left out.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("GITHUB_APP_ID", "", "the App ID, from the app's settings page"),
    ("GITHUB_PRIVATE_KEY", "", "the app's private key (PEM; `\\n` for newlines on one line)"),
    ("GITHUB_PRIVATE_KEY_PATH", "", "or: the path of the `.pem` GitHub gave you"),
    ("GITHUB_WEBHOOK_SECRET", "", "the webhook secret; comma-separate several while rotating"),
    ("GITHUB_CLIENT_ID", "", "the app's OAuth client id, for dashboard sign-in"),
    ("GITHUB_CLIENT_SECRET", "", "the app's OAuth client secret"),
    (
        "SECRET_KEY",
        "`run` makes one and keeps it in `.env`",
        "signs sign-in cookies and form tokens; every web process must share it",
    ),
    ("DATABASE_URL", "`sqlite:///instance/minipipe.db`", "`postgresql+psycopg://…` to scale out"),
    ("PUBLIC_URL", "", "where GitHub and browsers reach the app (`run --public-url`)"),
    (
        "WEBHOOK_PROXY_URL",
        "",
        "a smee.io channel for development: GitHub posts there, `run` subscribes",
    ),
    ("GITHUB_API_URL", f"`{DEFAULT_API_URL}`", "Enterprise: `https://HOST/api/v3`"),
    ("GITHUB_WEB_URL", f"`{DEFAULT_WEB_URL}`", "where sign-in and app registration go"),
    ("MINIPIPE_MAX_ATTEMPTS", "`8`", "attempts before a delivery is dead"),
    ("MINIPIPE_LEASE_SECONDS", "`120`", "how long a worker's claim on a delivery lasts"),
    (
        "MINIPIPE_RECONCILE_SECONDS",
        "`300`",
        "how often the worker compares GitHub with the ledger and queues repairs",
    ),
    (
        "MINIPIPE_RECOVER_SECONDS",
        "`300`",
        "how often the worker asks GitHub to redeliver what it failed to deliver",
    ),
    ("MINIPIPE_SESSION_RATE_LIMIT", "`30`", "sessions one API token may create per window"),
    (
        "MINIPIPE_SESSION_RATE_WINDOW",
        "`600`",
        "that window, in seconds (then 429 with Retry-After)",
    ),
    ("MINIPIPE_INSTANCE_PATH", "`./instance`", "folder of the SQLite database"),
    ("MINIPIPE_ENV_FILE", "`.env`", "the `.env` file read in development and written by setup"),
)


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    app_id: int | None = None
    private_key: str | None = None
    webhook_secrets: tuple[str, ...] = ()
    api_url: str = DEFAULT_API_URL
    web_url: str = DEFAULT_WEB_URL
    client_id: str | None = None
    client_secret: str | None = None
    public_url: str | None = None
    webhook_proxy_url: str | None = None
    secret_key: str | None = None
    max_attempts: int = 8
    lease_seconds: int = 120
    reconcile_seconds: int = 300
    recover_seconds: int = 300
    session_rate_limit: int = 30  # sessions one API token may create per window
    session_rate_window: int = 600  # seconds
    env_file: Path | None = None
    problems: tuple[str, ...] = field(default=())
    # The credential settings given a value (GITHUB_APP_ID, GITHUB_PRIVATE_KEY[_PATH],
    # GITHUB_WEBHOOK_SECRET) and those present but blank: none given is setup mode.
    credentials_given: tuple[str, ...] = field(default=())
    blank: tuple[str, ...] = field(default=())

    @property
    def has_app_credentials(self) -> bool:
        return self.app_id is not None and bool(self.private_key) and bool(self.webhook_secrets)

    @property
    def setup_mode(self) -> bool:
        """Only a configuration with no credentials at all is setup mode (as Probot's)."""
        return not self.credentials_given

    def require_app(self) -> None:
        """Production start-up: stop with every problem named, or return."""
        _stop(self.startup_problems(production=True))

    def require_credentials(self) -> None:
        """Development start-up: setup mode, or credentials that are all present and right.

        A credential that is present but wrong is a start-up error, never setup mode: a
        typo must not offer to register a second app.
        """
        _stop(self.startup_problems(production=False))

    def startup_problems(self, *, production: bool) -> list[str]:
        problems = list(self.problems)
        if not production and self.setup_mode:
            return [p for p in problems if not p.startswith(CREDENTIALS)]
        if self.app_id is None and not any("GITHUB_APP_ID" in p for p in problems):
            problems.append(
                "GITHUB_APP_ID is not set: copy the App ID from the app's settings page"
            )
        if not self.private_key and not any("PRIVATE_KEY" in p for p in problems):
            problems.append(
                "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is not set: generate a private "
                "key on the app's settings page and point GITHUB_PRIVATE_KEY_PATH at the .pem"
            )
        if production and not self.secret_key:
            problems.append(
                "SECRET_KEY is not set: it signs dashboard sign-ins and form tokens, and every "
                "web process must share it; generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        if not self.webhook_secrets:
            how = "empty" if "GITHUB_WEBHOOK_SECRET" in self.blank else "not set"
            problems.append(
                f"GITHUB_WEBHOOK_SECRET is {how}: "
                "use the webhook secret from the app's settings page (comma-separate several "
                "while rotating)"
            )
        return problems


CREDENTIALS = ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET")


def _stop(problems: list[str]) -> None:
    if problems:
        raise ConfigError("minipipe-gh cannot start:\n  - " + "\n  - ".join(problems))


def load(
    environ: Mapping[str, str] | None = None,
    *,
    instance_path: str | Path | None = None,
    env_file: str | Path | None = None,
) -> Settings:
    env = dict(os.environ if environ is None else environ)
    inst = Path(instance_path or env.get("MINIPIPE_INSTANCE_PATH") or Path.cwd() / "instance")
    dotenv = Path(env_file) if env_file else Path(env.get("MINIPIPE_ENV_FILE", ".env"))
    if environ is None and dotenv.is_file():
        env = {**{k: v for k, v in dotenv_values(dotenv).items() if v is not None}, **env}
    problems: list[str] = []

    app_id: int | None = None
    raw_id = env.get("GITHUB_APP_ID", "").strip()
    if raw_id:
        if raw_id.isascii() and raw_id.isdigit():
            app_id = int(raw_id)
        else:
            problems.append(f"GITHUB_APP_ID must be a number (the App ID), not {raw_id!r}")

    private_key = _private_key(env, problems)
    secrets = tuple(s.strip() for s in env.get("GITHUB_WEBHOOK_SECRET", "").split(",") if s.strip())

    return Settings(
        instance_path=inst,
        database_url=env.get("DATABASE_URL") or f"sqlite:///{inst / 'minipipe.db'}",
        app_id=app_id,
        private_key=private_key,
        webhook_secrets=secrets,
        api_url=(env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
        web_url=(env.get("GITHUB_WEB_URL") or DEFAULT_WEB_URL).rstrip("/"),
        client_id=env.get("GITHUB_CLIENT_ID") or None,
        client_secret=env.get("GITHUB_CLIENT_SECRET") or None,
        # The smee.io channel is where GitHub posts, never where a browser or GitHub's
        # redirect goes: it is not a public URL.
        public_url=(env.get("PUBLIC_URL") or "").strip().rstrip("/") or None,
        webhook_proxy_url=(env.get("WEBHOOK_PROXY_URL") or "").strip() or None,
        secret_key=env.get("SECRET_KEY") or None,
        max_attempts=_int(env, "MINIPIPE_MAX_ATTEMPTS", 8, problems),
        lease_seconds=_int(env, "MINIPIPE_LEASE_SECONDS", 120, problems),
        reconcile_seconds=_int(env, "MINIPIPE_RECONCILE_SECONDS", 300, problems),
        recover_seconds=_int(env, "MINIPIPE_RECOVER_SECONDS", 300, problems),
        session_rate_limit=_int(env, "MINIPIPE_SESSION_RATE_LIMIT", 30, problems),
        session_rate_window=_int(env, "MINIPIPE_SESSION_RATE_WINDOW", 600, problems),
        env_file=dotenv,
        problems=tuple(problems),
        credentials_given=tuple(n for n in CREDENTIAL_NAMES if env.get(n, "").strip(", \n")),
        blank=tuple(n for n in CREDENTIAL_NAMES if n in env and not env[n].strip(", \n")),
    )


CREDENTIAL_NAMES = (
    "GITHUB_APP_ID",
    "GITHUB_PRIVATE_KEY",
    "GITHUB_PRIVATE_KEY_PATH",
    "GITHUB_WEBHOOK_SECRET",
)


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        problems.append(f"{name} must be a positive whole number, not {raw!r}")
        return default
    return int(raw)


def _private_key(env: Mapping[str, str], problems: list[str]) -> str | None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem = env.get("GITHUB_PRIVATE_KEY", "").strip()
    where = "GITHUB_PRIVATE_KEY"
    if not pem and env.get("GITHUB_PRIVATE_KEY_PATH"):
        where = f"GITHUB_PRIVATE_KEY_PATH ({env['GITHUB_PRIVATE_KEY_PATH']})"
        try:
            pem = Path(env["GITHUB_PRIVATE_KEY_PATH"]).read_text()
        except OSError as err:
            problems.append(f"{where} cannot be read: {err.strerror}; check the path")
            return None
    if not pem:
        return None
    pem = pem.replace("\\n", "\n")  # one-line form, as many hosts store it
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        problems.append(
            f"{where} is not a PEM private key: paste the whole .pem GitHub gave you, "
            "from -----BEGIN RSA PRIVATE KEY----- to the END line"
        )
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        problems.append(f"{where} must be an RSA key (GitHub Apps sign their JWT with RS256)")
        return None
    return pem


def write_env(env_file: Path, values: Mapping[str, str]) -> None:
    """Write settings into ``.env``, private (0600) before the first secret goes in.

    An existing file keeps its mode through python-dotenv's rewrite, so one an editor
    made world-readable is narrowed first.
    """
    from dotenv import set_key

    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    os.chmod(env_file, 0o600)
    for key, value in values.items():
        set_key(str(env_file), key, value, quote_mode="never")


def env_file_credentials(env_file: Path | None) -> list[str]:
    """The credential settings an ``.env`` file (or the environment) already gives."""
    given = [n for n in CREDENTIAL_NAMES if os.environ.get(n, "").strip()]
    if env_file is not None and env_file.is_file():
        values = dotenv_values(env_file)
        given += [n for n in CREDENTIAL_NAMES if (values.get(n) or "").strip()]
    return sorted(set(given))
