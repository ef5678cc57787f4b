"""The ``minipipe-gh`` command line: a thin edge over the registry, ledger and worker."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any

import click
from github import GithubException

from minipipe_gh.conf import config
from minipipe_gh.core.commands import Verb
from minipipe_gh.core.errors import ConfigError, MinipipeError
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.review import off_github
from minipipe_gh.store import ledger, migrate, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.serialize import audit_dict, patch_dict, session_dict

EXIT_REFUSED = 2


class Ctx:
    """Settings and the database, opened on first use."""

    def __init__(self) -> None:
        self.settings = config.load()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            from minipipe_gh.conf.startup import check_database

            check_database(self.settings)  # a sentence, not a traceback, when it is wrong
            self.settings.instance_path.mkdir(parents=True, exist_ok=True)
            self._db = Database(self.settings.database_url)
        return self._db


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


def core_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the core's errors into one line on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ConfigError:
            raise  # the group prints it, the same for every command
        except MinipipeError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_REFUSED)

    return wrapper


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "level" in value:
        return value["level"]
    return str(value)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def emit_page(
    items: Iterable[dict[str, Any]], next_cursor: str | None, as_json: bool, columns: Sequence[str]
) -> None:
    rows = list(items)
    if as_json:
        emit_json({"items": rows, "next_cursor": next_cursor})
        return
    emit_table(rows, columns)
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
page_options = [
    click.option("--cursor", default=None, help="Cursor from the previous page."),
    click.option("--limit", default=50, show_default=True, type=int),
]


def paged(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(page_options):
        fn = opt(fn)
    return fn


class Main(click.Group):
    """Every command stops on a configuration error with its one message, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from minipipe_gh.conf.startup import EXIT_CONFIG

        try:
            return super().invoke(ctx)
        except ConfigError as err:
            click.echo(str(err), err=True)
            ctx.exit(EXIT_CONFIG)


@click.group(cls=Main)
@click.version_option(package_name="minipipe-gh")
def main() -> None:
    """minipipe-gh: agent sessions as PRs, every patch gated by review."""


# --- database -----------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
def db_upgrade(ctx: Ctx, revision: str) -> None:
    """Create or migrate the schema to the newest revision."""
    from minipipe_gh.conf.startup import check_database

    check_database(ctx.settings, migrated=False)
    ctx.settings.instance_path.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(ctx.settings.database_url, revision)
    click.echo(f"database at {revision}: {_safe_url(ctx.settings.database_url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- sessions -----------------------------------------------------------------

SESSION_COLUMNS = (
    "session_id",
    "project_id",
    "agent_type",
    "state",
    "branch",
    "pr_number",
    "title",
)
PATCH_COLUMNS = ("ledger_id", "project_id", "pr_number", "patch_id", "state", "risk", "created_at")


@main.group()
def sessions() -> None:
    """Agent sessions."""


@sessions.command("list")
@click.option("--project", "project_id", default=None, help="owner/name")
@click.option("--state", default=None)
@click.option("--agent", "agent_type", default=None)
@paged
@json_option
@pass_ctx
@core_errors
def sessions_list(
    ctx: Ctx,
    project_id: str | None,
    state: str | None,
    agent_type: str | None,
    cursor: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List sessions, newest first."""
    with ctx.db.unit() as s:
        page = registry.list_sessions(s, project_id, state, agent_type, cursor=cursor, limit=limit)
        emit_page(map(session_dict, page.items), page.next_cursor, as_json, SESSION_COLUMNS)


@sessions.command("show")
@click.argument("session_id")
@json_option
@pass_ctx
@core_errors
def sessions_show(ctx: Ctx, session_id: str, as_json: bool) -> None:
    """One session with its patches."""
    with ctx.db.unit() as s:
        data = session_dict(registry.get_session(s, session_id))
        data["patches"] = [
            patch_dict(p) for p in ledger.list_patches(s, session_id=session_id, limit=500).items
        ]
    if as_json:
        emit_json(data)
        return
    for key in SESSION_COLUMNS[1:] + ("base_branch", "head_sha", "created_at", "last_activity_at"):
        click.echo(f"{key:>17}: {_cell(data[key])}")
    click.echo()
    emit_table(data["patches"], PATCH_COLUMNS)


# --- reviews ------------------------------------------------------------------


@main.group()
def reviews() -> None:
    """The review queue: patches awaiting review, and open patches on hold."""


@reviews.command("list")
@click.option("--run-id", default=None)
@click.option("--workstream-id", default=None)
@click.option("--project", "project_id", default=None)
@paged
@json_option
@pass_ctx
@core_errors
def reviews_list(
    ctx: Ctx,
    run_id: str | None,
    workstream_id: str | None,
    project_id: str | None,
    cursor: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The review queue, oldest first: awaiting review, or open and on hold."""
    with ctx.db.unit() as s:
        page = ledger.list_patches_awaiting_review(
            s, run_id, workstream_id, project_id=project_id, cursor=cursor, limit=limit
        )
        emit_page(map(patch_dict, page.items), page.next_cursor, as_json, PATCH_COLUMNS)


reviewer_option = click.option(
    "--as",
    "reviewer",
    required=True,
    help="The GitHub login who decides: the rules of a PR comment by them apply.",
)


def _decide(ctx: Ctx, ledger_id: str, verb: Verb, text: str, reviewer: str) -> dict[str, Any]:
    """Decide as ``reviewer``, exactly as their comment would: their permission read from
    GitHub, reviewer lists, authors, required approvals (``off_github.decide``)."""
    settings = ctx.settings
    github = GitHubApp(settings.app_id, settings.private_key, settings.api_url, settings.public_url)
    try:
        return off_github.decide(ctx.db, github, ledger_id, verb, text, reviewer, source="cli")
    except GithubException as err:
        raise click.ClickException(f"GitHub answered {err.status}: {err.data}") from err


@reviews.command("approve")
@click.argument("ledger_id")
@click.option("--comment", default=None)
@reviewer_option
@pass_ctx
@core_errors
def reviews_approve(ctx: Ctx, ledger_id: str, comment: str | None, reviewer: str) -> None:
    """Approve a patch as a GitHub user, under the rules of their /approve comment."""
    result = _decide(ctx, ledger_id, Verb.APPROVE, comment or "", reviewer)
    click.echo(f"{ledger_id}: approved by {reviewer}, now {result['state']}")


@reviews.command("reject")
@click.argument("ledger_id")
@click.option("--reason", required=True, help="Why (required).")
@reviewer_option
@pass_ctx
@core_errors
def reviews_reject(ctx: Ctx, ledger_id: str, reason: str, reviewer: str) -> None:
    """Reject a patch as a GitHub user; a reason is required."""
    result = _decide(ctx, ledger_id, Verb.REJECT, reason, reviewer)
    click.echo(f"{ledger_id}: rejected by {reviewer}, now {result['state']}")


# --- audit --------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("export")
@click.option("--since", default=None, help="ISO-8601 time, e.g. 2026-01-01T00:00:00+00:00")
@click.option("--repo", "project_id", default=None, help="owner/name")
@pass_ctx
@core_errors
def audit_export(ctx: Ctx, since: str | None, project_id: str | None) -> None:
    """Print the audit trail as JSON lines."""
    from datetime import UTC, datetime

    from minipipe_gh.core.errors import Invalid
    from minipipe_gh.store import audit as audit_log

    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise Invalid(f"--since {since!r} is not an ISO-8601 time") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    with ctx.db.unit() as s:
        for row in audit_log.export(s, since=when, project_id=project_id):
            click.echo(json.dumps(audit_dict(row), sort_keys=True))


# --- serving and the worker -------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option(
    "--public-url", default=None, help="Where GitHub and browsers reach this server (PUBLIC_URL)."
)
@click.option("--no-worker", is_flag=True, help="Do not start the in-process worker.")
def run(host: str, port: int, public_url: str | None, no_worker: bool) -> None:
    """Development server with an in-process worker (migrates the database first)."""
    from minipipe_gh.delivery.runtime import freeze_startup_heap

    rt, app = prepare_run(host, port, public_url)
    if not no_worker:
        rt.start_worker_thread()
    freeze_startup_heap()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


def prepare_run(host: str, port: int, public_url: str | None) -> tuple[Any, Any]:
    """Everything ``run`` does before it serves: checks, ``SECRET_KEY``, migrations, the
    smee.io subscription, and the setup link on the console."""
    import dataclasses

    from minipipe_gh.conf import startup
    from minipipe_gh.delivery.runtime import Runtime
    from minipipe_gh.web import create_app

    settings = config.load()
    if public_url:
        settings = dataclasses.replace(settings, public_url=public_url.rstrip("/"))
    startup.check_development(settings)
    settings = keep_secret_key(settings)
    rt = Runtime.build(settings)
    rt.upgrade_db()
    app = create_app(runtime_obj=rt)
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    if settings.webhook_proxy_url:
        from minipipe_gh.delivery.smee import subscribe

        subscribe(rt, settings.webhook_proxy_url)
        click.echo(f"forwarding webhooks from {settings.webhook_proxy_url}")
    if not settings.has_app_credentials:
        base = settings.public_url or local
        click.echo("setup mode: no GitHub App credentials yet. To register the app, open")
        click.echo(f"    {base}/?token={rt.setup_token}")
        click.echo("(the token is this run's; anyone else who opens the server cannot register)")
    return rt, app


def keep_secret_key(settings: config.Settings) -> config.Settings:
    """The development server's ``SECRET_KEY``, made once and kept in ``.env``, so
    sign-ins survive a restart."""
    import dataclasses
    import secrets
    from pathlib import Path

    if settings.secret_key:
        return settings
    key = secrets.token_hex(32)
    env_file = settings.env_file or Path(".env")
    config.write_env(env_file, {"SECRET_KEY": key})
    click.echo(f"wrote a new SECRET_KEY to {env_file} (it signs sign-ins; keep it)", err=True)
    return dataclasses.replace(settings, secret_key=key)


@main.command()
@click.option("--once", is_flag=True, help="Handle every due delivery, then exit.")
@click.option(
    "--threads",
    default=16,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Deliveries handled at once (never two of one pull request).",
)
@pass_ctx
@core_errors
def worker(ctx: Ctx, once: bool, threads: int) -> None:
    """Handle deliveries from the inbox."""
    import signal
    import threading

    from minipipe_gh.conf.startup import check_database, check_production
    from minipipe_gh.delivery import logs
    from minipipe_gh.delivery.runtime import Runtime, freeze_startup_heap

    if once:
        ctx.settings.require_credentials()
        check_database(ctx.settings)
    else:
        check_production(ctx.settings)
    logs.setup()
    rt = Runtime.build(ctx.settings, threads=threads)
    w = rt.worker()
    if once:
        outcomes = w.run_once()
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        click.echo(f"handled {len(outcomes)} deliveries: {counts or 'none due'}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    freeze_startup_heap()
    w.run_forever(stop, threads=threads)


# --- deliveries ----------------------------------------------------------------

DELIVERY_COLUMNS = (
    "seq",
    "delivery_id",
    "event",
    "action",
    "repository",
    "status",
    "attempts",
    "received_at",
)


def delivery_dict(d: Any, *, full: bool = False) -> dict[str, Any]:
    data = {
        "seq": d.seq,
        "delivery_id": d.delivery_id,
        "event": d.event,
        "action": d.action,
        "installation_id": d.installation_id,
        "repository": d.repository,
        "order_key": d.order_key,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
        "last_error": d.last_error,
        "received_at": d.received_at.isoformat(),
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
    }
    if full:
        data["headers"] = d.headers
        data["effects"] = d.effects
        data["payload"] = json.loads(d.payload)
    return data


@main.group()
def deliveries() -> None:
    """Webhook deliveries in the inbox."""


@deliveries.command("list")
@click.option("--status", default=None, type=click.Choice(["queued", "effects", "done", "dead"]))
@click.option("--limit", default=50, show_default=True, type=int)
@json_option
@pass_ctx
@core_errors
def deliveries_list(ctx: Ctx, status: str | None, limit: int, as_json: bool) -> None:
    """Deliveries in the inbox, newest first."""
    from sqlalchemy import select

    from minipipe_gh.store.models import Delivery

    with ctx.db.unit() as s:
        q = select(Delivery).order_by(Delivery.seq.desc()).limit(limit)
        if status:
            q = q.where(Delivery.status == status)
        rows = [delivery_dict(d) for d in s.scalars(q)]
    emit_page(rows, None, as_json, DELIVERY_COLUMNS)


@deliveries.command("show")
@click.argument("ident")
@pass_ctx
@core_errors
def deliveries_show(ctx: Ctx, ident: str) -> None:
    """One delivery, with its payload, as JSON."""
    from minipipe_gh.delivery.worker import find_delivery

    with ctx.db.unit() as s:
        emit_json(delivery_dict(find_delivery(s, ident), full=True))


@deliveries.command("replay")
@click.argument("ident")
@click.option("--yes", is_flag=True, help="Replay a finished delivery without asking.")
@pass_ctx
@core_errors
def deliveries_replay(ctx: Ctx, ident: str, yes: bool) -> None:
    """Queue a delivery again (a dead one, typically).

    A finished delivery asks first, naming the GitHub writes a replay would send
    (those that have not succeeded: nothing reaches GitHub twice)."""
    from minipipe_gh.core.lost import replay_in_words
    from minipipe_gh.delivery.worker import find_delivery, replay, resent_by_replay

    with ctx.db.unit() as s:
        found = find_delivery(s, ident)
        status, effects = found.status, found.effects
    if status == "done" and not yes:
        kinds = [str(e.get("kind", "")) for e in resent_by_replay(effects)]
        click.echo(
            f"delivery {ident} already finished: a replay sends GitHub "
            f"{replay_in_words(bool(effects), kinds)}",
            err=True,
        )
        click.confirm("Replay it?", abort=True, err=True)
    d = replay(ctx.db, ident)
    click.echo(f"delivery {d.delivery_id} queued again ({d.status})")


@deliveries.command("send")
@click.argument("event")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--url",
    default="http://127.0.0.1:3000/webhook",
    show_default=True,
    help="The running app's webhook URL.",
)
@click.option("--delivery-id", default=None, help="X-GitHub-Delivery (default: a new UUID).")
@pass_ctx
@core_errors
def deliveries_send(ctx: Ctx, event: str, file: str, url: str, delivery_id: str | None) -> None:
    """Sign a recorded payload with the configured secret and post it, as `probot receive`
    does: EVENT is the X-GitHub-Event name (issue_comment), FILE the JSON payload."""
    send_delivery(ctx.settings, event, file, url, delivery_id)


def send_delivery(
    settings: config.Settings, event: str, file: str, url: str, delivery_id: str | None
) -> None:
    import uuid
    from pathlib import Path

    import requests

    from minipipe_gh.core.errors import Invalid
    from minipipe_gh.core.events import signature

    if not settings.webhook_secrets:
        raise ConfigError(
            "minipipe-gh cannot start:\n  - GITHUB_WEBHOOK_SECRET is not set: deliveries send "
            "signs with the running app's webhook secret; set it (or run in the app's folder, "
            "where its .env is)"
        )
    body = Path(file).read_bytes()
    try:
        json.loads(body)
    except ValueError:
        raise Invalid(f"{file} is not JSON: give a recorded webhook payload") from None
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature(body, settings.webhook_secrets[0]),
        "Content-Type": "application/json",
        "User-Agent": "minipipe-gh-deliveries-send",
    }
    try:
        resp = requests.post(url, data=body, headers=headers, timeout=30)
    except requests.RequestException as err:
        why = err.__class__.__name__
        raise Invalid(f"cannot reach {url} ({why}): is `minipipe-gh run` running?") from None
    click.echo(f"{resp.status_code} {resp.reason}: {resp.text.strip()}")
    if resp.status_code >= 300:
        sys.exit(EXIT_REFUSED)


@sessions.command("reap")
@click.option("--older-than", default=None, help="e.g. 7d, 12h (default: each repo's stale_after)")
@click.option("--dry-run", is_flag=True, help="Only list what would be paused.")
@json_option
@pass_ctx
@core_errors
def sessions_reap(ctx: Ctx, older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Pause active sessions with no activity for a while (reason: stale)."""
    from minipipe_gh.core.errors import Invalid
    from minipipe_gh.core.policy import parse_duration
    from minipipe_gh.delivery.maintenance import reap_stale
    from minipipe_gh.delivery.runtime import Runtime

    try:
        limit = parse_duration(older_than) if older_than else None
    except ValueError as err:
        raise Invalid(f"--older-than: {err}") from None
    rt = Runtime.build(ctx.settings)
    reaped = reap_stale(rt.database, rt.github, older_than=limit, dry_run=dry_run, source="cli")
    rows = [session_dict(s) for s in reaped]
    if as_json:
        emit_json({"dry_run": dry_run, "sessions": rows})
        return
    emit_table(rows, SESSION_COLUMNS)
    click.echo(f"{'would pause' if dry_run else 'paused'} {len(rows)} stale sessions")


@sessions.command("stats")
@click.option("--project", "project_id", default=None)
@json_option
@pass_ctx
@core_errors
def sessions_stats(ctx: Ctx, project_id: str | None, as_json: bool) -> None:
    """Per agent type: sessions, success rate, time to completion, review outcomes, cost."""
    from minipipe_gh.store.stats import agent_stats

    with ctx.db.unit() as s:
        rows = agent_stats(s, project_id=project_id)
    if as_json:
        emit_json({"items": rows})
        return
    for row in rows:
        row["top_rejection_reasons"] = (
            "; ".join(f"{r['reason']} ({r['count']})" for r in row["top_rejection_reasons"]) or None
        )
        row["cost_usd"] = row["usage"]["cost_usd"]
    emit_table(
        rows,
        (
            "agent_type",
            "sessions",
            "success_rate",
            "median_seconds_to_completion",
            "approval_rate",
            "rejection_rate",
            "top_rejection_reasons",
            "cost_usd",
            "merged_patches",
            "cost_per_merged_patch",
        ),
    )


@sessions.command("limits")
@click.option("--project", "project_id", required=True, help="The repository, owner/name.")
@json_option
@pass_ctx
@core_errors
def sessions_limits(ctx: Ctx, project_id: str, as_json: bool) -> None:
    """Per agent type: open sessions (created, active, paused) against
    agents.<type>.max_open_sessions in the repository's .github/minipipe.yml."""
    from sqlalchemy import func, select

    from minipipe_gh.gh.repo import load_policy
    from minipipe_gh.store.models import InstalledRepository
    from minipipe_gh.store.session_limits import counts

    with ctx.db.unit() as s:
        inst = s.scalars(
            select(InstalledRepository).where(
                func.lower(InstalledRepository.full_name) == project_id.lower()
            )
        ).first()
    if inst is None:
        raise click.ClickException(f"the GitHub App is not installed on {project_id}")
    github = GitHubApp(ctx.settings.app_id, ctx.settings.private_key, ctx.settings.api_url)
    try:
        policy, error = load_policy(github, github.repo(inst.installation_id, inst.full_name), None)
    except GithubException as err:
        raise click.ClickException(f"GitHub answered {err.status}: {err.data}") from err
    if error:
        raise click.ClickException(error)
    with ctx.db.unit() as s:
        rows = [
            {
                "agent_type": c.agent_type,
                "open": c.open,
                "limit": c.limit or None,
                "open_sessions": c.shown(),
                "rule": c.rule,
            }
            for c in counts(s, inst.full_name, policy)
        ]
    if as_json:
        emit_json({"project_id": inst.full_name, "items": rows})
        return
    emit_table(rows, ("agent_type", "open_sessions", "rule"))


# --- tokens -------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Bearer tokens for the bot API."""


@token.command("create")
@click.argument("name")
@click.option("--as", "login", required=True, help="The GitHub login the token acts as.")
@click.option("--repo", "repos", multiple=True, help="owner/name; repeat. Default: all.")
@pass_ctx
@core_errors
def token_create(ctx: Ctx, name: str, login: str, repos: tuple[str, ...]) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from minipipe_gh.store import tokens

    with ctx.db.unit() as s:
        _row, secret = tokens.create(s, name, login=login, repositories=list(repos) or None)
    click.echo(secret)
    click.echo(
        f"token {name!r} acts as {login} on {', '.join(repos) or 'all repositories'}; "
        "it is not shown again",
        err=True,
    )


@token.command("list")
@json_option
@pass_ctx
def token_list(ctx: Ctx, as_json: bool) -> None:
    """Tokens (never their secrets)."""
    from minipipe_gh.store import tokens

    with ctx.db.unit() as s:
        rows = [
            {
                "name": t.name,
                "login": t.login,
                "repositories": ", ".join(t.repositories) if t.repositories else "all",
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked": t.revoked_at is not None,
            }
            for t in tokens.listing(s)
        ]
    if as_json:
        emit_json({"items": rows})
    else:
        emit_table(rows, ("name", "login", "repositories", "created_at", "last_used_at", "revoked"))


@token.command("revoke")
@click.argument("name")
@pass_ctx
@core_errors
def token_revoke(ctx: Ctx, name: str) -> None:
    """Revoke a token at once."""
    from minipipe_gh.store import tokens

    with ctx.db.unit() as s:
        tokens.revoke(s, name)
    click.echo(f"token {name!r} revoked")


# --- the gate heals itself: reconcile, recover, what waits ----------------------------


def _app_runtime(ctx: Ctx) -> Any:
    """A runtime that can act as the app (reconcile and recover need its credentials)."""
    from minipipe_gh.core.errors import ConfigError
    from minipipe_gh.delivery.runtime import Runtime

    rt = Runtime.build(ctx.settings)
    if rt.github.app_id is None or not rt.github.private_key:
        raise ConfigError(
            "GITHUB_APP_ID and GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH) must be set "
            "to read GitHub as the app"
        )
    return rt


@main.command("reconcile")
@click.option("--repo", default=None, help="owner/name (default: every repository)")
@json_option
@pass_ctx
@core_errors
def reconcile_command(ctx: Ctx, repo: str | None, as_json: bool) -> None:
    """Compare GitHub with the ledger for every open session PR and queue the repairs."""
    from minipipe_gh.delivery.reconcile import reconcile

    rt = _app_runtime(ctx)
    report = reconcile(rt.database, rt.github, repo=repo)
    if as_json:
        emit_json(report.as_dict())
        return
    rows = [
        {"pr": f"{r.project}#{r.pr_number}", "repair": r.kind, "detail": r.detail}
        for r in report.repairs
    ]
    emit_table(rows, ("pr", "repair", "detail"))
    for why in report.skipped:
        click.echo(f"skipped {why}")
    click.echo(
        f"{len(report.repairs)} repairs queued for the worker; {report.pulls} session PRs in "
        f"{report.repositories} repositories looked at"
    )


@deliveries.command("recover")
@click.option("--since", default="72h", show_default=True, help="How far back: e.g. 72h, 2d.")
@click.option("--max", "max_redeliveries", default=200, show_default=True, type=int)
@json_option
@pass_ctx
@core_errors
def deliveries_recover(ctx: Ctx, since: str, max_redeliveries: int, as_json: bool) -> None:
    """Ask GitHub to redeliver the deliveries it failed to make and the inbox lacks."""
    from minipipe_gh.core.errors import Invalid
    from minipipe_gh.core.policy import parse_duration
    from minipipe_gh.delivery.recover import recover

    try:
        window = parse_duration(since)
    except ValueError as err:
        raise Invalid(f"--since: {err}") from None
    rt = _app_runtime(ctx)
    result = recover(rt.database, rt.github, since=window, max_redeliveries=max_redeliveries)
    if as_json:
        emit_json(result.as_dict())
        return
    for guid in result.asked:
        click.echo(f"asked for redelivery: {guid}")
    click.echo(
        f"{result.examined} deliveries in GitHub's log read, {result.failed} failed, "
        f"{len(result.in_inbox)} of those already in the inbox, {len(result.asked)} asked "
        f"for again" + (f", {result.left} left for the next run" if result.left else "")
    )


@main.group()
def patches() -> None:
    """Patches in the ledger."""


@patches.command("waiting")
@click.option("--older-than", default=None, help="Only patches waiting longer: e.g. 1h, 2d.")
@click.option("--project", "project_id", default=None, help="owner/name")
@click.option("--limit", default=50, show_default=True, type=int)
@json_option
@pass_ctx
@core_errors
def patches_waiting(
    ctx: Ctx, older_than: str | None, project_id: str | None, limit: int, as_json: bool
) -> None:
    """Open patches, longest waiting first, with what each waits for."""
    from minipipe_gh.core.errors import Invalid
    from minipipe_gh.core.policy import parse_duration
    from minipipe_gh.store.models import utcnow
    from minipipe_gh.store.waiting import waiting

    try:
        limit_age = parse_duration(older_than) if older_than else None
    except ValueError as err:
        raise Invalid(f"--older-than: {err}") from None
    now = utcnow()
    with ctx.db.unit() as s:
        rows = [
            w.as_dict(now)
            for w in waiting(s, older_than=limit_age, project_id=project_id, limit=limit, now=now)
        ]
    if as_json:
        emit_json({"items": rows})
        return
    for row in rows:
        row["waiting"] = _age(row["waiting_seconds"])
        row["pr"] = f"{row['project_id']}#{row['pr_number']}"
    emit_table(rows, ("ledger_id", "pr", "state", "waiting", "waits_for"))


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 60}m{seconds % 60}s"


# --- MCP --------------------------------------------------------------------------


@main.command("mcp")
def mcp_command() -> None:
    """Model Context Protocol server on stdio, over the bot API.

    Reads MINIPIPE_URL (this server's address) and MINIPIPE_TOKEN (a bot token).
    """
    from minipipe_gh.mcp_server import serve

    serve()
