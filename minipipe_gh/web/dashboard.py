"""The dashboard: server-rendered pages over the registry, the ledger and the inbox.

Every page and every action is scoped to the viewer's repositories
(``scoped``): another repository's session, patch or delivery is a 404, as
if it did not exist. Decisions go through ``off_github.decide``, the same rules
as a PR comment; the page only shows what the rules answered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError
from github import GithubException
from markupsafe import Markup, escape
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from minipipe_gh.core import authz, lost, people, waits
from minipipe_gh.core.authz import Actor, PullFacts
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.errors import (
    Conflict,
    Invalid,
    MinipipeError,
    NotFound,
    PermissionDenied,
    Refused,
)
from minipipe_gh.core.patch_states import OPEN, PatchState
from minipipe_gh.core.policy import Policy, guard_record, permission_at_least
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.delivery import worker
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.gh.repo import load_policy
from minipipe_gh.gh.rest import RepoAPI
from minipipe_gh.review import decisions, off_github
from minipipe_gh.store import audit, ledger, scoped, serialize, session_limits, stats
from minipipe_gh.store.models import AgentSession, Delivery, Patch, utcnow
from minipipe_gh.store.signins import Viewer
from minipipe_gh.web import charts
from minipipe_gh.web.oauth import current_viewer

log = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__)

DEFAULT_PAGE_SIZE = 25
REPLAY_PERMISSION = "maintain"  # maintainers and admins run the app's operations
DECISIONS = {"approve": Verb.APPROVE, "reject": Verb.REJECT}
Reply = str | tuple[str, int] | Response


def rt() -> Runtime:
    return current_app.extensions["minipipe"]


def page_size() -> int:
    return int(current_app.config.get("DASHBOARD_PAGE_SIZE", DEFAULT_PAGE_SIZE))


def signed_in(fn: Callable[..., Reply]) -> Callable[..., Reply]:
    """Pages need a viewer; without one, the sign-in page (401) that comes back here."""

    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Reply:
        viewer = current_viewer()
        if viewer is None:
            here = request.full_path if request.query_string else request.path
            target = here if request.method == "GET" else request.path
            return render_template("signin.html", next=target), 401
        return fn(viewer, *a, **kw)

    return wrapper


# -- template helpers (pure) ----------------------------------------------------------------


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "—"
    seconds = int(((now or utcnow()) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def ticks(text: str | None) -> Markup:
    """Refusals are written for GitHub comments: `code` spans become <code>, the rest escaped."""
    escaped = str(escape(text or ""))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def pr_url(session: AgentSession | None) -> str | None:
    """From ``GITHUB_WEB_URL``, never from metadata (a bot may write ``javascript:`` there)."""
    if session is None or session.pr_number is None:
        return None
    return f"{rt().settings.web_url}/{session.project_id}/pull/{session.pr_number}"


def page_url(cursor: str | None) -> str:
    """This page with the same filters, at ``cursor`` (None: the first page)."""
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    if cursor:
        args["cursor"] = cursor
    return url_for(request.endpoint or "dashboard.sessions", **(request.view_args or {}), **args)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    try:
        viewer = current_viewer()
    except SQLAlchemyError:  # an error page must render even when the database does not
        viewer = None
    return {
        "viewer": viewer,
        "pr_url": pr_url,
        "page_url": page_url,
        "waits_of": serialize.waiting_for,
        "plural": waits.plural,
    }


@bp.app_template_filter("ago")
def _ago(when: datetime | None) -> str:
    return ago(when)


@bp.app_template_filter("ticks")
def _ticks(text: str | None) -> Markup:
    return ticks(text)


# -- sessions ---------------------------------------------------------------------------------


@bp.get("/sessions")
@signed_in
def sessions(viewer: Viewer) -> Reply:
    filters = {k: request.args.get(k) or None for k in ("repo", "state", "agent")}
    with rt().database.unit() as s:
        page = scoped.sessions_page(
            s,
            viewer,
            project=filters["repo"],
            state=filters["state"],
            agent_type=filters["agent"],
            cursor=request.args.get("cursor"),
            limit=page_size(),
        )
        counts = scoped.patch_counts(s, [x.session_id for x in page.items])
        agents = scoped.agent_types(s, viewer)
        latest = {x.session_id: ledger.latest_patch(s, x.session_id) for x in page.items}
        waiting = {
            sid: serialize.waiting_for(p, next(x for x in page.items if x.session_id == sid))
            if p is not None
            else []
            for sid, p in latest.items()
        }
    mine = request.args.get("mine") == "1"
    rules = _Rules(viewer)
    on_me = {
        x.session_id: rules.waiting_on(x, latest[x.session_id], waiting[x.session_id])
        for x in page.items
    }
    rows = [x for x in page.items if on_me[x.session_id]] if mine else page.items
    return render_template(
        "sessions.html",
        page=page,
        rows=rows,
        latest=latest,
        waiting=waiting,
        on_me=on_me,
        mine=mine,
        counts=counts,
        agents=agents,
        states=list(SessionState),
        filters=filters,
        filtered=any(filters.values()) or mine,
    )


@bp.get("/sessions/<session_id>")
@signed_in
def session_page(viewer: Viewer, session_id: str) -> Reply:
    with rt().database.unit() as s:
        session = scoped.visible_session(s, viewer, session_id)
        patches = ledger.list_patches(s, session_id=session_id, limit=500).items
        history = audit.history(s, "session", session_id)
    return render_template(
        "session.html",
        work=session,
        patches=patches,
        history=history,
        holds=people.holds(session.meta),
    )


class _Rules:
    """The viewer as the rules of a comment see them, per repository, for one request:
    their permission (the collaborator API, cached), the repository's policy. When GitHub
    cannot say, nothing is "on them": the page must not promise what a decision refuses."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.repos: dict[str, tuple[RepoAPI, Policy] | None] = {}

    def repo(self, name: str) -> tuple[RepoAPI, Policy] | None:
        key = name.lower()
        if key not in self.repos:
            self.repos[key] = self._read(name)
        return self.repos[key]

    def _read(self, name: str) -> tuple[RepoAPI, Policy] | None:
        repo = self.viewer.repo(name)
        if repo is None:
            return None
        try:
            api = rt().github.repo(repo.installation_id, repo.full_name)
            policy, error = load_policy(rt().github, api, None)
        except Exception:  # noqa: BLE001 (GitHub down, refusing, or unconfigured: "unknown")
            log.info("policy of %s unknown: nothing shown as waiting on its viewers", name)
            return None
        return None if error else (api, policy)  # an invalid policy: nothing moves

    def actor(self, name: str, facts: PullFacts) -> Actor | None:
        found = self.repo(name)
        if found is None:
            return None
        api, policy = found
        verbs = [Verb.APPROVE, Verb.HOLD_CANCEL]
        try:
            return authz.gather(api, self.viewer.login, policy, facts, verbs, need_permission=True)
        except Exception:  # noqa: BLE001 (as above: the permission is unknown)
            log.info("permission of %s on %s unknown", self.viewer.login, name)
            self.repos[name.lower()] = None
            return None

    def waiting_on(
        self, session: AgentSession, patch: Patch | None, waiting: list[waits.Wait]
    ) -> bool:
        """Whether the open patch waits on the viewer (``waits.waiting_on``, under ``authz``)."""
        if patch is None or not waiting:
            return False
        facts = decisions.facts(session, patch)
        actor = self.actor(session.project_id, facts)
        found = self.repos.get(session.project_id.lower())
        if actor is None or found is None:
            return False
        return waits.waiting_on(
            actor,
            waiting,
            policy=found[1],
            facts=facts,
            holds=people.holds(session.meta),
            approved=[a.who.login for a in people.approvals(patch.meta)],
        )


# -- review ---------------------------------------------------------------------------------


@bp.get("/review")
@signed_in
def review(viewer: Viewer) -> Reply:
    repo = request.args.get("repo") or None
    with rt().database.unit() as s:
        page = scoped.review_page(
            s, viewer, project=repo, cursor=request.args.get("cursor"), limit=page_size()
        )
        owners = scoped.sessions_by_id(s, [p.session_id for p in page.items])
    return render_template("review.html", page=page, owners=owners, repo=repo, now=utcnow())


@bp.get("/patches/<ledger_id>")
@signed_in
def patch_page(viewer: Viewer, ledger_id: str) -> Reply:
    return _patch(viewer, ledger_id)


def _patch(
    viewer: Viewer,
    ledger_id: str,
    *,
    error: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> Reply:
    with rt().database.unit() as s:
        patch = scoped.visible_patch(s, viewer, ledger_id)
        session = s.get(AgentSession, patch.session_id)
        history = ledger.history(s, ledger_id)
    html = render_template(
        "patch.html",
        patch=patch,
        work=session,
        history=history,
        guard=guard_record(patch.meta),
        can_approve=patch.state in OPEN - {PatchState.QUEUED},
        can_reject=patch.state in OPEN,
        error=error,
        form=form or {},
    )
    return html, status


@bp.post("/patches/<ledger_id>/<verb>")
@signed_in
def decide(viewer: Viewer, ledger_id: str, verb: str) -> Reply:
    if verb not in DECISIONS:
        raise NotFound(f"no such action: {verb}")
    with rt().database.unit() as s:
        scoped.visible_patch(s, viewer, ledger_id)  # an unseen patch is a 404 whatever was posted
    text = (request.form.get("reason" if verb == "reject" else "comment") or "").strip()
    form = {"verb": verb, "text": text}
    if verb == "reject" and not text:
        return _patch(viewer, ledger_id, error="A rejection needs a reason.", status=400, form=form)
    raw_version = request.form.get("version") or ""
    version = int(raw_version) if raw_version.isdigit() else None
    try:
        result = off_github.decide(
            rt().database,
            rt().github,
            ledger_id,
            DECISIONS[verb],
            text,
            viewer.login,
            source="dashboard",
            version=version,
            allowed=viewer.can_see,
        )
    except PermissionDenied as err:
        return _patch(viewer, ledger_id, error=str(err), status=403, form=form)
    except (Refused, Conflict) as err:
        return _patch(viewer, ledger_id, error=str(err), status=409, form=form)
    except GithubException as err:
        return _patch(viewer, ledger_id, error=_github_message(err), status=502, form=form)
    done = "Approved" if verb == "approve" else "Rejected"
    waiting = result.get("waiting_for") or []
    held = [w["summary"] for w in waiting if w["kind"] == "hold"]
    then = f" {' '.join(held)}" if held else ""
    flash(f"{done} by @{viewer.login}: the patch is {result['state']}.{then}", "ok")
    return redirect(url_for(".patch_page", ledger_id=ledger_id), 303)


# -- deliveries ---------------------------------------------------------------------------------


def resends(d: Delivery) -> str:
    """What replaying ``d`` sends to GitHub, in words (``worker.resent_by_replay``)."""
    sent = worker.resent_by_replay(d.effects)
    return lost.replay_in_words(bool(d.effects), (str(e.get("kind", "")) for e in sent))


@bp.get("/deliveries")
@signed_in
def deliveries(viewer: Viewer) -> Reply:
    with rt().database.unit() as s:
        page = scoped.dead_page(s, viewer, cursor=request.args.get("cursor"), limit=page_size())
        described = {
            d.delivery_id: lost.describe(d.event, d.action, d.payload, d.last_error)
            for d in page.items
        }
        resend = {d.delivery_id: resends(d) for d in page.items}
    allowed = {name: _may_replay(viewer, name) for name in {d.repository for d in page.items}}
    return render_template(
        "deliveries.html",
        page=page,
        needed=REPLAY_PERMISSION,
        described=described,
        resend=resend,
        allowed=allowed,
    )


@bp.get("/deliveries/find")
@signed_in
def find_delivery(viewer: Viewer) -> Reply:
    """The deliveries page's "replay a delivery" box: to that delivery's replay page."""
    ident = (request.args.get("delivery") or "").strip()
    if not ident:
        return _refusal(400, "Give the delivery's GUID (the X-GitHub-Delivery header).")
    with rt().database.unit() as s:
        d = scoped.visible_delivery(s, viewer, ident)
        return redirect(url_for(".replay_page", delivery_id=d.delivery_id), 303)


def _may_replay(viewer: Viewer, repository: str | None) -> bool:
    """Replay is offered only to those the replay itself would let through (the answer is
    cached a short while); when GitHub cannot say, it is not offered."""
    repo = viewer.repo(repository)
    if repo is None:
        return False
    try:
        permission = rt().github.repo(repo.installation_id, repo.full_name).permission(viewer.login)
    except Exception:  # noqa: BLE001 (GitHub down, refusing, or unconfigured: all say "unknown")
        log.info("permission of %s on %s unknown: Replay not offered", viewer.login, repository)
        return False
    return permission_at_least(permission, REPLAY_PERMISSION)


def _replay_page(
    viewer: Viewer, delivery_id: str, *, notice: str | None = None, status: int = 200
) -> Reply:
    """One delivery, what was lost and what a replay re-sends, with the confirming button."""
    with rt().database.unit() as s:
        d = scoped.visible_delivery(s, viewer, delivery_id)
        described = lost.describe(d.event, d.action, d.payload, d.last_error)
        resend = resends(d)
    html = render_template(
        "replay.html",
        d=d,
        lost=described,
        resend=resend,
        busy=d.status not in ("dead", "done"),
        allowed=_may_replay(viewer, d.repository),  # GitHub is asked outside the transaction
        needed=REPLAY_PERMISSION,
        notice=notice,
    )
    return html, status


@bp.get("/deliveries/<delivery_id>/replay")
@signed_in
def replay_page(viewer: Viewer, delivery_id: str) -> Reply:
    return _replay_page(viewer, delivery_id)


@bp.post("/deliveries/<delivery_id>/replay")
@signed_in
def replay(viewer: Viewer, delivery_id: str) -> Reply:
    """A dead delivery replays at once; a finished one only once the viewer has confirmed
    on its replay page, which says what it re-sends (``confirm`` is the status they saw)."""
    with rt().database.unit() as s:
        d = scoped.visible_delivery(s, viewer, delivery_id)
        status, repository = d.status, d.repository
    if status not in ("dead", "done"):
        return _refusal(
            409,
            f"Delivery {delivery_id} is {status}: the worker is still on it, so there is "
            "nothing to replay yet.",
        )
    repo = viewer.repo(repository)
    assert repo is not None  # visible_delivery checked it
    permission = rt().github.repo(repo.installation_id, repo.full_name).permission(viewer.login)
    if not permission_at_least(permission, REPLAY_PERMISSION):
        return _refusal(
            403,
            f"@{viewer.login} has `{permission}` permission on {repo.full_name}; "
            f"replaying a delivery needs `{REPLAY_PERMISSION}` or `admin`.",
        )
    if status == "done" and request.form.get("confirm") != "done":
        return _replay_page(
            viewer,
            delivery_id,
            status=409,
            notice=f"Delivery {delivery_id} already finished: only dead deliveries are "
            "replayed from here without asking. Confirm below to replay it.",
        )
    worker.replay(rt().database, delivery_id)
    log.info("%s replayed %s delivery %s from the dashboard", viewer.login, status, delivery_id)
    flash(f"Delivery {delivery_id} is queued again; the worker picks it up shortly.", "ok")
    return redirect(url_for(".deliveries"), 303)


# -- stats -----------------------------------------------------------------------------------


@bp.get("/stats")
@signed_in
def stats_page(viewer: Viewer) -> Reply:
    """One repository at a time: ``stats.agent_stats`` must never mix in an unseen one."""
    wanted = request.args.get("repo") or (viewer.names[0] if viewer.names else None)
    repo = viewer.repo(wanted)
    if wanted and repo is None:
        raise NotFound(f"repository {wanted} not found")
    rows: list[dict[str, Any]] = []
    held: list[session_limits.OpenCount] = []
    policy: Policy | None = None
    if repo is not None:
        policy = _policy_or_none(repo)
        with rt().database.unit() as s:
            rows = stats.agent_stats(s, project_id=repo.full_name)
            held = session_limits.counts(s, repo.full_name, policy)
    by_state = charts.stacked(
        [(r["agent_type"], r["by_state"]) for r in rows], charts.SESSION_COLORS
    )
    reviews = charts.stacked([(r["agent_type"], _decisions(r)) for r in rows], charts.REVIEW_COLORS)
    return render_template(
        "stats.html",
        rows=rows,
        repo=repo,
        by_state=by_state,
        reviews=reviews,
        held={h.agent_type: h for h in held},
        policy_unread=repo is not None and policy is None,
    )


def _policy_or_none(repo: Any) -> Policy | None:
    """The repository's policy for the open-session limits; None when GitHub cannot
    be asked now or the file is invalid (the page then shows no limits, and says so)."""
    try:
        api = rt().github.repo(repo.installation_id, repo.full_name)
        policy, error = load_policy(rt().github, api, None)
    except (GithubException, OSError) as err:
        current_app.logger.info("policy of %s not read: %s", repo.full_name, err)
        return None
    return None if error else policy


def _decisions(row: dict[str, Any]) -> dict[str, int]:
    decided = row["patches_decided"]
    approved = round((row["approval_rate"] or 0) * decided)
    return {"approved": approved, "rejected": decided - approved}


# -- errors ------------------------------------------------------------------------------------


def _refusal(status: int, message: str) -> tuple[str, int]:
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Refused"}
    html = render_template(
        "error.html", code=status, title=titles.get(status, "Error"), message=message
    )
    return html, status


def _github_message(err: GithubException) -> str:
    data = err.data if isinstance(err.data, dict) else {}
    return (
        f"GitHub answered {err.status}: {data.get('message') or 'no message'}. Try again shortly."
    )


@bp.errorhandler(MinipipeError)
def _core_error(err: MinipipeError) -> tuple[str, int]:
    if isinstance(err, NotFound):
        return _refusal(404, str(err))
    if isinstance(err, Invalid):
        return _refusal(400, str(err))
    return _refusal(409, str(err))


@bp.app_errorhandler(CSRFError)
def _csrf_error(err: CSRFError) -> Any:
    return _refusal(
        400,
        f"{err.description} This form was not sent from this site or has expired: "
        "reload the page and try again.",
    )


def http_error_page(err: HTTPException) -> Any:
    """An HTTP error as a page, for people (the factory routes API paths to JSON)."""
    code = err.code or 500
    return render_template("error.html", code=code, title=err.name, message=err.description), code


@bp.app_errorhandler(GithubException)
def _github_error(err: GithubException) -> Any:
    log.warning("GitHub call failed during a dashboard request: %s", err)
    return _refusal(502, _github_message(err))


SERVER_ERROR = "Something went wrong on our side; it has been logged. Try again shortly."


def server_error_page(err: InternalServerError) -> Any:
    message = SERVER_ERROR
    return render_template("error.html", code=500, title="Server error", message=message), 500
