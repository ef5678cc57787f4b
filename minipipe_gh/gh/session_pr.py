"""Open a session's branch and draft PR on GitHub, safely repeatable.

Each step tolerates having been done before (the ref exists, the PR exists),
so retrying a failed creation with the same idempotency key finishes the job
instead of opening a second PR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from github import GithubException

from minipipe_gh.core.limits import PR_TITLE, fit_line, plain
from minipipe_gh.core.markers import session_marker
from minipipe_gh.gh.rest import RepoAPI

SLUG = re.compile(r"[^a-z0-9]+")


def branch_name(prefix: str, session_id: str, title: str) -> str:
    """``<prefix><short-id>-<slug-of-title>``: the short id is the ULID's random tail."""
    slug = SLUG.sub("-", title.lower()).strip("-")[:40].rstrip("-") or "session"
    return f"{prefix}{session_id[-8:]}-{slug}"


def pr_body(session_id: str, agent_type: str) -> str:
    """The draft PR's body. The caller's ``agent_type`` is shown as plain text: it can add
    no second session marker (the app binds a PR by the first one) and mention no one."""
    return (
        f"Agent session `{session_id}` ({plain(agent_type, 100)}), tracked by minipipe-gh.\n\n"
        "Every pushed commit is a patch in the ledger; `/approve` or `/reject <reason>` "
        "decides it (`/minipipe help` lists the commands).\n\n"
        f"{session_marker(session_id)}"
    )


@dataclass(frozen=True)
class Opened:
    branch: str
    base_branch: str
    pr_number: int
    pr_url: str
    head_sha: str


def open_session_pr(
    api: RepoAPI,
    *,
    session_id: str,
    title: str,
    agent_type: str,
    prefix: str,
    base_branch: str | None,
) -> Opened:
    base = base_branch or api.default_branch()
    base_sha = api.branch_head(base)
    branch = branch_name(prefix, session_id, title)
    # GitHub opens no PR for a branch without commits of its own: start the branch
    # with an empty commit (the base's tree) that names the session.
    sha = api.create_commit(
        message=f"Start minipipe session {session_id}\n\n{title}",
        tree=api.commit_tree(base_sha),
        parents=[base_sha],
    )
    try:
        api.create_branch(branch, sha)
    except GithubException as err:
        if err.status != 422:  # 422: "Reference already exists" from an earlier try
            raise
        sha = api.branch_head(branch)  # that try's start commit, not this one's
    owner = api.full_name.split("/", 1)[0]
    try:
        pr = api.create_pull(
            title=fit_line(title, PR_TITLE),
            head=branch,
            base=base,
            body=pr_body(session_id, agent_type),
        )
    except GithubException as err:
        existing = api.find_pull(owner, branch) if err.status == 422 else None
        if existing is None:
            raise
        pr = existing
    return Opened(branch, base, pr["number"], pr["html_url"], sha)
