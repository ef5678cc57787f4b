"""Recovery of missed deliveries from GitHub's delivery log.

GitHub's log (``GET /app/hook/deliveries``, newest first, cursor-paginated)
is faked at the HTTP layer; the redelivery GitHub then makes arrives signed,
with the same GUID, through the normal webhook path.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from minipipe_gh.cli import main
from minipipe_gh.delivery.recover import RecoveryMemo, recover
from minipipe_gh.store.models import utcnow
from tests.github_fake import API, WIRE
from tests.scenario import APP_ID, INSTALLATION
from tests.support import payload

LOG = "/app/hook/deliveries"


def entry(ident: int, guid: str, ago: timedelta, code: int, *, redelivery: bool = False) -> dict:
    at = (utcnow() - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": ident,
        "guid": guid,
        "delivered_at": at,
        "redelivery": redelivery,
        "duration": 0.2,
        "status": "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}",
        "status_code": code,
        "event": "pull_request",
        "action": "synchronize",
        "installation_id": 1,
        "repository_id": 1296269,
    }


M, H = timedelta(minutes=1), timedelta(hours=1)
PAGE_1 = [
    entry(9, "g-fixed", 2 * M, 202, redelivery=True),  # redelivered since, successfully
    entry(8, "g-ok", 5 * M, 202),
    entry(7, "g-lost", 10 * M, 502),  # the app was down: never stored
    entry(6, "g-held", 20 * M, 0),  # stored, but answered after GitHub's 10 s
]
PAGE_2 = [
    entry(5, "g-fixed", 30 * M, 503),
    entry(4, "g-lost-too", 2 * H, 504),
    entry(3, "g-old", 30 * H, 502),  # past the window asked for
    entry(2, "g-older", 40 * H, 502),
]


class DeliveryLog:
    """GitHub's side: two pages of the log; redelivery requests are recorded."""

    def __init__(self, github: Any, pages: list[list[dict]]) -> None:
        self.pages = pages
        self.redelivered: list[int] = []
        self.auth: set[str] = set()
        github.rsps.add_callback(
            "GET", re.compile(re.escape(WIRE + LOG) + r"(\?.*)?$"), callback=self.listing
        )
        github.rsps.add_callback(
            "POST", re.compile(re.escape(WIRE + LOG) + r"/(\d+)/attempts$"), callback=self.attempt
        )

    def listing(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.auth.add(request.headers["Authorization"].split()[0])
        cursor = re.search(r"cursor=([^&]+)", request.url)
        index = int(cursor[1].removeprefix("v1_")) if cursor else 0
        headers = {}
        if index + 1 < len(self.pages):
            nxt = f"{API}{LOG}?per_page=100&cursor=v1_{index + 1}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return 200, headers, json.dumps(self.pages[index])

    def attempt(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.auth.add(request.headers["Authorization"].split()[0])
        self.redelivered.append(int(request.url.rsplit("/", 2)[-2]))
        return 202, {}, "{}"


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, private_key_pem: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_API_URL": API,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
    }


def run_recover(cli_env: dict[str, str], *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main, ["deliveries", "recover", *args, "--json"], env=cli_env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def pr_delivery(deliver: Any, guid: str) -> Any:
    number = 10 + sum(map(ord, guid))  # each delivery its own body, as GitHub's are
    data = payload("pull_request.synchronize", installation=INSTALLATION, number=number)
    return deliver("pull_request", data, delivery_id=guid)


def test_a_delivery_github_failed_is_redelivered_and_one_the_inbox_holds_is_not(
    deliver, github, cli_env
):
    assert pr_delivery(deliver, "g-held").status_code == 202  # stored before GitHub gave up
    log = DeliveryLog(github, [PAGE_1, PAGE_2])

    result = run_recover(cli_env, "--since", "24h")
    assert result["asked"] == ["g-lost", "g-lost-too"]
    assert log.redelivered == [7, 4]
    assert result["in_inbox"] == ["g-held"]
    assert (result["pages"], result["examined"]) == (2, 6)  # stopped at the window's edge
    assert log.auth == {"Bearer"}  # as the app (JWT), not as an installation
    calls = [(m, p) for m, p, _b in github.requests]
    assert calls == [
        ("GET", f"{LOG}?per_page=100"),
        ("GET", f"{LOG}?cursor=v1_1&per_page=100"),
        ("POST", f"{LOG}/7/attempts"),
        ("POST", f"{LOG}/4/attempts"),
    ]

    # GitHub redelivers: same GUID, signed, through the normal path; then never asked again
    assert pr_delivery(deliver, "g-lost").status_code == 202
    assert pr_delivery(deliver, "g-lost-too").status_code == 202
    again = run_recover(cli_env, "--since", "24h")
    assert again["asked"] == []
    assert again["in_inbox"] == ["g-lost", "g-held", "g-lost-too"]
    assert log.redelivered == [7, 4]


def test_the_default_window_reaches_back_72_hours(github, cli_env):
    log = DeliveryLog(github, [PAGE_1, PAGE_2])
    result = run_recover(cli_env)
    assert result["asked"] == ["g-lost", "g-held", "g-lost-too", "g-old", "g-older"]
    assert log.redelivered == [7, 6, 4, 3, 2]


def test_recovery_is_bounded_per_run_and_not_asked_twice_in_a_row(rt, github):
    log = DeliveryLog(github, [PAGE_1, PAGE_2])
    memo = RecoveryMemo()
    first = recover(rt.database, rt.github, memo=memo, max_redeliveries=1)
    assert (first.asked, first.left) == (["g-lost"], 4)
    second = recover(rt.database, rt.github, memo=memo, max_redeliveries=10)
    # g-lost was just asked for (its redelivery is on its way): the others now
    assert second.asked == ["g-held", "g-lost-too", "g-old", "g-older"]
    assert log.redelivered == [7, 6, 4, 3, 2]
    third = recover(rt.database, rt.github, memo=memo)
    assert third.asked == [] and log.redelivered == [7, 6, 4, 3, 2]


def test_the_worker_recovers_missed_deliveries_when_it_starts(rt, github):
    log = DeliveryLog(github, [PAGE_1, PAGE_2])
    stop = threading.Event()
    w = rt.worker()
    thread = threading.Thread(target=w.run_forever, args=(stop,), kwargs={"poll_s": 0.05})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(log.redelivered) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert log.redelivered == [7, 6, 4, 3, 2]
    assert w.recovery.asked_at.keys() == {"g-lost", "g-held", "g-lost-too", "g-old", "g-older"}
