"""The inbox's write path: group commit under concurrent requests, and what it stores.

The inbox writes through the driver, not the ORM (see ``inbox._InsertNew``), so
these tests read every stored value back through the ORM, on both backends.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from minipipe_gh.core.events import Event, order_key
from minipipe_gh.store import db as db_module
from minipipe_gh.store import inbox as inbox_module
from minipipe_gh.store import migrate
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import BATCH_MAX, Inbox, insert_new, row_for
from minipipe_gh.store.models import Delivery
from tests.support import payload


def stored(rt) -> dict[str, Delivery]:
    with rt.database.unit() as s:
        return {d.delivery_id: d for d in s.scalars(select(Delivery))}


def comment_event(delivery_id: str, comment_id: int) -> tuple[Event, bytes]:
    data = payload("issue_comment.created", comment__id=comment_id, comment__body="/approve")
    raw = json.dumps(data, indent=2).encode()  # as received: whitespace and all
    headers = {"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": delivery_id}
    return Event(delivery_id, "issue_comment", data, headers), raw


def store_all_at_once(rt, jobs: list[tuple[Event, bytes]]) -> dict[int, object]:
    """Each job stored by a thread of its own, all released together: what each
    ``store`` returned, or the database error it raised."""
    outcomes: dict[int, object] = {}
    start = threading.Barrier(len(jobs))

    def send(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = rt.inbox.store(*jobs[i])
        except DBAPIError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == len(jobs), "every request was answered"
    return outcomes


def test_what_the_driver_writes_the_orm_reads_back(rt):
    event, raw = comment_event("round-trip", 4242)
    before = datetime.now(UTC)
    assert rt.inbox.store(event, raw) is True
    row = stored(rt)["round-trip"]
    assert row.payload == raw.decode()  # the body kept byte for byte
    assert row.headers == {"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": "round-trip"}
    assert (row.event, row.action, row.status, row.attempts) == (
        "issue_comment",
        "created",
        "queued",
        0,
    )
    assert row.installation_id == event.installation_id
    assert row.order_key == order_key(event) == "Codertocat/Hello-World"
    assert row.natural_key == "issue_comment:created:4242"
    for stamp in (row.received_at, row.next_attempt_at):
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)


def test_concurrent_requests_each_learn_whether_their_delivery_was_new(rt):
    """32 threads at once: 8 redeliver one id, 8 send one comment under 8 ids, 16 are
    distinct. Exactly one of each duplicate group is told "new"; every delivery is
    stored once."""
    jobs = [comment_event("same-id", 1) for _ in range(8)]
    jobs += [comment_event(f"same-comment-{i}", 2) for i in range(8)]
    jobs += [comment_event(f"distinct-{i}", 100 + i) for i in range(16)]
    answers = store_all_at_once(rt, jobs)
    assert all(a is True or a is False for a in answers.values())
    assert sum(answers[i] for i in range(8)) == 1
    assert sum(answers[i] for i in range(8, 16)) == 1
    assert all(answers[i] for i in range(16, 32))
    rows = stored(rt)
    assert len(rows) == 1 + 1 + 16
    assert "same-id" in rows
    told_new = [jobs[i][0].delivery_id for i in range(8, 16) if answers[i]]
    assert [k for k in rows if k.startswith("same-comment-")] == told_new


def test_headers_and_timestamps_as_stored_are_what_the_orm_and_the_database_read(rt):
    """The headers' JSON text (written with orjson on SQLite) reads back as the dict
    sent, non-ASCII included, and is JSON to the database itself; a row's two
    timestamps, one value processed once, are stored equal."""
    event, raw = comment_event("headers-json", 4343)
    event.headers["User-Agent"] = "GitHub-Hookshot/é 🚀"
    assert rt.inbox.store(event, raw) is True
    row = stored(rt)["headers-json"]
    assert row.headers == {
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": "headers-json",
        "User-Agent": "GitHub-Hookshot/é 🚀",
    }
    assert row.received_at == row.next_attempt_at
    if rt.database.is_sqlite:
        with rt.database.unit() as s:
            agent = s.execute(
                text(
                    "SELECT json_extract(headers, '$.\"User-Agent\"') FROM deliveries "
                    "WHERE delivery_id = 'headers-json'"
                )
            ).scalar_one()
        assert agent == "GitHub-Hookshot/é 🚀"


def test_the_workers_poke_is_built_once_per_database(monkeypatch):
    """``wake_workers`` runs after every commit: it reuses its Poke (building one
    reads the wake folder's path) rather than build one per call."""
    built: list[str] = []
    folder = inbox_module.wake_folder
    monkeypatch.setattr(inbox_module, "_POKES", {})
    monkeypatch.setattr(inbox_module, "wake_folder", lambda url: built.append(url) or folder(url))
    for _ in range(5):
        inbox_module.wake_workers("sqlite:////tmp/poke-once.db")
    assert built == ["sqlite:////tmp/poke-once.db"]


def test_more_rows_than_one_statement_holds_are_stored_in_one_call(rt):
    n = BATCH_MAX * 2 + 3
    rows = [row_for(*comment_event(f"bulk-{i}", 10_000 + i)) for i in range(n)]
    rows.append(dict(rows[0]))  # a repeat inside the same call is not new twice
    assert insert_new(rt.database.engine, rows) == {f"bulk-{i}" for i in range(n)}
    assert len(stored(rt)) == n
    assert insert_new(rt.database.engine, rows[:5]) == set()  # all known now


def test_a_batch_with_repeats_stores_each_delivery_once_with_its_own_body(rt, backend, monkeypatch):
    """One statement on PostgreSQL (rows and bodies together, outside a transaction):
    an id sent twice in the batch, a redelivery of a stored one, and a second id for a
    stored comment (its natural key) each store nothing more, and no body is misfiled."""
    first = row_for(*comment_event("batch-known", 9_001))
    assert insert_new(rt.database.engine, [first]) == {"batch-known"}
    twice = row_for(*comment_event("batch-twice", 9_002))
    other = row_for(*comment_event("batch-other", 9_003))
    same_comment = row_for(*comment_event("batch-same-comment", 9_001))
    rows = [twice, dict(first), other, dict(twice), same_comment]
    ran: list[tuple[str, bool]] = []
    if backend == "postgres":
        import psycopg

        real = psycopg.Cursor.execute

        def execute(self, query, params=None, **kw):
            ran.append((str(query).split()[0], self.connection.autocommit))
            return real(self, query, params, **kw)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    conn = rt.database.engine.raw_connection()
    try:
        assert inbox_module._insert_for(rt.database.engine)(conn, rows) == {
            "batch-twice",
            "batch-other",
        }
        if backend == "postgres":  # left as the pool lent it: transactions as usual
            assert conn.dbapi_connection.autocommit is False
    finally:
        conn.close()
    if backend == "postgres":  # rows and bodies in one statement, outside BEGIN/COMMIT
        assert ran == [("WITH", True)]
    got = stored(rt)
    assert sorted(got) == ["batch-known", "batch-other", "batch-twice"]
    for row in (first, twice, other):
        assert got[row["delivery_id"]].payload == row["payload"]
    with rt.database.unit() as s:
        bodies = s.execute(text("SELECT count(*) FROM delivery_payloads")).scalar()
    assert bodies == 3


def test_the_leader_waits_for_stragglers_only_while_another_connection_writes(rt):
    """The group commit's pause (``Inbox._pause``) pays only when the writer's turn is
    shared: a lone web process on SQLite writes each batch at once, and pauses again
    once a worker (another connection) commits. On PostgreSQL it always pauses."""
    inbox = rt.inbox
    ids = iter(range(7000, 8000))  # a comment id each: the same one twice is a duplicate

    def commit_two(tag: str) -> bool:
        rows = [row_for(*comment_event(f"{tag}-{i}", next(ids))) for i in (1, 2)]
        batch = [inbox_module._Pending(row) for row in rows]
        inbox._commit(batch)
        assert all(p.new for p in batch)
        return inbox._together

    sqlite = rt.database.is_sqlite
    commit_two("first")  # whatever came before this test's first commit
    assert commit_two("alone") is not sqlite  # nobody else wrote since: no pause on SQLite
    assert commit_two("still-alone") is not sqlite
    insert_new(rt.database.engine, [row_for(*comment_event("a-worker-wrote", next(ids)))])
    assert commit_two("after-another-writer") is True
    assert commit_two("alone-again") is not sqlite
    assert commit_two("one") is not sqlite and len(stored(rt)) == 6 * 2 + 1


def test_a_failed_commit_fails_each_request_in_it_and_the_next_commit_goes_ahead(rt):
    """A row the database refuses (no event name) fails its whole batch: every request
    in it hears the error rather than hanging, and the requests behind it are led
    and stored as usual."""
    broken = Event("broken", None, {"action": "created"}, {})  # type: ignore[arg-type]
    jobs = [(broken, b"{}")] + [comment_event(f"fine-{i}", 500 + i) for i in range(15)]
    outcomes = store_all_at_once(rt, jobs)
    assert isinstance(outcomes[0], IntegrityError)
    assert all(o is True or isinstance(o, IntegrityError) for o in outcomes.values())
    failed = [i for i in range(1, len(jobs)) if outcomes[i] is not True]
    for i in failed:  # GitHub's redelivery of what failed is stored now
        assert rt.inbox.store(*jobs[i]) is True
    assert sorted(stored(rt)) == sorted(f"fine-{i}" for i in range(15))


def _store_in_child(inbox: Inbox, parent_pool: int, queue) -> None:
    inherited = {  # what of the parent's the child would use: nothing
        "inbox connection": inbox._conn is not None,
        "inbox engine": inbox._engine is not None,
        "app's pool": id(inbox.database.engine.pool) == parent_pool,
    }
    queue.put((inherited, inbox.store(*comment_event("from-the-child", 9001))))


def test_a_forked_process_stores_through_connections_of_its_own(rt):
    """As under ``gunicorn --preload``: the parent has stored (and holds a connection);
    the forked child stores through its own, and the parent carries on after it."""
    assert rt.inbox.store(*comment_event("before-fork", 9000)) is True
    assert rt.inbox._conn is not None  # held between batches: what a child must not use
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    parent_pool = id(rt.database.engine.pool)
    child = ctx.Process(target=_store_in_child, args=(rt.inbox, parent_pool, queue))
    child.start()
    inherited, stored_new = queue.get(timeout=30)
    assert inherited == {
        "inbox connection": False,
        "inbox engine": False,
        "app's pool": False,
    }
    assert stored_new is True
    child.join(timeout=30)
    assert child.exitcode == 0
    assert rt.inbox.store(*comment_event("after-fork", 9002)) is True
    assert sorted(stored(rt)) == ["after-fork", "before-fork", "from-the-child"]


def test_a_wal_grown_in_a_burst_is_truncated_once_deliveries_pause(tmp_path, monkeypatch):
    """SQLite only (its own file, whichever backend the suite runs on)."""
    monkeypatch.setattr(db_module, "SQLITE_WAL_SIZE_LIMIT", 64 * 1024)
    monkeypatch.setattr(inbox_module, "WAL_TRUNCATE_QUIET_S", 0.5)
    path = tmp_path / "wal.db"
    migrate.upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    inbox = Inbox(database)
    wal = tmp_path / "wal.db-wal"
    try:
        sizes = []
        for i in range(60):  # a burst, within the first (1 s) checkpoint interval
            assert inbox.store(*comment_event(f"burst-{i}", 20_000 + i)) is True
            sizes.append(wal.stat().st_size)
        assert sizes == sorted(sizes), "the WAL was not truncated during the burst"
        assert sizes[-1] > 2 * 64 * 1024
        monkeypatch.setattr(inbox_module, "CHECKPOINT_EVERY_S", 0.05)
        deadline = time.monotonic() + 10
        while wal.exists() and wal.stat().st_size > 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not wal.exists() or wal.stat().st_size <= 64 * 1024
        assert inbox.store(*comment_event("after-the-pause", 30_000)) is True
        with database.unit() as s:
            assert len(s.scalars(select(Delivery)).all()) == 61
    finally:
        inbox._stop_checkpoints.set()
        database.dispose()
