"""Pull request events move the session and record each pushed head as a patch.

opened / reopened / ready_for_review → active; converted_to_draft → paused;
closed and merged → completed (queued patch → applied); closed unmerged →
failed (open patch → dropped). A push (synchronize) supersedes the open patch.
"""

from __future__ import annotations

from typing import Any

from minipipe_gh.core.errors import Refused
from minipipe_gh.core.owners import LOCATIONS
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.policy import PATH
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.delivery.routing import Router
from minipipe_gh.gh.repo import Repo
from minipipe_gh.review.context import Context
from minipipe_gh.review.patches import read_head, record_head, release_blocked
from minipipe_gh.review.refresh import refresh_check_run
from minipipe_gh.review.sessions import adoptable, find_or_adopt, move_session
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import attempt

router = Router()
P, S = PatchState, SessionState
HEAD_ACTIONS = ("opened", "reopened", "ready_for_review", "synchronize")


@router.register("pull_request")
def on_pull_request(ctx: Context) -> None:
    action = ctx.event.action
    if action not in (*HEAD_ACTIONS, "converted_to_draft", "closed"):
        return
    repo = ctx.repo
    pr = ctx.payload["pull_request"]
    bound = registry.find_by_pr(ctx.db, repo.project, pr["number"])
    if bound is None and action in ("converted_to_draft", "closed"):
        return
    policy, error = repo.policy()
    if action == "closed":
        # GitHub signs only the body: a captured `closed` can be re-sent at any time.
        # Act on the PR's state as GitHub has it now, never on the body's word.
        pr = _as_github_has_it(repo, pr)
        if pr.get("state") != "closed":
            ctx.log.warning(
                "pull_request.closed for #%s ignored: GitHub says the PR is %s",
                pr["number"],
                pr.get("state"),
            )
            return
    tracked = action in HEAD_ACTIONS and (bound is not None or adoptable(repo, pr, policy))
    new_head = tracked and not ledger.find_patch(
        ctx.db, repo.project, pr["number"], pr["head"]["sha"]
    )
    head = read_head(repo, pr, policy) if new_head else None  # GitHub first, then the writes
    session = bound or find_or_adopt(ctx, repo, pr, policy)
    if session is None:
        if action in HEAD_ACTIONS and action != "ready_for_review":
            ctx.effect("neutral_check", project=repo.project, sha=pr["head"]["sha"])
        return
    if action in HEAD_ACTIONS:
        if action != "synchronize":
            move_session(ctx, session, S.ACTIVE, f"pull request {action}")
        record_head(ctx, repo, session, pr, policy, error, head)
    elif action == "converted_to_draft":
        move_session(ctx, session, S.PAUSED, "pull request converted to draft")
    else:
        _closed(ctx, repo, session, pr, policy, error)


def _as_github_has_it(repo: Repo, pr: dict[str, Any]) -> dict[str, Any]:
    """The payload's PR with its state and merge facts read from GitHub (one request)."""
    live = repo.api.pull(pr["number"])
    facts = ("state", "merged", "merge_commit_sha", "merged_by")
    return {**pr, **{key: live.get(key) for key in facts}}


def _closed(ctx: Context, repo: Repo, session, pr, policy, error) -> None:  # type: ignore[no-untyped-def]
    patch = ledger.open_patch(ctx.db, session.session_id)
    merged = bool(pr.get("merged"))
    if patch is not None:
        if merged:
            patch.merge_commit_sha = pr.get("merge_commit_sha")
            target, why = P.APPLIED, f"merged as {pr.get('merge_commit_sha')}"
        else:
            patch.meta = {**patch.meta, "drop_reason": "PR closed unmerged"}
            target, why = P.DROPPED, "PR closed unmerged"
        try:
            with attempt(ctx.db):
                ledger.transition(
                    ctx.db,
                    patch,
                    target,
                    actor=pr["user"]["login"]
                    if not merged
                    else (pr.get("merged_by") or {}).get("login", "github"),
                    source=ctx.source,
                    reason=why,
                )
        except Refused as err:
            ctx.log.warning("patch %s: %s", patch.ledger_id, err)
        refresh_check_run(ctx, repo, patch, policy, error)
    move_session(
        ctx,
        session,
        S.COMPLETED if merged else S.FAILED,
        "pull request merged" if merged else "pull request closed unmerged",
    )


@router.register("push")
def on_push(ctx: Context) -> None:
    """A change to the policy file (or to CODEOWNERS, read with it) on the default branch
    drops the cached policy and judges the patches its guardrails blocked again."""
    repo = ctx.payload.get("repository") or {}
    if ctx.payload.get("ref") != f"refs/heads/{repo.get('default_branch')}":
        return
    touched = {
        path
        for commit in ctx.payload.get("commits") or []
        for key in ("added", "modified", "removed")
        for path in commit.get(key) or []
    }
    if (PATH in touched or touched & set(LOCATIONS)) and ctx.app is not None:
        ctx.app.policies.drop(repo["full_name"])
        release_blocked(ctx, ctx.repo)  # a policy change releases what it no longer blocks
