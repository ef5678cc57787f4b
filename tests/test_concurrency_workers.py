"""Four worker processes drain 5,000 deliveries over 200 pull requests from one database.

Each PR gets a scripted life of 25 interleaved events: opened, CI results, pushes
(which supersede the open patch), ``/approve``, ``/approve cancel``, ``/reject``
and ``/review`` comments. The test router does the ledger's real work for each
(no GitHub), and appends one audit row per delivery with its arrival index and
the monotonic start and end of its handling. Then:

- every delivery is done, handled exactly once, and all four workers took part;
- per PR, deliveries were handled in arrival order and never two at once;
- the same deliveries replayed one by one by a single worker in a fresh
  database end with every patch in the same state, with the same audit trail.

The outcome of a PR's life depends on the order of its events (two approvals
queue a patch, a push drops it, a reject before the CI result wins ...), so a
worker that reordered or overlapped one PR's deliveries would show here.

SQLite: the four processes contend on the file's write lock. PostgreSQL: they
claim with ``FOR UPDATE SKIP LOCKED``.

Each delivery is handled twice (four workers, then the one-worker replay, which
runs meanwhile): about a minute on SQLite, two on PostgreSQL, on two cores.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from minipipe_gh.core.errors import Refused
from minipipe_gh.core.events import Event
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import PENDING, Worker
from minipipe_gh.review.context import Context
from minipipe_gh.store import audit, ledger, registry
from minipipe_gh.store.db import Database, attempt
from minipipe_gh.store.inbox import insert_new, row_for
from minipipe_gh.store.models import AgentSession, AuditEntry, Delivery, Patch

P = PatchState
PROJECT = "octo/load"
PRS = 200
EVENTS_PER_PR = 25  # 5,000 deliveries
WORKERS = 4
LEASE_S = 10  # short: a worker that died would be taken over in seconds
CLAIM_LIMIT = 50
REQUIRED_APPROVALS = 2
REVIEWERS = ("alice", "bob", "carol")
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


def make_event(index: int, pr: int, name: str, spec: dict[str, Any]) -> Event:
    repo = {"full_name": PROJECT}
    if name == "pull_request":
        data: dict[str, Any] = {
            "action": spec["action"],
            "number": pr,
            "pull_request": {"number": pr, "head": {"sha": spec["sha"]}},
        }
    elif name == "check_suite":
        data = {
            "action": "completed",
            "check_suite": {
                "head_sha": spec["sha"],
                "conclusion": spec["conclusion"],
                "pull_requests": [{"number": pr}],
            },
        }
    else:
        data = {
            "action": "created",
            "issue": {"number": pr, "pull_request": {"url": f"https://x/pulls/{pr}"}},
            "comment": {
                "id": 10_000 + index,
                "body": spec["body"],
                "user": {"login": spec["login"]},
            },
        }
    data.update(repository=repo, index=index)
    return Event(f"load-{index:05d}", name, data, {"X-GitHub-Event": name})


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


# --- the handlers: real ledger work, no GitHub -------------------------------------------------


def build_router() -> Router:
    router = Router()

    def logged(fn: Callable[[Context, int, str], None]) -> Callable[[Context], None]:
        def handle(ctx: Context) -> None:
            start = time.monotonic()
            pr = pr_of(ctx.event)
            src = f"delivery:{ctx.event.delivery_id}"
            fn(ctx, pr, src)
            audit.record(
                ctx.db,
                entity="delivery",
                entity_id=ctx.event.delivery_id,
                project_id=PROJECT,
                actor=f"pid:{os.getpid()}",
                source="load",
                outcome="noted",
                details={
                    "pr": pr,
                    "index": ctx.payload["index"],
                    "start": start,
                    "end": time.monotonic(),
                },
            )

        return handle

    @router.register("pull_request")
    @logged
    def on_pull_request(ctx: Context, pr: int, src: str) -> None:
        head = ctx.payload["pull_request"]["head"]["sha"]
        if ctx.event.action == "opened":
            session = registry.create_session(
                ctx.db,
                project_id=PROJECT,
                agent_type="codex",
                title=f"PR {pr}",
                actor="bot",
                source=src,
                pr_number=pr,
            )
            ledger.record_patch(ctx.db, session, head, actor="bot", source=src)
            return
        session = registry.find_by_pr(ctx.db, PROJECT, pr)
        assert session is not None, f"PR {pr} pushed before it was opened"
        old = ledger.open_patch(ctx.db, session.session_id)
        ledger.record_patch(ctx.db, session, head, actor="bot", source=src)
        if old is not None:
            ledger.supersede(ctx.db, old, head, actor="bot", source=src)

    @router.register("check_suite", action="completed")
    @logged
    def on_suite(ctx: Context, pr: int, src: str) -> None:
        suite = ctx.payload["check_suite"]
        patch = ledger.find_patch(ctx.db, PROJECT, pr, suite["head_sha"])
        assert patch is not None, f"CI for PR {pr} before its push was handled"
        if suite["conclusion"] == "success" and patch.state in (P.CREATED, P.QUARANTINED):
            ledger.transition(ctx.db, patch, P.VALIDATED, actor="ci", source=src, reason="green")
            ledger.apply_pending_review(
                ctx.db,
                patch,
                required_approvals=REQUIRED_APPROVALS,
                auto_queue_low_risk=False,
                source=src,
            )
        elif suite["conclusion"] == "failure" and patch.state == P.CREATED:
            ledger.transition(ctx.db, patch, P.QUARANTINED, actor="ci", source=src, reason="red")

    @router.register("issue_comment", action="created")
    @logged
    def on_comment(ctx: Context, pr: int, src: str) -> None:
        body, who = ctx.payload["comment"]["body"], ctx.payload["comment"]["user"]["login"]
        session = registry.find_by_pr(ctx.db, PROJECT, pr)
        assert session is not None, f"a comment on PR {pr} before it was opened"
        patch = ledger.open_patch(ctx.db, session.session_id)
        if patch is None:
            return
        try:
            with attempt(ctx.db):
                if body == "/approve":
                    ledger.approve_patch(
                        ctx.db, patch, who, source=src, required_approvals=REQUIRED_APPROVALS
                    )
                elif body == "/approve cancel":
                    ledger.cancel_approval(
                        ctx.db, patch, who, source=src, required_approvals=REQUIRED_APPROVALS
                    )
                elif body.startswith("/reject"):
                    ledger.reject_patch(
                        ctx.db, patch, who, body.removeprefix("/reject"), source=src
                    )
                else:
                    ledger.mark_for_review(ctx.db, patch, who, "asked", source=src)
        except Refused:
            pass  # audited by attempt(); the delivery is done all the same

    return router


def pr_of(event: Event) -> int:
    p = event.payload
    if event.name == "pull_request":
        return int(p["number"])
    if event.name == "check_suite":
        return int(p["check_suite"]["pull_requests"][0]["number"])
    return int(p["issue"]["number"])


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


def _worker_process(db_url: str, worker_id: str, barrier: Any, out: Any) -> None:
    database = Database(db_url)
    try:
        worker = Worker(database, build_router(), None, lease_seconds=LEASE_S, worker_id=worker_id)
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
    database: Database, db_url: str, make_db: Callable[[], str]
) -> None:
    events = arrivals()
    assert len(events) == PRS * EVENTS_PER_PR
    store(database, events)
    pr_by_delivery = {e.delivery_id: pr_of(e) for e in events}

    # The one-worker replay has its own database and needs nothing from the concurrent
    # run, so it runs in this process meanwhile: the test takes as long as the slower.
    replay_db = Database(make_db())
    store(replay_db, events)

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_worker_process, args=(db_url, f"w{i}", barrier, out))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    reports = []
    try:
        alone = Worker(replay_db, build_router(), None, lease_seconds=LEASE_S, worker_id="alone")
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
    assert refused > 100
