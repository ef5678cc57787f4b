"""A session follows its PR: found by binding, by the body's marker, or adopted by prefix."""

from __future__ import annotations

from typing import Any

from minipipe_gh.core import people
from minipipe_gh.core.errors import Refused
from minipipe_gh.core.markers import MARKER
from minipipe_gh.core.policy import Policy
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.gh.repo import Repo
from minipipe_gh.review.context import Context
from minipipe_gh.store import registry
from minipipe_gh.store.db import attempt
from minipipe_gh.store.models import AgentSession


def adoptable(repo: Repo, pr: dict[str, Any], policy: Policy) -> bool:
    """A PR from this repository on a branch with the session prefix, or with the marker."""
    head = pr.get("head") or {}
    same_repo = (head.get("repo") or {}).get("full_name") == repo.project
    prefixed = same_repo and head.get("ref", "").startswith(policy.branch_prefix)
    return prefixed or bool(MARKER.search(pr.get("body") or ""))


def find_or_adopt(
    ctx: Context, repo: Repo, pr: dict[str, Any], policy: Policy
) -> AgentSession | None:
    """The PR's session: bound already, named by the body's marker, or adopted by prefix.

    A bound PR stays bound, even to an archived (deleted) session: it is never adopted
    afresh, so a session's bot cannot shed its record by deleting the session."""
    number = pr["number"]
    session = registry.find_by_pr(ctx.db, repo.project, number)
    if session is not None:
        return session  # bound: the marker is never read again
    marked = MARKER.search(pr.get("body") or "")
    if marked:
        candidate = ctx.db.get(AgentSession, marked[1])
        if candidate and candidate.project_id == repo.project and candidate.pr_number is None:
            session = candidate
    head = pr.get("head") or {}
    same_repo = (head.get("repo") or {}).get("full_name") == repo.project
    if session is None and same_repo and head.get("ref", "").startswith(policy.branch_prefix):
        session = registry.create_session(
            ctx.db,
            project_id=repo.project,
            agent_type="unknown",
            title=pr.get("title") or "",
            branch=head["ref"],
            base_branch=(pr.get("base") or {}).get("ref"),
            actor=pr["user"]["login"],
            source=ctx.source,
        )
    if session is None:
        return None
    session.pr_number = number
    session.branch = session.branch or head.get("ref")
    session.base_branch = session.base_branch or (pr.get("base") or {}).get("ref")
    author = people.Person(pr["user"]["login"], pr["user"].get("id"))
    meta = people.with_pr_author({**session.meta, "pr_url": pr.get("html_url")}, author)
    if people.session_bot(meta) is None:  # one recorded when the session was created: kept
        meta = people.with_bot(meta, author)
    session.meta = meta
    session.installation_id = session.installation_id or ctx.event.installation_id
    ctx.db.flush()
    return session


def move_session(ctx: Context, session: AgentSession, to: SessionState, why: str) -> None:
    """Follow the PR; a move the table forbids is refused and audited, not fatal."""
    if session.state == to:
        return
    try:
        with attempt(ctx.db):
            registry.update_session_state(
                ctx.db, session.session_id, to, actor="github", source=ctx.source, reason=why
            )
    except Refused as err:
        ctx.log.info("session %s not moved: %s", session.session_id, err)
