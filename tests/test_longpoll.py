"""Bots hear their verdicts: the long-poll on a session, and ETag / 304 on session and patch reads.

The verdict is given by another thread with its own engine (as the worker
would) or by another process altogether; the waiting request answers within a
second of the commit, and after ``wait`` seconds with the same version when
nothing changed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from minipipe_gh.core.patch_states import PatchState as P
from minipipe_gh.store import ledger
from minipipe_gh.store.db import Database
from tests.test_api import Api, error, install, make_token, seed_patch, seed_session


@pytest.fixture
def api(rt: Any, client: Any) -> Api:
    install(rt)
    return Api(client, make_token(rt, "agent", "agent-bot"))


def approve_later(db_url: str, ledger_id: str, after: float) -> threading.Thread:
    """Approve the patch from a second engine after ``after`` seconds (like the worker)."""

    def run() -> None:
        time.sleep(after)
        other = Database(db_url)
        try:
            with other.unit() as s:
                ledger.approve_patch(s, ledger_id, "carol", source="test", comment="ship it")
        finally:
            other.dispose()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_every_session_response_carries_a_version_that_covers_its_patches(api, rt):
    sid, lid = seed_patch(rt)
    before = api("GET", f"/sessions/{sid}").get_json()["version"]
    with rt.database.unit() as s:
        ledger.approve_patch(s, lid, "carol", source="test")
    after = api("GET", f"/sessions/{sid}").get_json()
    assert after["version"] > before
    listed = api("GET", "/sessions").get_json()["items"]
    assert [x["version"] for x in listed if x["session_id"] == sid] == [after["version"]]


def test_a_changed_session_answers_at_once(api, rt):
    sid, lid = seed_patch(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    started = time.monotonic()
    resp = api("GET", f"/sessions/{sid}", query_string={"wait": 30, "since": version - 1})
    assert resp.status_code == 200
    assert resp.get_json()["version"] == version
    assert time.monotonic() - started < 1


def test_a_verdict_reaches_the_waiting_bot_within_a_second(api, rt, db_url):
    sid, lid = seed_patch(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    thread = approve_later(db_url, lid, after=0.5)
    started = time.monotonic()
    resp = api("GET", f"/sessions/{sid}", query_string={"wait": 20, "since": version})
    elapsed = time.monotonic() - started
    thread.join()
    body = resp.get_json()
    assert resp.status_code == 200
    assert 0.5 <= elapsed < 1.5, elapsed
    assert body["version"] > version
    [patch] = body["patches"]
    assert (patch["state"], patch["review"]["status"]) == (P.QUEUED, "approved")
    assert (patch["review"]["by"], patch["review"]["approvals"]) == ("carol", ["carol"])


DECIDE_IN_ANOTHER_PROCESS = """
import sys, time
from minipipe_gh.store import ledger
from minipipe_gh.store.db import Database
db = Database(sys.argv[1])
with db.unit() as s:
    pass  # connected and warm before the clock starts
time.sleep(float(sys.argv[3]))
with db.unit() as s:
    ledger.reject_patch(s, sys.argv[2], "carol", "too big", source="test")
print(time.time(), flush=True)  # the commit is done
db.dispose()
"""


def test_a_decision_in_another_process_wakes_the_wait_within_a_second(api, rt, db_url):
    sid, lid = seed_patch(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    child = subprocess.Popen(
        [sys.executable, "-c", DECIDE_IN_ANOTHER_PROCESS, db_url, lid, "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        resp = api("GET", f"/sessions/{sid}", query_string={"wait": 30, "since": version})
        answered = time.time()
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0
    committed = float(out.strip())
    [patch] = resp.get_json()["patches"]
    assert (patch["state"], patch["review"]["status"]) == (P.DROPPED, "rejected")
    assert patch["review"]["reason"] == "too big"
    assert resp.get_json()["version"] > version
    assert 0 <= answered - committed < 1.0, answered - committed


def test_nothing_changed_answers_after_the_wait_with_the_same_version(api, rt):
    sid = seed_session(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    started = time.monotonic()
    resp = api(
        "GET",
        f"/sessions/{sid}",
        query_string={"wait": 0.6, "since": version},
        headers={"If-None-Match": f'"session-{sid}-{version}"'},
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200  # a long-poll answers 200 even when the caller has it
    assert resp.get_json()["version"] == version
    assert 0.6 <= elapsed < 1.6


def test_the_wait_is_capped_at_sixty_seconds(api, rt, monkeypatch):
    from minipipe_gh.web import api as api_module

    seen: list[float] = []
    monkeypatch.setattr(api_module, "_await_change", lambda sid, since, wait: seen.append(wait))
    sid = seed_session(rt)
    assert api("GET", f"/sessions/{sid}", query_string={"wait": 3600, "since": 1}).status_code == (
        200
    )
    assert seen == [60.0]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"wait": "soon", "since": 1}, "wait"),
        ({"wait": "-1", "since": 1}, "wait"),
        ({"wait": "nan", "since": 1}, "wait"),
        ({"wait": "5", "since": "v3"}, "since"),
        ({"wait": "5", "since": "-3"}, "since"),
    ],
)
def test_a_bad_wait_or_since_is_400(api, rt, query, field):
    sid = seed_session(rt)
    error(api("GET", f"/sessions/{sid}", query_string=query), 400, "invalid", field)


def test_waiting_on_an_unknown_session_is_404_at_once(api):
    started = time.monotonic()
    resp = api("GET", "/sessions/01nosuchsession000000000000", query_string={"wait": 5, "since": 1})
    error(resp, 404, "not_found")
    assert time.monotonic() - started < 1


def test_session_reads_carry_an_etag_and_answer_304_when_unchanged(api, rt):
    sid, lid = seed_patch(rt)
    first = api("GET", f"/sessions/{sid}")
    etag = first.headers["ETag"]
    again = api("GET", f"/sessions/{sid}", headers={"If-None-Match": etag})
    assert (again.status_code, again.get_data(), again.headers["ETag"]) == (304, b"", etag)
    with rt.database.unit() as s:
        ledger.transition(s, lid, P.DROPPED, actor="t", source="test", reason="closed")
    changed = api("GET", f"/sessions/{sid}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.get_json()["patches"][0]["state"] == P.DROPPED


def test_patch_reads_carry_an_etag_and_answer_304_when_unchanged(api, rt):
    _sid, lid = seed_patch(rt)
    first = api("GET", f"/patches/{lid}")
    etag = first.headers["ETag"]
    assert api("GET", f"/patches/{lid}", headers={"If-None-Match": etag}).status_code == 304
    assert api("GET", f"/patches/{lid}", headers={"If-None-Match": '"other"'}).status_code == 200
    with rt.database.unit() as s:
        ledger.approve_patch(s, lid, "carol", source="test")
    changed: Any = api("GET", f"/patches/{lid}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["review"]["approvals"] == ["carol"]


def test_a_usage_report_changes_the_session_etag(api, rt):
    sid = seed_session(rt)
    etag = api("GET", f"/sessions/{sid}").headers["ETag"]
    api("POST", f"/sessions/{sid}/usage", {"cost_usd": 0.1})
    fresh = api("GET", f"/sessions/{sid}", headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.get_json()["usage"]["cost_usd"] == 0.1


def test_history_pages_and_the_patch_no_longer_embeds_it(api, rt):
    _sid, lid = seed_patch(rt)
    with rt.database.unit() as s:
        for i in range(5):
            ledger.transition(
                s, lid, P.QUEUED if i % 2 == 0 else P.AWAITING_REVIEW, actor="t", source="test"
            )
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api("GET", f"/patches/{lid}/history", query_string=query).get_json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [h["to"] for h in seen] == [
        P.CREATED,
        P.VALIDATED,
        P.AWAITING_REVIEW,
        P.QUEUED,
        P.AWAITING_REVIEW,
        P.QUEUED,
        P.AWAITING_REVIEW,
        P.QUEUED,
    ]
    assert len({h["id"] for h in seen}) == 8
    error(
        api("GET", f"/patches/{lid}/history", query_string={"cursor": "!!"}),
        400,
        "invalid",
        "cursor",
    )
    error(
        api("GET", f"/patches/{lid}/history", query_string={"cursor": "YWJj"}),
        400,
        "invalid",
        "cursor",
    )


def test_a_move_takes_the_version_session_responses_carry(api, rt):
    """The version a bot read (session and patches together) is the one a move checks."""
    sid, lid = seed_patch(rt)
    version = api("GET", f"/sessions/{sid}").get_json()["version"]
    with rt.database.unit() as s:
        ledger.approve_patch(s, lid, "carol", source="test")
    stale = api("POST", f"/sessions/{sid}/complete", json={"version": version})
    assert "someone else changed it first" in error(stale, 409, "conflict")["message"]
    current = api("GET", f"/sessions/{sid}").get_json()["version"]
    done = api("POST", f"/sessions/{sid}/complete", json={"version": current})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["state"] == "completed"
