"""SQLite writers of one process wait their turn asleep, on a lock of the process, and
only the thread whose turn it is tries the flock that orders the processes."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from minipipe_gh.store import db as db_mod
from minipipe_gh.store.db import Database


def _database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    with database.unit() as s:
        s.execute(text("CREATE TABLE note (n INTEGER)"))
    return database


def test_a_second_thread_waits_asleep_and_writes_after_the_first_commits(
    tmp_path: Path, monkeypatch: Any
) -> None:
    database = _database(tmp_path)
    tries: list[str] = []
    real_flock = fcntl.flock

    def counting_flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX:  # a try for the lock (the unlock after a commit is no try)
            tries.append(threading.current_thread().name)
        real_flock(fd, op)

    monkeypatch.setattr(db_mod.fcntl, "flock", counting_flock)
    order: list[str] = []
    first_writing = threading.Event()

    def second() -> None:
        first_writing.wait(5)
        with database.unit() as s:
            s.execute(text("INSERT INTO note VALUES (2)"))
            order.append("second")

    t = threading.Thread(target=second, name="second")
    t.start()
    try:
        with database.unit() as s:
            s.execute(text("INSERT INTO note VALUES (1)"))  # our turn, and SQLite's lock
            first_writing.set()
            time.sleep(0.3)  # the second thread waits meanwhile
            assert tries.count("second") == 0, "a waiting thread does not poll the flock"
            order.append("first")
    finally:
        t.join(10)
    assert not t.is_alive()
    assert order == ["first", "second"]
    assert tries.count("second") == 1  # once, when its turn came
    with database.unit() as s:
        assert s.execute(text("SELECT n FROM note ORDER BY rowid")).scalars().all() == [1, 2]
    database.dispose()


def test_a_thread_still_waiting_past_the_busy_timeout_gets_sqlites_answer(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(db_mod, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    database = _database(tmp_path)
    failed: list[BaseException] = []
    holding = threading.Event()

    def late() -> None:
        holding.wait(5)
        try:
            with database.unit() as s:
                s.execute(text("INSERT INTO note VALUES (2)"))
        except Exception as err:
            failed.append(err)

    t = threading.Thread(target=late)
    t.start()
    with database.unit() as s:
        s.execute(text("INSERT INTO note VALUES (1)"))
        holding.set()
        t.join(10)  # it gives up while we hold the turn
    assert not t.is_alive()
    assert len(failed) == 1 and "locked" in str(failed[0])
    with database.unit() as s:  # the turn was not left taken by the one that gave up
        s.execute(text("INSERT INTO note VALUES (3)"))
    with database.unit() as s:
        assert s.execute(text("SELECT n FROM note ORDER BY rowid")).scalars().all() == [1, 3]
    database.dispose()


def test_the_flock_file_is_opened_once_and_a_forked_child_locks_a_file_of_its_own(
    tmp_path: Path, monkeypatch: Any
) -> None:
    database = _database(tmp_path)
    lock_path = db_mod.sqlite_lock_path(database.engine)
    assert lock_path is not None
    opened: list[int] = []
    real_open = os.open

    def counting_open(path: str, *args: Any) -> int:
        if path == lock_path:
            opened.append(1)
        return real_open(path, *args)

    with monkeypatch.context() as m:
        m.setattr(db_mod.os, "open", counting_open)
        for n in range(3):
            with database.unit() as s:
                s.execute(text(f"INSERT INTO note VALUES ({n})"))
    assert len(opened) <= 1  # kept open between writes (none if an earlier write opened it)

    read, write = os.pipe()
    with database.unit() as s:
        s.execute(text("INSERT INTO note VALUES (9)"))  # this process holds the flock now
        pid = os.fork()
        if pid == 0:  # the child: the inherited descriptor would share the parent's lock
            answer = b"?"
            try:
                fd = db_mod._lock_file(lock_path)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    answer = b"shared"
                except BlockingIOError:
                    answer = b"waits"
            finally:
                os.write(write, answer)
                os._exit(0)
        os.close(write)
        said = os.read(read, 16)
        os.waitpid(pid, 0)
    os.close(read)
    assert said == b"waits"  # the child's own open file: it must wait for the parent
    database.dispose()


def test_no_commit_checkpoints_the_wal_and_the_workers_checkpointer_does_beside_them(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with database.statements() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        for i in range(300):  # ~5 MB: past the 1,000 pages a commit would have copied
            with database.statements() as conn:
                conn.execute(text("INSERT INTO t VALUES (:i, :b)"), {"i": i, "b": "x" * 16_000})
        file = tmp_path / "wal.db"
        assert file.stat().st_size < 1_000_000  # every page still in the WAL only
        stop = threading.Event()
        checkpointer = threading.Thread(
            target=db_mod.checkpoint_wal, args=(database, stop, lambda: 0.05)
        )
        checkpointer.start()
        deadline = time.monotonic() + 5
        while file.stat().st_size < 4_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        checkpointer.join(2)
        assert not checkpointer.is_alive()
        assert file.stat().st_size >= 4_000_000  # copied back into the file, beside the commits
        with database.statements() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 300
    finally:
        database.dispose()
