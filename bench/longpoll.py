"""How fast a waiting bot hears its verdict: the long-poll against a plain poll.

    .venv/bin/python bench/longpoll.py [--rounds N] [--poll-every S] [--backends sqlite,postgres]

For each backend (a SQLite file; PostgreSQL 15 in a throwaway cluster when its
binaries are installed) it migrates a fresh database, seeds sessions each with
a patch awaiting review, and starts the web tier in a process of its own
(``tests/web_crash_server.py``: the real app under Werkzeug's threaded server,
on a loopback port). Then, for each round, a bot thread in this process asks
for its session and waits for the verdict while this process, with its own
database engine (as the worker or another web process would), approves the
patch after a random 0.2-0.6 s. The latency is from the decision's commit to
the bot's answer, in two modes measured in the same run:

* ``long-poll``: ``GET /api/v1/sessions/{id}?wait=30&since=V`` in a loop;
* ``plain poll``: ``GET /api/v1/sessions/{id}`` every ``--poll-every`` seconds
  (default 1 s, a polite bot), the baseline.

It prints p50/p99/max in milliseconds and the requests the bot sent per
verdict. The web process is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from minipipe_gh.core.patch_states import PatchState as P  # noqa: E402
from minipipe_gh.store import ledger, migrate, registry, tokens  # noqa: E402
from minipipe_gh.store.db import Database  # noqa: E402
from minipipe_gh.store.models import Installation, InstalledRepository  # noqa: E402
from tests.pg import BIN as PG_BIN  # noqa: E402
from tests.pg import Cluster  # noqa: E402

REPO = "octo/app"
WAIT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def seed(db: Database, count: int) -> tuple[str, list[tuple[str, str]]]:
    """A token and ``count`` sessions, each with one patch awaiting review."""
    made = []
    with db.unit() as s:
        s.add(Installation(installation_id=1, account="octo"))
        s.flush()
        s.add(InstalledRepository(repository_id=1, installation_id=1, full_name=REPO))
        _row, secret = tokens.create(s, "bench", login="bench-bot", repositories=None)
        for i in range(count):
            session = registry.create_session(
                s, project_id=REPO, agent_type="bench", title=f"t{i}", actor="b", source="bench"
            )
            s.flush()
            patch = ledger.record_patch(s, session, f"{i:040x}", actor="b", source="bench")
            for to in (P.VALIDATED, P.AWAITING_REVIEW):
                ledger.transition(s, patch, to, actor="b", source="bench")
            made.append((session.session_id, patch.ledger_id))
    return secret, made


@contextmanager
def web_process(db_url: str, tmp: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": pem(),
        "GITHUB_WEBHOOK_SECRET": "bench",
        "GITHUB_API_URL": "http://127.0.0.1:9/api/v3",
        "SECRET_KEY": "bench",
        "MINIPIPE_INSTANCE_PATH": str(tmp / "instance"),
        "MINIPIPE_ENV_FILE": str(tmp / "no.env"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.web_crash_server", db_url, str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # Werkzeug's access log
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening on PORT"
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(f"{url}/api/v1/openapi.json", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def decided(body: dict[str, Any]) -> bool:
    return any(p["review"]["status"] != "pending" for p in body["patches"])


def long_poll_bot(http: requests.Session, url: str, sid: str, out: dict[str, Any]) -> None:
    body = http.get(f"{url}/api/v1/sessions/{sid}", timeout=10).json()
    out["ready"].set()
    calls = 1
    while not decided(body):
        params = {"wait": WAIT, "since": body["version"]}
        body = http.get(f"{url}/api/v1/sessions/{sid}", params=params, timeout=WAIT + 10).json()
        calls += 1
    out["heard_at"], out["calls"] = time.monotonic(), calls


def plain_poll_bot(every: float) -> Callable[[requests.Session, str, str, dict[str, Any]], None]:
    def bot(http: requests.Session, url: str, sid: str, out: dict[str, Any]) -> None:
        calls = 0
        # A bot polls on its own schedule, not in step with the decision: start at a random phase.
        time.sleep(random.uniform(0, every))
        while True:
            body = http.get(f"{url}/api/v1/sessions/{sid}", timeout=10).json()
            calls += 1
            out["ready"].set()
            if decided(body):
                break
            time.sleep(every)
        out["heard_at"], out["calls"] = time.monotonic(), calls

    return bot


def run_mode(
    db: Database,
    url: str,
    token: str,
    pairs: list[tuple[str, str]],
    bot: Callable[[requests.Session, str, str, dict[str, Any]], None],
) -> tuple[list[float], list[int]]:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    latencies, calls = [], []
    for sid, lid in pairs:
        out: dict[str, Any] = {"ready": threading.Event()}
        thread = threading.Thread(target=bot, args=(http, url, sid, out))
        thread.start()
        out["ready"].wait(10)
        time.sleep(random.uniform(0.2, 0.6))
        with db.unit() as s:
            ledger.approve_patch(s, lid, "carol", source="bench")
        decided_at = time.monotonic()
        thread.join(WAIT + 20)
        latencies.append((out["heard_at"] - decided_at) * 1000)
        calls.append(out["calls"])
    return latencies, calls


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_backend(name: str, db_url: str, rounds: int, every: float, tmp: Path) -> list[str]:
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        token, pairs = seed(db, 2 * rounds)
        rows = []
        with web_process(db_url, tmp) as url:
            modes = [
                ("long-poll", long_poll_bot, pairs[:rounds]),
                (f"plain poll /{every:g}s", plain_poll_bot(every), pairs[rounds:]),
            ]
            for mode, bot, chunk in modes:
                lat, calls = run_mode(db, url, token, chunk, bot)
                rows.append(
                    f"{name:<10} {mode:<18} {pct(lat, 0.5):>8.1f} {pct(lat, 0.99):>8.1f} "
                    f"{max(lat):>8.1f} {statistics.mean(calls):>9.1f}"
                )
        return rows
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--poll-every", type=float, default=1.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    random.seed(19)
    rows = []
    with tempfile.TemporaryDirectory(prefix="minipipe-longpoll-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{tmp / 'bench.db'}"
                rows += bench_backend("sqlite", url, args.rounds, args.poll_every, tmp)
            elif backend == "postgres":
                if not (PG_BIN / "initdb").exists():
                    print(f"(postgres skipped: no binaries in {PG_BIN})")
                    continue
                cluster = Cluster().start()
                try:
                    url = cluster.url(cluster.create())
                    rows += bench_backend("postgres", url, args.rounds, args.poll_every, tmp)
                finally:
                    cluster.stop()
    print(f"decision → waiting bot's answer, {args.rounds} verdicts per row (ms)")
    print(f"{'backend':<10} {'mode':<18} {'p50':>8} {'p99':>8} {'max':>8} {'req/verdict':>9}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
