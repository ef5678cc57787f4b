"""The worker: real routers on real deliveries, ordering per pull request, leases, retries.

Time is moved, not slept: every worker here gets a ``Clock`` (real time plus an
offset the test advances). GitHub is faked at the HTTP layer (``github``), so
PyGithub's real requests, exceptions and headers reach the worker.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from github import BadCredentialsException, GithubException, RateLimitExceededException
from sqlalchemy import select

from minipipe_gh.delivery import worker
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.delivery.worker import Worker, retry_delay
from minipipe_gh.gh import writes
from minipipe_gh.gh.effects import EffectContext
from minipipe_gh.review.context import Context
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import Delivery, Installation, InstalledRepository, utcnow
from tests.support import WIRE, payload

COMMENT = "test_worker.comment"  # an effect kind of this module only
COMMENTS = "/repos/Codertocat/Hello-World/issues/{}/comments"


def post_comment(ectx: EffectContext, spec: dict[str, Any]) -> None:
    ectx.gh.requester.requestJsonAndCheck(
        "POST", COMMENTS.format(spec["number"]), input={"body": spec["body"]}
    )


class Clock:
    """Real time plus an offset that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


EXECUTORS = writes.EXECUTORS.with_kinds(gate={COMMENT: post_comment})


def make_worker(rt: Runtime, router: Router, **kw: Any) -> Worker:
    kw.setdefault("max_attempts", rt.settings.max_attempts)
    kw.setdefault("executors", EXECUTORS)
    return Worker(rt.database, router, rt.github, **kw)


def row(rt: Runtime, delivery_id: str) -> Delivery:
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == delivery_id)).one()
        s.expunge(d)
        return d


_EDITS = itertools.count()


def pr_payload(number: int) -> dict[str, Any]:
    """A distinct event each call, as GitHub's are (``updated_at`` moves on): the same
    body twice would be one event, recognised by its digest."""
    updated = datetime(2019, 5, 15, 15, 20) + timedelta(seconds=next(_EDITS))
    return payload(
        "pull_request.opened",
        number=number,
        pull_request__number=number,
        pull_request__updated_at=updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def commenting_router(handled: list[str]) -> Router:
    """Each pull_request delivery asks for one comment on its PR."""
    router = Router()

    @router.register("pull_request")
    def comment(ctx: Context) -> None:
        handled.append(ctx.event.delivery_id)
        ctx.effect(COMMENT, number=ctx.payload["number"], body="hi")

    return router


# --- the real router ------------------------------------------------------------------


def installations(rt: Runtime) -> dict[int, tuple[str, bool]]:
    with rt.database.unit() as s:
        return {
            i.installation_id: (i.account, i.suspended_at is not None)
            for i in s.scalars(select(Installation))
        }


def repositories(rt: Runtime) -> dict[str, int]:
    with rt.database.unit() as s:
        return {r.full_name: r.installation_id for r in s.scalars(select(InstalledRepository))}


def test_installation_events_keep_the_installations_table(deliver, rt):
    inst = 957387
    assert deliver("installation", payload("installation.created")).status_code == 202
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    assert installations(rt) == {inst: ("Codertocat", False)}
    assert repositories(rt) == {"Codertocat/Hello-World": inst}

    deliver("installation_repositories", payload("installation_repositories.added"))
    deliver("installation", payload("installation.created", action="suspend"))
    assert [o.status for o in rt.worker().run_once()] == ["done", "done"]
    assert installations(rt) == {inst: ("Codertocat", True)}
    assert repositories(rt) == {"Codertocat/Hello-World": inst, "Codertocat/Space": inst}

    deliver("installation", payload("installation.created", action="unsuspend"))
    rt.worker().run_once()
    assert installations(rt) == {inst: ("Codertocat", False)}

    # another installation comes and goes; the first one is untouched
    deliver("installation", payload("installation.deleted", action="created"))
    rt.worker().run_once()
    assert set(installations(rt)) == {inst, 2}
    assert repositories(rt)["octocat/Hello-World"] == 2
    deliver("installation", payload("installation.deleted"))
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    assert installations(rt) == {inst: ("Codertocat", False)}
    assert repositories(rt) == {"Codertocat/Hello-World": inst, "Codertocat/Space": inst}

    with rt.database.unit() as s:
        rows = s.scalars(select(Delivery).order_by(Delivery.seq)).all()
    assert [(d.status, d.attempts) for d in rows] == [("done", 1)] * 6
    assert all(d.order_key.startswith("installation:") for d in rows)


# --- order per pull request -----------------------------------------------------------


def test_one_pull_requests_deliveries_run_in_order_and_a_backoff_holds_only_that_pr(deliver, rt):
    handled: list[str] = []
    failed_once: set[str] = set()
    router = Router()

    @router.register("pull_request")
    def record(ctx: Context) -> None:
        ident = ctx.event.delivery_id
        if ident == "a1" and ident not in failed_once:
            failed_once.add(ident)
            raise RuntimeError("flaky")
        handled.append(ident)

    for ident, number in [("a1", 2), ("a2", 2), ("b1", 3), ("a3", 2), ("b2", 3)]:
        assert deliver("pull_request", pr_payload(number), delivery_id=ident).status_code == 202
    seq = {d: row(rt, d).seq for d in ("a1", "a2", "a3", "b1", "b2")}
    assert row(rt, "a1").order_key == "Codertocat/Hello-World#2"
    assert row(rt, "b1").order_key == "Codertocat/Hello-World#3"

    clock = Clock()
    w = make_worker(rt, router, clock=clock)
    assert w.claim() == [seq["a1"], seq["b1"]]  # only the head of each key
    assert w.process(seq["a1"]).status == "retry"
    assert w.process(seq["b1"]).status == "done"

    # a1 waits out its backoff: nothing behind it is claimed, PR 3 carries on
    assert w.claim() == [seq["b2"]]
    assert w.process(seq["b2"]).status == "done"
    assert w.claim() == []
    assert [row(rt, d).status for d in ("a1", "a2", "a3")] == ["queued"] * 3
    assert [row(rt, d).attempts for d in ("a1", "a2", "a3")] == [1, 0, 0]

    clock.advance(60)
    assert [o.delivery_id for o in w.run_once()] == ["a1", "a2", "a3"]
    assert [d for d in handled if d.startswith("a")] == ["a1", "a2", "a3"]
    assert [d for d in handled if d.startswith("b")] == ["b1", "b2"]
    assert row(rt, "a1").attempts == 2


def test_two_workers_never_hold_two_deliveries_of_one_pull_request(deliver, rt, db_url):
    arrival: dict[int, list[str]] = {2: [], 3: [], 4: []}
    for i in range(15):
        number = (2, 3, 4)[i % 3]
        ident = f"pr{number}-{i}"
        deliver("pull_request", pr_payload(number), delivery_id=ident)
        arrival[number].append(ident)
    total = sum(len(v) for v in arrival.values())

    handled: dict[str, list[str]] = {}
    router = Router()

    @router.register("pull_request")
    def record(ctx: Context) -> None:
        key = f"{ctx.event.repository}#{ctx.payload['number']}"
        handled.setdefault(key, []).append(ctx.event.delivery_id)
        time.sleep(0.002)

    with rt.database.unit() as s:
        key_of = {d.seq: d.order_key for d in s.scalars(select(Delivery))}

    lock = threading.Lock()
    held: dict[str, tuple[str, int]] = {}  # order key -> (worker, seq) while leased
    violations: list[str] = []
    claims: list[int] = []
    barrier = threading.Barrier(2)

    def run(worker_id: str) -> None:
        database = Database(db_url)
        w = Worker(database, router, None, worker_id=worker_id)
        barrier.wait(timeout=10)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                seqs = w.claim(limit=5)  # more than there are keys
                with lock:
                    claims.extend(seqs)
                    for seq in seqs:
                        key = key_of[seq]
                        if key in held:
                            violations.append(f"{worker_id} got {seq} while {held[key]} held {key}")
                        held[key] = (worker_id, seq)
                    if len(claims) >= total and not held and not seqs:
                        return
                for seq in seqs:
                    # finishing and releasing happen under the lock, so a claim
                    # checked afterwards can only follow a finished delivery
                    with lock:
                        outcome = w.process(seq)
                        if outcome.status != "done":
                            violations.append(f"{worker_id}: {seq} ended {outcome.status}")
                        del held[key_of[seq]]
                if not seqs:
                    time.sleep(0.001)
        finally:
            database.dispose()

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert violations == []
    assert sorted(claims) == sorted(key_of)  # each delivery claimed exactly once
    with rt.database.unit() as s:
        assert {d.status for d in s.scalars(select(Delivery))} == {"done"}
    assert handled == {f"Codertocat/Hello-World#{n}": ids for n, ids in arrival.items()}


# --- leases -------------------------------------------------------------------------------


def test_a_dead_workers_lease_expires_and_another_worker_finishes_the_delivery(deliver, rt):
    deliver("installation", payload("installation.created"), delivery_id="inst-1")
    a = rt.worker(worker_id="A")
    [seq] = a.claim()  # ... and A dies here

    clock = Clock()
    b = rt.worker(worker_id="B", clock=clock)
    assert b.claim() == []
    assert b.run_once() == []
    clock.advance(rt.settings.lease_seconds - 5)
    assert b.claim() == []

    clock.advance(10)
    assert b.claim() == [seq]
    # A comes back to life late: its lease is gone, it must not handle the delivery
    assert a.process(seq).status == "lost"
    assert installations(rt) == {}
    assert b.process(seq).status == "done"

    d = row(rt, "inst-1")
    assert (d.status, d.attempts, d.lease_owner, d.lease_expires_at) == ("done", 2, None, None)
    assert installations(rt) == {957387: ("Codertocat", False)}


TOKEN_EXCHANGE = ("POST", "/app/installations/1/access_tokens", {"permissions": {}})


def comment_post(number: int = 2) -> tuple[str, str, Any]:
    return ("POST", COMMENTS.format(number), {"body": "hi"})


def test_a_worker_that_lost_its_lease_does_not_perform_the_effects_either(deliver, rt, github):
    github.allow_token_exchange()
    github.add("POST", COMMENTS.format(2), {"message": "Server Error"}, status=502)
    github.add("POST", COMMENTS.format(2), {"id": 1, "body": "hi"}, status=201)
    clock = Clock()
    router = commenting_router([])
    deliver("pull_request", pr_payload(2), delivery_id="eff-1")
    assert [o.status for o in make_worker(rt, router, clock=clock).run_once()] == ["retry"]
    assert row(rt, "eff-1").status == "effects"  # the handler phase has committed

    clock.advance(60)
    a = make_worker(rt, router, worker_id="A", clock=clock)
    [seq] = a.claim()  # ... and A stalls
    late = Clock()
    late.offset = clock.offset + timedelta(seconds=rt.settings.lease_seconds + 1)
    b = make_worker(rt, router, worker_id="B", clock=late)
    assert b.claim() == [seq]

    # A wakes up: the delivery is B's now, so A must neither post nor finish it
    assert a.process(seq).status == "lost"
    assert github.api_requests() == [comment_post()]
    d = row(rt, "eff-1")
    assert (d.status, d.lease_owner) == ("effects", "B")

    assert b.process(seq).status == "done"
    assert github.api_requests() == [comment_post(), comment_post()]
    assert row(rt, "eff-1").attempts == 3


# --- retries against a faked GitHub ------------------------------------------------------------


def test_a_502_is_retried_after_the_backoff(deliver, rt, github):
    github.allow_token_exchange()
    github.add("POST", COMMENTS.format(2), {"message": "Server Error"}, status=502)
    github.add("POST", COMMENTS.format(2), {"id": 1, "body": "hi"}, status=201)
    handled: list[str] = []
    clock = Clock()
    w = make_worker(rt, commenting_router(handled), clock=clock)
    deliver("pull_request", pr_payload(2), delivery_id="c-1")

    before = clock()
    assert [o.status for o in w.run_once()] == ["retry"]
    d = row(rt, "c-1")
    assert (d.status, d.attempts) == ("effects", 1)
    assert "502" in d.last_error
    assert before + timedelta(seconds=1.6) <= d.next_attempt_at <= clock() + timedelta(seconds=2.4)

    clock.advance(3)
    assert [o.status for o in w.run_once()] == ["done"]
    d = row(rt, "c-1")
    assert (d.status, d.attempts, d.last_error) == ("done", 2, None)
    assert handled == ["c-1"]  # the retry redid only the effect
    assert github.requests == [TOKEN_EXCHANGE, comment_post(), comment_post()]


def test_a_secondary_rate_limit_waits_as_long_as_retry_after_says(deliver, rt, github):
    github.allow_token_exchange()
    github.add(
        "POST",
        COMMENTS.format(2),
        {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again."
        },
        status=403,
        headers={"Retry-After": "60"},
    )
    github.add("POST", COMMENTS.format(2), {"id": 1, "body": "hi"}, status=201)
    clock = Clock()
    w = make_worker(rt, commenting_router([]), clock=clock)
    deliver("pull_request", pr_payload(2), delivery_id="rl-1")

    failed_at = clock()
    assert [o.status for o in w.run_once()] == ["retry"]
    d = row(rt, "rl-1")
    assert "RateLimitExceeded" in d.last_error
    assert abs((d.next_attempt_at - failed_at).total_seconds() - 60) < 1

    clock.advance(30)
    assert w.run_once() == []  # still waiting
    clock.advance(31)
    assert [o.status for o in w.run_once()] == ["done"]
    assert github.requests == [TOKEN_EXCHANGE, comment_post(), comment_post()]


def test_bad_credentials_forget_the_token_and_the_retry_exchanges_a_fresh_one(deliver, rt, github):
    github.allow_token_exchange(token="ghs_first")
    github.allow_token_exchange(token="ghs_second")
    github.add("POST", COMMENTS.format(2), {"message": "Bad credentials"}, status=401)
    github.add("POST", COMMENTS.format(2), {"id": 1, "body": "hi"}, status=201)
    w = make_worker(rt, commenting_router([]), clock=Clock())
    deliver("pull_request", pr_payload(2), delivery_id="bc-1")

    # no backoff after a 401: the same run retries at once with a new token
    assert [o.status for o in w.run_once()] == ["retry", "done"]
    assert github.token_exchanges == 2
    assert github.requests == [TOKEN_EXCHANGE, comment_post(), TOKEN_EXCHANGE, comment_post()]
    auth = [
        c.request.headers["Authorization"] for c in github.rsps.calls if "/issues/" in c.request.url
    ]
    assert auth == ["token ghs_first", "token ghs_second"]
    assert row(rt, "bc-1").attempts == 2


def test_a_delivery_failing_every_attempt_dies_and_a_replay_completes_it(deliver, rt, github):
    github.allow_token_exchange()
    github.add("POST", COMMENTS.format(2), {"message": "Server Error"}, status=500)
    handled: list[str] = []
    clock = Clock()
    w = make_worker(rt, commenting_router(handled), clock=clock)
    deliver("pull_request", pr_payload(2), delivery_id="dead-1")

    statuses = []
    for _ in range(rt.settings.max_attempts):
        statuses += [o.status for o in w.run_once()]
        clock.advance(600)
    assert statuses == ["retry", "retry", "dead"]
    d = row(rt, "dead-1")
    assert (d.status, d.attempts) == ("dead", 3)
    assert "500" in d.last_error
    assert d.finished_at is not None
    assert w.run_once() == []  # the dead stay dead

    github.rsps.replace("POST", github.url(COMMENTS.format(2)), json={"id": 1}, status=201)
    replayed = worker.replay(rt.database, "dead-1")
    assert (replayed.status, replayed.attempts) == ("effects", 0)  # the handler had committed
    assert [o.status for o in w.run_once()] == ["done"]

    d = row(rt, "dead-1")
    assert (d.status, d.attempts, d.last_error) == ("done", 1, None)
    assert handled == ["dead-1"]
    assert github.requests == [TOKEN_EXCHANGE] + [comment_post()] * 4
    assert github.token_exchanges == 1


def test_a_handler_failing_every_attempt_is_replayed_from_the_start(deliver, rt):
    broken = [True]
    router = Router()
    handled: list[str] = []

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        if broken[0]:
            raise ValueError("handler bug")
        handled.append(ctx.event.delivery_id)

    clock = Clock()
    w = make_worker(rt, router, clock=clock)
    deliver("pull_request", pr_payload(2), delivery_id="h-1")
    for _ in range(3):
        w.run_once()
        clock.advance(600)
    d = row(rt, "h-1")
    assert (d.status, d.attempts, d.effects) == ("dead", 3, None)
    assert "ValueError: handler bug" in d.last_error

    broken[0] = False
    assert worker.replay(rt.database, "h-1").status == "queued"
    assert [o.status for o in w.run_once()] == ["done"]
    assert handled == ["h-1"]


def test_one_token_exchange_serves_every_delivery_of_an_installation(deliver, rt, github):
    github.allow_token_exchange()
    for number in (2, 3):
        github.add("POST", COMMENTS.format(number), {"id": number}, status=201)
    w = make_worker(rt, commenting_router([]))
    deliver("pull_request", pr_payload(2))
    deliver("pull_request", pr_payload(3))

    assert [o.status for o in w.run_once()] == ["done", "done"]
    assert github.token_exchanges == 1
    assert github.api_requests() == [comment_post(2), comment_post(3)]
    assert all(c.request.url.startswith(f"{WIRE}/") for c in github.rsps.calls)
    assert len(github.rsps.calls) == 3


# --- retry_delay ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 20])
def test_retry_delay_grows_exponentially_with_jitter(attempt):
    base = worker.BASE_DELAY_S * 2 ** (attempt - 1)
    delays = [retry_delay(RuntimeError("x"), attempt) for _ in range(200)]
    assert all(min(0.8 * base, worker.MAX_DELAY_S) <= d <= worker.MAX_DELAY_S for d in delays)
    assert all(0.8 * base <= d <= 1.2 * base for d in delays if d < worker.MAX_DELAY_S)
    if 0.8 * base < worker.MAX_DELAY_S:
        assert len(set(delays)) > 100  # jittered, so many workers do not retry in step


def test_retry_delay_doubles_per_attempt_on_average():
    def mean(attempt: int) -> float:
        return sum(retry_delay(RuntimeError("x"), attempt) for _ in range(400)) / 400

    assert mean(1) == pytest.approx(2, rel=0.05)
    assert mean(2) == pytest.approx(4, rel=0.05)
    assert mean(5) == pytest.approx(32, rel=0.05)
    assert mean(30) == pytest.approx(worker.MAX_DELAY_S, rel=0.05)


@pytest.mark.parametrize("name", ["Retry-After", "retry-after"])
def test_retry_delay_honours_retry_after(name):
    err = RateLimitExceededException(
        403, {"message": "You have exceeded a secondary rate limit."}, {name: "60"}
    )
    assert retry_delay(err, 1) == 60
    assert retry_delay(err, 10) == 60
    assert retry_delay(GithubException(503, {}, {name: "7"}), 4) == 7


def test_retry_delay_waits_for_the_rate_limit_reset():
    now = 1_700_000_000.0
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 300)}
    err = RateLimitExceededException(403, {"message": "API rate limit exceeded"}, headers)
    assert retry_delay(err, 1, now=now) == 300
    # a plain 403 with nothing remaining is the same limit
    assert retry_delay(GithubException(403, {}, headers), 1, now=now) == 300
    # a reset already past still waits a moment
    assert retry_delay(err, 1, now=now + 1000) == 1.0
    # remaining calls left: the reset is not a reason to wait
    busy = GithubException(502, {}, {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "9e9"})
    assert retry_delay(busy, 1, now=now) <= 2.4


def test_retry_delay_after_bad_credentials_is_zero_once():
    err = BadCredentialsException(401, {"message": "Bad credentials"}, {})
    assert retry_delay(err, 1) == 0  # refreshed once at once
    assert retry_delay(err, 2) >= 0.8 * worker.BASE_DELAY_S * 2  # then it backs off
