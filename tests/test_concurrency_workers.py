"""Four worker processes drain 25 deliveries for each of ``PRS`` pull requests from one database.

Each PR gets a scripted life of 25 interleaved events: opened, CI results, pushes
(which supersede the open patch), ``/approve``, ``/approve cancel``, ``/reject``
and ``/review`` comments, as recorded payloads (``Scenario``'s). The workers run the
REAL router (``minipipe_gh.delivery.handlers.router``, every feature's handlers),
with GitHub answered by the suite's GitHub on a loopback port (tests/github_fake.py
served by tests/fake_github_server.py; each worker process is given its URL). The
router is wrapped only to append one audit row per delivery with its arrival index
and the monotonic start and end of its handling. Then:

- every delivery is done, handled exactly once, and all four workers took part;
- per PR, deliveries were handled in arrival order and never two at once;
- the same deliveries replayed one by one by a single worker in a fresh
  database (and a fresh GitHub) end with every patch in the same state, with the
  same audit trail.

The outcome of a PR's life depends on the order of its events (two approvals
queue a patch, a push supersedes it, a reject before the approval wins ...), so a
worker that reordered or overlapped one PR's deliveries would show here.

SQLite: the four processes contend on the file's write lock. PostgreSQL: they
claim with ``FOR UPDATE SKIP LOCKED``.

Each delivery is handled twice (four workers, then the one-worker replay, which
runs meanwhile), each with its GitHub reads and writes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from minipipe_gh.core.events import Event
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.delivery import handlers
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import PENDING, Worker
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.review.context import Context
from minipipe_gh.store import audit
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for
from minipipe_gh.store.models import AgentSession, AuditEntry, Delivery, Patch
from tests.fake_github_server import Served, create_app
from tests.github_fake import APP_ID, REPO, GitHubState
from tests.scenario import Scenario

P = PatchState
PROJECT = REPO
PRS = int(os.environ.get("MINIPIPE_LOAD_PRS", "24"))  # 600 deliveries: ~1.5 min on 2 cores
EVENTS_PER_PR = 25
WORKERS = 4
LEASE_S = 30  # a worker that died would be taken over in seconds
CLAIM_LIMIT = 20
POLICY = "review:\n  required_approvals: 2\n"  # two approvals queue a patch
ROLES = {"alice": "write", "bob": "write", "carol": "read"}
REVIEWERS = tuple(ROLES)
DEADLINE_S = 240
ULID = re.compile(r"\b[0-9a-z]{26}\b")
KINDS = {  # what happens next in a PR's life, and how often
    "green": 4,
    "red": 1,
    "approve": 5,
    "approve cancel": 1,
    "reject": 1,
    "review": 1,
    "push": 2,
}


# --- the deliveries ------------------------------------------------------------------------


def sha(pr: int, push: int) -> str:
    return f"{pr:08x}{push:032x}"


def pr_life(rng: random.Random, pr: int) -> list[tuple[str, dict[str, Any]]]:
    """(event name, what the payload needs) for one PR, in the order GitHub sends them."""
    push = 0
    life: list[tuple[str, dict[str, Any]]] = [
        ("pull_request", {"action": "opened", "sha": sha(pr, 0)})
    ]
    kinds, weights = list(KINDS), list(KINDS.values())
    for _ in range(EVENTS_PER_PR - 1):
        kind = rng.choices(kinds, weights)[0]
        if kind == "push":
            push += 1
            life.append(("pull_request", {"action": "synchronize", "sha": sha(pr, push)}))
        elif kind in ("green", "red"):
            # a suite for the head, now and then for the head before it (late CI)
            stale = push > 0 and rng.random() < 0.2
            conclusion = "success" if kind == "green" else "failure"
            life.append(("check_suite", {"sha": sha(pr, push - stale), "conclusion": conclusion}))
        else:
            body = {"reject": "/reject not like this"}.get(kind, f"/{kind}")
            life.append(("issue_comment", {"body": body, "login": rng.choice(REVIEWERS)}))
    return life


class Capture:
    """``Scenario``'s deliver: keep the payload instead of posting it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any], **_: Any) -> None:
        self.sent.append((event, data))


class NoTokens:
    """``Scenario`` is used for its payloads only; GitHub is the loopback one."""

    def allow_token_exchange(self) -> None:
        pass


def make_event(index: int, pr: int, name: str, spec: dict[str, Any]) -> Event:
    """The recorded payload for one step of PR ``pr``'s life, as GitHub would send it."""
    capture = Capture()
    sc = Scenario(capture, NoTokens(), number=pr, branch=f"minipipe/{pr:05d}-task")  # type: ignore[arg-type]
    if name == "pull_request":
        sc.sha = spec["sha"]
        sc.pr_event(spec["action"])
    elif name == "check_suite":
        sc.suite_completed(spec["sha"], spec["conclusion"])
    else:
        sc.comment(spec["body"], login=spec["login"], comment_id=100_000 + index)
    [(event, data)] = capture.sent
    if name == "check_suite":  # each suite is a suite of its own, as on GitHub
        data["check_suite"]["id"] = 200_000 + index
    return Event(f"load-{index:05d}", event, data, {"X-GitHub-Event": event})


def arrivals(seed: int = 7) -> list[Event]:
    """Every PR's life, interleaved at random as they would arrive from GitHub."""
    rng = random.Random(seed)
    lives = {pr: deque(pr_life(rng, pr)) for pr in range(1, PRS + 1)}
    out: list[Event] = []
    while lives:
        pr = rng.choice(list(lives))
        name, spec = lives[pr].popleft()
        out.append(make_event(len(out), pr, name, spec))
        if not lives[pr]:
            del lives[pr]
    return out


def store(database: Database, events: list[Event]) -> None:
    for start in range(0, len(events), 500):
        batch = [row_for(e) for e in events[start : start + 500]]
        assert len(insert_new(database.engine, batch)) == len(batch)


# --- GitHub: what it says about each PR, the same for both runs ----------------------------------


def github_for(events: list[Event]) -> GitHubState:
    """The repository as GitHub has it: every PR open at its last head, half of them on a
    high-risk path; CI on each pushed head as its life's last suite for it says (none yet:
    in progress); alice and bob may write, carol may read."""
    gh = GitHubState(policy=POLICY)
    for login, role in ROLES.items():
        gh.allow(login, role)
    ci: dict[str, str | None] = {}
    for e in events:
        if e.name == "pull_request":
            pr = e.payload["pull_request"]
            number = pr["number"]
            gh.prs[number] = {**pr, "state": "open"}
            path = "src/auth/login.py" if number % 2 else "docs/guide.md"
            gh.files[number] = [{"filename": path, "additions": 5, "deletions": 1}]
            ci.setdefault(pr["head"]["sha"], None)
        elif e.name == "check_suite":
            suite = e.payload["check_suite"]
            ci[suite["head_sha"]] = suite["conclusion"]
    for head, conclusion in ci.items():
        gh.suites[head] = [
            {
                "id": 1,
                "status": "completed" if conclusion else "in_progress",
                "conclusion": conclusion,
                "app": {"id": 42},
                "head_sha": head,
            }
        ]
    return gh


# --- the router: the real one, each delivery's handling logged ---------------------------------


class Logged(Router):
    """The app's router; after its handlers, one audit row with when the delivery ran."""

    def __init__(self) -> None:
        super().__init__(handlers.router)

    def dispatch(self, ctx: Context) -> int:
        start = time.monotonic()
        handled = super().dispatch(ctx)
        audit.record(
            ctx.db,
            entity="delivery",
            entity_id=ctx.event.delivery_id,
            project_id=PROJECT,
            actor=f"pid:{os.getpid()}",
            source="load",
            outcome="noted",
            details={
                "pr": pr_of(ctx.event),
                "index": int(ctx.event.delivery_id.removeprefix("load-")),
                "start": start,
                "end": time.monotonic(),
            },
        )
        return handled


def pr_of(event: Event) -> int:
    p = event.payload
    if event.name == "pull_request":
        return int(p["number"])
    if event.name == "check_suite":
        return int(p["check_suite"]["pull_requests"][0]["number"])
    return int(p["issue"]["number"])


def make_worker(database: Database, api_url: str, private_key: str, worker_id: str) -> Worker:
    app = GitHubApp(APP_ID, private_key, api_url)
    return Worker(database, Logged(), app, lease_seconds=LEASE_S, worker_id=worker_id)


# --- the worker processes ------------------------------------------------------------------------


def pending(database: Database) -> int:
    with database.unit() as s:
        return int(
            s.scalar(select(func.count()).select_from(Delivery).where(Delivery.status.in_(PENDING)))
        )


def drain(
    database: Database, worker: Worker, deadline: float, limit: int = CLAIM_LIMIT
) -> Counter[str]:
    """``run_once`` until nothing is pending (others may still hold the last ones)."""
    outcomes: Counter[str] = Counter()
    while time.monotonic() < deadline:
        done = worker.run_once(limit=limit)
        outcomes.update(o.status for o in done)
        if not done:
            if pending(database) == 0:
                break
            time.sleep(0.05)
    return outcomes


def _worker_process(
    db_url: str, api_url: str, private_key: str, worker_id: str, barrier: Any, out: Any
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    database = Database(db_url)
    try:
        worker = make_worker(database, api_url, private_key, worker_id)
        barrier.wait(timeout=120)
        started = time.monotonic()
        outcomes = drain(database, worker, started + DEADLINE_S)
        out.put((worker_id, os.getpid(), dict(outcomes), time.monotonic() - started, None))
    except BaseException as err:  # report, so the test fails with the cause
        out.put((worker_id, os.getpid(), {}, 0.0, repr(err)))
        raise
    finally:
        database.dispose()


# --- reading the results back -----------------------------------------------------------


def handling_log(database: Database) -> list[dict[str, Any]]:
    with database.unit() as s:
        rows = s.execute(
            select(AuditEntry.id, AuditEntry.entity_id, AuditEntry.actor, AuditEntry.details)
            .where(AuditEntry.entity == "delivery")
            .order_by(AuditEntry.id)
        ).all()
    return [
        {**details, "delivery": ident, "actor": actor, "id": n} for n, ident, actor, details in rows
    ]


def ledger_outcome(database: Database) -> dict[tuple[int, str], dict[str, Any]]:
    """Every patch, keyed by (PR, SHA), with what it ended as and how it got there.

    Ledger ids differ between databases; in the trail's reasons they are
    replaced by the patch's (PR, SHA).
    """
    with database.unit() as s:
        prs = dict(s.execute(select(AgentSession.session_id, AgentSession.pr_number)).all())
        patches = s.execute(
            select(Patch.ledger_id, Patch.session_id, Patch.patch_id, Patch.state, Patch.meta)
        ).all()
        audit_rows = s.execute(
            select(
                AuditEntry.entity_id,
                AuditEntry.from_state,
                AuditEntry.to_state,
                AuditEntry.outcome,
                AuditEntry.actor,
                AuditEntry.source,
                AuditEntry.reason,
            )
            .where(AuditEntry.entity == "patch")
            .order_by(AuditEntry.id)
        ).all()
    names = {p.ledger_id: f"<PR {prs[p.session_id]} {p.patch_id}>" for p in patches}
    trails: dict[str, list[tuple[Any, ...]]] = {}
    for ident, *row, reason in audit_rows:
        reason = ULID.sub(lambda m: names.get(m[0], m[0]), reason or "")
        trails.setdefault(ident, []).append((*row, reason))
    return {
        (prs[p.session_id], p.patch_id): {
            "state": p.state,
            "approvals": p.meta.get("approvals"),
            "review_status": p.meta.get("review_status"),
            "manual_review_required": p.meta.get("manual_review_required"),
            "trail": trails[p.ledger_id],
        }
        for p in patches
    }


# --- the test ---------------------------------------------------------------------------


def test_four_worker_processes_keep_each_pull_requests_order(
    database: Database, db_url: str, make_db: Callable[[], str], private_key_pem: str
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    events = arrivals()
    assert len(events) == PRS * EVENTS_PER_PR
    store(database, events)
    pr_by_delivery = {e.delivery_id: pr_of(e) for e in events}

    # The one-worker replay has its own database and its own GitHub and needs nothing from
    # the concurrent run, so it runs in this process meanwhile: the test takes as long as
    # the slower.
    replay_db = Database(make_db())
    store(replay_db, events)
    github, replay_github = github_for(events), github_for(events)

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    reports = []
    with Served(create_app(github)) as served, Served(create_app(replay_github)) as replay:
        api_url = f"{served.url}/api/v3"
        procs = [
            ctx.Process(
                target=_worker_process,
                args=(db_url, api_url, private_key_pem, f"w{i}", barrier, out),
            )
            for i in range(WORKERS)
        ]
        for p in procs:
            p.start()
        try:
            alone = make_worker(replay_db, f"{replay.url}/api/v3", private_key_pem, "alone")
            replayed = drain(replay_db, alone, time.monotonic() + DEADLINE_S)
            sequential = ledger_outcome(replay_db)
            for _ in procs:
                reports.append(out.get(timeout=DEADLINE_S + 120))
        finally:
            replay_db.dispose()
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10)
    assert [r[4] for r in reports] == [None] * WORKERS, reports
    assert [p.exitcode for p in procs] == [0] * WORKERS

    # every delivery done, each handled (and committed) exactly once, by every worker in turn
    with database.unit() as s:
        statuses = Counter(s.scalars(select(Delivery.status)))
    assert statuses == {"done": len(events)}, statuses
    log = handling_log(database)
    assert sorted(r["delivery"] for r in log) == sorted(pr_by_delivery)
    done_by = Counter(r["actor"] for r in log)
    assert len(done_by) == WORKERS, done_by  # all four processes took part
    assert sum(r[2].get("done", 0) for r in reports) == len(events)

    # per PR: handled in arrival order, one at a time
    by_pr: dict[int, list[dict[str, Any]]] = {}
    for r in log:
        assert r["pr"] == pr_by_delivery[r["delivery"]]
        by_pr.setdefault(r["pr"], []).append(r)
    assert len(by_pr) == PRS
    overlaps = []
    for pr, rows in by_pr.items():
        assert [r["index"] for r in rows] == sorted(r["index"] for r in rows), (
            f"PR {pr} committed out of order"
        )
        in_time = sorted(rows, key=lambda r: r["start"])
        assert [r["index"] for r in in_time] == [r["index"] for r in rows], (
            f"PR {pr} started out of order"
        )
        for before, after in zip(in_time, in_time[1:], strict=False):
            if after["start"] < before["end"]:
                overlaps.append((pr, before["index"], after["index"]))
    assert overlaps == []
    if not database.is_sqlite:  # (SQLite serialises the writers)
        # different PRs were handled side by side by different processes
        spans = sorted((r["start"], r["end"], r["actor"]) for r in log)
        assert any(b[0] < a[1] and a[2] != b[2] for a, b in zip(spans, spans[1:], strict=False))

    # the same deliveries, one worker, one at a time, in a fresh database: the same ledger
    assert replayed == {"done": len(events)}
    concurrent = ledger_outcome(database)
    assert len(sequential) == len(concurrent) > PRS
    assert set(sequential) == set(concurrent)
    differ = [k for k in sequential if sequential[k] != concurrent[k]]
    assert differ == [], [(k, concurrent[k], sequential[k]) for k in differ[:3]]
    # the lives were varied enough to mean something
    states = Counter(v["state"] for v in concurrent.values())
    assert {P.QUEUED, P.DROPPED, P.AWAITING_REVIEW, P.CREATED} <= set(states), states
    refused = sum(1 for v in concurrent.values() for t in v["trail"] if t[2] == "refused")
    assert refused > PRS // 2  # (100 for 200 PRs, as it was)
