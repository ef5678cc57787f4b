"""Registry and review-queue latency as the tables grow: 10k, 100k and 1M patches.

    .venv/bin/python bench/registry.py [--max-rows N] [--calls N] [--db PATH]

Seeds a fresh SQLite file (``migrate.upgrade`` then bulk inserts in one
transaction, time-sorted ULID-style ids) with sessions = patches / 10 spread
over ~1,000 projects and a realistic mix of states (~2% of patches awaiting
review, ~10% of sessions active), then for each size times, over ``--calls``
calls each, through the real functions and a fresh read unit per call (what one
API request pays):

- ``ledger.list_patches_awaiting_review(limit=50)``, first page
- the same, a page deep in the queue (a cursor from the second half)
- ``registry.get_active_sessions(project_id=<random>, limit=50)``

and prints p50/p99 in milliseconds per size, the p99 ratio of the largest size
to 10k, and the SQLite query plan of each query. Goal: p99 under 5 ms at 1M
rows, flat as rows grow.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from minipipe_gh.store import ledger, migrate, pagination, registry
from minipipe_gh.store.db import Database

SIZES = (10_000, 100_000, 1_000_000)
PATCHES_PER_SESSION = 10
PROJECTS = [f"org{i % 97}/repo-{i}" for i in range(1_000)]
AGENTS = ["claude", "aider", "codex", "copilot", "unknown"]
PATCH_MIX = {  # ~2% awaiting review; most history is decided
    "committed": 60,
    "dropped": 25,
    "created": 3,
    "awaiting_review": 2,
    "validated": 2,
    "queued": 2,
    "quarantined": 2,
    "verified": 2,
    "applied": 1,
    "rolled_back": 1,
}
SESSION_MIX = {"completed": 60, "failed": 15, "active": 10, "paused": 10, "created": 5}
BATCH = 50_000
STEP = timedelta(seconds=20)  # one row every 20 s: 1.1M rows is ~8 months of history

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
PAIRS = [a + b for a in CROCKFORD for b in CROCKFORD]  # 10 bits -> 2 characters
SHIFTS = range(120, -1, -10)


class Ids:
    """ULID-style ids (48-bit ms time, 80 random bits), strictly increasing in time."""

    def __init__(self, start: datetime, rng: random.Random) -> None:
        self.now = start.astimezone(UTC).replace(tzinfo=None)  # SQLite stores naive UTC
        self.rng = rng

    def next(self) -> tuple[str, str]:
        """A new id and its creation time as the text SQLAlchemy stores in SQLite."""
        self.now += STEP
        ms = int(self.now.replace(tzinfo=UTC).timestamp() * 1000)
        n = (ms << 80) | self.rng.getrandbits(80)
        ulid = "".join(PAIRS[(n >> s) & 1023] for s in SHIFTS)
        return ulid, self.now.isoformat(sep=" ", timespec="microseconds")


def pick(rng: random.Random, mix: dict[str, int], k: int) -> list[str]:
    return rng.choices(list(mix), weights=list(mix.values()), k=k)


SESSION_COLUMNS = (
    "session_id, project_id, workstream_id, agent_type, title, branch, base_branch, pr_number,"
    " state, metadata, created_at, updated_at, last_activity_at, version"
)
PATCH_COLUMNS = (
    "ledger_id, patch_id, session_id, project_id, pr_number, run_id, workstream_id, state, risk,"
    " risk_reasons, files, additions, deletions, paths, metadata, created_at, updated_at, version"
)


def placeholders(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


def seed(database: Database, ids: Ids, rng: random.Random, n_patches: int) -> None:
    """Add ``n_patches`` patches and a tenth as many sessions, in one transaction.

    Plain ``executemany`` on the driver connection in batches, with values in the
    exact text forms SQLAlchemy writes (checked by ``check_seed`` through the ORM).
    """
    n_sessions = n_patches // PATCHES_PER_SESSION
    session_states = pick(rng, SESSION_MIX, n_sessions)
    patch_states = pick(rng, PATCH_MIX, n_patches)
    paths = json.dumps(["src/app.py", "tests/test_app.py", "README.md"])
    meta = json.dumps({"review_status": "pending", "approvals": []})
    insert_session = (
        f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({placeholders(SESSION_COLUMNS)})"
    )
    insert_patch = f"INSERT INTO patches ({PATCH_COLUMNS}) VALUES ({placeholders(PATCH_COLUMNS)})"
    sessions: list[tuple[Any, ...]] = []
    patches: list[tuple[Any, ...]] = []
    raw = database.engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        cur.execute("BEGIN IMMEDIATE")
        for i in range(n_sessions):
            sid, at = ids.next()
            project = PROJECTS[rng.randrange(len(PROJECTS))]
            workstream = f"ws-{rng.randrange(200)}"
            pr = rng.randrange(1, 100_000)
            sessions.append(
                (
                    sid,
                    project,
                    workstream,
                    AGENTS[rng.randrange(len(AGENTS))],
                    f"agent task {sid[-6:]}",
                    f"minipipe/{sid[-8:]}-task",
                    "main",
                    pr,
                    session_states[i],
                    "{}",
                    at,
                    at,
                    at,
                    1,
                )
            )
            for j in range(PATCHES_PER_SESSION):
                lid, pat = ids.next()
                state = patch_states[i * PATCHES_PER_SESSION + j]
                patches.append(
                    (
                        lid,
                        f"{rng.getrandbits(160):040x}",
                        sid,
                        project,
                        pr,
                        f"run-{rng.randrange(5_000)}",
                        workstream,
                        state,
                        "high" if state == "awaiting_review" else "low",
                        "[]",
                        3,
                        40,
                        7,
                        paths,
                        meta,
                        pat,
                        pat,
                        1,
                    )
                )
            if len(patches) >= BATCH:
                cur.executemany(insert_session, sessions)
                cur.executemany(insert_patch, patches)
                sessions.clear()
                patches.clear()
        cur.executemany(insert_session, sessions)
        cur.executemany(insert_patch, patches)
        cur.execute("COMMIT")
    finally:
        raw.close()


def check_seed(database: Database, ledger_id: str) -> None:
    """The raw rows read back through the ORM as the app would write them."""
    with database.unit() as s:
        patch = ledger.get_patch(s, ledger_id)
        session = registry.get_session(s, patch.session_id)
        assert patch.created_at.tzinfo is UTC and session.created_at < patch.created_at
        assert patch.meta["approvals"] == [] and patch.paths and session.meta == {}
        assert patch.version == 1 and patch.ledger_id > session.session_id


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(calls: int, fn: Callable[[], int]) -> tuple[list[float], list[float], int]:
    """One round after a short warm-up: wall and CPU times (ms) per call, and rows returned.

    CPU time (this thread's) is the code's own cost; wall time adds whatever the
    host's scheduler takes away, which on a shared host is most of the tail.
    """
    for _ in range(min(50, calls)):
        fn()
    gc.collect()
    wall: list[float] = []
    cpu: list[float] = []
    rows = 0
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        rows += fn()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return wall, cpu, rows


@contextmanager
def captured_sql(database: Database) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(database.engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", grab)


def query_plan(database: Database, call: Callable[[], int]) -> list[str]:
    with captured_sql(database) as seen:
        call()
    statement, params = seen[-1]
    with database.engine.connect() as conn:
        raw = conn.connection.driver_connection
        plan = raw.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    return [row[-1] for row in plan]


def sql_only(database: Database, call: Callable[[], int], raw: Any) -> Callable[[], int]:
    """The bare SELECTs the call emits (50 captured, cycled), without the ORM or a unit."""
    with captured_sql(database) as seen:
        for _ in range(50):
            call()
    cycle = itertools.cycle(seen)

    def run() -> int:
        statement, params = next(cycle)
        return len(raw.execute(statement, params).fetchall())

    return run


@dataclass
class Measured:
    """Every round's samples of one query at one size."""

    size: int
    sessions: int
    orm: list[list[float]] = field(default_factory=list)
    cpu: list[list[float]] = field(default_factory=list)
    sql: list[list[float]] = field(default_factory=list)
    rows: int = 0
    calls: int = 0

    def p50(self, kind: str = "orm") -> float:
        return percentile([x for r in getattr(self, kind) for x in r], 0.50)

    def p99s(self, kind: str = "orm") -> list[float]:
        return [percentile(r, 0.99) for r in getattr(self, kind)]

    def p99(self, kind: str = "orm") -> float:
        """The median round's p99: one burst of other work on the host moves one round only."""
        return statistics.median(self.p99s(kind))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-rows", type=int, default=SIZES[-1], help="largest patch count")
    parser.add_argument("--calls", type=int, default=1_000, help="timed calls per query and size")
    parser.add_argument("--db", type=Path, default=None, help="keep the database at this path")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --calls per query")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sizes = [n for n in SIZES if n <= args.max_rows] or [args.max_rows]

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="minipipe-bench-")
        path = Path(tmp.name) / "bench.db"
    else:
        path = args.db
        if path.exists():
            sys.exit(f"{path} exists; give a new path")
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    database = Database(url)
    rng = random.Random(args.seed)
    ids = Ids(datetime.now(UTC) - STEP * int(sizes[-1] * 1.2), rng)

    results: dict[str, list[Measured]] = {}
    plans: dict[str, list[str]] = {}
    have = 0
    started = time.perf_counter()
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, file {path}")
    print(
        f"{args.rounds} rounds x {args.calls} timed calls per query and size,"
        " each call in a fresh read unit"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    for size in sizes:
        t0 = time.perf_counter()
        seed(database, ids, rng, size - have)
        have = size
        seed_s = time.perf_counter() - t0
        with database.engine.connect() as conn:
            n_sessions = conn.scalar(text("SELECT count(*) FROM sessions"))
            awaiting = list(
                conn.scalars(
                    text(
                        "SELECT ledger_id FROM patches WHERE state = 'awaiting_review'"
                        " ORDER BY ledger_id"
                    )
                )
            )
            n_active = conn.scalar(text("SELECT count(*) FROM sessions WHERE state = 'active'"))
        check_seed(database, awaiting[-1])
        deep = [pagination.encode(k) for k in awaiting[len(awaiting) // 2 : -60]]
        print(
            f"seeded {size:>9,} patches / {n_sessions:>7,} sessions in {seed_s:5.1f} s"
            f"  ({len(awaiting):,} awaiting review, {n_active:,} active sessions)"
        )

        def first_page() -> int:
            with database.unit() as s:
                return len(ledger.list_patches_awaiting_review(s, limit=50).items)

        def deep_page(deep: list[str] = deep) -> int:
            cursor = deep[rng.randrange(len(deep))]
            with database.unit() as s:
                return len(ledger.list_patches_awaiting_review(s, cursor=cursor, limit=50).items)

        def active_sessions() -> int:
            project = PROJECTS[rng.randrange(len(PROJECTS))]
            with database.unit() as s:
                return len(registry.get_active_sessions(s, project_id=project, limit=50).items)

        calls = {
            "review queue, first page": first_page,
            "review queue, deep page": deep_page,
            "active sessions, 1 project": active_sessions,
        }
        raw = database.engine.raw_connection()
        try:
            bare = {
                name: sql_only(database, call, raw.driver_connection)
                for name, call in calls.items()
            }
            here = {name: Measured(size, n_sessions) for name in calls}
            for _ in range(args.rounds):  # rounds interleave the queries
                for name, call in calls.items():
                    wall, cpu, rows = timed(args.calls, call)
                    here[name].orm.append(wall)
                    here[name].cpu.append(cpu)
                    here[name].rows += rows
                    here[name].calls += args.calls
                    here[name].sql.append(timed(args.calls, bare[name])[0])
        finally:
            raw.close()
        for name, m in here.items():
            results.setdefault(name, []).append(m)
        if size == sizes[-1]:
            plans = {name: query_plan(database, call) for name, call in calls.items()}

    print()
    header = (
        f"{'query':<28}{'patches':>10}{'sessions':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'p99 rounds':>15}{'cpu p50':>9}{'cpu p99':>9}{'rows':>6}{'sql p50':>9}{'sql p99':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, sizes_measured in results.items():
        for m in sizes_measured:
            lo, hi = min(m.p99s()), max(m.p99s())
            print(
                f"{name:<28}{m.size:>10,}{m.sessions:>9,}{m.p50():>8.3f}{m.p99():>8.3f}"
                f"{f'{lo:.2f}-{hi:.2f}':>15}{m.p50('cpu'):>9.3f}{m.p99('cpu'):>9.3f}"
                f"{m.rows / m.calls:>6.1f}"
                f"{m.p50('sql'):>9.3f}{m.p99('sql'):>9.3f}"
            )
        if len(sizes_measured) > 1:
            base, top = sizes_measured[0], sizes_measured[-1]
            print(
                f"{'':<28}{f'{top.size // base.size}x the rows vs {base.size:,}:':>27}"
                f"  p99 {top.p99() / base.p99():.2f}x, p50 {top.p50() / base.p50():.2f}x,"
                f" cpu p99 {top.p99('cpu') / base.p99('cpu'):.2f}x,"
                f" sql p99 {top.p99('sql') / base.p99('sql'):.2f}x"
            )
        print()
    worst = max(ms[-1].p99() for ms in results.values())
    worst_round = max(max(ms[-1].p99s()) for ms in results.values())
    worst_cpu = max(ms[-1].p99("cpu") for ms in results.values())
    print(
        f"goal p99 < 5 ms at {sizes[-1]:,} patches: wall {'met' if worst < 5 else 'MISSED'}"
        f" (worst p99 {worst:.3f} ms, worst single round {worst_round:.3f} ms);"
        f" cpu {'met' if worst_cpu < 5 else 'MISSED'} (worst cpu p99 {worst_cpu:.3f} ms)"
    )
    print(
        "p50/p99: wall time of the whole call (read unit, query, ORM objects); p99 is the median"
        " of the rounds' p99s,\n'p99 rounds' their range; cpu: the same calls' thread CPU time;"
        " sql: the same SELECT alone on a raw connection (wall)"
    )
    print("\nquery plans at the largest size (EXPLAIN QUERY PLAN):")
    for name, plan in plans.items():
        print(f"  {name}: " + "; ".join(plan))
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s;"
        f" load average at end: {os.getloadavg()[0]:.2f} (other work on the host widens p99)"
    )

    database.dispose()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
