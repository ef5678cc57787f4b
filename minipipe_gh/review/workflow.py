"""What happens to a session's PR on GitHub, step by step, shared by the handlers.

Handlers translate events into these steps; GitHub reads happen here through
``RepoAPI``, GitHub writes are recorded as effects (``ctx.effect``) for the
worker to perform after the database changes commit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from minipipe_gh.core import owners, people
from minipipe_gh.core.authz import PullFacts, needs_reviewer_list
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.errors import Refused
from minipipe_gh.core.markers import MARKER
from minipipe_gh.core.patch_states import MACHINE as PATCH_MACHINE
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.policy import (
    PATH,
    GuardVerdict,
    Policy,
    PolicyError,
    Provenance,
    blocked_by_guardrails,
    guard_record,
    parse,
)
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.core.validation import Checks, runs_checks, suites_checks
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.rest import FileChange, RepoAPI
from minipipe_gh.review.context import Context
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.db import attempt
from minipipe_gh.store.models import AgentSession, Patch
from minipipe_gh.store.transitions import note

P = PatchState


@dataclass
class Repo:
    """The repository a delivery concerns: its API client and its policy (cached)."""

    ctx: Context
    project: str
    default_branch: str | None

    @classmethod
    def of(cls, ctx: Context) -> Repo:
        repo = ctx.payload["repository"]
        return cls(ctx, repo["full_name"], repo.get("default_branch"))

    @property
    def api(self) -> RepoAPI:
        if not hasattr(self, "_api"):
            assert self.ctx.app is not None and self.ctx.event.installation_id is not None
            self._api = self.ctx.app.repo(self.ctx.event.installation_id, self.project)
        return self._api

    def policy(self) -> tuple[Policy, str | None]:
        """The policy and, if the file is invalid, what is wrong with it (key, line)."""
        assert self.ctx.app is not None
        return load_policy(self.ctx.app, self.api, self.default_branch)

    @property
    def own_app_id(self) -> int | None:
        return self.ctx.app.app_id if self.ctx.app else None


def load_policy(
    app: GitHubApp, api: RepoAPI, default_branch: str | None
) -> tuple[Policy, str | None]:
    """``.github/minipipe.yml`` from the default branch, cached a few minutes per repository.

    A push to the default branch that touches the file drops the cache entry.
    """
    hit = app.policies.get(api.full_name)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    found = api.file(PATH, ref=default_branch)
    result: tuple[Policy, str | None]
    if found is None:
        result = (Policy(), None)
    else:
        sha, text = found
        try:
            result = (parse(text, source_sha=sha), None)
        except PolicyError as err:
            result = (Policy(source_sha=sha), str(err))
    if result[0].require_code_owners and result[1] is None:
        result = load_code_owners(app, api, default_branch, result[0])
    app.policies.put(api.full_name, result)
    return result


def load_code_owners(
    app: GitHubApp, api: RepoAPI, default_branch: str | None, policy: Policy
) -> tuple[Policy, str | None]:
    """The default branch's CODEOWNERS where GitHub looks (first found wins), read with
    the policy and cached with it; parsed once per blob SHA. An unparsable file is an
    error like an invalid policy: nothing moves on it."""
    for path in owners.LOCATIONS:
        found = api.file(path, ref=default_branch)
        if found is None:
            continue
        sha, text = found
        parsed = app.code_owners.get((path, sha))
        if parsed is None:
            try:
                parsed = owners.parse(text, path=path, sha=sha)
            except owners.CodeOwnersError as err:
                parsed = str(err)
            app.code_owners.put((path, sha), parsed)
        if isinstance(parsed, str):
            return policy, parsed
        return replace(policy, code_owners=parsed), None
    return policy, None


def source(ctx: Context) -> str:
    if ctx.event.delivery_id.startswith("reconcile-"):  # ids GitHub never sends: ours
        return "reconcile"
    return f"delivery:{ctx.event.delivery_id}"


def refresh_check_run(
    ctx: Context, repo: Repo, patch: Patch, policy: Policy, error: str | None
) -> None:
    """Ask for the patch's check run to be rewritten once this delivery commits.

    The patch keeps the approvals count and the reviewer list its check run was last written with,
    so the API, the dashboard and the CLI say what the check run says without reading
    the policy."""
    stamp = {
        "required_approvals": policy.required_approvals,
        "decided_by": deciders(policy, patch.risk),
    }
    if any(patch.meta.get(k) != v for k, v in stamp.items()):
        patch.meta = {**patch.meta, **stamp}
    ctx.effect(
        "check_run",
        project=repo.project,
        ledger_id=patch.ledger_id,
        required_approvals=policy.required_approvals,
        policy_error=error,
    )
    if owners.META in patch.meta and patch.pr_number is not None:
        # after the check run, best effort: ask a covering set of owners to review
        ctx.effect("owner_reviews", project=repo.project, ledger_id=patch.ledger_id)


def deciders(policy: Policy, risk: str | None) -> list[str]:
    """The configured reviewers (logins and ``org/team``) when only they may decide this
    patch (``authz.needs_reviewer_list``); empty when anyone with the permission may."""
    facts = PullFacts(author=None, session_bot=None, risk=risk)
    if not needs_reviewer_list(Verb.APPROVE, policy, facts):
        return []
    return [*policy.reviewers, *policy.reviewer_teams]


# -- sessions -------------------------------------------------------------------------


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
            source=source(ctx),
        )
    if session is None:
        return None
    session.pr_number = number
    session.branch = session.branch or head.get("ref")
    session.base_branch = session.base_branch or (pr.get("base") or {}).get("ref")
    author = pr["user"]
    bot = {"bot_login": author["login"], "bot_id": author.get("id")}
    if session.meta.get("bot_login"):  # recorded when the session was created: kept
        bot = {}
    session.meta = {
        **session.meta,
        **bot,
        "pr_url": pr.get("html_url"),
        "pr_author": author["login"],
        "pr_author_id": author.get("id"),
        "installation_id": session.meta.get("installation_id") or ctx.event.installation_id,
    }
    ctx.db.flush()
    return session


def move_session(ctx: Context, session: AgentSession, to: SessionState, why: str) -> None:
    """Follow the PR; a move the table forbids is refused and audited, not fatal."""
    if session.state == to:
        return
    try:
        with attempt(ctx.db):
            registry.update_session_state(
                ctx.db, session.session_id, to, actor="github", source=source(ctx), reason=why
            )
    except Refused as err:
        ctx.log.info("session %s not moved: %s", session.session_id, err)


# -- patches ----------------------------------------------------------------------------


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
        source=source(ctx),
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
            source=source(ctx),
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
            ledger.carry_over_approvals(ctx.db, old, new, why=why, source=source(ctx))
        else:
            again = [g for g in given if g.lower() != pr["user"]["login"].lower()]
            new.meta = {
                **new.meta,
                "stale_approvals": [f"@{who} approved {old.patch_id[:12]}" for who in given],
                "rerequested": again,  # code owners among them are not asked twice
            }
            ctx.effect("request_reviewers", project=repo.project, number=pr["number"], logins=again)
    ledger.supersede(ctx.db, old, new.patch_id, actor=pr["user"]["login"], source=source(ctx))
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
                source=source(ctx),
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
                source=source(ctx),
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
        source=source(ctx),
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
        source=source(ctx),
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
            source=source(ctx),
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
