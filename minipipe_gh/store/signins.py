"""Dashboard sign-ins kept server-side, so the cookie never carries a GitHub token.

The browser's (signed) Flask session holds a random id; the database keeps
its SHA-256, the user's login, their OAuth token (encrypted with a key derived
from ``SECRET_KEY``, so a copy of the database alone does not leak tokens) and
the repositories they may read. Functions take the caller's ``Session``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete
from sqlalchemy.orm import Session

from minipipe_gh.store.models import DashboardLogin, utcnow

# GitHub App user tokens expire after 8 hours; a sign-in does not outlive its token.
LIFETIME = timedelta(hours=8)
# How long a list of readable repositories is trusted before it is read again,
# so that a user whose access was revoked loses it on the dashboard soon after.
REFRESH_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Repo:
    full_name: str
    installation_id: int


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and the repositories they may read (the app's installations only)."""

    login: str
    repos: tuple[Repo, ...]

    def repo(self, project_id: str | None) -> Repo | None:
        if not project_id:
            return None
        wanted = project_id.lower()
        return next((r for r in self.repos if r.full_name.lower() == wanted), None)

    def can_see(self, project_id: str | None) -> bool:
        return self.repo(project_id) is not None

    @property
    def names(self) -> list[str]:
        return sorted((r.full_name for r in self.repos), key=str.lower)


def _fernet(secret_key: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"minipipe-gh dashboard token"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def repos_json(repos: list[Repo]) -> list[dict[str, Any]]:
    return [{"full_name": r.full_name, "installation_id": r.installation_id} for r in repos]


def viewer_of(row: DashboardLogin) -> Viewer:
    return Viewer(
        row.login,
        tuple(Repo(r["full_name"], int(r["installation_id"])) for r in row.repositories or []),
    )


def create(db: Session, *, login: str, token: str, repos: list[Repo], secret_key: str) -> str:
    """Store a new sign-in; returns the random id for the cookie. Expired ones are purged."""
    now = utcnow()
    db.execute(delete(DashboardLogin).where(DashboardLogin.expires_at < now))
    sid = secrets.token_urlsafe(32)
    db.add(
        DashboardLogin(
            id=_hash(sid),
            login=login,
            token=_fernet(secret_key).encrypt(token.encode()).decode(),
            repositories=repos_json(repos),
            created_at=now,
            refreshed_at=now,
            expires_at=now + LIFETIME,
        )
    )
    return sid


def find(db: Session, sid: str | None, *, now: datetime | None = None) -> DashboardLogin | None:
    if not sid:
        return None
    row = db.get(DashboardLogin, _hash(sid))
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    return row


def token_of(row: DashboardLogin, secret_key: str) -> str | None:
    """The user's token, or None when it was stored under another ``SECRET_KEY``."""
    try:
        return _fernet(secret_key).decrypt(row.token.encode()).decode()
    except InvalidToken:
        return None


def needs_refresh(row: DashboardLogin, *, now: datetime | None = None) -> bool:
    return (now or utcnow()) - row.refreshed_at >= REFRESH_AFTER


def update_repos(db: Session, sid: str, repos: list[Repo]) -> None:
    row = find(db, sid)
    if row is not None:
        row.repositories = repos_json(repos)
        row.refreshed_at = utcnow()


def remove(db: Session, sid: str | None) -> None:
    if sid:
        db.execute(delete(DashboardLogin).where(DashboardLogin.id == _hash(sid)))
