"""Faults around a real review: the web tier killed, GitHub failing, the database locked or gone.

Each test ends where the spec says it must: every delivery is done (or dead and
replayable), the ledger and its audit trail agree, and GitHub got no second
comment, check run or reaction. GitHub is faked at the HTTP layer only; the
writes the review makes are kept as GitHub keeps them (``GitHubSide``), so a
second comment would really be a second comment.

The review is story 1 of ``test_review_flow``: a high-risk patch opens with
green CI (→ awaiting_review, check run created), a reader's ``/approve`` is
refused (😕 and one reply), a writer's ``/approve`` queues it (check run
PATCHed to success, 👍).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from minipipe_gh.core.events import Event
from minipipe_gh.core.patch_states import TRANSITIONS, PatchState
from minipipe_gh.delivery import worker
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.delivery.worker import Outcome, Worker
from minipipe_gh.review.context import Context
from minipipe_gh.store import audit, ledger
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import insert_new, row_for
from minipipe_gh.store.models import AuditEntry, Delivery, Patch, utcnow
from tests.pg import free_port
from tests.scenario import R, Scenario, user
from tests.support import API, APP_ID, SECRET, WIRE, FakeGitHub, payload, signed_headers
from tests.test_review_flow import only_patch

ROOT = Path(__file__).resolve().parent.parent
P = PatchState
SHA = "a" * 40
READER_COMMENT, WRITER_COMMENT = 7001, 7002
ROLES = {"reader": "read", "writer": "write"}


# --- time that moves only when the test says so -----------------------------------------------


class StepClock:
    """The worker's clock: frozen within a step, moved forward by the test, never back."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def sync(self) -> None:
        """Catch up with real time (deliveries stored since are due at their arrival)."""
        self.now = max(self.now, utcnow())

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- GitHub's side of the writes, with faults on demand ---------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    status: int = 0
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    exception: type[Exception] | None = None
    took_effect: bool = False  # GitHub did the write; only the answer was lost
    error: str = ""  # what the delivery's last_error must mention
    wait: tuple[float, float] = (0.0, 0.0)  # the backoff the worker must choose

    def answer(self, request: Any) -> Any:
        if self.exception is not None:
            return self.exception(f"fake {self.name}", request=request)
        return (self.status, dict(self.headers), json.dumps({"message": self.message}))


FAULTS = {
    "500": Fault("500", 500, "Server Error", error="500", wait=(1.6, 2.4)),
    "502": Fault("502", 502, "Bad Gateway", error="502", wait=(1.6, 2.4)),
    "timeout": Fault(
        "timeout", exception=requests.exceptions.ConnectTimeout, error="Timeout", wait=(1.6, 2.4)
    ),
    "401": Fault("401", 401, "Bad credentials", error="BadCredentials"),
    "secondary rate limit": Fault(
        "secondary rate limit",
        403,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        headers=(("Retry-After", "60"),),
        error="RateLimitExceeded",
        wait=(60.0, 60.0),
    ),
}


class GitHubSide:
    """The check runs, comments and reactions of one repository, as GitHub would keep them.

    ``fail_next(route, fault)`` makes the next request on that route fail.
    ``log`` is every request served: (route, status or exception name).
    """

    def __init__(self, github: FakeGitHub, number: int = 2) -> None:
        self.github = github
        self.runs: dict[int, dict[str, Any]] = {}
        self.run_posts: list[dict[str, Any]] = []  # accepted creations
        self.run_patches: list[dict[str, Any]] = []  # accepted updates
        self.comments: list[dict[str, Any]] = []
        self.reactions: list[tuple[int, str]] = []  # as GitHub keeps them: each once
        self.reaction_posts: Counter[tuple[int, str]] = Counter()
        self.faults: dict[str, list[Fault]] = {}
        self.log: list[tuple[str, int | str]] = []
        routes: list[tuple[str, str, str, Callable[..., tuple[int, Any]]]] = [
            ("create_run", "POST", rf"{R}/check-runs", self.create_run),
            ("update_run", "PATCH", rf"{R}/check-runs/(\d+)", self.update_run),
            ("list_runs", "GET", rf"{R}/commits/(\w+)/check-runs", self.list_runs),
            ("reaction", "POST", rf"{R}/issues/comments/(\d+)/reactions", self.react),
            ("reply", "POST", rf"{R}/issues/{number}/comments", self.comment),
            ("list_comments", "GET", rf"{R}/issues/{number}/comments", self.list_comments),
            ("permission", "GET", rf"{R}/collaborators/([^/?]+)/permission", self.permission),
            ("reviewers", "POST", rf"{R}/pulls/{number}/requested_reviewers", self.ok),
        ]
        for name, method, path, fn in routes:
            pattern = re.compile(re.escape(WIRE) + path.replace(R, re.escape(R)) + r"(?:\?.*)?$")
            github.rsps.add_callback(
                method,
                pattern,
                callback=self._route(name, pattern, fn),
                content_type="application/json",
            )

    def fail_next(self, route: str, fault: Fault) -> None:
        self.faults.setdefault(route, []).append(fault)

    def _route(
        self, name: str, pattern: re.Pattern[str], fn: Callable[..., tuple[int, Any]]
    ) -> Callable[[Any], Any]:
        def serve(request: Any) -> Any:
            match = pattern.match(request.url)
            assert match is not None
            body = json.loads(request.body) if request.body else None
            pending = self.faults.get(name)
            if pending:
                fault = pending.pop(0)
                if fault.took_effect:
                    fn(request, body, *match.groups())
                self.log.append(
                    (name, fault.exception.__name__ if fault.exception else fault.status)
                )
                return fault.answer(request)
            status, data = fn(request, body, *match.groups())
            self.log.append((name, status))
            return status, {}, json.dumps(data)

        return serve

    # -- the endpoints -----------------------------------------------------------------------

    def ok(self, request: Any, body: Any) -> tuple[int, Any]:
        return 201, {}

    def create_run(self, request: Any, body: Any) -> tuple[int, Any]:
        ident = 555 + len(self.runs)
        self.runs[ident] = {**body, "id": ident, "app": {"id": APP_ID}}
        self.run_posts.append(body)
        return 201, self.runs[ident]

    def update_run(self, request: Any, body: Any, ident: str) -> tuple[int, Any]:
        if int(ident) not in self.runs:
            return 404, {"message": "Not Found"}
        self.runs[int(ident)].update(body)
        self.run_patches.append(body)
        return 200, self.runs[int(ident)]

    def list_runs(self, request: Any, body: Any, sha: str) -> tuple[int, Any]:
        runs = [r for r in self.runs.values() if r["head_sha"] == sha]
        return 200, {"total_count": len(runs), "check_runs": runs}

    def react(self, request: Any, body: Any, comment_id: str) -> tuple[int, Any]:
        key = (int(comment_id), body["content"])
        self.reaction_posts[key] += 1
        if key in self.reactions:
            return 200, {"id": 1, "content": key[1]}  # GitHub: "reaction exists"
        self.reactions.append(key)
        return 201, {"id": 1, "content": key[1]}

    def comment(self, request: Any, body: Any) -> tuple[int, Any]:
        self.comments.append({"id": 9100 + len(self.comments), "body": body["body"]})
        return 201, self.comments[-1]

    def list_comments(self, request: Any, body: Any) -> tuple[int, Any]:
        return 200, self.comments

    def permission(self, request: Any, body: Any, login: str) -> tuple[int, Any]:
        role = ROLES.get(login)
        if role is None:
            return 404, {"message": "Not Found"}
        legacy = {"triage": "read", "maintain": "write"}.get(role, role)
        return 200, {"permission": legacy, "role_name": role, "user": user(login)}

    # -- what GitHub shows ------------------------------------------------------------------

    def successful_run_updates(self) -> list[str | None]:
        return [b.get("conclusion") for b in self.run_patches]


# --- the review, step by step -----------------------------------------------------------------


def statuses(outcomes: list[Outcome]) -> list[str]:
    return [o.status for o in outcomes]


def delivery(database: Database, ident: str) -> Delivery:
    with database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == ident)).one()
        s.expunge(d)
        return d


def opened(rt: Runtime, sc: Scenario, github: FakeGitHub, clock: StepClock) -> None:
    """The PR opens on a high-risk path with green CI: awaiting review, check run created."""
    sc.serve_policy(None)
    sc.serve_files("src/auth/login.py", "README.md")
    sc.serve_green()
    assert sc.pr_event("opened").status_code == 202
    clock.sync()
    assert statuses(rt.worker(clock=clock).run_once()) == ["done"]
    assert only_patch(rt).state == P.AWAITING_REVIEW


def reader_approves(sc: Scenario) -> Any:
    return sc.comment(
        "/approve", login="reader", comment_id=READER_COMMENT, delivery_id="reader-approve"
    )


def writer_approves(sc: Scenario) -> Any:
    return sc.comment(
        "/approve ship it", login="writer", comment_id=WRITER_COMMENT, delivery_id="writer-approve"
    )


# --- what must hold at the end of every test --------------------------------------------------


def assert_every_delivery_settled(rt: Runtime) -> None:
    """Done, or dead with its error kept and replayable to done."""
    with rt.database.unit() as s:
        rows = s.scalars(select(Delivery).order_by(Delivery.seq)).all()
    assert rows
    for d in rows:
        assert d.status in ("done", "dead"), (d.delivery_id, d.status)
        assert d.lease_owner is None and d.finished_at is not None
        if d.status == "dead":
            assert d.last_error
            assert worker.replay(rt.database, d.delivery_id).status in ("queued", "effects")
    if any(d.status == "dead" for d in rows):
        rt.worker(clock=lambda: utcnow() + timedelta(hours=1)).run_once()
        assert_every_delivery_settled(rt)


def assert_ledger_matches_its_audit_trail(database: Database) -> None:
    with database.unit() as s:
        for patch in s.scalars(select(Patch)):
            state: str | None = None
            for row in ledger.history(s, patch.ledger_id):
                if row.outcome == "refused":
                    assert row.from_state == state  # refused in the state it was in
                if row.outcome != "moved":
                    continue
                if state is None:
                    assert (row.from_state, row.to_state) == (None, P.CREATED)
                else:
                    assert row.from_state == state
                    assert P(row.to_state) in TRANSITIONS[P(state)]
                state = row.to_state
            assert state == patch.state, (patch.ledger_id, state, patch.state)


def assert_nothing_duplicated_on_github(gh: GitHubSide, github: FakeGitHub) -> None:
    shas = Counter(b["head_sha"] for b in gh.run_posts)
    assert all(n == 1 for n in shas.values()), shas  # one check run per SHA
    posted = Counter(p for m, p, _b in github.requests if m == "POST" and p.endswith("/check-runs"))
    assert sum(posted.values()) == len(gh.run_posts)  # none created behind our back
    markers = Counter(
        re.findall(r"minipipe:reply=[^ ]+ -->", " ".join(c["body"] for c in gh.comments))
    )
    assert all(n == 1 for n in markers.values()), markers
    assert len(gh.comments) == len(markers)  # every reply carries its delivery's marker
    assert len(set(gh.reactions)) == len(gh.reactions)


def assert_the_review_ended_well(rt: Runtime, gh: GitHubSide, github: FakeGitHub) -> None:
    assert_every_delivery_settled(rt)
    assert_ledger_matches_its_audit_trail(rt.database)
    assert_nothing_duplicated_on_github(gh, github)
    patch = only_patch(rt)
    assert (patch.state, patch.meta["reviewed_by"], patch.meta["approvals"]) == (
        P.QUEUED,
        "writer",
        ["writer"],
    )
    with rt.database.unit() as s:
        trail = [
            (h.from_state, h.to_state, h.outcome, h.actor)
            for h in ledger.history(s, patch.ledger_id)
        ]
    assert [t[:2] for t in trail if t[2] == "moved"] == [
        (None, P.CREATED),
        (P.CREATED, P.VALIDATED),
        (P.VALIDATED, P.AWAITING_REVIEW),
        (P.AWAITING_REVIEW, P.QUEUED),
    ]
    assert [t[3] for t in trail if t[2] == "refused"] == ["reader"]
    # one check run, PATCHed to success exactly once, as the last thing done to it
    assert [b["head_sha"] for b in gh.run_posts] == [SHA]
    assert gh.successful_run_updates().count("success") == 1
    assert gh.successful_run_updates()[-1] == "success"
    assert gh.runs[555]["conclusion"] == "success"
    # one reply, to the reader; the reactions GitHub shows
    [reply] = gh.comments
    assert "needs `write`" in reply["body"] and "minipipe:reply=reader-approve" in reply["body"]
    assert sorted(gh.reactions) == [(READER_COMMENT, "confused"), (WRITER_COMMENT, "+1")]


# --- GitHub failing during the review ---------------------------------------------------------

# (route that fails, the step during which it fails)
WHERE = {
    "permission read (handler phase)": ("permission", "writer"),
    "check run update (effects phase)": ("update_run", "writer"),
    "reply (effects phase)": ("reply", "reader"),
}


def settle_after(
    rt: Runtime, github: FakeGitHub, clock: StepClock, fault: Fault, ident: str
) -> None:
    """The failed attempt is retried after the backoff the fault calls for, then done."""
    w = rt.worker(clock=clock)
    clock.sync()
    if fault.name == "401":
        # the token is forgotten and the retry, at once, exchanges a fresh one
        assert statuses(w.run_once()) == ["retry", "done"]
        assert github.token_exchanges == 2
    else:
        assert statuses(w.run_once()) == ["retry"]
        d = delivery(rt.database, ident)
        assert fault.error in d.last_error
        assert d.status in ("queued", "effects") and d.lease_owner is None
        waited = (d.next_attempt_at - clock()).total_seconds()
        assert fault.wait[0] <= waited <= fault.wait[1], waited
        clock.advance(fault.wait[0] - 0.1)
        assert w.run_once() == []  # not before the backoff is over
        clock.advance(fault.wait[1] - fault.wait[0] + 0.2)
        assert statuses(w.run_once()) == ["done"]
        assert github.token_exchanges == 1
    d = delivery(rt.database, ident)
    assert (d.status, d.attempts, d.last_error) == ("done", 2, None)


@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_github_failing_during_a_review_is_retried_and_acts_once(
    fault: str, where: str, rt: Runtime, deliver: Any, github: FakeGitHub
) -> None:
    sc, gh, clock = Scenario(deliver, github), GitHubSide(github), StepClock()
    opened(rt, sc, github, clock)
    route, step = WHERE[where]
    f = FAULTS[fault]

    if step == "reader":
        gh.fail_next(route, f)
    assert reader_approves(sc).status_code == 202
    if step == "reader":
        settle_after(rt, github, clock, f, "reader-approve")
    else:
        clock.sync()
        assert statuses(rt.worker(clock=clock).run_once()) == ["done"]

    if step == "writer":
        gh.fail_next(route, f)
    assert writer_approves(sc).status_code == 202
    if step == "writer":
        settle_after(rt, github, clock, f, "writer-approve")
    else:
        clock.sync()
        assert statuses(rt.worker(clock=clock).run_once()) == ["done"]

    assert (route, f.exception.__name__ if f.exception else f.status) in gh.log  # it did fail
    assert_the_review_ended_well(rt, gh, github)
    # the retry redid only the failed write: the 😕 that had succeeded is not posted again
    assert gh.reaction_posts == {(READER_COMMENT, "confused"): 1, (WRITER_COMMENT, "+1"): 1}


def test_a_reply_whose_answer_was_lost_is_not_posted_again(
    rt: Runtime, deliver: Any, github: FakeGitHub
) -> None:
    """GitHub stored the reply, then the connection timed out: the retry finds its marker."""
    sc, gh, clock = Scenario(deliver, github), GitHubSide(github), StepClock()
    opened(rt, sc, github, clock)
    lost = Fault(
        "read timeout",
        exception=requests.exceptions.ReadTimeout,
        took_effect=True,
        error="ReadTimeout",
        wait=(1.6, 2.4),
    )
    gh.fail_next("reply", lost)
    reader_approves(sc)
    settle_after(rt, github, clock, lost, "reader-approve")
    assert len(gh.comments) == 1
    assert [r for r, _s in gh.log].count("list_comments") == 1  # the retry looked first
    writer_approves(sc)
    clock.sync()
    assert statuses(rt.worker(clock=clock).run_once()) == ["done"]
    assert_the_review_ended_well(rt, gh, github)


# --- the web tier killed between storing and answering ----------------------------------------


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]


class HttpDeliver:
    """Post a signed delivery over a real socket, as GitHub does (``Deliver``'s signature)."""

    def __init__(self) -> None:
        self.port = 0

    def __call__(
        self, event_name: str, data: dict[str, Any], *, delivery_id: str | None = None, **_: Any
    ) -> Answer:
        body = json.dumps(data).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "POST", "/webhook", body, signed_headers(event_name, body, delivery_id=delivery_id)
            )
            resp = conn.getresponse()
            return Answer(resp.status, json.loads(resp.read() or b"{}"))
        finally:
            conn.close()


@contextmanager
def web_server(
    db_url: str, private_key: str, crash_on: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``tests.web_crash_server`` on a free port, up and answering /healthz; always stopped."""
    port = free_port()
    env = {
        **os.environ,
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": API,
        "SECRET_KEY": "test",
    }
    args = [sys.executable, "-m", "tests.web_crash_server", db_url, str(port)]
    proc = subprocess.Popen([*args, *([crash_on] if crash_on else [])], cwd=ROOT, env=env)
    proc.port = port  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the web server exited early ({proc.returncode})"
            assert time.monotonic() < deadline, "the web server never answered /healthz"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("crash_on", ["opened", "writer-approve"])
def test_a_web_tier_killed_before_answering_loses_nothing_and_acts_once(
    crash_on: str, rt: Runtime, github: FakeGitHub, db_url: str, private_key_pem: str
) -> None:
    post = HttpDeliver()
    sc, gh, clock = Scenario(post, github), GitHubSide(github), StepClock()
    sc.serve_policy(None)
    sc.serve_files("src/auth/login.py", "README.md")
    sc.serve_green()
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("opened", "pull_request", sc.pr_payload("opened")),
    ]
    comments: list[tuple[str, str, dict[str, Any]]] = []

    def capture(
        event_name: str, data: dict[str, Any], *, delivery_id: str | None = None, **_: Any
    ) -> Answer:
        comments.append((delivery_id or "", event_name, data))
        return Answer(202, {})

    sc.deliver = capture  # build the comment payloads as the scenario does, send them below
    reader_approves(sc)
    writer_approves(sc)
    sc.deliver = post
    steps += comments

    with web_server(db_url, private_key_pem, crash_on) as first:
        post.port = first.port  # type: ignore[attr-defined]
        for ident, event_name, data in steps:
            if ident != crash_on:
                assert post(event_name, data, delivery_id=ident).status_code == 202
                clock.sync()
                assert statuses(rt.worker(clock=clock).run_once()) == ["done"]
                continue
            # stored, then killed before a byte of the answer: GitHub sees the connection drop
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                post(event_name, data, delivery_id=ident)
            assert first.wait(timeout=10) == -signal.SIGKILL
            d = delivery(rt.database, ident)
            assert (d.status, d.attempts) == ("queued", 0)  # durable before the answer
            break

    # the operator starts the web tier again; GitHub's "Redeliver" sends the same delivery id
    with web_server(db_url, private_key_pem) as second:
        post.port = second.port  # type: ignore[attr-defined]
        rest = steps[[s[0] for s in steps].index(crash_on) :]
        ident, event_name, data = rest[0]
        again = post(event_name, data, delivery_id=ident)
        assert (again.status_code, again.body.get("duplicate")) == (200, True)
        clock.sync()
        assert statuses(rt.worker(clock=clock).run_once()) == ["done"]
        for ident, event_name, data in rest[1:]:
            assert post(event_name, data, delivery_id=ident).status_code == 202
            clock.sync()
            assert statuses(rt.worker(clock=clock).run_once()) == ["done"]

    with rt.database.unit() as s:
        rows = s.scalars(select(Delivery).order_by(Delivery.seq)).all()
    assert [(d.delivery_id, d.status, d.attempts) for d in rows] == [
        (ident, "done", 1) for ident, _e, _d in steps
    ]  # each stored once, handled once
    assert_the_review_ended_well(rt, gh, github)
    assert gh.reaction_posts == {(READER_COMMENT, "confused"): 1, (WRITER_COMMENT, "+1"): 1}


# --- the database locked, and restarted -------------------------------------------------------


LOCK_WAIT_MS = 200


def short_lock_wait(db_url: str, backend: str) -> Database:
    """The worker's own engine, giving up on a lock after LOCK_WAIT_MS instead of 30 s."""
    if backend == "postgres":
        return Database(db_url, connect_args={"options": f"-c lock_timeout={LOCK_WAIT_MS}"})
    database = Database(db_url)

    @event.listens_for(database.engine, "connect")
    def _busy_timeout(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")

    return database


@contextmanager
def someone_holds_the_write_lock(db_url: str, backend: str) -> Iterator[None]:
    """Another connection takes the lock the worker's handler needs, and keeps it.

    SQLite has one write lock for the file (``BEGIN IMMEDIATE``). On PostgreSQL
    the ledger's table is locked against writes (reads go on), as a long
    migration or a bulk repair would.
    """
    if backend == "postgres":
        conn: Any = psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"))
        conn.execute("LOCK TABLE patches IN EXCLUSIVE MODE")
    else:
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.rollback() if backend == "postgres" else conn.execute("ROLLBACK")
        conn.close()


def test_a_locked_database_delays_a_delivery_and_loses_nothing(
    rt: Runtime, deliver: Any, github: FakeGitHub, db_url: str, backend: str
) -> None:
    sc, gh, clock = Scenario(deliver, github), GitHubSide(github), StepClock()
    opened(rt, sc, github, clock)
    reader_approves(sc)
    clock.sync()
    assert statuses(rt.worker(clock=clock).run_once()) == ["done"]
    writer_approves(sc)

    database = short_lock_wait(db_url, backend)
    try:
        w = Worker(
            database,
            rt.router,
            rt.github,
            max_attempts=3,
            lease_seconds=rt.settings.lease_seconds,
            clock=clock,
        )
        clock.sync()
        [seq] = w.claim()
        with someone_holds_the_write_lock(db_url, backend):
            started = time.monotonic()
            try:
                outcome = w.process(seq).status
            except OperationalError as err:
                # SQLite has one lock for the file: recording the failure waits too and
                # gives up; the delivery keeps its lease, the fallback for a failed worker
                outcome = f"raised {err}"
            waited = time.monotonic() - started
        assert waited >= LOCK_WAIT_MS / 1000  # it did wait for the lock, then gave up
        d = delivery(rt.database, "writer-approve")
        assert (d.status, d.attempts, d.effects) == ("queued", 1, None)
        assert only_patch(rt).state == P.AWAITING_REVIEW  # the attempt left nothing behind
        assert gh.run_patches == [] and WRITER_COMMENT not in dict(gh.reactions)
        if backend == "postgres":
            # only the ledger's table was locked: the worker recorded the failed attempt
            assert outcome == "retry"
            assert "lock timeout" in d.last_error and d.lease_owner is None
            clock.advance(3)  # the backoff
        else:
            assert outcome == "retry" or "database is locked" in outcome, outcome
            clock.advance(rt.settings.lease_seconds + 1)  # the backoff, or the lease
        assert statuses(w.run_once()) == ["done"]
    finally:
        database.dispose()
    assert delivery(rt.database, "writer-approve").attempts == 2
    assert_the_review_ended_well(rt, gh, github)
    assert gh.reaction_posts == {(READER_COMMENT, "confused"): 1, (WRITER_COMMENT, "+1"): 1}


def restart_postgres(cluster: Any, while_down: Callable[[], None]) -> None:
    data, log = str(cluster.data), str(cluster.root / "log")
    cluster._run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    try:
        while_down()
    finally:
        # restart reuses the options of the last start (postmaster.opts)
        cluster._run("pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "restart")


def test_the_database_restarting_mid_run_costs_no_delivery(
    rt: Runtime, deliver: Any, github: FakeGitHub, backend: str, pg_cluster: Any
) -> None:
    sc, gh, clock = Scenario(deliver, github), GitHubSide(github), StepClock()
    opened(rt, sc, github, clock)  # the worker's pool now holds live connections
    reader_approves(sc)
    writer_approves(sc)
    w = rt.worker(clock=clock)
    connects: list[int] = []
    event.listen(rt.database.engine, "connect", lambda *_: connects.append(1))

    if backend == "postgres":

        def while_down() -> None:
            clock.sync()
            with pytest.raises(OperationalError):
                w.run_once()  # nothing to reach: nothing claimed, nothing lost

        restart_postgres(pg_cluster, while_down)
    else:
        rt.database.engine.dispose()  # every pooled connection to the file is gone
    assert [delivery(rt.database, i).status for i in ("reader-approve", "writer-approve")] == [
        "queued",
        "queued",
    ]

    clock.sync()
    assert statuses(w.run_once()) == ["done", "done"]  # pre-ping: new connections, no error
    assert connects, "the worker must have reconnected"
    assert [delivery(rt.database, i).attempts for i in ("reader-approve", "writer-approve")] == [
        1,
        1,
    ]
    assert_the_review_ended_well(rt, gh, github)


# --- a worker stalled past its lease ----------------------------------------------------------

LEASE_S = 30


def test_a_worker_stalled_past_its_lease_does_not_commit_a_delivery_twice(
    database: Database,
) -> None:
    """Worker A stalls inside a handler (GC pause, starved CPU) past its lease; B takes over.

    When A wakes up, the delivery is B's: A's handler work must not commit as well,
    or the delivery acts twice ("never two at once", "acts once").
    """
    handled: list[str] = []
    takeover: dict[str, Any] = {}

    def run_b() -> None:
        late = lambda: utcnow() + timedelta(seconds=LEASE_S + 1)  # noqa: E731  A's lease is over
        b = Worker(database, router, None, lease_seconds=LEASE_S, worker_id="B", clock=late)
        takeover["outcomes"] = statuses(b.run_once())

    router = Router()

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        me = "B" if handled else "A"
        handled.append(me)
        if me == "A":  # A stalls before it writes (say, on a slow GitHub read) while B runs
            thread = threading.Thread(target=run_b)
            thread.start()
            takeover["thread"] = thread
            thread.join(timeout=5)
        audit.record(
            ctx.db,
            entity="delivery",
            entity_id=ctx.event.delivery_id,
            actor=me,
            source="worker",
            outcome="noted",
        )

    data = payload("pull_request.synchronize", number=2, pull_request__number=2)
    event_ = Event("stall-1", "pull_request", data, {"X-GitHub-Event": "pull_request"})
    assert insert_new(database.engine, [row_for(event_)]) == {"stall-1"}
    a = Worker(database, router, None, lease_seconds=LEASE_S, worker_id="A")
    a_outcomes = statuses(a.run_once())
    takeover["thread"].join(timeout=60)
    assert not takeover["thread"].is_alive()

    with database.unit() as s:
        acted = s.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.entity == "delivery", AuditEntry.entity_id == "stall-1"
            )
        ).all()
    d = delivery(database, "stall-1")
    assert d.status == "done"
    assert len(acted) == 1, (
        f"handled and committed by {acted}; A: {a_outcomes}, B: {takeover.get('outcomes')}"
    )
