"""Who is acting: the one place that gathers an actor's facts from GitHub.

Every surface (PR comments, reviews, check-run buttons, the bot API, the
dashboard, the CLI) builds its ``authz.Actor`` here: the repository role from
the collaborator-permission API (with the user's id), team memberships when
a reviewer list needs them. ``decisions`` then decides under one set of rules.

Decisions and session moves made off GitHub (API, dashboard, CLI) also live
here, so they read the policy and the actor exactly the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from minipipe_gh.core.authz import (
    Actor,
    PullFacts,
    SessionMove,
    needs_reviewer_list,
    required_permission,
)
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.errors import Conflict, NotFound, Refused
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.policy import Policy
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.repo_files import load_policy
from minipipe_gh.gh.rest import RepoAPI
from minipipe_gh.review import decisions, refresh
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession
from minipipe_gh.store.serialize import change_version, patch_dict, session_dict
from minipipe_gh.store.transitions import check_version


class NoInstallation(Refused):
    code = "no_installation"


class PolicyInvalid(Refused):
    code = "policy_invalid"


def gather(
    api: RepoAPI,
    login: str,
    policy: Policy,
    facts: PullFacts,
    verbs: Iterable[Verb] = (),
    *,
    user_id: int | None = None,
    is_bot: bool = False,
    need_permission: bool = False,
) -> Actor:
    """The actor's facts for these verbs; GitHub is asked only what the rules need."""
    verbs = list(verbs)
    permission, found_id = "none", None
    if need_permission or any(required_permission(v, policy) for v in verbs):
        found = api.collaborator(login)
        permission, found_id = found.role, found.id
    teams: frozenset[str] = frozenset()
    if any(needs_reviewer_list(v, policy, facts) for v in verbs) and (
        login.lower() not in policy.reviewers
    ):
        teams = frozenset(t for t in policy.reviewer_teams if login.lower() in api.team_members(t))
    if Verb.APPROVE in verbs and facts.owner_teams:
        # code owners: the teams among the patch's owners this approver is in (cached)
        teams |= frozenset(t for t in facts.owner_teams if login.lower() in api.team_members(t))
    uid = user_id if user_id is not None else found_id
    return Actor(login, permission, is_bot=is_bot, teams=teams, id=uid)


def _repo(github: GitHubApp, session: AgentSession) -> tuple[RepoAPI, Policy]:
    installation_id = session.meta.get("installation_id")
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
    """A decision made off GitHub (API, dashboard, CLI), under exactly the comment rules."""
    with database.unit() as s:
        patch = ledger.get_patch(s, ledger_id)
        session = registry.get_session(s, patch.session_id)
        if not allowed(patch.project_id) or session.archived_at is not None:
            raise NotFound(f"patch {ledger_id} not found")
        facts = decisions.facts(session, patch)
    api, policy = _repo(github, session)
    actor = gather(api, login, policy, facts, [verb])
    with database.unit() as s:
        patch = ledger.get_patch(s, ledger_id)
        session = registry.get_session(s, patch.session_id)
        check_version(patch, PATCH_MACHINE, version)
        decisions.act(s, verb, argument, actor, session, patch, policy, source=source)
        s.flush()
        result = patch_dict(patch)
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
        bot = decisions.facts(session, None).bot
    if (
        what in ("complete", "fail", "delete")
        and bot is not None
        and bot.login.lower() == (login.lower())
    ):
        actor, policy = Actor(login, "none"), Policy()  # the session's own bot ends its session
    else:
        api, policy = _repo(github, session)
        actor = gather(api, login, policy, decisions.facts(session, None), need_permission=True)
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
