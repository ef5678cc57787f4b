"""Keyset pagination over 10,000 sessions and 10,000 patches: every row once, in order."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import insert

from minipipe_gh.core.errors import Invalid
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.session_states import SessionState
from minipipe_gh.store import ledger, pagination, registry
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession, Patch, utcnow

N = 10_000
PROJECTS = [f"org{i}/repo{i}" for i in range(7)]
AGENTS = ["claude", "aider", "codex", "unknown"]
RUNS = ["run-a", "run-b", "run-c", None]
WORKSTREAMS = ["ws-1", "ws-2", None]


def sorted_ids(n: int) -> list[str]:
    ids = [registry.new_id() for _ in range(n)]
    assert len(set(ids)) == n, "ids must be distinct"
    assert ids == sorted(ids), "ids must increase in creation order"
    return ids


@pytest.fixture(scope="module")
def seeded(make_db: Callable[[], str]) -> Iterator[Any]:
    """One database with N sessions and N patches, read-only for the tests below."""
    database = Database(make_db())
    rng = random.Random(1234)
    now = utcnow()
    sessions = [
        {
            "session_id": sid,
            "project_id": rng.choice(PROJECTS),
            "agent_type": rng.choice(AGENTS),
            "title": f"session {i}",
            "state": rng.choice(list(SessionState)).value,
            "meta": {},
            "created_at": now,
            "updated_at": now,
            "last_activity_at": now,
            "version": 1,
        }
        for i, sid in enumerate(sorted_ids(N))
    ]
    patches = []
    for i, lid in enumerate(sorted_ids(N)):
        owner = sessions[rng.randrange(N)]
        patches.append(
            {
                "ledger_id": lid,
                "patch_id": f"{i:040x}",
                "session_id": owner["session_id"],
                "project_id": owner["project_id"],
                "run_id": rng.choice(RUNS),
                "workstream_id": rng.choice(WORKSTREAMS),
                "state": rng.choice(list(PatchState)).value,
                "risk": "low",
                "risk_reasons": [],
                "paths": [],
                "meta": {},
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
    with database.unit() as db:
        db.execute(insert(AgentSession), sessions)
        db.execute(insert(Patch), patches)
    yield database, sessions, patches
    database.dispose()


def walk(fetch: Callable[..., Any], limit: int, **filters: Any) -> tuple[list[Any], int]:
    """Follow next_cursor to the end; returns every item and the number of pages."""
    items: list[Any] = []
    cursor = None
    pages = 0
    while True:
        page = fetch(cursor=cursor, limit=limit, **filters)
        pages += 1
        assert len(page.items) <= limit
        if page.next_cursor is not None:
            assert len(page.items) == limit, "a page with a next cursor must be full"
        items.extend(page.items)
        if page.next_cursor is None:
            return items, pages
        cursor = page.next_cursor
        assert pages <= N + 1, "pagination does not terminate"


def session_ids(database: Database, limit: int, **filters: Any) -> tuple[list[str], int]:
    with database.unit() as db:
        rows, pages = walk(lambda **kw: registry.list_sessions(db, **kw), limit, **filters)
        for row in rows:
            for key, value in filters.items():
                assert getattr(row, key) == value
        return [r.session_id for r in rows], pages


def ledger_ids(
    database: Database, limit: int, fetch: Callable[..., Any] | None = None, **filters: Any
) -> tuple[list[str], list[Any]]:
    with database.unit() as db:
        rows, _ = walk(lambda **kw: (fetch or ledger.list_patches)(db, **kw), limit, **filters)
        return [r.ledger_id for r in rows], rows


# --- sessions: newest first -------------------------------------------------------


@pytest.mark.parametrize("limit", [500, 37, 1])
def test_every_session_once_newest_first(seeded: Any, limit: int) -> None:
    database, sessions, _ = seeded
    if limit == 1:  # one row per page over all 10,000 is slow; walk one project's worth
        project = PROJECTS[0]
        expected = [s["session_id"] for s in sessions if s["project_id"] == project][::-1][:300]
        with database.unit() as db:
            got, cursor = [], None
            while len(got) < 300:
                page = registry.list_sessions(db, project_id=project, cursor=cursor, limit=1)
                got.extend(s.session_id for s in page.items)
                cursor = page.next_cursor
        assert got == expected
        return
    ids, pages = session_ids(database, limit)
    assert len(ids) == N and len(set(ids)) == N
    assert ids == [s["session_id"] for s in reversed(sessions)]
    assert pages == -(-N // limit)  # the last page is full when limit divides N


@pytest.mark.parametrize(
    "filters",
    [
        {"project_id": PROJECTS[3]},
        {"state": "active"},
        {"agent_type": "aider"},
        {"project_id": PROJECTS[1], "state": "paused", "agent_type": "claude"},
        {"project_id": "nobody/nothing"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_session_filters_across_pages(seeded: Any, filters: dict[str, str]) -> None:
    database, sessions, _ = seeded
    expected = [
        s["session_id"] for s in reversed(sessions) if all(s[k] == v for k, v in filters.items())
    ]
    ids, _ = session_ids(database, 97, **filters)
    assert ids == expected
    assert len(set(ids)) == len(ids)


def test_active_sessions_walk(seeded: Any) -> None:
    database, sessions, _ = seeded
    project = PROJECTS[5]
    expected = [
        s["session_id"]
        for s in reversed(sessions)
        if s["project_id"] == project and s["state"] == "active"
    ]
    assert expected, "the seed should have active sessions in every project"
    with database.unit() as db:
        rows, pages = walk(
            lambda **kw: registry.get_active_sessions(db, project_id=project, **kw), 50
        )
    assert [r.session_id for r in rows] == expected
    assert pages == max(1, -(-len(expected) // 50))


# --- patches: oldest first --------------------------------------------------------


@pytest.mark.parametrize("limit", [500, 41])
def test_every_patch_once_oldest_first(seeded: Any, limit: int) -> None:
    database, _, patches = seeded
    ids, _ = ledger_ids(database, limit)
    assert len(ids) == N and len(set(ids)) == N
    assert ids == [p["ledger_id"] for p in patches]


@pytest.mark.parametrize(
    "filters",
    [
        {"state": "awaiting_review"},
        {"run_id": "run-b"},
        {"workstream_id": "ws-2"},
        {"project_id": PROJECTS[2], "state": "queued"},
        {"run_id": "run-a", "workstream_id": "ws-1", "state": "awaiting_review"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_patch_filters_across_pages(seeded: Any, filters: dict[str, str]) -> None:
    database, _, patches = seeded
    expected = [p["ledger_id"] for p in patches if all(p[k] == v for k, v in filters.items())]
    ids, rows = ledger_ids(database, 53, **filters)
    assert ids == expected
    for row in rows:
        for key, value in filters.items():
            assert getattr(row, key) == value


def test_patches_of_one_session(seeded: Any) -> None:
    database, _, patches = seeded
    session_id = patches[-1]["session_id"]
    expected = [p["ledger_id"] for p in patches if p["session_id"] == session_id]
    ids, _ = ledger_ids(database, 1, session_id=session_id)
    assert ids == expected


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"run_id": "run-c"},
        {"workstream_id": "ws-1"},
        {"run_id": "run-a", "workstream_id": "ws-2"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "all",
)
def test_review_queue_across_pages(seeded: Any, filters: dict[str, str]) -> None:
    database, _, patches = seeded
    expected = [
        p["ledger_id"]
        for p in patches
        if p["state"] == "awaiting_review" and all(p[k] == v for k, v in filters.items())
    ]
    assert expected
    ids, rows = ledger_ids(database, 50, ledger.list_patches_awaiting_review, **filters)
    assert ids == expected
    assert {r.state for r in rows} == {"awaiting_review"}


# --- bounds and bad cursors -------------------------------------------------------


LISTINGS = {
    "sessions": lambda db, **kw: registry.list_sessions(db, **kw),
    "active": lambda db, **kw: registry.get_active_sessions(db, **kw),
    "patches": lambda db, **kw: ledger.list_patches(db, **kw),
    "review_queue": lambda db, **kw: ledger.list_patches_awaiting_review(db, **kw),
}


@pytest.mark.parametrize("listing", LISTINGS.values(), ids=LISTINGS.keys())
@pytest.mark.parametrize("limit", [0, -1, 501, 10_000])
def test_limit_out_of_bounds_is_refused(seeded: Any, listing: Any, limit: int) -> None:
    database, _, _ = seeded
    with pytest.raises(Invalid) as caught, database.unit() as db:
        listing(db, limit=limit)
    assert caught.value.field == "limit"
    assert "limit" in str(caught.value)


@pytest.mark.parametrize("listing", LISTINGS.values(), ids=LISTINGS.keys())
def test_limit_bounds_are_inclusive(seeded: Any, listing: Any) -> None:
    database, _, _ = seeded
    with database.unit() as db:
        assert len(listing(db, limit=1).items) == 1
        big = listing(db, limit=pagination.MAX_LIMIT)
    assert 1 <= len(big.items) <= 500


GARBAGE = [
    "!!!",
    "not a cursor",
    "%00%00",
    "////",
    "=",
    "abc",  # decodes to bytes that are not UTF-8
    base64.urlsafe_b64encode(b"../../etc/passwd").decode(),
    base64.urlsafe_b64encode(b"x' OR 1=1 --").decode(),
    base64.urlsafe_b64encode(b"a" * 65).decode(),
]


@pytest.mark.parametrize("listing", LISTINGS.values(), ids=LISTINGS.keys())
@pytest.mark.parametrize("cursor", GARBAGE)
def test_garbage_cursor_is_refused(seeded: Any, listing: Any, cursor: str) -> None:
    database, _, _ = seeded
    with pytest.raises(Invalid) as caught, database.unit() as db:
        listing(db, cursor=cursor)
    assert caught.value.field == "cursor"
    assert "cursor" in str(caught.value)


def test_cursor_round_trips_and_is_url_safe(seeded: Any) -> None:
    database, sessions, _ = seeded
    with database.unit() as db:
        page = registry.list_sessions(db, limit=10)
    cursor = page.next_cursor
    assert cursor and all(c.isalnum() or c in "-_" for c in cursor)
    assert pagination.decode(cursor) == page.items[-1].session_id
    assert pagination.decode(None) is None and pagination.decode("") is None


# --- rows written while a client walks --------------------------------------------


def test_rows_added_during_a_walk_are_not_repeated(database: Database) -> None:
    with database.unit() as db:
        s = registry.create_session(
            db, project_id="octo/walk", agent_type="a", title="t", actor="b", source="t"
        )
        first = [
            ledger.record_patch(db, s, f"{i:040x}", actor="b", source="t").ledger_id
            for i in range(25)
        ]
    seen: list[str] = []
    added: list[str] = []
    cursor = None
    while True:
        with database.unit() as db:
            page = ledger.list_patches(db, cursor=cursor, limit=10)
        seen.extend(p.ledger_id for p in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        with database.unit() as db:  # a push lands between two pages
            sess = registry.get_session(db, s.session_id)
            added.append(ledger.record_patch(db, sess, "f" * 40, actor="b", source="t").ledger_id)
    assert len(seen) == len(set(seen))
    assert seen == first + added
