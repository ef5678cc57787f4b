"""Commands from PR comments, reviews and the check run's buttons.

Every command gets an answer: 👍 when it took effect; 😕 and one reply that
says why when it did not. Comments by bots are never commands.
"""

from __future__ import annotations

from typing import Any

from minipipe_gh.core.authz import is_bot
from minipipe_gh.core.commands import Command, Problem, Verb, help_text, parse
from minipipe_gh.core.people import person
from minipipe_gh.core.policy import permission_at_least
from minipipe_gh.delivery.routing import Router
from minipipe_gh.gh.repo import Repo
from minipipe_gh.review import decisions
from minipipe_gh.review.context import Context
from minipipe_gh.review.decisions import Answer, Who
from minipipe_gh.review.refresh import refresh_check_run
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.models import AgentSession, Patch

router = Router()
MOVES = frozenset(Verb) - {Verb.HELP}


def run_commands(
    ctx: Context,
    repo: Repo,
    session: AgentSession,
    items: list[Command | Problem],
    user: dict[str, Any],
    *,
    source: str,
    target: Patch | None = None,
) -> Answer:
    """Decide (``decisions.decide``), then ask for the check run to show it.

    ``user`` is the payload's user (login and id). ``target`` is the patch a
    button or a review was given on, or a comment's open patch as read with its
    session; without one, the open patch.
    """
    policy, error = repo.policy()
    patch = target or ledger.open_patch(ctx.db, session.session_id)
    who = Who(user["login"], user.get("id"), bot=is_bot(user))
    answer = decisions.decide(
        ctx.db, repo.api, items, who, session, patch, policy, error, source=source
    )
    if patch is not None and answer.done:
        refresh_check_run(ctx, repo, patch, policy, error)
    return answer


def respond(
    ctx: Context, repo: Repo, number: int, login: str, answer: Answer, comment_id: int | None
) -> None:
    if comment_id is not None:
        if answer.done or (answer.help and not answer.refused):
            ctx.effect("react", project=repo.project, comment_id=comment_id, content="+1")
        if answer.refused:
            ctx.effect("react", project=repo.project, comment_id=comment_id, content="confused")
    parts = []
    if answer.refused:
        parts.append(f"@{login} not done:\n" + "\n".join(f"- {r}" for r in answer.refused))
    if answer.help:
        parts.append("minipipe commands:\n\n" + help_text())
    if parts:
        ctx.effect("reply", project=repo.project, number=number, body="\n\n".join(parts))


@router.register("issue_comment", action="created")
def on_comment(ctx: Context) -> None:
    issue, comment = ctx.payload["issue"], ctx.payload["comment"]
    if (
        not issue.get("pull_request")
        or is_bot(ctx.payload.get("sender"))
        or is_bot(comment.get("user"))
    ):
        return
    items = parse(comment.get("body"))
    if not items:
        return
    repo = ctx.repo
    login = comment["user"]["login"]
    session, patch = ledger.session_and_open_patch(ctx.db, repo.project, issue["number"])
    if session is None:  # not a session PR: only help is ours to answer
        if any(isinstance(i, Command) and i.verb == Verb.HELP for i in items):
            respond(ctx, repo, issue["number"], login, Answer([], [], help=True), comment["id"])
        return
    items = _heard(repo, login, items)
    if not items:
        return
    answer = run_commands(
        ctx, repo, session, items, comment["user"], source=comment["html_url"], target=patch
    )
    respond(ctx, repo, issue["number"], login, answer, comment["id"])


def _heard(repo: Repo, login: str, items: list[Command | Problem]) -> list[Command | Problem]:
    """Noise (unknown commands, lines past the cap) from a user who cannot read the
    repository is neither answered nor audited: a drive-by comment writes nothing."""
    if not any(isinstance(i, Problem) and i.noise for i in items):
        return items
    if permission_at_least(repo.api.permission(login), "read"):
        return items
    return [i for i in items if not (isinstance(i, Problem) and i.noise)]


@router.register("pull_request_review", action="submitted")
def on_review(ctx: Context) -> None:
    """A review decides the patch of the commit it was given on (``commit_id``), not a
    newer one its reviewer never saw."""
    review, pr = ctx.payload["review"], ctx.payload["pull_request"]
    verb = {"approved": Verb.APPROVE, "changes_requested": Verb.REVIEW}.get(
        str(review.get("state", "")).lower()
    )
    if verb is None or is_bot(review.get("user")):
        return
    repo = ctx.repo
    session = registry.find_by_pr(ctx.db, repo.project, pr["number"])
    if session is None:
        return
    login, sha = review["user"]["login"], review.get("commit_id")
    target = ledger.find_patch(ctx.db, repo.project, pr["number"], sha) if sha else None
    if sha and target is None:
        why = (
            f"this review was given on {sha[:12]}, which is not a recorded patch of this "
            "pull request; review its current head"
        )
        open_patch = ledger.open_patch(ctx.db, session.session_id)
        decisions.refuse(ctx.db, session, open_patch, login, review["html_url"], why)
        respond(ctx, repo, pr["number"], login, Answer([], [f"`/{verb}`: {why}"]), None)
        return
    items: list[Command | Problem] = [Command(verb, review.get("body") or "", 0)]
    answer = run_commands(
        ctx, repo, session, items, review["user"], source=review["html_url"], target=target
    )
    respond(ctx, repo, pr["number"], login, answer, None)


@router.register("pull_request_review", action="dismissed")
def on_review_dismissed(ctx: Context) -> None:
    """A dismissed approving review withdraws that reviewer's approval of the reviewed
    commit (carried over to the open patch or given on it), not one of another SHA."""
    review, pr = ctx.payload["review"], ctx.payload["pull_request"]
    repo = ctx.repo
    session = registry.find_by_pr(ctx.db, repo.project, pr["number"])
    if session is None:
        return
    patch = ledger.open_patch(ctx.db, session.session_id)
    reviewer = person(review["user"])
    if patch is None or reviewer is None:
        return
    sha = review.get("commit_id")
    mine = [a for a in ledger.approvers(patch) if a.who.same(reviewer)]
    if not mine or (sha and mine[0].sha and mine[0].sha != sha):
        return
    policy, error = repo.policy()
    by = (ctx.payload.get("sender") or {}).get("login", "github")
    ledger.cancel_approval(
        ctx.db,
        patch,
        reviewer,
        source=review["html_url"],
        required_approvals=policy.required_approvals,
        reason=f"approving review dismissed by {by}",
    )
    refresh_check_run(ctx, repo, patch, policy, error)


@router.register("check_run", action="requested_action")
def on_button(ctx: Context) -> None:
    """Approve / Reject pressed on our check run acts for the user who pressed it, on
    the patch that check run shows (its ``external_id``), never on a newer one."""
    run = ctx.payload["check_run"]
    repo = ctx.repo
    if (run.get("app") or {}).get("id") != repo.own_app_id:
        return
    identifier = (ctx.payload.get("requested_action") or {}).get("identifier")
    sender = ctx.payload["sender"]
    login = sender["login"]
    patch = ledger.find_patch_by_id(ctx.db, run.get("external_id") or "")
    if patch is None or identifier not in ("approve", "reject") or is_bot(sender):
        return
    session = registry.get_session(ctx.db, patch.session_id)
    if identifier == "approve":
        item = Command(Verb.APPROVE, "", 0)
    else:
        item = Command(Verb.REJECT, f"rejected with the check run button by @{login}", 0)
    answer = run_commands(ctx, repo, session, [item], sender, source=run["html_url"], target=patch)
    if answer.refused and session.pr_number is not None:
        respond(ctx, repo, session.pr_number, login, answer, None)
