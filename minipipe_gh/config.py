"""Settings from the environment (and a ``.env`` in development), read when asked, never at import.

Every check names the setting and says how to fix it, for operators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_WEB_URL = "https://github.com"


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
    secret_key: str | None = None
    max_attempts: int = 8
    lease_seconds: int = 120
    session_rate_limit: int = 30  # sessions one API token may create per window
    session_rate_window: int = 600  # seconds
    env_file: Path | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def has_app_credentials(self) -> bool:
        return self.app_id is not None and bool(self.private_key) and bool(self.webhook_secrets)

    def require_app(self) -> None:
        """Production start-up: stop with every problem named, or return."""
        missing = list(self.problems)
        if self.app_id is None and not any("GITHUB_APP_ID" in p for p in missing):
            missing.append("GITHUB_APP_ID is not set: copy the App ID from the app's settings page")
        if not self.private_key and not any("PRIVATE_KEY" in p for p in missing):
            missing.append(
                "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is not set: generate a private "
                "key on the app's settings page and point GITHUB_PRIVATE_KEY_PATH at the .pem"
            )
        if not self.secret_key:
            missing.append(
                "SECRET_KEY is not set: it signs dashboard sign-ins and form tokens, and every "
                "web process must share it; generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        if not self.webhook_secrets:
            missing.append(
                "GITHUB_WEBHOOK_SECRET is not set: use the webhook secret from the app's "
                "settings page (comma-separate several while rotating)"
            )
        if missing:
            raise ConfigError("minipipe-gh cannot start:\n  - " + "\n  - ".join(missing))


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
        public_url=env.get("PUBLIC_URL") or env.get("WEBHOOK_PROXY_URL") or None,
        secret_key=env.get("SECRET_KEY") or None,
        max_attempts=_int(env, "MINIPIPE_MAX_ATTEMPTS", 8, problems),
        lease_seconds=_int(env, "MINIPIPE_LEASE_SECONDS", 120, problems),
        session_rate_limit=_int(env, "MINIPIPE_SESSION_RATE_LIMIT", 30, problems),
        session_rate_window=_int(env, "MINIPIPE_SESSION_RATE_WINDOW", 600, problems),
        env_file=dotenv,
        problems=tuple(problems),
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
