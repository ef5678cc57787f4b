"""``minipipe-gh deliveries`` and ``worker --once`` on the inbox the webhook filled."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from minipipe_gh.cli import main
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.delivery.worker import Worker
from minipipe_gh.review.context import Context
from minipipe_gh.store.models import Delivery, Installation
from tests.github_fake import API, APP_ID
from tests.support import OLD_SECRET, SECRET, payload

Invoke = Callable[..., Result]


@pytest.fixture
def cli(db_url: str, tmp_path: Path, private_key_pem: str) -> Invoke:
    """Run the CLI against the same database and app settings as the ``settings`` fixture."""
    env = {
        "DATABASE_URL": db_url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "cli-instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "absent.env"),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
        "GITHUB_API_URL": API,
        "SECRET_KEY": "test",
        "MINIPIPE_MAX_ATTEMPTS": "3",
    }
    runner = CliRunner()

    def invoke(*args: str, **extra_env: str) -> Result:
        return runner.invoke(main, list(args), env={**env, **extra_env})

    return invoke


def listed(cli: Invoke, *args: str) -> list[dict[str, Any]]:
    result = cli("deliveries", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert page["next_cursor"] is None
    return page["items"]


def status_of(rt: Runtime, delivery_id: str) -> tuple[str, int]:
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == delivery_id)).one()
        return d.status, d.attempts


def test_list_shows_the_posted_deliveries_newest_first(cli, deliver):
    deliver("installation", payload("installation.created"), delivery_id="d-1")
    deliver(
        "installation_repositories", payload("installation_repositories.added"), delivery_id="d-2"
    )

    items = listed(cli)
    assert [(i["delivery_id"], i["event"], i["action"], i["status"]) for i in items] == [
        ("d-2", "installation_repositories", "added", "queued"),
        ("d-1", "installation", "created", "queued"),
    ]
    assert items[1]["order_key"] == "installation:957387"
    assert "payload" not in items[1]  # the listing stays small
    assert listed(cli, "--status", "dead") == []

    table = cli("deliveries", "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "SEQ", "DELIVERY_ID", "EVENT", "ACTION", "REPOSITORY", "STATUS", "ATTEMPTS", "RECEIVED_AT"
    ]  # fmt: skip
    assert [r.split()[1] for r in rows] == ["d-2", "d-1"]


def test_show_prints_one_delivery_with_its_payload(cli, deliver):
    data = payload("installation.created")
    deliver("installation", data, delivery_id="d-1")

    result = cli("deliveries", "show", "d-1")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["payload"] == data
    assert shown["headers"]["X-GitHub-Delivery"] == "d-1"
    assert (shown["status"], shown["attempts"], shown["effects"]) == ("queued", 0, None)

    by_seq = cli("deliveries", "show", str(shown["seq"]))
    assert json.loads(by_seq.stdout) == shown


def test_worker_once_processes_every_due_delivery(cli, deliver, rt):
    deliver("installation", payload("installation.created"), delivery_id="d-1")
    deliver(
        "installation_repositories", payload("installation_repositories.added"), delivery_id="d-2"
    )

    result = cli("worker", "--once")
    assert result.exit_code == 0, result.output
    assert "handled 2 deliveries: {'done': 2}" in result.stdout
    assert [i["delivery_id"] for i in listed(cli, "--status", "done")] == ["d-2", "d-1"]
    with rt.database.unit() as s:
        assert s.scalars(select(Installation.account)).all() == ["Codertocat"]

    again = cli("worker", "--once")
    assert "handled 0 deliveries: none due" in again.stdout


def test_worker_once_buries_a_delivery_that_fails_its_last_attempt(cli, deliver, rt):
    broken = payload("installation.created", repositories=[{"id": 5}])  # no full_name
    deliver("installation", broken, delivery_id="bad-1")

    result = cli("worker", "--once", MINIPIPE_MAX_ATTEMPTS="1")
    assert result.exit_code == 0, result.output
    assert "handled 1 deliveries: {'dead': 1}" in result.stdout
    [dead] = listed(cli, "--status", "dead")
    assert (dead["delivery_id"], dead["attempts"]) == ("bad-1", 1)
    assert "KeyError: 'full_name'" in dead["last_error"]
    with rt.database.unit() as s:
        assert s.scalars(select(Installation)).all() == []  # nothing half-done


def test_replay_revives_a_dead_delivery_and_the_worker_completes_it(cli, deliver, rt):
    deliver("installation", payload("installation.created"), delivery_id="d-1")
    outage = Router()

    @outage.register("installation")
    def fail(ctx: Context) -> None:
        raise ConnectionError("database of record unreachable")

    [outcome] = Worker(rt.database, outage, None, max_attempts=1).run_once()
    assert outcome.status == "dead"
    assert [i["delivery_id"] for i in listed(cli, "--status", "dead")] == ["d-1"]

    result = cli("deliveries", "replay", "d-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "delivery d-1 queued again (queued)"
    assert status_of(rt, "d-1") == ("queued", 0)
    assert listed(cli, "--status", "dead") == []

    assert "{'done': 1}" in cli("worker", "--once").stdout
    assert status_of(rt, "d-1") == ("done", 1)
    with rt.database.unit() as s:
        assert s.scalars(select(Installation.installation_id)).all() == [957387]


def test_replaying_a_finished_delivery_asks_first_and_says_what_it_re_sends(cli, deliver, rt):
    deliver("installation", payload("installation.created"), delivery_id="d-2")
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == "d-2")).one()
        d.status = "done"
        d.effects = [
            {"kind": "check_run", "result": "done"},
            {"kind": "react", "result": "gave_up"},
        ]

    refused = cli("deliveries", "replay", "d-2")
    assert refused.exit_code == 1  # no answer on stdin: aborted
    # what the worker will really send: the write that gave up, not the check run again
    assert "already finished: a replay sends GitHub a reaction\n" in refused.stderr
    assert "Replay it? [y/N]" in refused.stderr
    assert status_of(rt, "d-2")[0] == "done"

    confirmed = cli("deliveries", "replay", "d-2", "--yes")
    assert confirmed.exit_code == 0, confirmed.output
    assert confirmed.stdout.strip() == "delivery d-2 queued again (effects)"
    assert status_of(rt, "d-2") == ("effects", 0)


def test_replaying_a_finished_delivery_whose_writes_all_succeeded_says_none_is_repeated(
    cli, deliver, rt
):
    deliver("installation", payload("installation.created"), delivery_id="d-3")
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == "d-3")).one()
        d.status = "done"
        d.effects = [{"kind": "check_run", "result": "done"}, {"kind": "react", "result": "done"}]

    refused = cli("deliveries", "replay", "d-3")
    assert refused.exit_code == 1
    assert (
        "a replay sends GitHub nothing: every GitHub write it made already succeeded, "
        "so none is repeated"
    ) in refused.stderr


@pytest.mark.parametrize("command", ["show", "replay"])
def test_an_unknown_delivery_exits_2_with_a_clear_message(cli, command):
    result = cli("deliveries", command, "no-such-delivery")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: delivery no-such-delivery not found"
    assert result.stdout == ""
