"""Decisions and session moves made off GitHub: the API, the dashboard and the CLI.

They decide through ``decisions.decide``, exactly as a PR comment does, with the
repository's ``RepoAPI`` as the directory of people; the check run is then
refreshed through the worker (``refresh.queue_refresh``), never from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minipipe_gh.core import authz
from minipipe_gh.core.authz import Actor, SessionMove
from minipipe_gh.core.commands import Command, Verb
from minipipe_gh.core.errors import Conflict, NotFound, Refused
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.policy import Policy
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.repo import load_policy
from minipipe_gh.gh.rest import RepoAPI
from minipipe_gh.review import decisions, refresh
from minipipe_gh.review.decisions import Who
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession
from minipipe_gh.store.serialize import change_version, patch_dict, session_dict
from minipipe_gh.store.transitions import check_version


class NoInstallation(Refused):
    code = "no_installation"


class PolicyInvalid(Refused):
    code = "policy_invalid"


def _repo(github: GitHubApp, session: AgentSession) -> tuple[RepoAPI, Policy]:
    installation_id = session.installation_id
    if installation_id is None:
        raise NoInstallation(f"session {session.session_id} is not linked to a GitHub installation")
    api = github.repo(installation_id, session.project_id)
    policy, error = load_policy(github, api, None)
    if error:
        raise PolicyInvalid(error)
    return api, policy


def decide(
    database: Database,
    github: GitHubApp,
    ledger_id: str,
    verb: Verb,
    argument: str,
    login: str,
    *,
    source: str,
    version: int | None = None,
    allowed: Callable[[str], bool] = lambda _: True,
) -> dict[str, Any]:
    """A decision made off GitHub, under exactly the comment rules (``decisions.decide``);
    the first refusal is raised once its audit row is committed."""
    with database.unit() as s:
        patch = ledger.get_patch(s, ledger_id)
        session = registry.get_session(s, patch.session_id)
        if not allowed(patch.project_id) or session.archived_at is not None:
            raise NotFound(f"patch {ledger_id} not found")
        check_version(patch, PATCH_MACHINE, version)
        api, policy = _repo(github, session)
        answer = decisions.decide(
            s, api, [Command(verb, argument, 0)], Who(login), session, patch, policy, source=source
        )
        s.flush()
        result = patch_dict(patch)
    if answer.errors:
        raise answer.errors[0]
    refresh.queue_refresh(database, session, patch)
    return result


def move(
    database: Database,
    github: GitHubApp,
    session_id: str,
    what: SessionMove,
    login: str,
    *,
    source: str,
    version: int | None = None,
    allowed: Callable[[str], bool] = lambda _: True,
) -> dict[str, Any]:
    """A session move by an API token's user, under ``authz.session_move_refusal``."""
    with database.unit() as s:
        session = visible_session(s, session_id, allowed)
        facts = decisions.facts(session, None)
        bot = facts.bot
    if (
        what in ("complete", "fail", "delete")
        and bot is not None
        and bot.login.lower() == (login.lower())
    ):
        actor, policy = Actor(login, "none"), Policy()  # the session's own bot ends its session
    else:
        api, policy = _repo(github, session)
        actor = authz.gather(api, login, policy, facts, need_permission=True)
    with database.unit() as s:
        session = visible_session(s, session_id, allowed)
        if version is not None:
            # The ``version`` a bot holds is the one session responses carry: the session's
            # and its patches' together (``serialize.change_version``), not the row's alone.
            current = change_version(s, session_id)
            if current != version:
                raise Conflict(
                    f"session {session_id} is at version {current}, not {version}: "
                    "someone else changed it first"
                )
            version = session.version
        moved = decisions.move_session(
            s,
            what,
            actor,
            session,
            policy,
            source=source,
            expected_version=version,
            by_token=True,
        )
        s.flush()
        return session_dict(moved)


def visible_session(s: Any, session_id: str, allowed: Callable[[str], bool]) -> AgentSession:
    """The session, unless it is archived or outside what the caller may see (404)."""
    session = registry.get_session(s, session_id)
    if session.archived_at is not None or not allowed(session.project_id):
        raise NotFound(f"session {session_id} not found")
    return session
