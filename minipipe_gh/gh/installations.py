"""Installations found, not only told: a repository whose ``installation`` event was missed
is looked up on GitHub when it is needed, and recorded.

https://docs.github.com/en/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from minipipe_gh.core.events import Event
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Installation, InstalledRepository, utcnow

log = logging.getLogger(__name__)


def known(s: Session, project: str) -> InstalledRepository | None:
    return s.scalars(
        select(InstalledRepository).where(
            func.lower(InstalledRepository.full_name) == project.lower()
        )
    ).first()


def _insert_missing(s: Session, model: Any, values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT DO NOTHING: two workers may record one installation at once."""
    insert = sqlite_insert if s.get_bind().dialect.name == "sqlite" else pg_insert
    s.execute(insert(model).values(**values).on_conflict_do_nothing())


def record(
    s: Session,
    installation: dict[str, Any],
    repository: dict[str, Any],
) -> InstalledRepository:
    """Upsert the installation and one of its repositories (GitHub's shapes)."""
    account = installation.get("account") or {}
    inst = s.get(Installation, installation["id"])
    if inst is None:
        _insert_missing(
            s,
            Installation,
            {
                "installation_id": installation["id"],
                "account": account.get("login") or "?",
                "created_at": utcnow(),
                "updated_at": utcnow(),
            },
        )
        inst = s.get(Installation, installation["id"])
        assert inst is not None
    if account.get("login"):
        inst.account = account["login"]
        inst.account_type = account.get("type")
    if installation.get("repository_selection"):
        inst.repository_selection = installation["repository_selection"]
    inst.updated_at = utcnow()
    row = s.get(InstalledRepository, repository["id"])
    if row is None:
        _insert_missing(
            s,
            InstalledRepository,
            {
                "repository_id": repository["id"],
                "installation_id": inst.installation_id,
                "full_name": repository["full_name"],
                "private": bool(repository.get("private")),
            },
        )
        row = s.get(InstalledRepository, repository["id"])
        assert row is not None
    row.installation_id = inst.installation_id
    row.full_name = repository["full_name"]
    row.private = bool(repository.get("private"))
    return row


def look_up(database: Database, app: GitHubApp | None, project: str) -> tuple[int, str] | None:
    """(installation id, GitHub's spelling of the name) of ``project``: from the table,
    else asked of GitHub (app JWT, then the installation's view of the repository) and
    recorded. None when the app is not installed there."""
    with database.unit() as s:
        row = known(s, project)
        if row is not None:
            return row.installation_id, row.full_name
    if app is None or app.app_id is None:
        return None
    found = app.as_app().installation_of(project)
    if found is None:
        return None
    repository = app.repo(found["id"], project).repository()
    with database.unit() as s:
        row = record(s, found, repository)
        result = (row.installation_id, row.full_name)
    log.info("installation %s found on %s and recorded", result[0], result[1])
    return result


class Seen:
    """(installation, repository) pairs known to be recorded: one lookup per pair, per
    worker (its ``remember``), not per delivery."""

    def __init__(self) -> None:
        self.pairs: set[tuple[int, int]] = set()
        self.lock = threading.Lock()


def remember(s: Session, event: Event, seen: Seen) -> None:
    """A delivery names its installation and repository: record a pair not yet known
    (its ``installation`` event may never have come)."""
    repo = event.payload.get("repository")
    inst_id = event.installation_id
    if inst_id is None or not isinstance(repo, dict) or not isinstance(repo.get("id"), int):
        return
    key = (inst_id, repo["id"])
    if key in seen.pairs:
        return
    row = s.get(InstalledRepository, repo["id"])
    if row is None or row.installation_id != inst_id or row.full_name != repo.get("full_name"):
        installation = {"id": inst_id}
        if s.get(Installation, inst_id) is None:
            owner = repo.get("owner") or {}
            installation["account"] = {"login": owner.get("login"), "type": owner.get("type")}
        record(s, installation, repo)
        return  # known once this delivery commits; until then, looked at again
    with seen.lock:
        seen.pairs.add(key)
