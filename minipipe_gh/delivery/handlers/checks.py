"""Other checks' results validate or quarantine patches; the merge queue gets our verdict.

Check runs and suites of the app itself never count as validation input.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from minipipe_gh.core import people
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.validation import suites_verdict
from minipipe_gh.delivery.routing import Router
from minipipe_gh.gh.repo import Repo
from minipipe_gh.review.context import Context
from minipipe_gh.review.patches import evaluate, patches_for_sha
from minipipe_gh.review.refresh import refresh_check_run
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.models import Patch

router = Router()
P = PatchState
QUEUE_REF = re.compile(r"/pr-(\d+)-[0-9a-f]+$")


def _revalidate(ctx: Context, repo: Repo, sha: str) -> None:
    policy, error = repo.policy()
    for patch in patches_for_sha(ctx, repo.project, sha):
        if patch.state in (P.CREATED, P.QUARANTINED):
            before = patch.state
            evaluate(ctx, repo, patch, policy, error)
            if patch.state != before:
                refresh_check_run(ctx, repo, patch, policy, error)


@router.register("check_suite", action="completed")
def on_suite_completed(ctx: Context) -> None:
    suite = ctx.payload["check_suite"]
    repo = ctx.repo
    if (suite.get("app") or {}).get("id") == repo.own_app_id:
        return
    policy, _error = repo.policy()
    if not policy.required_checks:
        _revalidate(ctx, repo, suite["head_sha"])
    _verify_merge(ctx, repo, suite["head_sha"])


@router.register("check_run", action="completed")
def on_run_completed(ctx: Context) -> None:
    run = ctx.payload["check_run"]
    repo = ctx.repo
    if (run.get("app") or {}).get("id") == repo.own_app_id:
        return
    policy, _error = repo.policy()
    if policy.required_checks and run.get("name") in policy.required_checks:
        _revalidate(ctx, repo, run["head_sha"])


@router.register("check_run", action="rerequested")
def on_rerequested(ctx: Context) -> None:
    """Re-run of our check: read the checks again and rewrite the check run."""
    run = ctx.payload["check_run"]
    repo = ctx.repo
    if (run.get("app") or {}).get("id") != repo.own_app_id:
        return
    policy, error = repo.policy()
    for patch in patches_for_sha(ctx, repo.project, run["head_sha"]):
        evaluate(ctx, repo, patch, policy, error)
        refresh_check_run(ctx, repo, patch, policy, error)


def _verify_merge(ctx: Context, repo: Repo, sha: str) -> None:
    """Checks on a merge commit: applied → verified → committed, or rolled back."""
    applied = ctx.db.scalars(
        select(Patch).where(
            Patch.merge_commit_sha == sha,
            Patch.project_id == repo.project,
            Patch.state == P.APPLIED,
        )
    ).all()
    if not applied:
        return
    verdict = suites_verdict(repo.api.check_suites(sha), repo.own_app_id)
    for patch in applied:
        if verdict == "success":
            ledger.transition(
                ctx.db,
                patch,
                P.VERIFIED,
                actor="github",
                source=ctx.source,
                reason=f"checks on merge commit {sha[:12]} succeeded",
            )
            ledger.transition(
                ctx.db,
                patch,
                P.COMMITTED,
                actor="github",
                source=ctx.source,
                reason="verified on the base branch",
            )
        elif verdict == "failure":
            ledger.transition(
                ctx.db,
                patch,
                P.ROLLED_BACK,
                actor="github",
                source=ctx.source,
                reason=f"checks on merge commit {sha[:12]} failed",
            )


@router.register("merge_group", action="checks_requested")
def on_merge_group(ctx: Context) -> None:
    """Report on the merge group's head: the PR entering the queue must have its patch queued.

    The PR is named by the group's ref (``gh-readonly-queue/<base>/pr-<n>-<sha>``);
    PRs ahead of it in the group were checked when their own groups formed.
    """
    group = ctx.payload["merge_group"]
    repo = ctx.repo
    match = QUEUE_REF.search(group.get("head_ref", ""))
    conclusion, title = "success", "Not an agent session"
    if match:
        session = registry.find_by_pr(ctx.db, repo.project, int(match[1]))
        if session is not None:
            patch = ledger.latest_patch(ctx.db, session.session_id)
            ok = (
                patch is not None
                and patch.state == P.QUEUED
                and patch.patch_id == session.head_sha
                and not people.holds(session.meta)
            )
            conclusion = "success" if ok else "failure"
            title = (
                f"Patch {patch.patch_id[:12]} is queued"
                if ok and patch
                else f"PR #{match[1]} has no approved patch at its head"
            )
    ctx.effect(
        "merge_group_check",
        project=repo.project,
        sha=group["head_sha"],
        conclusion=conclusion,
        title=title,
        summary=title,
    )
