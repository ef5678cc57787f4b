"""Decisions at GitHub speed: ours against a minimal Probot app, the same ``/approve`` work.

    .venv/bin/python bench/decisions.py [--approvals 150] [--clients 16] [--latency-ms 25]
                                        [--reviewers 8] [--workers CPUS] [--worker-threads 16]
                                        [--rate R] [--rounds 3] [--only ours|probot]
                                        [--probot-dir DIR] [--keep]

Both apps talk to one ``bench/fake_github.py`` on loopback that answers every API
request after a fixed ``--latency-ms``. Each is sent ``--approvals`` signed
``issue_comment`` ``/approve`` deliveries (each with a delivery id and a comment
id of its own, so nothing is deduplicated) by ``--clients`` client threads, one
connection per delivery, as GitHub posts them.

* ours, in the README's production shape: gunicorn gthread 2 workers x 8
  threads serving ``app:app`` plus ``--workers`` processes (one per CPU) of
  ``minipipe-gh worker --threads T``, on SQLite. Before the clock starts every
  PR is opened and its CI reported green through the same webhook (not timed),
  so the approval is what turns the check green; then 20 approvals on PRs of
  their own, by a reviewer of their own, are decided (the warm-up: code paths,
  threads and connections, not the timed reviewers' cached permissions), as
  Probot handles 20 deliveries first. The web process stores the
  delivery and answers 202; the worker decides: permission (cached per
  reviewer), PATCH the check run, the reaction.
* Probot 14 (installed with npm into a temporary folder at bench time, write
  throttling off): one Node process handling the comment inline before it
  answers: permission, the PR, the check runs on its head, PATCH, the reaction.
  The fake is seeded with each PR and its check run first.

By default each client posts its next delivery once the last was answered (closed
loop): Probot answers after deciding, ours once the delivery is stored, so ours
is sent the whole burst at once and its latency includes the queue. With ``--loop
decision`` each client posts its next once its last was decided (the check run
passed at the fake, which the client long-polls): both apps then have the same
number of decisions in flight, one per client, as reviewers who wait to see the
check turn green. ``--rate R`` sends both the same schedule instead, R deliveries a
second (open loop), which compares latency at the same load.

Printed for both: approvals decided per second (first send to the last
check-run update), the time from a comment's send to its check-run update at
the fake (p50/p99), acknowledgement latency, CPU ms per decision (the app's
processes: web + worker, or node), GitHub requests per decision, and the
ratios ours/Probot. For ours every acknowledged delivery is checked to be a
stored row that the worker finished (any round failing it exits 1). Processes
run in their own process groups and are stopped on exit.

``--rounds N`` (default 3) runs ours and Probot alternately N times, every
second round starting with Probot, each with fresh deliveries and a fresh
database: on a shared machine the outside load changes from minute to minute,
so a ratio is only fair when both sides ran back to back, and alternating the
order keeps either from always getting the quieter slot. It prints one row per
round (with the machine's busy CPU-s during each side) and the median of the
per-round ratios with their min and max (with ``--rate``, the p99 ratio is the
one to read); the last round is also shown in detail. ``--rounds 1`` prints
the single run's report alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import e2e  # noqa: E402  (payloads, signing, the inbox watcher)
import ingest  # noqa: E402  (process groups, free ports, CPU accounting)

HOST = ingest.HOST
BIN = ingest.BIN
PROBOT_VERSION = "14"
CHECK_NAME = "minipipe/review"

PROBOT_APP = r"""
import { createServer } from "node:http";
import { Probot, ProbotOctokit, createNodeMiddleware } from "probot";

const WRITERS = new Set(["admin", "maintain", "write"]);

const appFn = (app) => {
  app.on("issue_comment.created", async (context) => {
    const comment = context.payload.comment;
    if (!context.payload.issue.pull_request) return;
    if (!comment.body.trim().startsWith("/approve")) return;
    const { owner, repo } = context.repo();
    const gh = context.octokit.rest;
    const perm = await gh.repos.getCollaboratorPermissionLevel({
      owner, repo, username: comment.user.login,
    });
    if (!WRITERS.has(perm.data.permission)) return;
    const pr = await gh.pulls.get({ owner, repo, pull_number: context.payload.issue.number });
    const runs = await gh.checks.listForRef({ owner, repo, ref: pr.data.head.sha });
    const run = runs.data.check_runs.find((r) => r.name === "CHECK_NAME");
    if (!run) return;
    await gh.checks.update({
      owner, repo, check_run_id: run.id, status: "completed", conclusion: "success",
      output: { title: "Approved", summary: `Approved by @${comment.user.login}` },
    });
    await gh.reactions.createForIssueComment({
      owner, repo, comment_id: comment.id, content: "+1",
    });
  });
};

const probot = new Probot({
  appId: process.env.APP_ID,
  privateKey: process.env.PRIVATE_KEY,
  secret: process.env.WEBHOOK_SECRET,
  baseUrl: process.env.API_URL,
  logLevel: "warn",
  // The function form runs last, so it wins over Probot's own throttle defaults
  // (an object here would be overridden by them): no 1-write-per-second queue.
  Octokit: ProbotOctokit.defaults((options) => ({
    ...options, throttle: { enabled: false }, retry: { enabled: false },
  })),
});
const middleware = await createNodeMiddleware(appFn, { probot, webhooksPath: "/webhook" });
createServer((req, res) => {
  middleware(req, res, () => { res.writeHead(404); res.end(); });
}).listen(Number(process.env.PORT), "127.0.0.1", () => console.log("probot listening"));
""".replace("CHECK_NAME", CHECK_NAME)


@dataclass
class Sent:
    pr: int
    delivery: str
    t_sent: float = 0.0
    t_ack: float = 0.0
    status: int = 0
    error: str = ""


@dataclass
class Run:
    name: str
    sent: list[Sent]
    decided: dict[int, float]  # PR -> when its check run was turned green at the fake
    cpu: float
    fake_cpu: float
    machine_cpu: float
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    stored_ok: str = "n/a"
    parts: dict[str, float] = field(default_factory=dict)  # CPU seconds by process role
    handled_ms: list[float] = field(default_factory=list)  # per /approve, the handling thread

    @property
    def acked(self) -> list[Sent]:
        return [s for s in self.sent if 200 <= s.status < 300]

    def latencies(self) -> list[float]:
        return [self.decided[s.pr] - s.t_sent for s in self.sent if s.pr in self.decided]

    @property
    def rate(self) -> float:
        if not self.decided:
            return 0.0
        span = max(self.decided.values()) - min(s.t_sent for s in self.sent)
        return len(self.decided) / span if span > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(1, len(self.decided))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    vals = sorted(values)
    return vals[min(len(vals) - 1, max(0, round(p / 100 * len(vals)) - 1))]


# --------------------------------------------------------------------------- the client


def post_blocking(port: int, data: bytes) -> tuple[int, float]:
    """One delivery on a connection of its own; its status and when the answer was complete."""
    import socket

    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        t = time.time()
    head = b"".join(chunks).split(b"\r\n", 1)[0].split()
    return int(head[1]), t


def send_all(
    port: int,
    items: list[tuple[Sent, bytes]],
    clients: int,
    rate: float | None = None,
    until_decided: Callable[[Sent], None] | None = None,
) -> None:
    """``clients`` threads, each posting the next delivery once its last one was answered
    (closed loop), or with ``until_decided`` once its last one was decided (the check
    run passed); with ``rate``, the i-th delivery is due at ``i / rate`` s (open loop:
    latency counts from when it was due, so a client held up by a slow answer is counted,
    not hidden)."""
    work: queue.Queue[tuple[Sent, bytes]] = queue.Queue()
    for item in items:
        work.put(item)
    start = time.time() + 0.05
    due = iter(range(len(items)))
    due_lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                rec, data = work.get_nowait()
            except queue.Empty:
                return
            if rate:
                with due_lock:
                    at = start + next(due) / rate
                time.sleep(max(0.0, at - time.time()))
                rec.t_sent = at
            else:
                rec.t_sent = time.time()
            try:
                rec.status, rec.t_ack = post_blocking(port, data)
            except OSError as err:
                rec.error = str(err)
                continue
            if until_decided is not None and 200 <= rec.status < 300:
                until_decided(rec)

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def decided_waiter(
    args: argparse.Namespace, fake_port: int, prs: list[e2e.PR]
) -> Callable[[Sent], None] | None:
    """With ``--loop decision``: a client's wait, after its comment was answered, for the
    check run on that PR to pass at the fake (a long-poll, ``GET /_fake/decided``)."""
    if args.loop != "decision":
        return None
    sha = {pr.number: pr.sha for pr in prs}

    def wait(rec: Sent) -> None:
        e2e.fake_get(fake_port, f"/_fake/decided?sha={sha[rec.pr]}&since={rec.t_sent - e2e.EPS}")

    return wait


def wait_decided(fake_port: int, sha_of: dict[str, int], since: float, want: int, timeout: float):
    """PR -> the time of its check run's first ``success`` write after ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        stats = e2e.fake_get(fake_port, "/_fake/stats")
        decided: dict[int, float] = {}
        for sha, writes in stats["check_run_writes"].items():
            pr = sha_of.get(sha)
            if pr is None:
                continue
            for t, _method, status, conclusion in writes:
                if t >= since - e2e.EPS and status == "completed" and conclusion == "success":
                    decided[pr] = min(t, decided.get(pr, t))
        if len(decided) >= want or time.monotonic() > deadline:
            return decided, stats
        time.sleep(0.1)


def counts_of(stats: dict[str, Any]) -> collections.Counter[str]:
    return collections.Counter({f"{m} {r}": n for m, r, n in stats["counts"]})


# --------------------------------------------------------------------------- ours


def web_argv(spec: str, port: int) -> list[str]:
    """Ours' web tier: ``gunicorn:W:T`` (gthread) or ``granian:W:T`` (WSGI, blocking threads)."""
    server, _, shape = spec.partition(":")
    if server == "gunicorn":
        return ingest.gunicorn_argv(f"gthread:{shape or '2:8'}", port, "app:app")
    if server == "granian":
        return ingest.granian_argv(shape or "1:8", port, "app:app")
    raise SystemExit(f"--web must be gunicorn:W:T or granian:W:T, not {spec!r}")


def web_label(spec: str) -> str:
    server, _, shape = spec.partition(":")
    default = "2:8" if server == "gunicorn" else "1:8"
    workers, _, threads = (shape or default).partition(":")
    kind = "gthread" if server == "gunicorn" else "wsgi"
    return f"{server} {kind} {workers}x{threads}"


def run_ours(
    args: argparse.Namespace,
    work: Path,
    env0: dict[str, str],
    fake: e2e.Proc,
    fake_port: int,
    cluster: e2e.Cluster | None = None,
) -> Run:
    from minipipe_gh.store import migrate

    e2e.fake_post(fake_port, "/_fake/reset")
    tag = f"ours-{uuid.uuid4().hex[:6]}"
    pg_name = cluster.create() if cluster is not None else None
    url = cluster.url(pg_name) if cluster and pg_name else f"sqlite:///{work / f'{tag}.db'}"
    pg_pid = e2e.postmaster_pid(cluster)
    migrate.upgrade(url)
    env = dict(env0)
    env.update(
        DATABASE_URL=url,
        GITHUB_API_URL=f"http://{HOST}:{fake_port}",
        MINIPIPE_INSTANCE_PATH=str(work / f"instance-{tag}"),
    )
    port = ingest.free_port()
    web = ingest.Server(
        f"web-{tag}",
        web_argv(args.web, port),
        env,
        work / f"{tag}-web.log",
    )
    wargv = [str(BIN / "minipipe-gh"), "worker", "--threads", str(args.worker_threads)]
    workers = [
        e2e.Proc(f"worker{i}-{tag}", wargv, env, work / f"{tag}-worker{i}.log")
        for i in range(args.workers)
    ]
    worker = workers[0]

    def workers_cpu() -> float:
        return sum(w.cpu() for w in workers)

    def server_cpu() -> float:  # PostgreSQL's: the database's work is ours' cost too
        return e2e.tree_cpu(pg_pid) if pg_pid else 0.0

    everyone = e2e.build_prs(args.approvals + WARM_UP, tag, args.reviewers)
    prs, warm = everyone[: args.approvals], everyone[args.approvals :]
    sha_of = {pr.sha: pr.number for pr in prs}
    try:
        with ThreadPoolExecutor(1 + len(workers)) as pool:
            starts = [pool.submit(w.launch, " started") for w in workers]
            for f in [pool.submit(web.start, port), *starts]:
                f.result()
        prepare_ours(args, port, fake_port, url, everyone)
        warm_ours(args, port, fake_port, url, warm)
        before = counts_of(e2e.fake_get(fake_port, "/_fake/stats"))
        items = []
        for pr in prs:
            rec = Sent(pr.number, str(uuid.uuid4()))
            data = e2e.signed_request(
                port, "issue_comment", rec.delivery, pr.bodies["approve"], ingest.SECRET
            )
            items.append((rec, data))
        spy = None
        if args.py_spy:  # the worker's timed phase under py-spy, all threads (collapsed stacks)
            assert worker.proc is not None
            out = args.py_spy / f"{tag}-worker.txt"
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--threads", "--pid", str(worker.proc.pid)]
                + ["--format", "raw", "-r", str(args.py_spy_rate), "-o", str(out), "--nonblocking"]
                + (["--gil"] if args.py_spy_gil else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        web0, db0, fake0, m0 = web.cpu(), server_cpu(), fake.cpu(), ingest._machine_busy()
        cpu0 = web0 + workers_cpu() + db0
        since = time.time()
        send_all(port, items, args.clients, args.rate, decided_waiter(args, fake_port, prs))
        decided, stats = wait_decided(fake_port, sha_of, since, len(prs), args.timeout)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        done_ok = wait_done(url, [r.delivery for r, _d in items if 200 <= r.status < 300], 30)
        stats = e2e.fake_get(fake_port, "/_fake/stats")  # the reactions after the last update
        web1, db1, fake1, m1 = web.cpu(), server_cpu(), fake.cpu(), ingest._machine_busy()
        cpu1 = web1 + workers_cpu() + db1
    finally:
        with ThreadPoolExecutor(1 + len(workers)) as pool:
            for f in [pool.submit(p.stop) for p in (*workers, web)]:
                f.result()
        if cluster is not None and pg_name:
            with contextlib.suppress(Exception):
                cluster.drop(pg_name)
    sent = [r for r, _d in items]
    run = Run("ours", sent, decided, cpu1 - cpu0, fake1 - fake0, m1 - m0)
    run.requests = counts_of(stats) - before
    run.stored_ok = done_ok
    run.parts = {"web": web1 - web0, "worker": (cpu1 - cpu0) - (web1 - web0) - (db1 - db0)}
    if cluster is not None:
        run.parts["postgres"] = db1 - db0
    run.handled_ms = handled_cpu((w.log_path for w in workers), {r.delivery for r in sent})
    return run


def handled_cpu(logs: Any, timed: set[str]) -> list[float]:
    """The worker's own figure for each timed ``/approve`` it handled (not the warm-up's):
    the CPU of the thread that handled it (its log line ``[delivery=ID] issue_comment
    done ... X ms CPU``)."""
    out: list[float] = []
    for path in logs:
        for line in _read(path).splitlines():
            if "issue_comment done after" in line and line.endswith(" ms CPU"):
                ident = line.partition("[delivery=")[2].partition("]")[0]
                if ident in timed:
                    out.append(float(line.rsplit(" ", 3)[-3]))
    return out


# Deliveries each app handles just before the clock starts: Probot's on one PR
# (``warm_probot``), ours an /approve on PRs of their own, by a reviewer of their own
# (the code paths, threads and connections warm, not the timed reviewers' permissions).
WARM_UP = 20


def warm_ours(
    args: argparse.Namespace, port: int, fake_port: int, url: str, warm: list[e2e.PR]
) -> None:
    """``WARM_UP`` approvals, sent as the timed ones are, decided and done before the
    clock (their reactions, sent after the check run, not counted as the timed ones')."""
    items = []
    for pr in warm:
        body = json.loads(pr.bodies["approve"])
        body["comment"]["user"] = {**body["comment"]["user"], "login": "warm-up-reviewer"}
        body["sender"] = {**body["sender"], "login": "warm-up-reviewer"}
        ident = str(uuid.uuid4())
        data = e2e.signed_request(
            port, "issue_comment", ident, json.dumps(body).encode(), ingest.SECRET
        )
        items.append((Sent(pr.number, ident), data))
    since = time.time()
    send_all(port, items, args.clients)
    shas = {pr.sha: pr.number for pr in warm}
    decided, _stats = wait_decided(fake_port, shas, since, len(warm), 60)
    if len(decided) < len(warm):
        raise RuntimeError(f"warming up ours: {len(decided)} of {len(warm)} approvals decided")
    idents = [rec.delivery for rec, _data in items]
    finished = wait_done(url, idents, 60)
    if f", {len(idents)} done," not in finished:
        raise RuntimeError(f"warming up ours: {finished}")


def prepare_ours(
    args: argparse.Namespace, port: int, fake_port: int, url: str, prs: list[e2e.PR]
) -> None:
    """Open every PR and report its CI green through the webhook, before the clock starts."""
    import asyncio

    loop = asyncio.new_event_loop()
    watcher = e2e.DoneWatcher(url, loop)
    sem = asyncio.Semaphore(args.clients)

    async def one(pr: e2e.PR) -> None:
        async with sem:
            for step in ("opened", "ci"):
                if step == "ci":
                    ci = {"sha": pr.sha, "conclusion": "success"}
                    await e2e.post(fake_port, e2e.control_request(fake_port, "/_fake/ci", ci))
                ident = str(uuid.uuid4())
                data = e2e.signed_request(
                    port, e2e.EVENT_OF[step], ident, pr.bodies[step], ingest.SECRET
                )
                status, _t = await e2e.post(port, data)
                if status != 202:
                    raise RuntimeError(f"preparing PR {pr.number}: {step} answered {status}")
                outcome, _ts, _n = await watcher.wait(ident)
                if outcome != "done":
                    raise RuntimeError(f"preparing PR {pr.number}: {step} ended {outcome}")

    async def everything() -> None:
        await asyncio.wait_for(asyncio.gather(*(one(p) for p in prs)), 600)

    try:
        loop.run_until_complete(everything())
    finally:
        watcher.close()
        loop.close()


def wait_done(url: str, idents: list[str], timeout: float) -> str:
    """Every acknowledged delivery a stored row, and finished by the worker."""
    from sqlalchemy import select

    from minipipe_gh.store.db import Database
    from minipipe_gh.store.models import Delivery

    db = Database(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with db.engine.connect() as conn:
                rows = dict(
                    conn.execute(
                        select(Delivery.delivery_id, Delivery.status).where(
                            Delivery.delivery_id.in_(idents)
                        )
                    ).all()
                )
            done = sum(1 for i in idents if rows.get(i) == "done")
            if done == len(idents) or time.monotonic() > deadline:
                missing = sum(1 for i in idents if i not in rows)
                return f"{len(idents)} acked, {len(rows)} stored, {done} done, {missing} missing"
            time.sleep(0.1)
    finally:
        db.dispose()


# --------------------------------------------------------------------------- Probot


def install_probot(folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH: Node 20 and npm are needed for the Probot side")
    (folder / "package.json").write_text(
        json.dumps({"name": "bench-probot", "private": True, "type": "module"})
    )
    subprocess.run(
        [
            npm,
            "install",
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--silent",
            f"probot@{PROBOT_VERSION}",
        ],
        cwd=folder,
        check=True,
        timeout=600,
    )
    (folder / "app.mjs").write_text(PROBOT_APP)


def run_probot(
    args: argparse.Namespace,
    work: Path,
    folder: Path,
    env0: dict[str, str],
    fake: e2e.Proc,
    fake_port: int,
) -> Run:
    e2e.fake_post(fake_port, "/_fake/reset")
    tag = f"probot-{uuid.uuid4().hex[:6]}"
    prs = e2e.build_prs(args.approvals, tag, args.reviewers)
    sha_of = {pr.sha: pr.number for pr in prs}
    repo = json.loads(prs[0].bodies["approve"])["repository"]["full_name"]
    seed = {
        "repo": repo,
        "pulls": [
            {
                "number": pr.number,
                "sha": pr.sha,
                "ref": f"minipipe/bench-{pr.number}",
                "check": ["in_progress", None],
            }
            for pr in prs
        ],
    }
    conn = http.client.HTTPConnection(HOST, fake_port, timeout=30)
    conn.request(
        "POST", "/_fake/pulls", body=json.dumps(seed), headers={"Content-Type": "application/json"}
    )
    conn.getresponse().read()
    conn.close()
    port = ingest.free_port()
    env = dict(env0)
    env.update(
        APP_ID=env0["GITHUB_APP_ID"],
        PRIVATE_KEY=env0["GITHUB_PRIVATE_KEY"],
        WEBHOOK_SECRET=ingest.SECRET,
        API_URL=f"http://{HOST}:{fake_port}",
        PORT=str(port),
        NODE_ENV="production",
    )
    node = e2e.Proc(
        tag, [shutil.which("node") or "node", str(folder / "app.mjs")], env, work / f"{tag}.log"
    )
    node.proc = None
    try:
        node.launch_until(
            lambda: "probot listening" in _read(node.log_path), ingest.BOOT_S, "not ready"
        )
        warm_probot(port, prs[0])
        before = counts_of(e2e.fake_get(fake_port, "/_fake/stats"))
        items = []
        for pr in prs:
            rec = Sent(pr.number, str(uuid.uuid4()))
            data = e2e.signed_request(
                port, "issue_comment", rec.delivery, pr.bodies["approve"], ingest.SECRET
            )
            items.append((rec, data))
        # the warm-up decided PR 1 already: its success write is older than ``since``
        cpu0, fake0, m0 = node.cpu(), fake.cpu(), ingest._machine_busy()
        since = time.time()
        send_all(port, items, args.clients, args.rate, decided_waiter(args, fake_port, prs))
        decided, stats = wait_decided(fake_port, sha_of, since, len(prs), args.timeout)
        cpu1, fake1, m1 = node.cpu(), fake.cpu(), ingest._machine_busy()
        if os.environ.get("DECISIONS_DEBUG"):
            for entry in stats["log"][-40:]:
                print(f"  {entry[0] - since:8.3f} {entry[1]} {entry[2]} {entry[3]}")
            for s in items[:10]:
                print(
                    f"  sent {s[0].t_sent - since:.3f} ack {s[0].t_ack - since:.3f} {s[0].status}"
                )
    finally:
        node.stop()
    run = Run("Probot", [r for r, _d in items], decided, cpu1 - cpu0, fake1 - fake0, m1 - m0)
    run.requests = counts_of(stats) - before
    return run


def warm_probot(port: int, pr: e2e.PR) -> None:
    """A few deliveries first (token exchange, JIT), as ours is warmed (``warm_ours``)."""
    body = json.loads(pr.bodies["approve"])
    for i in range(WARM_UP):
        body["comment"] = {**body["comment"], "id": 9_000_000_000 + i}
        data = e2e.signed_request(
            port, "issue_comment", f"warm-{uuid.uuid4()}", json.dumps(body).encode(), ingest.SECRET
        )
        post_blocking(port, data)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- report


def report(ours: Run, probot: Run, args: argparse.Namespace) -> bool:
    def row(r: Run) -> list[str]:
        lat = r.latencies()
        acks = [s.t_ack - s.t_sent for s in r.acked]
        per = sum(r.requests.values()) / max(1, len(r.decided))
        return [
            r.name,
            f"{len(r.acked)}/{len(r.sent)}",
            f"{len(r.decided)}",
            f"{r.rate:.1f}",
            f"{1000 * pct(lat, 50):.0f} / {1000 * pct(lat, 99):.0f}",
            f"{1000 * pct(acks, 50):.1f} / {1000 * pct(acks, 99):.1f}",
            f"{r.cpu_ms:.1f}",
            f"{per:.2f}",
            f"{1000 * r.fake_cpu / max(1, len(r.decided)):.1f}",
        ]

    header = [
        "app",
        "acked",
        "decided",
        "decisions/s",
        "send->green p50/p99 ms",
        "ack p50/p99 ms",
        "CPU ms/decision",
        "GH req/decision",
        "fake CPU ms/dec",
    ]
    table([header, row(ours), row(probot)])
    print()
    for r in (ours, probot):
        print(
            f"{r.name} GitHub requests: "
            + ", ".join(f"{k} {v}" for k, v in sorted(r.requests.items()))
        )
    print(f"ours, durability: {ours.stored_ok}")
    if ours.parts:
        n = max(1, len(ours.decided))
        print(
            "ours, CPU ms per decision by process: "
            + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in ours.parts.items())
        )
    if ours.handled_ms:
        h = ours.handled_ms
        print(
            f"ours, CPU ms per handled /approve (the handling thread, {len(h)} handled): "
            f"mean {sum(h) / len(h):.2f}, p50 {pct(h, 50):.2f}, p90 {pct(h, 90):.2f}"
        )
    lo, lp = ours.latencies(), probot.latencies()
    if probot.rate and lp:
        print(
            f"ours/Probot: throughput {ours.rate / probot.rate:.2f}x, "
            f"p50 {pct(lo, 50) / pct(lp, 50):.2f}x, p99 {pct(lo, 99) / pct(lp, 99):.2f}x, "
            f"CPU per decision {ours.cpu_ms / max(probot.cpu_ms, 1e-9):.2f}x"
        )
    print(
        f"machine busy during the runs: ours {ours.machine_cpu:.1f} CPU-s, "
        f"Probot {probot.machine_cpu:.1f} CPU-s (other jobs share the cores)"
    )
    return passed(ours) and passed(probot)


def passed(r: Run) -> bool:
    """A run's check: every delivery decided; for ours also every acknowledged one
    stored and done by the worker."""
    ok = len(r.decided) == len(r.sent)
    if r.name == "ours":
        ok = ok and r.stored_ok.endswith(" 0 missing") and f"{len(r.acked)} done" in r.stored_ok
    return ok


def summary_line(r: Run) -> str:
    """One side's figures on one line (what ``--only`` prints)."""
    lat = r.latencies()
    n = max(1, len(r.decided))
    return (
        f"{r.name}: {r.rate:.1f}/s, p50 {1000 * pct(lat, 50):.0f} ms, "
        f"p99 {1000 * pct(lat, 99):.0f} ms, CPU {r.cpu_ms:.1f} ms/decision "
        + " ".join(f"({k} {1000 * v / n:.1f})" for k, v in r.parts.items())
        + (
            f" (per handled /approve {sum(r.handled_ms) / len(r.handled_ms):.2f})"
            if r.handled_ms
            else ""
        )
        + f", {r.stored_ok}"
    )


@dataclass
class Round:
    number: int
    first: str  # which side ran first in this round
    ours: Run | None
    probot: Run | None

    @property
    def ok(self) -> bool:
        return all(passed(r) for r in (self.ours, self.probot) if r is not None)

    def ratios(self) -> dict[str, float]:
        """ours/Probot: throughput, p99 send->green, CPU per decision (nan when undefined)."""
        nan = float("nan")
        if self.ours is None or self.probot is None:
            return {}
        o, p = self.ours, self.probot
        p99o, p99p = pct(o.latencies(), 99), pct(p.latencies(), 99)
        return {
            "throughput": o.rate / p.rate if p.rate else nan,
            "p99": p99o / p99p if p99p > 0 else nan,
            "CPU per decision": o.cpu_ms / p.cpu_ms if p.cpu_ms > 0 else nan,
        }


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def spread(values: list[float], fmt: str, unit: str = "") -> str:
    """``median (min .., max ..)`` of the defined (not nan) values."""
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    med, lo, hi = (format(v, fmt) + unit for v in (statistics.median(vals), min(vals), max(vals)))
    return f"{med} (min {lo}, max {hi})"


def times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio == ratio else "n/a"


def report_rounds(rounds: list[Round]) -> None:
    """One row per round, then the median (and range) over the rounds."""

    def p50_99(r: Run) -> str:
        lat = r.latencies()
        return f"{1000 * pct(lat, 50):.0f} / {1000 * pct(lat, 99):.0f}"

    def handled(r: Run) -> str:
        h = r.handled_ms
        return f"{sum(h) / len(h):.2f}" if h else "-"

    both = all(rd.ours is not None and rd.probot is not None for rd in rounds)
    if both:
        header = [
            "round",
            "first",
            "ours/s",
            "Probot/s",
            "ratio",
            "ours p50/p99 ms",
            "Probot p50/p99 ms",
            "p99 ratio",
            "CPU ms/dec ours/Probot",
            "CPU ratio",
            "ours CPU ms/handled",
            "busy CPU-s ours/Probot",
            "check",
        ]
        rows = [header]
        for rd in rounds:
            o, p = rd.ours, rd.probot
            assert o is not None and p is not None
            q = rd.ratios()
            rows.append(
                [
                    str(rd.number),
                    rd.first,
                    f"{o.rate:.1f}",
                    f"{p.rate:.1f}",
                    times(q["throughput"]),
                    p50_99(o),
                    p50_99(p),
                    times(q["p99"]),
                    f"{o.cpu_ms:.1f} / {p.cpu_ms:.1f}",
                    times(q["CPU per decision"]),
                    handled(o),
                    f"{o.machine_cpu:.1f} / {p.machine_cpu:.1f}",
                    "ok" if rd.ok else "FAILED",
                ]
            )
        table(rows)
        print(
            f"ours/Probot, median of {len(rounds)} rounds: "
            + ", ".join(
                f"{k} {spread([rd.ratios()[k] for rd in rounds], '.2f', 'x')}"
                for k in ("throughput", "p99", "CPU per decision")
            )
        )
        return
    runs = [r for rd in rounds for r in (rd.ours, rd.probot) if r is not None]
    header = ["round", "app", "decisions/s", "p50/p99 ms", "CPU ms/dec", "CPU ms/handled"]
    header += ["busy CPU-s", "check"]
    rows = [header]
    for rd, r in zip(rounds, runs, strict=True):
        rows.append(
            [
                str(rd.number),
                r.name,
                f"{r.rate:.1f}",
                p50_99(r),
                f"{r.cpu_ms:.1f}",
                handled(r),
                f"{r.machine_cpu:.1f}",
                "ok" if passed(r) else "FAILED",
            ]
        )
    table(rows)
    print(
        f"{runs[0].name}, median of {len(rounds)} rounds: "
        f"{spread([r.rate for r in runs], '.1f', '/s')}, "
        f"p99 {spread([1000 * pct(r.latencies(), 99) for r in runs], '.0f', ' ms')}, "
        f"CPU per decision {spread([r.cpu_ms for r in runs], '.1f', ' ms')}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--approvals", type=int, default=150)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--latency-ms", type=float, default=25.0)
    ap.add_argument(
        "--reviewers", type=int, default=8, help="distinct reviewers (permission cache)"
    )
    ap.add_argument(
        "--web",
        default="gunicorn:2:8",
        help="ours' web tier: gunicorn:W:T (gthread, the default 2x8) or granian:W:T",
    )
    ap.add_argument("--worker-threads", type=int, default=16, help="ours: each worker's --threads")
    ap.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="ours' database: SQLite (the default) or a throwaway PostgreSQL cluster "
        "(tests/pg.py), whose CPU then counts as ours",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="ours: worker processes (default: one per CPU, as the README runs them)",
    )
    ap.add_argument(
        "--rate",
        type=float,
        help="open loop: deliveries sent at this many per second (default: closed loop)",
    )
    ap.add_argument(
        "--loop",
        choices=["ack", "decision"],
        default="ack",
        help="closed loop: a client's next comment once the last was answered (ack) or "
        "once it was decided, the check run passed at the fake (decision)",
    )
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--only", choices=["ours", "probot"])
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run ours and Probot alternately this many times; the median ratio is printed",
    )
    ap.add_argument("--py-spy", type=Path, help="record the worker with py-spy into this folder")
    ap.add_argument(
        "--py-spy-gil", action="store_true", help="with --py-spy: sample only the GIL holder (CPU)"
    )
    ap.add_argument("--py-spy-rate", type=int, default=250, help="with --py-spy: samples/s")
    ap.add_argument("--probot-dir", type=Path, help="reuse a folder where probot is installed")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, database)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="minipipe-decisions-"))
    cluster: e2e.Cluster | None = None

    def stop() -> None:
        ingest.stop_all()
        nonlocal cluster
        if cluster is not None:
            c, cluster = cluster, None
            c.stop()

    def on_term(signum: int, _frame: object) -> None:
        stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        env, _bare = ingest.make_env(work)
        fake_port = ingest.free_port()
        fake_argv = [
            sys.executable,
            str(BENCH / "fake_github.py"),
            "--port",
            str(fake_port),
            "--latency-ms",
            str(args.latency_ms),
        ]
        fake = e2e.Proc("fake-github", fake_argv, env, work / "fake.log")
        fake.launch("fake GitHub on")
        folder = None
        if args.only != "ours":
            folder = args.probot_dir or work / "probot"
            folder.mkdir(exist_ok=True)
            if not (folder / "node_modules" / "probot").is_dir():
                install_probot(folder)
            (folder / "app.mjs").write_text(PROBOT_APP)
        if args.db == "postgres" and args.only != "probot":
            cluster = e2e.Cluster().start()
        sides = [side for side in ("ours", "probot") if args.only in (None, side)]
        rounds: list[Round] = []
        for number in range(1, args.rounds + 1):
            # every second round starts with the other side, so neither always goes first
            order = sides if number % 2 else sides[::-1]
            got: dict[str, Run] = {}
            for side in order:
                if side == "ours":
                    got[side] = run_ours(args, work, env, fake, fake_port, cluster)
                else:
                    assert folder is not None
                    got[side] = run_probot(args, work, folder, env, fake, fake_port)
            rd = Round(number, got[order[0]].name, got.get("ours"), got.get("probot"))
            rounds.append(rd)
            if args.rounds > 1:
                print(
                    f"round {number}/{args.rounds} done: "
                    + ", ".join(f"{r.name} {r.rate:.1f}/s" for r in got.values())
                    + ("" if rd.ok else " (check FAILED)"),
                    file=sys.stderr,
                    flush=True,
                )
        last = rounds[-1]
        print(
            f"{args.approvals} /approve deliveries from {args.clients} client threads, "
            f"fake GitHub +{args.latency_ms:g} ms; ours: {web_label(args.web)} + "
            f"{args.workers} worker(s) x {args.worker_threads} threads, "
            f"{'PostgreSQL (its CPU counted as ours)' if args.db == 'postgres' else 'SQLite'}; "
            f"Probot {PROBOT_VERSION}, inline; "
            + (
                f"open loop at {args.rate:g}/s; "
                if args.rate
                else "closed loop, each client's next comment once its last was "
                + ("decided; " if args.loop == "decision" else "answered; ")
            )
            + f"{os.cpu_count()} CPUs"
            + (f"; {args.rounds} rounds, alternating" if args.rounds > 1 else "")
        )
        if args.rounds > 1:
            print(f"round {last.number} (the last) in detail:")
        if last.ours and last.probot:
            report(last.ours, last.probot, args)
        else:
            for r in (last.ours, last.probot):
                if r is not None:
                    print(summary_line(r))
        if args.rounds > 1:
            print()
            report_rounds(rounds)
        return 0 if all(rd.ok for rd in rounds) else 1
    finally:
        stop()
        if args.keep:
            print(f"kept {work}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())


def probot_env(env0: dict[str, str], secret: str, port: int, api_url: str = "") -> dict[str, str]:
    """The environment a Probot app of these benches reads (``env0`` from
    ``ingest.make_env``): app id, key, webhook secret, port; ``api_url`` for a fake GitHub."""
    env = dict(env0)
    env.update(
        APP_ID=env0["GITHUB_APP_ID"],
        PRIVATE_KEY=env0["GITHUB_PRIVATE_KEY"],
        WEBHOOK_SECRET=secret,
        PORT=str(port),
        NODE_ENV="production",
    )
    if api_url:
        env["API_URL"] = api_url
    return env
