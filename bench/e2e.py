"""End-to-end benchmark: N session PRs through open → CI → /approve → merge.

    .venv/bin/python bench/e2e.py [--prs N] [--latency-ms L] [--configs a,b,c,d]
                                  [--concurrency C] [--profile DIR] [--keep] [--owners]

Each PR's life is four signed webhooks posted to the app's real ``/webhook``
(HMAC-SHA256 with the configured secret, a new ``X-GitHub-Delivery`` each),
built as ``tests/scenario.py`` builds them from the recorded payloads:
``pull_request`` opened (a high-risk file, so a human must approve), then,
once that is handled, ``check_suite`` completed (CI green; the fake GitHub is
told first), then an ``issue_comment`` ``/approve`` by a writer, then
``pull_request`` closed and merged. By default all N PRs start at once (a
burst: capacity); ``--concurrency 1`` runs them one after another (light
load: reaction time). Each step is posted as soon as the PR's previous
delivery is done (the bench polls the inbox; inline, the answer says so).
Before the clock starts, ``--warmup`` no-op deliveries warm every process.

GitHub is ``bench/fake_github.py`` on loopback with a fixed added latency per
request; the app reaches it through ``GITHUB_API_URL``. Configurations, all in
the same run, under the same web server settings:

* (a) ours, SQLite + two ``minipipe-gh worker`` processes (one per CPU here, as the
  inline baseline's web tier runs two);
* (b) ours, PostgreSQL (a throwaway cluster, ``tests/pg.py``) + two workers (one per
  CPU here too: four did no better, and their acknowledgements were slower);
* (c) the Probot way on SQLite: a WSGI app (``inline_app`` below) that verifies
  the signature and runs the same router, handlers and effects before it
  answers, with no inbox, so GitHub's 10-second budget is spent processing;
* (d) the Probot way on PostgreSQL.

Printed: deliveries/s end to end (first post to the last delivery done: the
worker's ``finished_at``, or the inline answer), acknowledgement latency, the
time from a CI or ``/approve`` delivery's acknowledgement (and from its send)
to the check-run update arriving at the fake GitHub, GitHub requests per
delivery by event type (the fake's log, attributed to PR steps; token
exchanges apart, which must be once per installation per process) and new
connections per request, the CPU each part used (and everything else on the
machine: other jobs skew absolute numbers), and ours/inline ratios.
``--profile DIR`` runs each configuration's first worker under cProfile.
``--owners`` turns on ``review.require_code_owners`` with a CODEOWNERS whose
``src/auth/`` belongs to a team: it prints the calls code owners add per patch
(the file read once per process and blob, team lookups cached, review requests).

Then reconciliation's cost (``--reconcile-prs N``, default 100; 0 skips it):
N open session PRs of one repository, each with its patch and our check run
on its head (ledger and GitHub agree), are reconciled three times in-process
against the same fake: cold (no ETag known yet), warm (every request
conditional: an unchanged page or check-run list costs a 304, which does not
count against the rate limit) and warm with the fake's ETags turned off (the
same traffic without 304s). Printed per run: GitHub requests, of which 304,
what counts against the rate limit, and the repairs found (0: they agree).
``--configs none`` runs only this.

Every process runs in its own process group and is stopped, and the
PostgreSQL cluster removed, on exit, error, Ctrl-C or SIGTERM. Traffic stays
on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import ingest  # noqa: E402  (bench/ingest.py: process groups, free ports, raw HTTP client)

from tests.pg import Cluster  # noqa: E402

HOST = ingest.HOST
BIN = ingest.BIN
STEPS = ("opened", "ci", "approve", "merged")
EVENT_OF = {
    "opened": "pull_request",
    "ci": "check_suite",
    "approve": "issue_comment",
    "merged": "pull_request",
}
LABEL = {
    "opened": "pull_request opened",
    "ci": "check_suite completed",
    "approve": "issue_comment /approve",
    "merged": "pull_request closed+merged",
}
COMMENT_BASE = 7_000_000_000
# How often the bench looks for finished deliveries (worker configurations). Each PR's
# next step waits for this look, a delay the inline baseline (whose answer says "done")
# never pays: at 20 ms it added ~10 ms to every step of ours, so it is kept short.
POLL_S = 0.005
BUDGET_S = 10.0  # GitHub gives up on a delivery after this long
EPS = 0.002


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    db: str  # sqlite | postgres
    workers: int  # 0: inline

    @property
    def inline(self) -> bool:
        return self.workers == 0


CONFIGS = {
    "a": Config("a", "(a) ours: SQLite, 2 workers", "sqlite", 2),
    "b": Config("b", "(b) ours: PostgreSQL, 2 workers", "postgres", 2),
    "c": Config("c", "(c) inline (Probot way): SQLite", "sqlite", 0),
    "d": Config("d", "(d) inline (Probot way): PostgreSQL", "postgres", 0),
}
BASELINE = {"a": "c", "b": "d"}
# ``--profile``: the first worker of each configuration runs under cProfile.
PROFILED_WORKER = "from minipipe_gh.cli import main; main(['worker'])"


# --------------------------------------------------------------------------- the inline app


def inline_app() -> Any:
    """The Probot way, served by gunicorn (``e2e:inline_app()``) or granian (``--factory``).

    Verify, parse, then run the router's handlers in one transaction and
    perform their GitHub writes, all before answering: what the worker does
    for one claimed delivery, minus the inbox (no row, no lease, no retry).
    """
    import logging

    from werkzeug.datastructures import EnvironHeaders

    from minipipe_gh.core import events
    from minipipe_gh.delivery import logs
    from minipipe_gh.delivery.ingest import _read_body
    from minipipe_gh.delivery.runtime import Runtime
    from minipipe_gh.gh import effects, writes
    from minipipe_gh.review.context import Context

    rt = Runtime.build()
    log = logging.getLogger("bench.inline")

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status, body = handle(environ)
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def handle(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if environ.get("PATH_INFO") != "/webhook":
            return "404 Not Found", {"error": "not found"}
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "use POST"}
        raw = _read_body(environ)
        if raw is None:
            return "413 Content Too Large", {"error": "too large"}
        try:
            event = events.parse(EnvironHeaders(environ), raw, rt.settings.webhook_secrets)
        except events.IngressError as err:
            return f"{err.status} Refused", {"error": str(err)}
        if event.name == "ping":
            return "200 OK", {"ok": True}
        cpu_started = time.thread_time()
        with logs.for_delivery(event.delivery_id):
            try:
                with rt.database.unit() as s:
                    ctx = Context(event, s, rt.github, log)
                    rt.router.dispatch(ctx)
                    pending = ctx.effects
                if pending:
                    ectx = effects.EffectContext(
                        rt.database, rt.github, event.installation_id, event.delivery_id, False
                    )
                    effects.perform(ectx, pending, writes.EXECUTORS)
            except Exception as err:  # Probot answers 500 when a handler throws
                log.exception("inline handling failed")
                return "500 Internal Server Error", {"error": str(err)}
        note_cpu(event.delivery_id, 1000 * (time.thread_time() - cpu_started))
        return "200 OK", {"ok": True, "delivery": event.delivery_id}

    return app


def note_cpu(delivery: str, cpu_ms: float) -> None:
    """The inline app's CPU per handled delivery (its thread's), for the per-kind table:
    one line per delivery in ``BENCH_CPU_LOG``, as the worker logs its own."""
    path = os.environ.get("BENCH_CPU_LOG")
    if path:
        with open(f"{path}.{os.getpid()}", "a") as f:
            f.write(f"[delivery={delivery}] {cpu_ms:.3f} ms CPU\n")


CPU_LINE = re.compile(r"\[delivery=(\S+)\] .*?([\d.]+) ms CPU$", re.M)


def handler_cpu(work: Path, key: str) -> dict[str, float]:
    """Delivery id -> CPU ms its handling thread spent (worker logs, or the inline app's)."""
    found: dict[str, float] = {}
    for path in [*work.glob(f"{key}-worker*.log"), *work.glob(f"cpu-{key}.log.*")]:
        for ident, cpu in CPU_LINE.findall(path.read_text(errors="replace")):
            found[ident] = found.get(ident, 0.0) + float(cpu)  # retries add up
    return found


# --------------------------------------------------------------------------- deliveries


@dataclass
class PR:
    number: int
    sha: str
    reviewer: str
    comment_id: int
    bodies: dict[str, bytes]


@dataclass
class Rec:
    """One delivery as the bench saw it."""

    pr: int
    step: str
    delivery: str
    reviewer: str
    t_sent: float = 0.0
    t_ack: float = 0.0
    t_done: float | None = None
    status: int = 0
    outcome: str = ""
    attempts: int = 0
    requests: collections.Counter[str] = field(default_factory=collections.Counter)


def build_prs(n: int, tag: str, reviewers: int) -> list[PR]:
    """Payloads as ``tests/scenario.py`` makes them (edited copies of the recorded fixtures)."""
    from tests.scenario import Scenario

    class Capture:
        last: tuple[str, dict[str, Any]] | None = None

        def __call__(self, event: str, data: dict[str, Any], **_kw: Any) -> None:
            self.last = (event, data)

    class NoResponses:  # Scenario sets up ``responses``; here the fake GitHub serves
        def allow_token_exchange(self, *_a: Any, **_kw: Any) -> None:
            pass

    prs = []
    for i in range(1, n + 1):
        sha = hashlib.sha1(f"{RUN}-{tag}-{i}".encode()).hexdigest()
        cap = Capture()
        sc = Scenario(cap, NoResponses(), number=i, branch=f"minipipe/bench-{i}")  # type: ignore[arg-type]
        reviewer = f"reviewer-{i % reviewers}"
        bodies = {"opened": json.dumps(sc.pr_payload("opened", sha=sha)).encode()}
        sc.suite_completed(sha=sha)
        assert cap.last is not None
        bodies["ci"] = json.dumps(cap.last[1]).encode()
        sc.comment("/approve", login=reviewer, comment_id=COMMENT_BASE + i)
        bodies["approve"] = json.dumps(cap.last[1]).encode()
        bodies["merged"] = json.dumps(sc.pr_payload("closed", sha=sha, merged=True)).encode()
        prs.append(PR(i, sha, reviewer, COMMENT_BASE + i, bodies))
    return prs


def signed_request(port: int, event: str, delivery: str, body: bytes, secret: str) -> bytes:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "User-Agent: GitHub-Hookshot/bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-GitHub-Event: {event}\r\n"
        f"X-GitHub-Delivery: {delivery}\r\nX-GitHub-Hook-ID: 4242\r\n"
        f"X-Hub-Signature-256: sha256={sig}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def control_request(port: int, path: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


RUN = uuid.uuid4().hex[:8]
WALL_OFFSET = time.time() - time.perf_counter()


def wall_of(perf_ns: int) -> float:
    return WALL_OFFSET + perf_ns / 1e9


# --------------------------------------------------------------------------- watching the inbox


class DoneWatcher:
    """Looks in the inbox every ``POLL_S`` for the deliveries the driver waits on."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        from minipipe_gh.store.db import Database

        self.db = Database(url)
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: dict[str, asyncio.Future[tuple[str, float, int]]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="done-watcher", daemon=True)
        self.thread.start()

    async def wait(self, ident: str) -> tuple[str, float, int]:
        fut: asyncio.Future[tuple[str, float, int]] = self.loop.create_future()
        with self.lock:
            self.pending[ident] = fut
        return await fut

    def run(self) -> None:
        from sqlalchemy import bindparam, select

        from minipipe_gh.store.models import Delivery

        d = Delivery.__table__.c
        # By id alone (the unique index), the status looked at here: with ``status IN
        # (done, dead)`` in the query, PostgreSQL, with no statistics for the new table,
        # read every finished row at each look (every 5 ms, on the server whose CPU
        # counts as ours).
        query = select(d.delivery_id, d.status, d.finished_at, d.attempts).where(
            d.delivery_id.in_(bindparam("ids", expanding=True))
        )
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.pending)
            if ids:
                try:
                    with self.db.engine.connect() as conn:
                        rows = conn.execute(query, {"ids": ids}).all()
                except Exception as err:  # a locked or restarting database: look again
                    print(f"  (watcher: {type(err).__name__}: {err})", file=sys.stderr)
                    rows = []
                for ident, status, finished, attempts in rows:
                    if status not in ("done", "dead"):
                        continue
                    with self.lock:
                        fut = self.pending.pop(ident, None)
                    if fut is not None:
                        ts = finished.timestamp() if finished else time.time()
                        self.loop.call_soon_threadsafe(_resolve, fut, (status, ts, attempts))
            self.stop.wait(POLL_S)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.db.dispose()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


# --------------------------------------------------------------------------- driving


async def post(port: int, data: bytes) -> tuple[int, float]:
    """One request on a new connection (as GitHub does); its status and answer time."""
    conn = ingest.Conn(port)
    try:
        status, done_ns = await conn.send(data)
    finally:
        conn.close()
    return status, wall_of(done_ns)


async def drive(
    cfg: Config,
    prs: list[PR],
    port: int,
    fake_port: int,
    secret: str,
    watcher: DoneWatcher | None,
    concurrency: int,
    timeout: float,
) -> list[Rec]:
    recs: list[Rec] = []
    sem = asyncio.Semaphore(concurrency)

    async def life(pr: PR) -> None:
        async with sem:
            for step in STEPS:
                if step == "ci":  # CI finished on GitHub's side, then it sends the webhook
                    ci = {"sha": pr.sha, "conclusion": "success"}
                    await post(fake_port, control_request(fake_port, "/_fake/ci", ci))
                rec = Rec(pr.number, step, str(uuid.uuid4()), pr.reviewer)
                recs.append(rec)
                data = signed_request(port, EVENT_OF[step], rec.delivery, pr.bodies[step], secret)
                rec.t_sent = time.time()
                try:
                    rec.status, rec.t_ack = await post(port, data)
                except OSError as err:
                    rec.outcome = f"connection error: {err}"
                    return
                if not 200 <= rec.status < 300:
                    rec.outcome = f"HTTP {rec.status}"
                    return
                if watcher is None:
                    rec.t_done, rec.outcome, rec.attempts = rec.t_ack, "done", 1
                    continue
                rec.outcome, rec.t_done, rec.attempts = await watcher.wait(rec.delivery)
                if rec.outcome != "done":
                    return

    tasks = [asyncio.ensure_future(life(pr)) for pr in prs]
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    if pending:
        print(f"  {cfg.key}: {len(pending)} PRs unfinished after {timeout:.0f}s", file=sys.stderr)
    return recs


async def warm_up(port: int, secret: str, watcher: DoneWatcher | None, n: int) -> None:
    """Deliveries no handler acts on, ``n`` at once: every web process and thread, its inbox
    writer and the worker's database connections are warm before the clock starts."""
    data = {
        "action": "started",
        "repository": {"full_name": "Codertocat/Hello-World", "default_branch": "main"},
        "installation": {"id": 1},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
    }
    idents = [f"warmup-{uuid.uuid4()}" for _ in range(n)]
    # each its own body: the inbox keeps one of identical bodies under several ids
    sent = [
        post(port, signed_request(port, "watch", i, json.dumps({**data, "id": i}).encode(), secret))
        for i in idents
    ]
    statuses = [s for s, _t in await asyncio.gather(*sent)]
    if any(not 200 <= s < 300 for s in statuses):
        raise RuntimeError(f"warm-up deliveries answered {collections.Counter(statuses)}")
    if watcher is not None:
        await asyncio.wait_for(asyncio.gather(*(watcher.wait(i) for i in idents)), 60)


# --------------------------------------------------------------------------- processes


class Proc(ingest.Server):
    """A background process (worker, fake GitHub) in its own process group, ready on a log line."""

    def launch(self, ready: str, timeout: float = ingest.BOOT_S) -> None:
        def logged() -> bool:
            try:
                return ready in self.log_path.read_text(errors="replace")
            except OSError:
                return False

        self.launch_until(logged, timeout, "not ready")


def fake_get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def fake_post(port: int, path: str) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its descendants, live or reaped (PostgreSQL's backends
    each start their own session, so a process group does not hold them)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        # ppid; utime + stime + cutime + cstime (the last two: children it reaped)
        stats[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _t) in stats.items():
        children[ppid].append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            ticks += stats[pid][1]
            todo.extend(children[pid])
    return ticks / ingest.CLK_TCK


def postmaster_pid(cluster: Cluster | None) -> int | None:
    if cluster is None:
        return None
    try:
        return int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- one configuration


@dataclass
class Outcome:
    cfg: Config
    recs: list[Rec]
    log: list[list[Any]]
    writes: dict[str, list[list[Any]]]
    counts: list[list[Any]]
    processes: int
    statuses: dict[str, int]
    retried: int
    patches: dict[str, int]
    cpu: dict[str, float]
    elapsed: float
    prs: list[PR]
    connections: int = 0
    tokens: int = 0
    handler_cpu: dict[str, float] = field(default_factory=dict)  # delivery -> CPU ms
    unattributed: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def acked(self) -> list[Rec]:
        return [r for r in self.recs if 200 <= r.status < 300]

    @property
    def done(self) -> list[Rec]:
        return [r for r in self.recs if r.outcome == "done" and r.t_done is not None]

    @property
    def rate(self) -> float:
        done = self.done
        if not done:
            return 0.0
        span = max(r.t_done for r in done if r.t_done) - min(r.t_sent for r in self.recs)
        return len(done) / span if span > 0 else 0.0

    @property
    def wall(self) -> float:
        done = self.done
        if not done:
            return float("nan")
        return max(r.t_done for r in done if r.t_done) - min(r.t_sent for r in self.recs)

    def check_run_after(self, rec: Rec) -> float | None:
        """When the first check-run write for the PR's SHA after the delivery was sent arrived."""
        sha = self.prs[rec.pr - 1].sha
        times = sorted(w[0] for w in self.writes.get(sha, []))
        for t in times:
            if t >= rec.t_sent - EPS:
                return t
        return None


def db_summary(url: str) -> tuple[dict[str, int], int, dict[str, int]]:
    from sqlalchemy import func, select

    from minipipe_gh.store.db import Database
    from minipipe_gh.store.models import Delivery, Patch

    db = Database(url)
    try:
        with db.unit() as s:
            measured = ~Delivery.delivery_id.startswith("warmup-")
            statuses = dict(
                s.execute(
                    select(Delivery.status, func.count()).where(measured).group_by(Delivery.status)
                ).all()  # type: ignore[arg-type]
            )
            retried = s.scalar(select(func.count()).where(measured, Delivery.attempts > 1)) or 0
            patches = dict(
                s.execute(select(Patch.state, func.count()).group_by(Patch.state)).all()  # type: ignore[arg-type]
            )
    finally:
        db.dispose()
    return statuses, int(retried), {str(k): int(v) for k, v in patches.items()}


def run_config(
    cfg: Config,
    args: argparse.Namespace,
    work: Path,
    base_env: dict[str, str],
    fake: Proc,
    fake_port: int,
    cluster: Cluster | None,
) -> Outcome:
    from minipipe_gh.store import migrate

    fake_post(fake_port, "/_fake/reset")
    env = dict(base_env)
    pg_name = None
    if cfg.db == "postgres":
        assert cluster is not None
        pg_name = cluster.create()
        url = cluster.url(pg_name)
    else:
        url = f"sqlite:///{work / f'{cfg.key}.db'}"
    migrate.upgrade(url)
    env["DATABASE_URL"] = url
    env.setdefault("SECRET_KEY", "bench")
    env["GITHUB_API_URL"] = f"http://{HOST}:{fake_port}"
    env["MINIPIPE_INSTANCE_PATH"] = str(work / f"instance-{cfg.key}")
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(BENCH)))
    env["BENCH_CPU_LOG"] = str(work / f"cpu-{cfg.key}.log")

    port = ingest.free_port()
    if args.server == "gunicorn":
        target = "e2e:inline_app()" if cfg.inline else "app:app"
        argv = ingest.gunicorn_argv(args.gunicorn, port, target)
    else:
        target = "e2e:inline_app" if cfg.inline else "app:app"
        argv = ingest.granian_argv(args.granian, port, target)
        if cfg.inline:
            argv.insert(-1, "--factory")
    web = ingest.Server(f"web-{cfg.key}", argv, env, work / f"{cfg.key}-web.log")
    workers = []
    for i in range(cfg.workers):
        wargv = [str(BIN / "minipipe-gh"), "worker"]
        if args.profile and i == 0:
            script = work / "profiled_worker.py"
            script.write_text(PROFILED_WORKER + "\n")
            prof = args.profile / f"{cfg.key}-worker0.prof"
            wargv = [sys.executable, "-m", "cProfile", "-o", str(prof), str(script)]
        workers.append(Proc(f"worker-{cfg.key}{i}", wargv, env, work / f"{cfg.key}-worker{i}.log"))
    watcher: DoneWatcher | None = None
    prs = build_prs(args.prs, cfg.key, args.reviewers)
    pg_pid = postmaster_pid(cluster) if cfg.db == "postgres" else None
    try:
        # Start (and later stop) everything at once: on a busy machine imports take seconds.
        with ThreadPoolExecutor(len(workers) + 1) as pool:
            started = [pool.submit(web.start, port)]
            started += [pool.submit(w.launch, " started") for w in workers]
            for f in started:
                f.result()
        loop = asyncio.new_event_loop()
        try:
            if not cfg.inline:
                watcher = DoneWatcher(url, loop)
            loop.run_until_complete(warm_up(port, ingest.SECRET, watcher, args.warmup))
            fake_post(fake_port, "/_fake/reset")
            cpu0 = _cpus(web, workers, fake, pg_pid)
            t0 = time.perf_counter()
            recs = loop.run_until_complete(
                drive(
                    cfg,
                    prs,
                    port,
                    fake_port,
                    ingest.SECRET,
                    watcher,
                    args.concurrency,
                    args.timeout,
                )
            )
            elapsed = time.perf_counter() - t0
            cpu1 = _cpus(web, workers, fake, pg_pid)
        finally:
            if watcher is not None:
                watcher.close()
            loop.close()
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        parts = sum(v for k, v in cpu.items() if k != "machine")
        cpu["other"] = max(0.0, cpu["machine"] - parts)
    finally:
        with ThreadPoolExecutor(len(workers) + 1) as pool:
            for f in [pool.submit(p.stop) for p in [*workers, web]]:
                f.result()
    stats = fake_get(fake_port, "/_fake/stats")
    statuses, retried, patches = db_summary(url)
    if pg_name and cluster is not None:
        with contextlib.suppress(Exception):
            cluster.drop(pg_name)
    processes = cfg.workers or _web_processes(args)
    out = Outcome(
        cfg,
        recs,
        stats["log"],
        stats["check_run_writes"],
        stats["counts"],
        processes,
        statuses,
        retried,
        patches,
        cpu,
        elapsed,
        prs,
        connections=int(stats.get("connections", 0)),
        handler_cpu=handler_cpu(work, cfg.key),
    )
    attribute(out)
    return out


def _web_processes(args: argparse.Namespace) -> int:
    if args.server == "gunicorn":
        kind, _, rest = args.gunicorn.partition(":")
        return int((rest or "2").split(":")[0]) if kind == "gthread" else int(rest or 5)
    return int(args.granian.split(":")[0] or 2)


def _cpus(
    web: ingest.Server, workers: list[Proc], fake: Proc, pg_pid: int | None
) -> dict[str, float]:
    return {
        "web": web.cpu(),
        "workers": sum(w.cpu() for w in workers),
        "fake GitHub": fake.cpu(),
        "postgres": tree_cpu(pg_pid) if pg_pid else 0.0,
        "bench": time.process_time(),
        "machine": ingest._machine_busy(),
    }


# --------------------------------------------------------------------------- attribution


def attribute(out: Outcome) -> None:
    """Charge each GitHub request in the fake's log to the PR step that caused it.

    A PR's steps run one after another, so a request naming a PR (number, SHA,
    comment id) belongs to that PR's latest step sent before it arrived. A
    permission read names a login: it goes to an ``/approve`` of that reviewer
    in flight then. A policy read names nothing: it goes to the oldest delivery
    in flight (it happens once per process, the cache's cold start).
    """
    by_pr: dict[int, list[Rec]] = collections.defaultdict(list)
    for r in sorted(out.recs, key=lambda r: r.t_sent):
        by_pr[r.pr].append(r)
    sha2pr = {pr.sha: pr.number for pr in out.prs}
    comment2pr = {pr.comment_id: pr.number for pr in out.prs}
    ordered = sorted(out.recs, key=lambda r: r.t_sent)
    permission_given: set[str] = set()

    def in_flight(t: float) -> list[Rec]:
        return [r for r in ordered if r.t_sent - EPS <= t <= (r.t_done or float("inf")) + EPS]

    for t, method, route, key in out.log:
        name = f"{method} {route}"
        if route.startswith("app/installations/"):
            out.tokens += 1
            continue
        kind, _, val = (key or "").partition(":")
        pr = None
        if kind == "pr":
            pr = int(val)
        elif kind == "sha":
            pr = sha2pr.get(val)
        elif kind == "comment":
            pr = comment2pr.get(int(val))
        rec: Rec | None = None
        if pr is not None:
            before = [r for r in by_pr.get(pr, []) if r.t_sent - EPS <= t]
            rec = before[-1] if before else None
        elif kind == "login":
            cands = [r for r in in_flight(t) if r.step == "approve" and r.reviewer == val]
            fresh = [r for r in cands if r.delivery not in permission_given]
            rec = (fresh or cands or [None])[0]
            if rec is not None:
                permission_given.add(rec.delivery)
        else:
            cands = in_flight(t)
            rec = cands[0] if cands else None
        if rec is None:
            out.unattributed[name] += 1
        else:
            rec.requests[name] += 1


# --------------------------------------------------------------------------- report


def pct(values: list[float], p: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, max(0, round(p / 100 * len(vals)) - 1))]


def ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:,.0f}"


def table(header: list[str], rows: list[list[str]], left: int = 1) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cols: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )

    print(fmt(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print(fmt(r))


WORKER_THREADS = 16  # ``minipipe-gh worker``'s default threads


def owners_report(o: Outcome, args: argparse.Namespace) -> bool:
    """With ``--owners``: the GitHub calls code owners add, per patch and in all. The
    CODEOWNERS file is read with the policy (cached per process, parsed once per blob)
    and team memberships are cached per process, so neither grows with the PRs."""
    counts = {f"{m} {r}": n for m, r, n in o.counts}
    reads = counts.get("GET contents/{path}", 0)
    teams = counts.get("GET orgs/{org}/teams/{slug}/members", 0)
    asked = counts.get("POST pulls/{n}/requested_reviewers", 0)
    withdrawn = counts.get("DELETE pulls/{n}/requested_reviewers", 0)
    processes = o.cfg.workers or _web_processes(args)
    prs = max(1, args.prs)
    print(
        f"  {o.cfg.key}: code owners: {reads} file reads (policy + CODEOWNERS, "
        f"{reads / prs:.2f} per patch), {teams} team lookups ({teams / prs:.2f} per patch), "
        f"review requests {asked / prs:.2f} sent and {withdrawn / prs:.2f} withdrawn per patch"
    )
    # cold caches only: two reads and one team lookup per worker thread at most (the
    # first deliveries race to fill a process's cache), never one per PR
    cold = processes * WORKER_THREADS
    fine = reads <= 2 * cold and teams <= cold and asked <= prs
    if not fine:
        print(f"  {o.cfg.key}: code owners calls grow with the PRs -> MISS")
    return fine


def report(outs: list[Outcome], args: argparse.Namespace) -> bool:
    ok = True
    by = {o.cfg.key: o for o in outs}
    print()
    print(f"End to end: {args.prs} PRs x 4 deliveries, fake GitHub +{args.latency_ms:g} ms/request")
    header = [
        "configuration", "deliv/s", "wall s", "ack p50", "ack p99", "ack max", ">10s",
        "ack→run p50", "ack→run p99", "send→run p50", "send→run p99", "done", "tokens",
    ]  # fmt: skip
    rows = []
    for o in outs:
        acks = [r.t_ack - r.t_sent for r in o.acked]
        lat_ack, lat_send = [], []
        for r in o.done:
            if r.step in ("ci", "approve"):
                t = o.check_run_after(r)
                if t is not None:
                    lat_ack.append(t - r.t_ack)
                    lat_send.append(t - r.t_sent)
        expected = 4 * args.prs
        done = len(o.done)
        tokens_ok = o.tokens <= o.processes  # one installation
        # The inline baseline's extra exchanges are reported, not failed: it is not our path.
        ok &= done == expected and (tokens_ok or o.cfg.inline)
        rows.append(
            [
                o.cfg.label,
                f"{o.rate:,.1f}",
                f"{o.wall:.1f}",
                ms(pct(acks, 50)),
                ms(pct(acks, 99)),
                ms(max(acks, default=float("nan"))),
                str(sum(a > BUDGET_S for a in acks)),
                ms(pct(lat_ack, 50)),
                ms(pct(lat_ack, 99)),
                ms(pct(lat_send, 50)),
                ms(pct(lat_send, 99)),
                f"{done}/{expected}",
                f"{o.tokens}/{o.processes}p" + ("" if tokens_ok else " MISS"),
            ]
        )
    table(header, rows)
    print(
        "  times in ms. ack = send → HTTP answer (ours: 202 once stored; inline: 200 once\n"
        "  processed); ack→run / send→run = to the check-run PATCH arriving at the fake GitHub,\n"
        "  for the CI and /approve deliveries (negative ack→run: inline, the update came before\n"
        "  the answer); >10s = answers GitHub would have given up on; tokens = token exchanges /\n"
        "  processes acting for the one installation (at most one each: MISS when more)."
    )

    print()
    print("Per step (p50 / p99 ms):")
    header = ["configuration", "step", "ack", "ack→run", "send→run", "send→done"]
    rows = []
    for o in outs:
        for step in STEPS:
            recs = [r for r in o.done if r.step == step]
            acks = [r.t_ack - r.t_sent for r in recs]
            done = [(r.t_done or r.t_ack) - r.t_sent for r in recs]
            a_run, s_run = [], []
            for r in recs:
                t = o.check_run_after(r)
                if t is not None:
                    a_run.append(t - r.t_ack)
                    s_run.append(t - r.t_sent)
            rows.append(
                [
                    o.cfg.label if step == "opened" else "",
                    LABEL[step],
                    f"{ms(pct(acks, 50))} / {ms(pct(acks, 99))}",
                    f"{ms(pct(a_run, 50))} / {ms(pct(a_run, 99))}",
                    f"{ms(pct(s_run, 50))} / {ms(pct(s_run, 99))}",
                    f"{ms(pct(done, 50))} / {ms(pct(done, 99))}",
                ]
            )
    table(header, rows, left=2)

    print()
    print("GitHub requests per delivery (fake GitHub's log; mean / max; token exchanges apart):")
    header = ["event", *[o.cfg.key for o in outs]]
    rows = []
    for step in STEPS:
        row = [LABEL[step]]
        for o in outs:
            n = [sum(r.requests.values()) for r in o.done if r.step == step]
            row.append(f"{sum(n) / len(n):.2f} / {max(n)}" if n else "-")
        rows.append(row)
    per_pr = ["all four (one PR)"]
    for o in outs:
        total = sum(sum(r.requests.values()) for r in o.done)
        per_pr.append(f"{total / max(1, args.prs):.2f}")
    rows.append(per_pr)
    table(header, rows)
    team_route = "GET orgs/{org}/teams/{slug}/members"
    target = 4 if args.owners else 3
    meant = "permission, check-run update, reaction" + (
        ", review request withdrawn; team lookups apart" if args.owners else ""
    )
    for o in outs:
        approves = [
            sum(n for k, n in r.requests.items() if k != team_route)
            for r in o.done
            if r.step == "approve"
        ]
        if approves:
            worst = max(approves)
            verdict = "ok" if worst <= target else "MISS"
            ok &= worst <= target
            print(
                f"  {o.cfg.key}: per /approve {sum(approves) / len(approves):.2f} mean, "
                f"{worst} max (target <= {target}: {meant}) -> {verdict}"
            )
        if args.owners:
            ok &= owners_report(o, args)
        if o.unattributed:
            print(f"  {o.cfg.key}: not attributed to a delivery: {dict(o.unattributed)}")
    for o in outs:
        patches = [r for r in o.done if r.step == "opened"]
        listed = sum(r.requests.get("GET pulls/{n}/commits", 0) for r in patches)
        print(
            f"  {o.cfg.key}: guardrails per patch: {listed / max(1, len(patches)):.2f} "
            "GET pulls/{n}/commits (provenance; the only call they add: paths come from "
            "the files listing risk reads anyway)"
        )
    first = outs[0]
    print(f"  routes per delivery, {first.cfg.label}:")
    for step in STEPS:
        recs = [r for r in first.done if r.step == step]
        if not recs:
            continue
        total: collections.Counter[str] = collections.Counter()
        for r in recs:
            total.update(r.requests)
        parts = ", ".join(f"{k} {v / len(recs):.2f}" for k, v in sorted(total.items()))
        print(f"    {LABEL[step]}: {parts}")
    for o in outs:
        requests = sum(n for _m, _r, n in o.counts)
        print(
            f"  {o.cfg.key}: {requests} requests on {o.connections} new connections "
            f"({requests / max(1, o.connections):.2f} per connection; each one a TLS handshake "
            "on the real GitHub)"
        )
    unexpected = {f"{m} {r}": n for o in outs for m, r, n in o.counts if r.startswith("UNEXPECTED")}
    if unexpected:
        print(f"  unexpected requests (answered 404): {unexpected}")
        ok = False

    print()
    print(
        "Correctness, and CPU seconds used during the drive (other = every other process on\n"
        f"the machine; busy = the whole machine, % of its {os.cpu_count()} CPUs):"
    )
    header = [
        "configuration", "inbox", "retried", "patches", "web", "workers", "fake GH", "postgres",
        "bench", "other", "busy %",
    ]  # fmt: skip
    rows = []
    for o in outs:
        applied = o.patches.get("applied", 0)
        ok &= applied == args.prs and not o.statuses.get("dead")
        inbox = ", ".join(f"{k} {v}" for k, v in sorted(o.statuses.items())) or "(none: inline)"
        c = o.cpu
        rows.append(
            [
                o.cfg.label,
                inbox,
                str(o.retried),
                f"applied {applied}/{args.prs}",
                f"{c['web']:.1f}",
                f"{c['workers']:.1f}",
                f"{c['fake GitHub']:.1f}",
                f"{c['postgres']:.1f}",
                f"{c['bench']:.1f}",
                f"{c['other']:.1f}",
                f"{100 * c['machine'] / (o.elapsed * (os.cpu_count() or 1)):.0f}",
            ]
        )
    table(header, rows)

    print()
    print(
        "CPU ms per handled delivery, by event kind (mean; the handling thread's CPU: the\n"
        "worker's, or the inline app's request thread), then every app process's CPU per\n"
        "delivery (ours: web + workers; inline: web):"
    )
    header = ["event", *[o.cfg.key for o in outs]]
    rows = []
    for step in STEPS:
        row = [LABEL[step]]
        for o in outs:
            vals = [
                o.handler_cpu[r.delivery]
                for r in o.done
                if r.step == step and r.delivery in o.handler_cpu
            ]
            row.append(f"{sum(vals) / len(vals):.1f}" if vals else "-")
        rows.append(row)
    ack = ["web (ack path, per delivery)"]
    every = ["all app processes, per delivery"]
    for o in outs:
        n = max(1, len(o.done))
        ack.append("-" if o.cfg.inline else f"{1000 * o.cpu['web'] / n:.1f}")
        every.append(f"{1000 * (o.cpu['web'] + o.cpu['workers']) / n:.1f}")
    rows += [ack, every]
    table(header, rows)

    print()
    print("Ours / inline (Probot way):")
    for ours, base in BASELINE.items():
        if ours in by and base in by:
            o, b = by[ours], by[base]
            oa = [r.t_ack - r.t_sent for r in o.acked]
            ba = [r.t_ack - r.t_sent for r in b.acked]
            print(
                f"  {ours}/{base}: throughput {o.rate / b.rate if b.rate else float('nan'):.2f}x "
                f"({o.rate:.1f} vs {b.rate:.1f} deliv/s); ack p50 {ms(pct(oa, 50))} vs "
                f"{ms(pct(ba, 50))} ms, p99 {ms(pct(oa, 99))} vs {ms(pct(ba, 99))} ms "
                f"({pct(ba, 99) / pct(oa, 99):.0f}x faster acks)"
            )
    return ok


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prs", type=int, default=100, help="pull requests, four deliveries each")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="fake GitHub's added latency")
    ap.add_argument("--configs", default="a,b,c,d", help="which of a,b,c,d to run (in order)")
    ap.add_argument("--concurrency", type=int, default=0, help="PRs in flight (default: all)")
    ap.add_argument("--reviewers", type=int, default=3, help="distinct /approve logins")
    ap.add_argument(
        "--owners",
        action="store_true",
        help="code owners required: a CODEOWNERS with a team, review requests by set cover",
    )
    ap.add_argument("--server", choices=["gunicorn", "granian"], default="gunicorn")
    ap.add_argument("--gunicorn", default=ingest.DEFAULT_GUNICORN, help="sync:W or gthread:W:T")
    ap.add_argument("--granian", default="2:8", help="W[:T] workers and blocking threads")
    ap.add_argument("--warmup", type=int, default=32, help="no-op deliveries sent first, at once")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up on a configuration")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, dbs)")
    ap.add_argument(
        "--profile", type=Path, help="write DIR/<config>-worker0.prof (cProfile of one worker)"
    )
    ap.add_argument(
        "--reconcile-prs", type=int, default=100, help="open PRs reconciled (0: skip that part)"
    )
    args = ap.parse_args(argv)
    args.concurrency = args.concurrency or args.prs
    if args.profile:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    keys = [k.strip() for k in args.configs.split(",") if k.strip() and k.strip() != "none"]
    if (not keys and not args.reconcile_prs) or any(k not in CONFIGS for k in keys):
        raise SystemExit(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    configs = [CONFIGS[k] for k in keys]

    spec = args.gunicorn if args.server == "gunicorn" else args.granian
    print(f"minipipe-gh end-to-end bench: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(
        f"{args.prs} PRs (all in flight at once)" if args.concurrency >= args.prs
        else f"{args.prs} PRs, {args.concurrency} in flight"
    )  # fmt: skip
    print(f"web: {ingest.describe(args.server, spec)}; fake GitHub +{args.latency_ms:g} ms/request")

    cluster: Cluster | None = None

    def cleanup() -> None:
        nonlocal cluster
        ingest.stop_all()
        if cluster is not None:
            c, cluster = cluster, None
            with contextlib.suppress(Exception):
                c.stop()

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    outs: list[Outcome] = []
    try:
        with ingest.work_dir("minipipe-e2e-", args.keep, cleanup) as work:
            base_env, _bare = ingest.make_env(work)
            fake_port = ingest.free_port()
            fake = Proc(
                "fake-github",
                [
                    sys.executable,
                    str(BENCH / "fake_github.py"),
                    "--port",
                    str(fake_port),
                    "--latency-ms",
                    str(args.latency_ms),
                    *(["--owners"] if args.owners else []),
                ],
                base_env,
                work / "fake.log",
            )
            fake.launch("fake GitHub on")
            if any(c.db == "postgres" for c in configs):
                t0 = time.monotonic()
                cluster = Cluster().start()
                print(f"PostgreSQL cluster on port {cluster.port} ({time.monotonic() - t0:.1f}s)")
            for cfg in configs:
                t0 = time.monotonic()
                out = run_config(cfg, args, work, base_env, fake, fake_port, cluster)
                outs.append(out)
                print(
                    f"  {cfg.label}: {out.rate:.1f} deliv/s, {len(out.done)}/{4 * args.prs} "
                    f"done, {out.tokens} token exchange(s) ({time.monotonic() - t0:.0f}s)",
                    flush=True,
                )
            ok = report(outs, args) if outs else True
            if args.reconcile_prs:
                ok = reconcile_bench(args, work, base_env, fake_port) and ok
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0 if ok else 1


# ------------------------------------------------------------------ reconciliation's cost


def fake_control(port: int, path: str, payload: dict[str, Any]) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        body = json.dumps(payload).encode()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        assert conn.getresponse().read()
    finally:
        conn.close()


def _fake_totals(port: int) -> tuple[int, int, int]:
    """(API requests, of which 304, token exchanges) the fake has served so far."""
    stats = fake_get(port, "/_fake/stats")
    total = sum(n for _m, _r, n in stats["counts"])
    tokens = sum(n for _m, r, n in stats["counts"] if r.endswith("access_tokens"))
    return total, sum(n for _m, _r, n in stats["not_modified"]), tokens


def reconcile_bench(
    args: argparse.Namespace, work: Path, base_env: dict[str, str], fake_port: int
) -> bool:
    """N open session PRs that agree with GitHub, reconciled cold, warm, and warm without
    ETags: the GitHub requests each run costs."""
    from minipipe_gh.core import checkrun
    from minipipe_gh.delivery.reconcile import reconcile
    from minipipe_gh.gh.client import GitHubApp
    from minipipe_gh.store import ledger, migrate, registry
    from minipipe_gh.store.db import Database

    n, repo = args.reconcile_prs, "bench/reconcile"
    url = f"sqlite:///{work / 'reconcile.db'}"
    migrate.upgrade(url)
    database = Database(url)
    seeded = []
    with database.unit() as s:
        for number in range(1, n + 1):
            sha = hashlib.sha1(f"{repo}#{number}".encode()).hexdigest()
            session = registry.create_session(
                s,
                project_id=repo,
                agent_type="bench",
                title=f"PR {number}",
                branch=f"minipipe/{number:08d}-bench",
                actor="bench",
                source="bench",
            )
            session.pr_number = number
            session.state = "active"
            session.installation_id = 1
            patch = ledger.record_patch(s, session, sha, actor="bench", source="bench")
            body = checkrun.body(patch, checkrun.View())
            seeded.append(
                {
                    "number": number,
                    "sha": sha,
                    "ref": session.branch,
                    "check": [body["status"], body.get("conclusion")],
                    "external_id": patch.ledger_id,
                }
            )
    fake_control(fake_port, "/_fake/reset", {})
    fake_control(fake_port, "/_fake/pulls", {"repo": repo, "pulls": seeded})
    api_url = f"http://{HOST}:{fake_port}"
    app = GitHubApp(int(base_env["GITHUB_APP_ID"]), base_env["GITHUB_PRIVATE_KEY"], api_url)
    rows, ok = [], True
    runs = [("cold (no ETag yet)", True), ("warm, conditional", True), ("warm, no ETags", False)]
    for label, etags in runs:
        fake_control(fake_port, "/_fake/etags", {"enabled": etags})
        before = _fake_totals(fake_port)
        t0 = time.perf_counter()
        result = reconcile(database, app)
        took = time.perf_counter() - t0
        after = _fake_totals(fake_port)
        total, not_modified, tokens = (a - b for a, b in zip(after, before, strict=True))
        calls = total - tokens
        rows.append(
            [
                label,
                str(calls),
                str(not_modified),
                str(calls - not_modified),
                str(tokens),
                str(len(result.repairs)),
                f"{took:.2f}s",
            ]
        )
        ok = ok and not result.repairs and result.pulls == n
    database.dispose()
    print(f"\nreconciliation of {n} open session PRs (1 repository; GitHub and ledger agree)")
    table(
        ["run", "requests", "304", "count vs limit", "token exch.", "repairs", "time"],
        rows,
    )
    if not ok:
        print("reconciliation found repairs where there should be none", file=sys.stderr)
    return ok


if __name__ == "__main__":
    sys.exit(main())
