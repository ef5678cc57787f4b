"""Bearer tokens for the bot API: created once, shown once, stored hashed."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipipe_gh.core.errors import Conflict, Invalid, NotFound
from minipipe_gh.store.models import ApiToken, utcnow
from minipipe_gh.store.registry import check_project_id

PREFIX = "mpg_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    db: Session, name: str, *, login: str, repositories: Sequence[str] | None = None
) -> tuple[ApiToken, str]:
    """Return the row and the token itself, which is never stored or shown again."""
    if not name or len(name) > 100:
        raise Invalid("a token needs a name of at most 100 characters", field="name")
    if not login:
        raise Invalid("a token acts as a GitHub user: give --as LOGIN", field="login")
    if db.scalars(select(ApiToken).where(ApiToken.name == name)).first():
        raise Conflict(f"a token named {name!r} exists already; revoke it first")
    repos = [check_project_id(r) for r in repositories] if repositories else None
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=digest(token), login=login, repositories=repos)
    db.add(row)
    return row, token


def verify(db: Session, token: str) -> ApiToken | None:
    row = db.scalars(select(ApiToken).where(ApiToken.token_hash == digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def listing(db: Session) -> Sequence[ApiToken]:
    return db.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke(db: Session, name: str) -> ApiToken:
    row = db.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise NotFound(f"no token named {name!r}")
    row.revoked_at = row.revoked_at or utcnow()
    return row
