"""Scheduled upkeep: pausing stale sessions, with each repository's ``sessions.stale_after``."""

from __future__ import annotations

import logging
from datetime import timedelta

from github import GithubException

from minipipe_gh.core.policy import Policy
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.repo import load_policy
from minipipe_gh.store import registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession

log = logging.getLogger(__name__)
MIN_STALE = timedelta(hours=1)  # nothing younger is looked at, whatever a policy says


def stale_after_by_project(database: Database, app: GitHubApp | None) -> dict[str, timedelta]:
    """Each candidate repository's stale_after, read from its (cached) policy."""
    with database.unit() as s:
        candidates = registry.stale_sessions(s, MIN_STALE)
        where = {c.project_id: c.installation_id for c in candidates}
    limits: dict[str, timedelta] = {}
    for project, installation_id in where.items():
        if app is None or app.app_id is None or installation_id is None:
            continue
        try:
            policy, error = load_policy(app, app.repo(installation_id, project), None)
        except GithubException as err:
            log.warning("policy of %s unreadable (%s); using the default", project, err.status)
            continue
        if not error:
            limits[project] = max(policy.stale_after, MIN_STALE)
    return limits


def reap_stale(
    database: Database,
    app: GitHubApp | None,
    *,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    source: str = "worker",
) -> list[AgentSession]:
    """Pause sessions idle past their repository's stale_after (``older_than`` overrides all)."""
    per_project = {} if older_than else stale_after_by_project(database, app)
    default = older_than or Policy().stale_after
    with database.unit() as s:
        reaped = registry.reap(
            s, default, actor="minipipe", source=source, dry_run=dry_run, per_project=per_project
        )
    if reaped:
        log.info("%s %d stale sessions", "would pause" if dry_run else "paused", len(reaped))
    return reaped
