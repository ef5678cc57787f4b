"""Commands from PR comments, reviews and the check run's buttons.

Every command gets an answer: 👍 when it took effect; 😕 and one reply that
says why when it did not. Comments by bots are never commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import authz, decisions, ledger, registry
from ..authz import Actor
from ..commands import Command, Problem, Verb, help_text, parse
from ..context import Context
from ..db import attempt
from ..errors import Conflict, Refused
from ..models import AgentSession
from ..policy import permission_at_least
from ..routing import Router
from ..workflow import Repo, publish

router = Router()
MOVES = frozenset(Verb) - {Verb.HELP}


def is_bot(user: dict | None) -> bool:  # type: ignore[type-arg]
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


@dataclass
class Answer:
    done: list[str]
    refused: list[str]
    help: bool = False


def run_commands(
    ctx: Context,
    repo: Repo,
    session: AgentSession,
    items: list[Command | Problem],
    login: str,
    *,
    source: str,
) -> Answer:
    """Carry out commands in order; refusals are audited and do not stop the rest."""
    policy, error = repo.policy()
    patch = ledger.open_patch(ctx.db, session.session_id)
    facts = decisions.facts(session, patch)
    verbs = [i.verb for i in items if isinstance(i, Command)]
    permission = "none"
    if any(authz.required_permission(v, policy) for v in verbs):
        permission = repo.api.permission(login)
    teams: set[str] = set()
    if any(authz.needs_reviewer_list(v, policy, facts) for v in verbs) and (
        login.lower() not in policy.reviewers
    ):
        teams = {t for t in policy.reviewer_teams if login.lower() in repo.api.team_members(t)}
    actor = Actor(login, permission, teams=frozenset(teams))
    answer = Answer([], [])
    for item in items:
        if isinstance(item, Problem):
            decisions.refuse(ctx.db, session, patch, login, source, item.message)
            answer.refused.append(item.message)
            continue
        if item.verb == Verb.HELP:
            answer.help = True
            continue
        if error:
            msg = f"`/{item.verb}` is not carried out while the policy file is invalid: {error}"
            decisions.refuse(ctx.db, session, patch, login, source, msg)
            answer.refused.append(msg)
            continue
        try:
            with attempt(ctx.db):
                answer.done.append(
                    decisions.act(
                        ctx.db,
                        item.verb,
                        item.argument,
                        actor,
                        session,
                        patch,
                        policy,
                        source=source,
                    )
                )
        except (Refused, Conflict) as err:
            answer.refused.append(f"`/{item.verb}`: {err}")
    if patch is not None and answer.done:
        publish(ctx, repo, patch, policy, error)
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
    repo = Repo.of(ctx)
    login = comment["user"]["login"]
    session = registry.find_by_pr(ctx.db, repo.project, issue["number"])
    if session is None:  # not a session PR: only help is ours to answer
        if any(isinstance(i, Command) and i.verb == Verb.HELP for i in items):
            respond(ctx, repo, issue["number"], login, Answer([], [], help=True), comment["id"])
        return
    items = _heard(repo, login, items)
    if not items:
        return
    answer = run_commands(ctx, repo, session, items, login, source=comment["html_url"])
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
    review, pr = ctx.payload["review"], ctx.payload["pull_request"]
    verb = {"approved": Verb.APPROVE, "changes_requested": Verb.REVIEW}.get(
        str(review.get("state", "")).lower()
    )
    if verb is None or is_bot(review.get("user")):
        return
    repo = Repo.of(ctx)
    session = registry.find_by_pr(ctx.db, repo.project, pr["number"])
    if session is None:
        return
    login = review["user"]["login"]
    items: list[Command | Problem] = [Command(verb, review.get("body") or "", 0)]
    answer = run_commands(ctx, repo, session, items, login, source=review["html_url"])
    respond(ctx, repo, pr["number"], login, answer, None)


@router.register("pull_request_review", action="dismissed")
def on_review_dismissed(ctx: Context) -> None:
    """A dismissed approving review withdraws that reviewer's approval."""
    review, pr = ctx.payload["review"], ctx.payload["pull_request"]
    repo = Repo.of(ctx)
    session = registry.find_by_pr(ctx.db, repo.project, pr["number"])
    if session is None:
        return
    patch = ledger.open_patch(ctx.db, session.session_id)
    login = review["user"]["login"]
    if patch is None or login not in ledger.approvals(patch):
        return
    policy, error = repo.policy()
    by = (ctx.payload.get("sender") or {}).get("login", "github")
    ledger.cancel_approval(
        ctx.db,
        patch,
        login,
        source=review["html_url"],
        required_approvals=policy.required_approvals,
        reason=f"approving review dismissed by {by}",
    )
    publish(ctx, repo, patch, policy, error)


@router.register("check_run", action="requested_action")
def on_button(ctx: Context) -> None:
    """Approve / Reject pressed on our check run acts for the user who pressed it."""
    run = ctx.payload["check_run"]
    repo = Repo.of(ctx)
    if (run.get("app") or {}).get("id") != repo.own_app_id:
        return
    identifier = (ctx.payload.get("requested_action") or {}).get("identifier")
    login = ctx.payload["sender"]["login"]
    patch = ledger.find_patch_by_id(ctx.db, run.get("external_id") or "")
    if patch is None or identifier not in ("approve", "reject"):
        return
    session = registry.get_session(ctx.db, patch.session_id)
    if identifier == "approve":
        item = Command(Verb.APPROVE, "", 0)
    else:
        item = Command(Verb.REJECT, f"rejected with the check run button by @{login}", 0)
    answer = run_commands(ctx, repo, session, [item], login, source=run["html_url"])
    if answer.refused and session.pr_number is not None:
        respond(ctx, repo, session.pr_number, login, answer, None)
