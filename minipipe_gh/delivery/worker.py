"""The worker: claim deliveries with a lease, handle them, retry or bury them.

Ordering: deliveries that share an ``order_key`` (one pull request) are
handled one at a time in the order received. Only the oldest unfinished
delivery of a key can be claimed, so a delivery waiting out its backoff holds
back the ones behind it.

A claim is a lease: a worker that dies loses it when it expires and another
worker takes the delivery over. Each claim counts as an attempt, so a
delivery that kills its worker still ends dead, not in an endless loop.

Phases: ``queued`` → handlers run and their database changes commit together
with the delivery's move to ``effects`` (or straight to ``done``) → the
recorded GitHub writes are performed → ``done``. A failure in either phase is
retried with exponential backoff, honouring ``Retry-After`` and the rate-limit
reset; after the last attempt the delivery is ``dead`` until replayed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from github import BadCredentialsException, GithubException, RateLimitExceededException
from sqlalchemy import (
    Boolean,
    Integer,
    Text,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from minipipe_gh.core.errors import NotFound
from minipipe_gh.core.events import Event
from minipipe_gh.delivery import logs
from minipipe_gh.delivery.metrics import (
    DELIVERIES_PROCESSED,
    PROCESSING_SECONDS,
    WRITES_REFUSED,
    counting_github_calls,
    event_label,
)
from minipipe_gh.delivery.recover import RecoveryMemo
from minipipe_gh.delivery.routing import Router
from minipipe_gh.gh import effects as effects_mod
from minipipe_gh.gh import installations, writes
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.review.context import Context
from minipipe_gh.store import audit
from minipipe_gh.store.db import Database, Driver, GroupCommit, checkpoint_wal
from minipipe_gh.store.inbox import wake_folder
from minipipe_gh.store.models import PENDING, PENDING_LIST, Delivery, DeliveryPayload, utcnow

log = logging.getLogger(__name__)

BASE_DELAY_S = 2.0
# The main loop looks every ``poll_s`` (0.2 s) for work no poke announced (a web tier on
# another host); the other loops wait to be woken (a poke, or a loop that found work)
# and look on their own only this seldom: 16 loops polling cost a busy worker 1 ms of
# CPU per delivery in empty claims.
IDLE_POLL_S = 5.0
MAX_DELAY_S = 15 * 60


# The claim and the moves of a delivery are built once, compiled once per database, and
# run on the driver's own cursor (``Database.driver``): the ORM's per-statement work was
# a quarter of a busy worker's CPU, and Core's execution context most of the rest of a
# move's. Every value is a bound parameter.
_T = Delivery.__table__
_WHEN = _T.c.next_attempt_at.type
_NOW = bindparam("now", type_=_WHEN)
# Literal, so SQLite sees the partial indexes' own condition (PENDING_SQL) in the query.
_PENDING = [literal_column(f"'{p}'") for p in PENDING]


def _free(table: Any) -> Any:
    return or_(table.c.lease_expires_at.is_(None), table.c.lease_expires_at < _NOW)


_head, _earlier = _T.alias("head"), _T.alias("earlier")
# The first unfinished delivery of a head's order key: one look down the partial index
# on (order_key, seq) for each candidate. Not ``NOT EXISTS (an earlier one)``: PostgreSQL
# plans that as an anti-join, and on a queue table without statistics yet (a new one,
# or one whose last ANALYZE saw it empty) chose a join that read every pending row for
# each: 1.8 ms of the server's time a claim with 100 due, against 0.3.
_FIRST_OF_KEY = (
    select(func.min(_earlier.c.seq))
    .where(_earlier.c.order_key == _head.c.order_key, _earlier.c.status.in_(_PENDING))
    .scalar_subquery()
)
# The due heads: oldest unfinished delivery of their order key (or of none), not leased.
_HEADS = (
    select(_head.c.seq)
    .where(
        _head.c.status.in_(_PENDING),
        _head.c.next_attempt_at <= _NOW,
        _free(_head),
        or_(_head.c.order_key.is_(None), _head.c.seq == _FIRST_OF_KEY),
    )
    .order_by(_head.c.seq)
    .limit(bindparam("limit", type_=Integer))
)
# The body, from its own table. Written out: in SQLite's RETURNING SQLAlchemy leaves
# column names unqualified, and an unqualified ``seq`` in the subquery is the body's.
_BODY = literal_column(
    f"(SELECT body.payload FROM {DeliveryPayload.__tablename__} AS body"
    f" WHERE body.seq = {_T.name}.seq)",
    Text(),
).label("payload")
# What a claim returns of each row it leased: all that ``process`` needs to start.
_CLAIMED = (
    _T.c.seq,
    _T.c.delivery_id,
    _T.c.event,
    _T.c.status,
    _T.c.attempts,
    _T.c.installation_id,
    _BODY,  # read here, so handling it needs no read of the row of its own
    _T.c.headers,
)
# One compare-and-set for the batch: a row another worker leased meanwhile no longer
# matches and is simply not returned.
_LEASE = (
    update(_T)
    .where(_T.c.status.in_(_PENDING), _free(_T))
    .values(
        lease_owner=bindparam("holder"),
        lease_expires_at=bindparam("until", type_=_WHEN),
        attempts=_T.c.attempts + 1,
    )
    .returning(*_CLAIMED)
)
_LEASE_HEADS = _LEASE.where(_T.c.seq.in_(_HEADS.scalar_subquery()))  # SQLite: one statement
# PostgreSQL, one statement too: lock the due heads no other claim holds (one more than
# it takes, to know whether more were due), lease the first of them, and say how many
# there were in a last column of each row.
_DUE = _HEADS.with_for_update(skip_locked=True, of=_head).cte("due")
_LEASE_LOCKED = _LEASE.where(
    _T.c.seq.in_(select(_DUE.c.seq).order_by(_DUE.c.seq).limit(bindparam("take", type_=Integer)))
).returning(select(func.count()).select_from(_DUE).scalar_subquery().label("due"))


# The writes of a delivery in its effects phase, as its holder reads them to go on: nothing
# when another holds it now, or it moved on meanwhile.
_HELD = select(_T.c.effects).where(
    _T.c.seq == bindparam("at"),
    _T.c.status == bindparam("phase"),
    _T.c.lease_owner == bindparam("holder"),
)


def _driver(s: Session | Driver) -> Driver:
    """A move runs on the driver's cursor, in the session's transaction when given a
    session (without the ORM's execution path around it)."""
    return Database.within(s) if isinstance(s, Session) else s


@functools.lru_cache(maxsize=32)
def _move(keys: tuple[str, ...]) -> Any:
    """The UPDATE that moves a delivery on, setting ``keys``, only while ``holder`` holds
    it in ``phase`` (one statement per set of keys, built once)."""
    return (
        update(_T)
        .where(
            _T.c.seq == bindparam("at"),
            _T.c.status == bindparam("phase"),
            _T.c.lease_owner == bindparam("holder"),
        )
        .values({k: bindparam(f"set_{k}", type_=_T.c[k].type) for k in keys})
    )


# Whether a delivery of the same order key waits behind the one a move finishes (it is
# due once that one is done): what a finish returns, so that its loop looks for due work
# again only when its finish made some due (or its claim saw more than it took). Written
# out, as ``_BODY`` is: in SQLite's RETURNING SQLAlchemy leaves every name unqualified.
_BEHIND = literal_column(
    f"EXISTS (SELECT 1 FROM {_T.name} AS later WHERE later.order_key = {_T.name}.order_key"
    f" AND later.status IN ({PENDING_LIST})"
    f" AND later.seq > {_T.name}.seq)",
    Boolean(),
).label("behind")


# What a finish that ran alone in autocommit returns when it would have leased: the
# loop's claim leases next, in a statement of its own (GroupCommit ``single``). Not a
# lease's shape, so that a reader that forgot it fails instead of draining the loop.
_CLAIM: Any = object()


@functools.lru_cache(maxsize=8)
def _ending(keys: tuple[str, ...]) -> Any:
    """The finish: the move, returning whether a delivery waits behind it."""
    return _move(keys).returning(_BEHIND)


class Wakeup:
    """Wakes one idle loop per ``set`` (a pending wake is kept for the next to wait),
    not all of them: a claim that sees more due work than it leases wakes the next
    (``Worker._lease``), so a burst fans out to as many loops as it needs and an idle
    poke costs one empty claim, not one per thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = False
        self._everyone = 0  # how many times ``set_all`` woke every loop

    def set(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify()

    def take(self) -> bool:
        """Take a kept wake that no loop has taken yet (whether there was one), without
        waiting: for a loop that is about to look for work anyway."""
        with self._cond:
            woke, self._pending = self._pending, False
            return woke

    def set_all(self) -> None:
        with self._cond:
            self._pending = True
            self._everyone += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Until woken or ``timeout``; whether a wake was taken. A loop woken for a wake
        that another took first (one coming to wait just then) waits on: its claim
        would find nothing."""
        with self._cond:
            everyone, deadline = self._everyone, time.monotonic() + timeout
            while not self._pending and self._everyone == everyone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            woke = self._pending or self._everyone != everyone
            self._pending = False
            return woke


class LeaseLost(Exception):
    """Another worker holds the delivery now: this attempt must change nothing."""


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    status: str  # done | retry | dead | lost (another worker holds it now)
    github_calls: int = 0


def retry_delay(err: BaseException, attempt: int, *, now: float | None = None) -> float:
    """Seconds to wait before the next attempt.

    Exponential from ``BASE_DELAY_S`` with jitter, but never sooner than GitHub
    asked: ``Retry-After`` (secondary rate limits) or ``x-ratelimit-reset``.
    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    """
    now = time.time() if now is None else now
    delay = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
    if isinstance(err, BadCredentialsException) and attempt == 1:
        return 0.0  # the token expired: retry at once with a fresh one, once
    if isinstance(err, GithubException):
        headers = {k.lower(): v for k, v in (err.headers or {}).items()}
        if "retry-after" in headers:
            try:
                return max(float(headers["retry-after"]), 0.0)
            except ValueError:
                pass
        remaining = headers.get("x-ratelimit-remaining")
        if (isinstance(err, RateLimitExceededException) or remaining == "0") and (
            "x-ratelimit-reset" in headers
        ):
            try:
                return max(float(headers["x-ratelimit-reset"]) - now, 1.0)
            except ValueError:
                pass
    return delay


class Worker:
    def __init__(
        self,
        database: Database,
        router: Router,
        app: GitHubApp | None,
        *,
        max_attempts: int = 8,
        lease_seconds: int = 120,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        reconcile_every_s: float = 300.0,
        recover_every_s: float = 300.0,
        executors: effects_mod.Executors = writes.EXECUTORS,
    ) -> None:
        self.database = database
        self.router = router
        self.executors = executors  # the GitHub writes its handlers may ask for
        self.app = app
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_seconds)
        self.base_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.wakeup = Wakeup()
        # the moves of its threads' deliveries (a write saved, a finish), committed together
        self.moves = GroupCommit(database, isolated=(LeaseLost,))
        self.clock = clock  # tests move time forward instead of sleeping
        self.reconcile_every_s = reconcile_every_s
        self.recover_every_s = recover_every_s
        self.recovery = RecoveryMemo()  # what earlier recovery runs saw and asked for
        self.seen = installations.Seen()  # repositories known to be recorded
        # (seq, holder) -> the claimed row's fields (_CLAIMED), until ``process`` takes them
        self._claimed: dict[tuple[int, str], tuple[Any, ...]] = {}
        # holder -> deliveries it leased as it finished its last one, for its next claim
        self._ready: dict[str, list[int]] = {}
        # holders whose last look for due work (a claim, or a finish's) found none: their
        # loop waits for a wake instead of looking again at once
        self._drained: set[str] = set()
        # holders whose last lease saw more due than it took (and woke another loop)
        self._saw_more: set[str] = set()
        # holders woken by a wake and not yet at their claim (on a busy machine, waiting
        # for a CPU): a loop finishing a delivery meanwhile looks for the new one itself
        self._woken: set[str] = set()

    @property
    def worker_id(self) -> str:
        """Who holds a lease: each of a worker's threads is a holder of its own, so one
        thread that stalled past its lease cannot mistake a sibling's claim for its own."""
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return self.base_id
        return f"{self.base_id}/{thread.name}"

    # -- claiming ---------------------------------------------------------------

    def claim(self, limit: int = 10) -> list[int]:
        """Lease up to ``limit`` due deliveries, each the head of its order key (or hand
        over those this holder leased when it finished its last one)."""
        self._woken.discard(self.worker_id)
        ready = self._ready.pop(self.worker_id, None)
        if ready:
            return ready
        # PostgreSQL's lease is one statement, a transaction of its own: outside BEGIN and
        # COMMIT it is one round trip, not three (most claims, woken by a poke that another
        # loop answered first, lease nothing). SQLite's two run in one (``alone`` is off).
        with self.database.driver(alone=True) as tx:
            return self._lease(tx, limit)

    def _lease(self, tx: Driver, limit: int) -> list[int]:
        """Lease due heads in ``tx``'s transaction for this thread (``_took`` records them)."""
        return self._took(self.worker_id, *self._lease_rows(tx, limit, self.worker_id))

    def _lease_rows(
        self, tx: Driver, limit: int, holder: str
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """Lease due heads for ``holder`` in ``tx``'s transaction (the claim's own, or a
        finish's): the rows leased, and whether more were due.

        It looks for one head more than it leases: when there is one, another loop is
        woken to take it (``Wakeup``), so a burst fans out at once and a lone delivery
        wakes no loop for nothing."""
        now = self.clock()
        params = {"now": now, "limit": limit, "holder": holder, "until": now + self.lease}
        look = {**params, "limit": limit + 1}
        if not self.database.is_sqlite:  # locked, leased and counted in one statement
            leased = tx.rows(_LEASE_LOCKED, {**look, "take": limit})
            return [row[:-1] for row in leased], bool(leased) and leased[0][-1] > limit
        # SQLite: looked for first without the write lock (an idle poll writes nothing),
        # then chosen again and leased in one statement under it: threads and processes
        # claiming at once each get a head of their own, instead of all picking the same
        # one and all but one coming back empty.
        due = tx.rows(_HEADS, look)
        if not due:
            return [], False
        return tx.rows(_LEASE_HEADS, params), len(due) > limit

    def _took(self, holder: str, rows: list[tuple[Any, ...]], more: bool) -> list[int]:
        """Once their lease committed: keep what ``process`` needs of each row (it reads
        none again), and wake another loop when more was due."""
        for row in rows:
            self._claimed[(row[0], holder)] = row[1:]
        if more:
            self._saw_more.add(holder)
            self.wakeup.set()
        else:
            self._saw_more.discard(holder)
        return sorted(row[0] for row in rows)

    # -- running ----------------------------------------------------------------

    def run_once(self, limit: int = 10) -> list[Outcome]:
        """Handle every delivery that is due now, then return (``worker --once``). The
        last of each batch leases the next batch in the transaction that finishes it,
        when its finish says there can be one (``_finish``): under load a delivery costs
        one write to the database fewer."""
        outcomes: list[Outcome] = []
        me = self.worker_id
        self._drained.discard(me)
        while me not in self._drained:
            batch = self.claim(limit)
            if not batch:
                self._drained.add(me)
            for i, seq in enumerate(batch):
                outcomes.append(self.process(seq, then_claim=limit if i == len(batch) - 1 else 0))
        return outcomes

    def run_forever(
        self,
        stop: threading.Event,
        *,
        threads: int = 1,
        poll_s: float = 0.2,
        upkeep_every_s: float = 600.0,
    ) -> None:
        """Loop until ``stop``; ``threads`` loops share the process, each claiming its own
        deliveries (a delivery's wait on GitHub no longer holds up the others)."""
        log.info("worker %s started with %d thread(s)", self.worker_id, threads)
        loops = [
            threading.Thread(
                target=self._loop,
                args=(stop, max(poll_s, IDLE_POLL_S)),
                name=f"minipipe-worker-{i}",
                daemon=True,
            )
            for i in range(1, threads)
        ]
        for loop in loops:
            loop.start()
        pokes = threading.Thread(
            target=self._hear_pokes, args=(stop,), name="minipipe-worker-pokes", daemon=True
        )
        pokes.start()
        checkpoints = threading.Thread(
            target=checkpoint_wal,
            args=(self.database, stop),
            name="minipipe-worker-checkpoint",
            daemon=True,
        )
        checkpoints.start()
        # (due time, interval, job): recovery and reconciliation run at start, then periodically
        jobs: list[list[Any]] = [
            [time.monotonic(), upkeep_every_s, self.upkeep],
            [time.monotonic(), self.recover_every_s, self.recover],
            [time.monotonic(), self.reconcile_every_s, self.reconcile],
        ]
        while not stop.is_set():
            for job in jobs:
                if time.monotonic() >= job[0]:
                    job[0] = time.monotonic() + job[1]
                    job[2]()
            self._step(poll_s)
        for loop in loops:
            loop.join(timeout=30)
        pokes.join(timeout=5)  # its socket is gone once run_forever returns
        checkpoints.join(timeout=5)

    def _hear_pokes(self, stop: threading.Event) -> None:
        """Wake the loops when an inbox in another process stored deliveries (its
        ``Poke``): a unix datagram socket in the database's wake folder."""
        folder = wake_folder(self.database.url)
        path = folder / f"{os.getpid()}-{id(self):x}.sock"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
        except OSError:
            log.warning("cannot listen for pokes in %s; polling only", folder, exc_info=True)
            return
        sock.settimeout(0.5)
        try:
            while not stop.is_set():
                try:
                    sock.recv(16)
                except TimeoutError:
                    continue
                self.wakeup.set()
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()
            self.wakeup.set_all()  # stopping: the loops need not wait out their poll

    def _loop(self, stop: threading.Event, poll_s: float) -> None:
        while not stop.is_set():
            self._step(poll_s)

    def _step(self, poll_s: float) -> None:
        try:
            done = self.run_once(limit=1)
        except Exception:
            log.exception("worker loop failed; carrying on")
            done = []
        # Nothing more was due (the last claim, or the lease in the last finish, found
        # none): wait for a wake instead of asking again at once (a delivery stored since
        # then poked, and its wake is kept for the next loop to wait). A claim that saw
        # more than it took woke the next loop.
        waits = not done or self.worker_id in self._drained
        if waits and self.wakeup.wait(poll_s):  # woken at once by a poke or an inbox
            self._woken.add(self.worker_id)

    def upkeep(self) -> None:
        """Scheduled work between deliveries: pause stale sessions."""
        from minipipe_gh.delivery.maintenance import reap_stale

        try:
            reap_stale(self.database, self.app)
        except Exception:
            log.exception("stale-session reaping failed; will try again")

    def _can_act_as_app(self) -> bool:
        return self.app is not None and self.app.app_id is not None and bool(self.app.private_key)

    def reconcile(self) -> None:
        """Compare GitHub with the ledger for every open session PR; queue the repairs."""
        from minipipe_gh.delivery.reconcile import reconcile

        if not self._can_act_as_app():
            return
        try:
            assert self.app is not None
            report = reconcile(self.database, self.app)
        except Exception:
            log.exception("reconciliation failed; will try again")
            return
        if report.repairs:
            log.info("reconciliation queued %d repairs", len(report.repairs))

    def recover(self) -> None:
        """Ask GitHub to redeliver the deliveries it failed to make (its delivery log)."""
        from minipipe_gh.delivery.recover import recover

        if not self._can_act_as_app():
            return
        try:
            assert self.app is not None
            result = recover(self.database, self.app, memo=self.recovery)
        except Exception:
            log.exception("recovery of missed deliveries failed; will try again")
            return
        if result.asked:
            log.info("asked GitHub to redeliver %d missed deliveries", len(result.asked))

    def process(self, seq: int, *, then_claim: int = 0) -> Outcome:
        """Handle one leased delivery; with ``then_claim``, lease up to that many more
        in the transaction that finishes it (``claim`` hands them over)."""
        claimed = self._claimed.pop((seq, self.worker_id), None)
        if claimed is None:  # not claimed by this thread just now: as the row is
            with self.database.unit() as s:
                d = s.get(Delivery, seq)
                assert d is not None
                claimed = (
                    d.delivery_id,
                    d.event,
                    d.status,
                    d.attempts,
                    d.installation_id,
                    d.payload,
                    d.headers,
                )
        ident, name, phase, attempt, installation_id, payload, headers = claimed
        started, cpu_started = time.perf_counter(), time.thread_time()
        with logs.for_delivery(ident), counting_github_calls() as calls:
            try:
                if phase == "queued":
                    event = Event(ident, name, orjson.loads(payload), dict(headers or {}))
                    pending = self._handle(seq, attempt, event)
                else:
                    pending = self._effects_of(seq)
            except Exception as err:
                outcome = Outcome(ident, self._fail(seq, attempt, installation_id, err), len(calls))
                self._record(
                    name, outcome, attempt, started, 1000 * (time.thread_time() - cpu_started)
                )
                return outcome
            if pending is None:
                return Outcome(ident, "lost")
            cpu_ms = 1000 * (time.thread_time() - cpu_started)
        job = (seq, ident, name, attempt, installation_id, pending, started, cpu_ms, list(calls))
        return self._complete(*job, then_claim=then_claim)

    def _complete(
        self,
        seq: int,
        ident: str,
        name: str,
        attempt: int,
        installation_id: int | None,
        pending: list[dict[str, Any]],
        started: float,
        cpu_ms: float,
        calls_so_far: list[str],
        *,
        then_claim: int = 0,
    ) -> Outcome:
        """Perform the writes still pending, then settle the delivery (done, retry, dead)."""
        cpu_started = time.thread_time()
        with logs.for_delivery(ident), counting_github_calls() as calls:
            calls.extend(calls_so_far)
            try:
                if pending:
                    ectx = effects_mod.EffectContext(
                        self.database, self.app, installation_id, ident, retrying=attempt > 1
                    )
                    results = effects_mod.perform(
                        ectx,
                        pending,
                        self.executors,
                        progress=lambda state: self._progress(seq, state),
                        refused=lambda spec, err: self._refused(ident, spec, err),
                    )
                    if not self._finish(seq, results, then_claim):
                        return Outcome(ident, "lost", len(calls))
                outcome = Outcome(ident, "done", len(calls))
            except LeaseLost:
                log.warning("lease on delivery %s was lost during its effects", seq)
                outcome = Outcome(ident, "lost", len(calls))
            except Exception as err:
                outcome = Outcome(ident, self._fail(seq, attempt, installation_id, err), len(calls))
            cpu_ms += 1000 * (time.thread_time() - cpu_started)
            self._record(name, outcome, attempt, started, cpu_ms)
        return outcome

    @staticmethod
    def _record(name: str, outcome: Outcome, attempt: int, started: float, cpu_ms: float) -> None:
        label = event_label(name)  # a replayed body can carry any event header
        PROCESSING_SECONDS.labels(label).observe(time.perf_counter() - started)
        DELIVERIES_PROCESSED.labels(label, outcome.status).inc()
        log.info(  # the CPU its threads spent: benches sum it per event kind
            "%s %s after attempt %d, %d GitHub calls, %.2f ms CPU",
            name,
            outcome.status,
            attempt,
            outcome.github_calls,
            cpu_ms,
        )

    def _handle(self, seq: int, attempt: int, event: Event) -> list[dict[str, Any]] | None:
        """Run the handlers; their changes and the delivery's next phase commit together,
        and only while the lease is still this worker's (else everything rolls back: the
        move's compare-and-set is the check, so the row is not read again first)."""
        try:
            with self.database.unit() as s:
                ctx = Context(event, s, self.app, log, attempt=attempt)
                self.router.dispatch(ctx)
                installations.remember(s, event, self.seen)  # after the handlers' reads
                if ctx.effects:
                    self._settle(s, seq, "queued", status="effects", effects=ctx.effects)
                else:
                    self._settle(s, seq, "queued", **self._done())
                return ctx.effects
        except LeaseLost:
            log.warning("lease on delivery %s was lost; another worker has it", seq)
            return None

    def _held(self, tx: Driver, seq: int, phase: str) -> tuple[Any, ...]:
        """The delivery's row while this worker holds it in ``phase``; else LeaseLost (a
        worker that stalled past its lease must stop)."""
        params = {"at": seq, "phase": phase, "holder": self.worker_id}
        rows = tx.rows(_HELD, params)
        if not rows:
            raise LeaseLost
        return rows[0]

    def _settle(
        self, s: Session | Driver, seq: int, phase: str, holder: str | None = None, **values: Any
    ) -> None:
        """Move the delivery on, if ``holder`` (this thread) still holds it in ``phase``;
        else LeaseLost, before it changed anything. ``s`` is an ORM session or a driver
        transaction: the statement is the driver's."""
        keys, params = self._move_params(seq, phase, holder, values)
        if _driver(s).execute(_move(keys), params).rowcount != 1:
            raise LeaseLost

    def _move_params(
        self, seq: int, phase: str, holder: str | None, values: dict[str, Any]
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The keys a move sets, and its parameters (``_move``)."""
        keys = tuple(sorted(values))
        params = {f"set_{k}": values[k] for k in keys}
        params.update(at=seq, phase=phase, holder=holder or self.worker_id)
        return keys, params

    def _effects_of(self, seq: int) -> list[dict[str, Any]] | None:
        try:
            with self.database.driver() as tx:
                (effects,) = self._held(tx, seq, "effects")
                return list(effects or [])
        except LeaseLost:
            log.warning("lease on delivery %s was lost before its effects", seq)
            return None

    def _finish(self, seq: int, results: list[dict[str, Any]], then_claim: int = 0) -> bool:
        """Save the last results with ``done`` and, when the finish made a delivery due or
        ``_look_on`` says so, lease this thread's next deliveries, in the transaction the
        moves of the other threads share (``GroupCommit``). A finish alone there commits
        by itself on PostgreSQL, and leaves the lease to the loop's next claim."""
        holder = self.worker_id
        done = {"effects": results, **self._done()}
        try:
            if then_claim:

                def finish_and_lease(tx: Driver) -> tuple[list[tuple[Any, ...]], bool] | None:
                    if not (self._end(tx, seq, holder, done) or self._look_on(holder)):
                        return None
                    if tx.alone:  # the finish committed alone: the loop's claim looks next
                        return _CLAIM
                    return self._lease_rows(tx, then_claim, holder)

                try:
                    got = self.moves.run(finish_and_lease, single=True)
                    if got is _CLAIM:
                        return True
                    leased = self._took(holder, *got) if got is not None else []
                    if leased:
                        self._ready[holder] = leased
                    else:
                        self._drained.add(holder)
                    return True
                except LeaseLost:
                    raise
                except Exception:  # the finish must not be lost to the claim: alone, then
                    log.warning("leasing more deliveries failed; finishing alone", exc_info=True)
            self.moves.run(lambda tx: self._settle(tx, seq, "effects", holder, **done), single=True)
        except LeaseLost:
            return False
        return True

    def _end(self, tx: Driver, seq: int, holder: str, done: dict[str, Any]) -> bool:
        """The finish: ``holder``'s move to ``done``, and whether a delivery of the same
        order key waits behind it (LeaseLost if ``holder`` no longer holds it)."""
        keys, params = self._move_params(seq, "effects", holder, done)
        rows = tx.rows(_ending(keys), params)
        if not rows:
            raise LeaseLost
        return bool(rows[0][0])

    def _look_on(self, holder: str) -> bool:
        """Whether a loop that finished a delivery should look for more due work (besides
        a delivery its finish made due): its last claim saw more due than it took, or a
        delivery was stored and no loop is at its claim yet (a wake pending, or a woken
        loop still waiting for a CPU: this one, running, is there first). Else anything
        stored since poked, and a wake no loop took is kept for this one's wait. A look
        at every finish found nothing but at the busiest times: it was one of a lone
        delivery's three claims."""
        kept = self.wakeup.take()  # a kept wake this loop answers itself: no other looks
        return kept or holder in self._saw_more or bool(self._woken)

    def _progress(self, seq: int, state: list[dict[str, Any]]) -> None:
        """Keep which writes succeeded, so a retry performs only the rest (LeaseLost if
        another worker holds the delivery now: this one must write no more)."""
        holder = self.worker_id
        self.moves.run(
            lambda tx: self._settle(tx, seq, "effects", holder, effects=state), single=True
        )

    def _refused(self, ident: str, spec: dict[str, Any], err: GithubException) -> None:
        """A write GitHub refused for good: in the audit trail, the log and a metric."""
        kind = str(spec.get("kind"))
        WRITES_REFUSED.labels(kind, str(err.status)).inc()
        with self.database.unit() as s:
            audit.record(
                s,
                entity="delivery",
                entity_id=ident,
                project_id=spec.get("project"),
                actor="github",
                source=f"delivery:{ident}",
                outcome="refused",
                reason=f"{kind} skipped: {effects_mod.describe(err)}"[:2000],
                details={"effect": spec, "status": err.status},
            )

    def _left_over(self, seq: int) -> list[dict[str, Any]] | None:
        """At the last attempt of a delivery whose unfinished writes are all best-effort:
        its effects with those marked ``gave_up`` (the delivery ends done, not dead)."""
        with self.database.unit() as s:
            d = s.get(Delivery, seq)
            if d is None or d.status != "effects" or not d.effects:
                return None
            effects = [dict(e) for e in d.effects]
        left = effects_mod.pending(effects)
        if not left or not all(self.executors.is_best_effort(e) for e in left):
            return None
        for e in left:
            e["result"] = "gave_up"
        return effects

    @staticmethod
    def _done() -> dict[str, Any]:
        return {
            "status": "done",
            "finished_at": utcnow(),
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": None,
        }

    def _fail(self, seq: int, attempt: int, installation_id: int | None, err: Exception) -> str:
        if isinstance(err, BadCredentialsException) and self.app and installation_id:
            self.app.forget_token(installation_id)
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": text[:4000],
        }
        left = self._left_over(seq) if attempt >= self.max_attempts else None
        if left is not None:
            # only best-effort writes failed, for too long: the gate is written; done
            values.update(self._done(), effects=left, last_error=text[:4000])
            outcome, delay = "done", 0.0
        elif attempt >= self.max_attempts:
            values.update(status="dead", finished_at=utcnow())
            outcome, delay = "dead", 0.0
        else:
            delay = retry_delay(err, attempt, now=self.clock().timestamp())
            values["next_attempt_at"] = self.clock() + timedelta(seconds=delay)
            outcome = "retry"
        try:
            with self.database.unit() as s:
                phase = s.scalar(select(Delivery.status).where(Delivery.seq == seq))
                self._settle(s, seq, str(phase), **values)
        except LeaseLost:
            log.warning("attempt %d failed after the lease was lost: %s", attempt, text)
            return "lost"
        except Exception:  # e.g. the database itself is down: the lease runs out instead
            log.exception(
                "could not record the failure of attempt %d; the lease will expire", attempt
            )
            return "retry"
        if outcome == "dead":
            log.error("delivery dead after %d attempts: %s", attempt, text)
        elif outcome == "done":
            log.error("gave up best-effort writes after %d attempts: %s", attempt, text)
        else:
            log.warning("attempt %d failed (%s); retry in %.1fs", attempt, text, delay)
        return outcome


# -- operator actions ------------------------------------------------------------


def find_delivery(s: Any, ident: str) -> Delivery:
    d = s.scalars(select(Delivery).where(Delivery.delivery_id == ident)).first()
    if d is None and (ident.isascii() and ident.isdigit()):
        d = s.get(Delivery, int(ident))
    if d is None:
        raise NotFound(f"delivery {ident} not found")
    return d


def resent_by_replay(effects: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The GitHub writes a replay performs: a handled delivery (finished or not) redoes
    only those that have not succeeded, so nothing reaches GitHub twice; one never
    handled has none yet (its handler runs again and decides them)."""
    return effects_mod.pending([dict(e) for e in effects or []])


def replay(database: Database, ident: str) -> Delivery:
    """Queue a delivery again from the phase it stopped in: a handled one performs
    ``resent_by_replay``'s writes, one never handled runs its handler again."""
    with database.unit() as s:
        d = find_delivery(s, ident)
        d.status = "effects" if d.effects else "queued"
        d.attempts = 0
        d.next_attempt_at = utcnow()
        d.lease_owner = None
        d.lease_expires_at = None
        d.finished_at = None
        return d


def queue_depth(database: Database) -> dict[str, int]:
    with database.unit() as s:
        rows = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    return {status: count for status, count in rows}
