"""A PR's heads become patches: recorded once per SHA, judged on checks and guardrails.

GitHub is read here through ``RepoAPI`` before the delivery writes anything; the
writes that follow are effects the worker performs after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from minipipe_gh.core import owners, people
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.policy import (
    GuardVerdict,
    Policy,
    Provenance,
    blocked_by_guardrails,
    guard_record,
)
from minipipe_gh.core.validation import Checks, runs_checks, suites_checks
from minipipe_gh.gh.repo import Repo
from minipipe_gh.gh.rest import FileChange
from minipipe_gh.review.context import Context
from minipipe_gh.review.refresh import refresh_check_run
from minipipe_gh.store import ledger
from minipipe_gh.store.models import AgentSession, Patch
from minipipe_gh.store.transitions import note

P = PatchState


@dataclass(frozen=True)
class HeadFacts:
    """What GitHub says about a PR head, read before the delivery writes anything
    (on SQLite the write lock is taken at the first write, so reads go first)."""

    files: list[FileChange]
    verdict: Checks
    commits: list[dict[str, Any]] | None = None  # the PR's commits listing (provenance)


def read_head(repo: Repo, pr: dict[str, Any], policy: Policy) -> HeadFacts:
    """The head's files, checks and commits: three listings, once per patch."""
    return HeadFacts(
        repo.api.pr_files(pr["number"]),
        verdict(repo, pr["head"]["sha"], policy),
        repo.api.pr_commits(pr["number"]),
    )


def verdict(repo: Repo, sha: str, policy: Policy) -> Checks:
    """The checks on ``sha``: the named required checks, or every suite (ours excepted)."""
    if policy.required_checks:
        return runs_checks(repo.api.check_runs(sha), policy.required_checks, repo.own_app_id)
    return suites_checks(repo.api.check_suites(sha), repo.own_app_id)


def record_head(
    ctx: Context,
    repo: Repo,
    session: AgentSession,
    pr: dict[str, Any],
    policy: Policy,
    error: str | None,
    head: HeadFacts | None = None,
) -> Patch:
    """Record the PR's head as a patch (once per SHA), superseding the open one."""
    sha = pr["head"]["sha"]
    existing = ledger.find_patch(ctx.db, repo.project, pr["number"], sha)
    if existing is not None:
        return existing
    head = head or read_head(repo, pr, policy)
    old = ledger.open_patch(ctx.db, session.session_id)
    files = head.files
    renamed_from = [f.previous for f in files if f.previous]
    paths = list(dict.fromkeys([*(f.path for f in files), *renamed_from]))
    additions = sum(f.additions for f in files)
    deletions = sum(f.deletions for f in files)
    risk, reasons = policy.assess(paths, additions + deletions)
    provenance = (
        people.commit_provenance(
            head.commits,
            people.session_bot(session.meta),
            seed=people.seed_commit(session.meta),
        )
        if head.commits is not None
        else None
    )
    guard = policy.guardrails(session.agent_type).check(paths, provenance)
    new = ledger.record_patch(
        ctx.db,
        session,
        sha,
        actor=pr["user"]["login"],
        source=ctx.source,
        files=len(files),
        additions=additions,
        deletions=deletions,
        paths=paths,
        risk=risk,
        risk_reasons=reasons,
        metadata={**guard_meta(guard), **owners_meta(policy, paths)},
    )
    if guard.outcome != "pass":
        note(
            ctx.db,
            new,
            PATCH_MACHINE,
            actor="minipipe",
            source=ctx.source,
            reason=guard_audit(guard),
        )
    if old is not None:
        _supersede(ctx, repo, old, new, pr, policy, error)
    evaluate(ctx, repo, new, policy, error, head.verdict)
    refresh_check_run(ctx, repo, new, policy, error)
    return new


def owners_meta(policy: Policy, paths: list[str]) -> dict[str, Any]:
    """With ``review.require_code_owners``, the owners of each touched path, fixed when
    the patch is recorded (a push records a new patch, so it is judged afresh)."""
    if not policy.require_code_owners:
        return {}
    return {owners.META: owners.assign(policy.code_owners, paths)}


def guard_meta(guard: GuardVerdict) -> dict[str, Any]:
    """What a guardrail verdict writes on a patch: ``review`` asks for a manual review
    whatever the patch's risk (protected paths: one only ``maintain`` or more may approve;
    foreign commits: one that none of their people may give)."""
    meta: dict[str, Any] = {"guardrails": guard.as_meta()}
    if guard.outcome == "review":
        meta["manual_review_required"] = True
        if guard.approve_permission:
            meta["approve_permission"] = guard.approve_permission
    return meta


def guard_audit(guard: GuardVerdict) -> str:
    """The audit line of a verdict that is not ``pass``: each reason names its rule
    (``agents.aider.allowed_paths``, ``provenance.foreign_commits``) and what it found."""
    return f"guardrails: {guard.outcome}: {'; '.join(guard.reasons)}"


def stored_provenance(patch: Patch) -> Provenance | None:
    """The provenance judged when the patch was recorded (its commits are not re-read)."""
    found = guard_record(patch.meta)
    if found is None or not found.commits_read:
        return None
    return Provenance(found.people, found.foreign, found.foreign_names)


def _new_foreign(old: Patch, new: Patch) -> bool:
    """The new head has foreign commits by someone the old one had not: an earlier
    approval may be that person's, so it is not carried over."""
    before, after = guard_record(old.meta), guard_record(new.meta)
    if after is None:
        return False
    known = people.recorded_people(before.foreign if before else ())
    return any(not p.among(known) for p in people.recorded_people(after.foreign))


def blocked(patch: Patch) -> bool:
    return blocked_by_guardrails(patch.meta)


def _supersede(
    ctx: Context,
    repo: Repo,
    old: Patch,
    new: Patch,
    pr: dict[str, Any],
    policy: Policy,
    error: str | None,
) -> None:
    given = ledger.approvals(old)
    if given:
        why = None
        if not policy.dismiss_stale_approvals:
            why = "dismiss_stale_approvals is off"
        else:
            old.tree_sha = old.tree_sha or repo.api.commit_tree(old.patch_id)
            new.tree_sha = repo.api.commit_tree(new.patch_id)
            if old.tree_sha == new.tree_sha:
                why = f"same tree {new.tree_sha[:12]} (reworded or re-signed commit)"
        stricter = (
            blocked(new)
            or new.meta.get("approve_permission") not in (None, old.meta.get("approve_permission"))
            or _new_foreign(old, new)
        )
        if why and stricter:
            why = None  # the new head's guardrails ask more: earlier approvers may not suffice
        if why:
            ledger.carry_over_approvals(ctx.db, old, new, why=why, source=ctx.source)
        else:
            again = [g for g in given if g.lower() != pr["user"]["login"].lower()]
            new.meta = people.with_stale_approvals(
                new.meta,
                [f"@{who} approved {old.patch_id[:12]}" for who in given],
                again,  # code owners among them are not asked twice
            )
            ctx.effect("request_reviewers", project=repo.project, number=pr["number"], logins=again)
    ledger.supersede(ctx.db, old, new.patch_id, actor=pr["user"]["login"], source=ctx.source)
    refresh_check_run(ctx, repo, old, policy, error)


def evaluate(
    ctx: Context,
    repo: Repo,
    patch: Patch,
    policy: Policy,
    error: str | None,
    known: Checks | None = None,
) -> None:
    """Validate or quarantine the patch on its checks (read now unless ``known``).

    A patch its guardrails block is quarantined whatever its checks say, and stays
    so: no approval can queue it until a complying push or a policy change."""
    if patch.state not in (P.CREATED, P.QUARANTINED):
        return
    if blocked(patch):
        if error:
            ctx.log.info("policy invalid: patch %s does not move on it", patch.ledger_id)
        elif patch.state == P.CREATED:
            ledger.transition(
                ctx.db,
                patch,
                P.QUARANTINED,
                actor="minipipe",
                source=ctx.source,
                reason="blocked by its guardrails: "
                + "; ".join(patch.meta["guardrails"].get("reasons", [])),
            )
        return
    checks = known or verdict(repo, patch.patch_id, policy)
    if patch.meta.get("checks") != checks.as_meta():  # the names every surface shows
        patch.meta = {**patch.meta, "checks": checks.as_meta()}
    result = checks.verdict
    if result == "pending":
        return
    if error:
        ctx.log.info("policy invalid: patch %s does not move on it", patch.ledger_id)
        return
    if result == "failure":
        if patch.state == P.CREATED:
            ledger.transition(
                ctx.db,
                patch,
                P.QUARANTINED,
                actor="github",
                source=ctx.source,
                reason=(
                    f"required check failed: {', '.join(checks.failing)}"
                    if checks.failing
                    else "a required check failed"
                ),
            )
        return
    ledger.transition(
        ctx.db,
        patch,
        P.VALIDATED,
        actor="github",
        source=ctx.source,
        reason=(
            "every required check succeeded"
            if checks.reported
            else "no checks reported: nothing to wait for (see validation.required_checks)"
        ),
    )
    ledger.apply_pending_review(
        ctx.db,
        patch,
        required_approvals=policy.required_approvals,
        auto_queue_low_risk=policy.auto_queue_low_risk,
        source=ctx.source,
    )


def release_blocked(ctx: Context, repo: Repo) -> None:
    """The policy on the default branch changed: judge blocked patches again.

    A patch the new policy no longer blocks is evaluated on its checks as any other
    (one read of its checks each); with an invalid policy nothing moves."""
    held = list(
        ctx.db.scalars(
            select(Patch)
            .where(Patch.project_id == repo.project, Patch.state == P.QUARANTINED)
            .order_by(Patch.ledger_id)
        )
    )
    held = [p for p in held if blocked(p)]
    if not held:
        return
    policy, error = repo.policy()
    if error:
        return
    released: list[tuple[Patch, GuardVerdict, Checks]] = []
    for patch in held:  # GitHub first, then the writes
        session = ctx.db.get(AgentSession, patch.session_id)
        rails = policy.guardrails(session.agent_type if session else None)
        guard = rails.check(patch.paths, stored_provenance(patch))
        if guard.outcome != "block":
            released.append((patch, guard, verdict(repo, patch.patch_id, policy)))
    for patch, guard, checks in released:
        patch.meta = {**patch.meta, **guard_meta(guard)}
        note(
            ctx.db,
            patch,
            PATCH_MACHINE,
            actor="minipipe",
            source=ctx.source,
            reason=f"guardrails: {guard.outcome} under the changed policy: released"
            + (f" ({'; '.join(guard.reasons)})" if guard.reasons else ""),
        )
        evaluate(ctx, repo, patch, policy, error, checks)
        refresh_check_run(ctx, repo, patch, policy, error)


def patches_for_sha(ctx: Context, project: str, sha: str) -> list[Patch]:
    return list(
        ctx.db.scalars(
            select(Patch)
            .where(Patch.project_id == project, Patch.patch_id == sha)
            .order_by(Patch.ledger_id)
        )
    )
