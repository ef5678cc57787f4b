"""A burst of PRs while GitHub misbehaves, and the worker SIGKILLed once: the gate heals.

A loopback GitHub (real HTTP) answers a seeded random 10% of the app's writes
with a 5xx, a 422 or a secondary rate limit, and performs none of them. The
real worker (``minipipe-gh worker``, a subprocess, with reconciliation every
few seconds) handles the burst; at its 60th write it is SIGKILLed before
GitHub answers, and a second worker takes over once the leases expire.

Afterwards every open PR's head has exactly one ``minipipe/review`` check run
whose verdict matches the ledger (heads pushed with no webhook included: the
worker's reconciliation finds them), no delivery is dead, and no write was
made twice (no second check run, comment, reaction or review request).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import select

from minipipe_gh.core import checkrun
from minipipe_gh.store.models import AgentSession, Delivery, Patch
from tests.fake_github_server import Served
from tests.scenario import Scenario
from tests.support import APP_ID, SECRET

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("MINIPIPE_FAULT_SEED", "14"))  # reproducible; another to explore
FAULT_RATE = 0.10
KILL_AT_WRITE = 60
PRS = 30
ROLES = {"writer": "write", "reader": "read"}
FAULTS = ("502", "500", "422", "secondary rate limit")


class MisbehavingGitHub:
    """What GitHub keeps (PRs, check runs, comments, reactions, review requests) and the
    faults it answers with; ``kill_pid`` is SIGKILLed at the ``KILL_AT_WRITE``-th write."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.lock = threading.Lock()
        self.prs: dict[int, dict[str, Any]] = {}
        self.files: dict[int, list[dict[str, Any]]] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self.run_ids = itertools.count(7000)
        self.accepted: list[tuple[str, str, str]] = []  # (method, path, body) performed
        self.faults: Counter[str] = Counter()
        self.writes = 0
        self.kill_pid: int | None = None
        self.killed = False

    def fault(self) -> Any:
        """Decide the next write's fate: None (perform it) or the error answer."""
        with self.lock:
            self.writes += 1
            if self.writes == KILL_AT_WRITE and self.kill_pid and not self.killed:
                self.killed = True
                os.kill(self.kill_pid, signal.SIGKILL)  # before GitHub answers or acts
                return jsonify(message="gone"), 502
            if self.rng.random() >= FAULT_RATE:
                return None
            kind = self.rng.choice(FAULTS)
            self.faults[kind] += 1
        if kind == "422":
            return jsonify(message="Validation Failed"), 422
        if kind == "secondary rate limit":
            msg = (
                "You have exceeded a secondary rate limit. "
                "Please wait a few minutes before you try again."
            )
            return jsonify(message=msg), 403, {"Retry-After": "1"}
        return jsonify(message="Server Error"), int(kind)

    def performed(self, body: Any = None) -> None:
        self.accepted.append(
            (request.method, request.path, json.dumps(body, sort_keys=True) if body else "")
        )

    def app(self) -> Flask:
        app = Flask(__name__)
        base = "/api/v3/repos/<owner>/<name>"

        @app.post("/api/v3/app/installations/<int:inst>/access_tokens")
        def token(inst: int) -> Any:
            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return jsonify(token=f"ghs_{inst}", expires_at=expires, permissions={}), 201

        @app.get("/api/v3/app/hook/deliveries")
        def hook_log() -> Any:
            return jsonify([])

        @app.get(f"{base}/contents/<path:path>")
        def contents(owner: str, name: str, path: str) -> Any:
            return jsonify(message="Not Found"), 404

        @app.get(f"{base}/pulls")
        def pulls(owner: str, name: str) -> Any:
            with self.lock:
                open_ = [p for p in self.prs.values() if p["state"] == "open"]
            etag = f'"{hash(json.dumps(open_, sort_keys=True))}"'
            if request.headers.get("If-None-Match") == etag:
                return "", 304, {"ETag": etag}
            return jsonify(open_), 200, {"ETag": etag}

        @app.get(f"{base}/pulls/<int:number>")
        def pull(owner: str, name: str, number: int) -> Any:
            return jsonify(self.prs[number])

        @app.get(f"{base}/pulls/<int:number>/files")
        def files(owner: str, name: str, number: int) -> Any:
            return jsonify(self.files[number])

        @app.get(f"{base}/pulls/<int:number>/commits")
        def pr_commits(owner: str, name: str, number: int) -> Any:
            pr = self.prs[number]  # one commit, by the PR's author (the session's bot)
            git = {"name": pr["user"]["login"], "email": "bot@example.com", "date": "2026"}
            return jsonify(
                [
                    {
                        "sha": pr["head"]["sha"],
                        "commit": {"author": git, "committer": git},
                        "author": pr["user"],
                        "committer": pr["user"],
                    }
                ]
            )

        @app.get(f"{base}/commits/<sha>/check-suites")
        def suites(owner: str, name: str, sha: str) -> Any:
            suite = {"id": 1, "status": "completed", "conclusion": "success", "app": {"id": 42}}
            return jsonify(total_count=1, check_suites=[{**suite, "head_sha": sha}])

        @app.get(f"{base}/commits/<sha>/check-runs")
        def list_runs(owner: str, name: str, sha: str) -> Any:
            with self.lock:
                runs = [r for r in self.runs.values() if r["head_sha"] == sha]
            return jsonify(total_count=len(runs), check_runs=runs)

        @app.get(f"{base}/git/commits/<sha>")
        def commit(owner: str, name: str, sha: str) -> Any:
            return jsonify(sha=sha, tree={"sha": f"tree-of-{sha}"})

        @app.get(f"{base}/collaborators/<login>/permission")
        def permission(owner: str, name: str, login: str) -> Any:
            role = ROLES.get(login)
            if role is None:
                return jsonify(message="Not Found"), 404
            return jsonify(permission=role, role_name=role, user={"login": login})

        @app.get(f"{base}/issues/<int:number>/comments")
        def comments(owner: str, name: str, number: int) -> Any:
            with self.lock:
                bodies = [
                    json.loads(b) for m, p, b in self.accepted if p.endswith(f"/{number}/comments")
                ]
            return jsonify([{"id": i, "body": b["body"]} for i, b in enumerate(bodies)])

        @app.post(f"{base}/check-runs")
        def create_run(owner: str, name: str) -> Any:
            if (err := self.fault()) is not None:
                return err
            body = request.get_json()
            with self.lock:
                ident = next(self.run_ids)
                self.runs[ident] = {**body, "id": ident, "app": {"id": APP_ID}}
                self.performed(body)
            return jsonify(self.runs[ident]), 201

        @app.patch(f"{base}/check-runs/<int:ident>")
        def update_run(owner: str, name: str, ident: int) -> Any:
            if (err := self.fault()) is not None:
                return err
            body = request.get_json()
            with self.lock:
                self.runs[ident].update(body)
                self.performed(body)
            return jsonify(self.runs[ident])

        @app.post(f"{base}/issues/comments/<int:comment>/reactions")
        @app.post(f"{base}/issues/<int:number>/comments")
        @app.post(f"{base}/pulls/<int:number>/requested_reviewers")
        def other_write(owner: str, name: str, **_: int) -> Any:
            if (err := self.fault()) is not None:
                return err
            with self.lock:
                self.performed(request.get_json())
            return jsonify(id=1), 201

        return app


class NoGitHub:
    """Payloads are built with the suite's ``Scenario``; GitHub here is the loopback one."""

    def allow_token_exchange(self) -> None:
        pass


def start_worker(env: dict[str, str], threads: int) -> subprocess.Popen[bytes]:
    code = "from minipipe_gh.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "worker", "--threads", str(threads)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def burst(deliver: Any, gh: MisbehavingGitHub) -> int:
    """PRs opened (half of them high risk), approvals, refused approvals, pushes, and
    pushes GitHub sends no webhook for."""
    sent = 0
    for i in range(PRS):
        number = 100 + i
        sc = Scenario(deliver, NoGitHub(), number=number, branch=f"minipipe/{i:05d}-task-{i}")  # type: ignore[arg-type]
        sc.sha = f"{i:02d}" + "a" * 38
        path = "src/auth/login.py" if i % 2 == 0 else "docs/guide.md"
        gh.files[number] = [{"filename": path, "additions": 5, "deletions": 1}]
        data = sc.pr_payload("opened")
        gh.prs[number] = {**data["pull_request"], "state": "open"}
        assert sc.deliver("pull_request", data).status_code == 202
        sent += 1
        if i % 2 == 0:
            sc.comment("/approve", login="writer", comment_id=50_000 + i)
            sent += 1
        if i % 3 == 0:
            sc.comment("/approve", login="reader", comment_id=60_000 + i)
            sent += 1
        if i % 4 == 0:
            sc.sha = f"{i:02d}" + "b" * 38
            data = sc.pr_payload("synchronize")
            gh.prs[number] = {**data["pull_request"], "state": "open"}
            assert sc.deliver("pull_request", data).status_code == 202
            sent += 1
        if i % 7 == 3:  # pushed with no webhook: only reconciliation can find this head
            sc.sha = f"{i:02d}" + "c" * 38
            gh.prs[number] = {**sc.pr_payload("synchronize")["pull_request"], "state": "open"}
    return sent


def verdicts(database: Any, gh: MisbehavingGitHub) -> dict[int, tuple[list[Any], Any]]:
    """Per PR: our check runs on its head (status, conclusion) and what the ledger says."""
    out: dict[int, tuple[list[Any], Any]] = {}
    with database.unit() as s:
        for number, pr in gh.prs.items():
            sha = pr["head"]["sha"]
            patch = s.scalars(
                select(Patch).where(Patch.pr_number == number, Patch.patch_id == sha)
            ).first()
            want = None
            if patch is not None:
                body = checkrun.body(patch, checkrun.View())
                want = (body["status"], body.get("conclusion"))
            with gh.lock:
                runs = [
                    (r["status"], r.get("conclusion"))
                    for r in gh.runs.values()
                    if r["head_sha"] == sha and r["name"] == checkrun.NAME
                ]
            out[number] = (runs, want)
    return out


def settled(database: Any, gh: MisbehavingGitHub) -> bool:
    with database.unit() as s:
        pending = s.scalar(
            select(Delivery.seq).where(Delivery.status.in_(("queued", "effects"))).limit(1)
        )
    if pending is not None:
        return False
    return all(runs == [want] for runs, want in verdicts(database, gh).values())


def test_a_burst_with_github_failing_and_the_worker_killed_heals_completely(
    rt, deliver, db_url, private_key_pem, tmp_path
):
    gh = MisbehavingGitHub()
    sent = burst(deliver, gh)
    with Served(gh.app()) as server:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_PRIVATE_KEY": private_key_pem,
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": f"{server.url}/api/v3",
            "SECRET_KEY": "test",
            "MINIPIPE_LEASE_SECONDS": "3",
            "MINIPIPE_MAX_ATTEMPTS": "8",
            "MINIPIPE_RECONCILE_SECONDS": "2",
            "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance"),
            "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
        }
        started = time.monotonic()
        # One thread until the kill: the write it dies in is then the only one in flight (a
        # second thread could die between GitHub's answer and saving it, and redo that
        # write: harmless, as each write is idempotent, but not what this test counts).
        first = start_worker(env, threads=1)
        gh.kill_pid = first.pid
        second = None
        try:
            assert first.wait(timeout=40) == -signal.SIGKILL  # killed at its 60th write
            killed_after = time.monotonic() - started
            second = start_worker(env, threads=2)
            deadline = time.monotonic() + 45
            while not settled(rt.database, gh):
                assert second.poll() is None, "the second worker exited"
                assert time.monotonic() < deadline, verdicts(rt.database, gh)
                time.sleep(0.25)
            healed_after = time.monotonic() - started
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)

    with rt.database.unit() as s:
        rows = s.scalars(select(Delivery)).all()
        sessions = s.scalars(select(AgentSession)).all()
    by_status = Counter(d.status for d in rows)
    repairs = sum(1 for d in rows if d.event == "minipipe.reconcile")
    assert repairs >= len([i for i in range(PRS) if i % 7 == 3])  # the silent pushes at least
    assert by_status == {"done": len(rows)}, by_status  # nothing dead, nothing stuck
    assert len(sessions) == PRS and all(s.state == "active" for s in sessions)
    # every open PR's head: exactly one minipipe/review, saying what the ledger says
    for number, (runs, want) in verdicts(rt.database, gh).items():
        assert want is not None and runs == [want], (number, runs, want)
    # no write made twice
    created = Counter(
        json.loads(b)["head_sha"]
        for m, p, b in gh.accepted
        if m == "POST" and p.endswith("/check-runs")
    )
    assert set(created.values()) == {1}, created
    others = Counter((m, p, b) for m, p, b in gh.accepted if "check-runs" not in p)
    assert set(others.values()) <= {1}, [k for k, n in others.items() if n > 1]
    patches = Counter((p, b) for m, p, b in gh.accepted if m == "PATCH")
    assert set(patches.values()) <= {1}, [k for k, n in patches.items() if n > 1]
    print(
        f"\n{PRS} PRs, {sent} webhook deliveries, {repairs} reconcile repairs; "
        f"GitHub saw {gh.writes} writes, performed {len(gh.accepted)}, failed "
        f"{sum(gh.faults.values())} ({dict(gh.faults)}); worker SIGKILLed at write "
        f"{KILL_AT_WRITE} after {killed_after:.1f}s; healed after {healed_after:.1f}s; "
        f"deliveries {dict(by_status)}; check runs {len(gh.runs)} on {len(created)} SHAs"
    )
