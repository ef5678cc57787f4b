"""Reconciliation repairs what webhooks never told: a head pushed silently, a check run
deleted on GitHub or contradicting the ledger, a PR merged while the app was down; and
an installation whose event never came is looked up.

``minipipe-gh reconcile`` runs for real (the CLI, its own runtime); GitHub is
faked at the HTTP layer and every test asserts on the requests sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from minipipe_gh.cli import main
from minipipe_gh.delivery.reconcile import reconcile
from minipipe_gh.store.models import (
    AgentSession,
    AuditEntry,
    Delivery,
    Installation,
    InstalledRepository,
)
from tests.scenario import APP_ID, REPO, R, Scenario, user
from tests.support import API
from tests.test_api import NEW_SESSION, PR_NUMBER, make_token, serve_session_pr
from tests.test_review_flow import only_patch, opened_and_validated

NEW_SHA = "b" * 40


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


def run_reconcile(cli_env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, ["reconcile", *args], env=cli_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def pr_object(sc: Scenario, sha: str, *, state: str = "open", merged: bool = False) -> dict:
    pr = sc.pr_payload("closed" if state == "closed" else "synchronize", sha=sha, merged=merged)
    return {**pr["pull_request"], "state": state}


def serve_open_pulls(github: Any, *prs: dict, etag: str = '"v1"') -> None:
    github.rsps.upsert("GET", github.url(f"{R}/pulls"), json=list(prs), headers={"ETag": etag})


def serve_pull(github: Any, pr: dict) -> None:
    github.rsps.upsert("GET", github.url(f"{R}/pulls/{pr['number']}"), json=pr)


def serve_own_runs(github: Any, sha: str, *runs: dict) -> None:
    github.rsps.upsert(
        "GET",
        github.url(f"{R}/commits/{sha}/check-runs"),
        json={"total_count": len(runs), "check_runs": list(runs)},
        headers={"ETag": f'"runs-{sha[:4]}-{len(runs)}"'},
    )


def our_run(sha: str, status: str, conclusion: str | None, ident: int = 555) -> dict:
    return {
        "id": ident,
        "name": "minipipe/review",
        "head_sha": sha,
        "status": status,
        "conclusion": conclusion,
        "external_id": "01ledgerid",  # a session's run names its patch (a neutral one does not)
        "app": {"id": APP_ID},
    }


def reconcile_rows(rt: Any) -> list[AuditEntry]:
    with rt.database.unit() as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.source == "reconcile").order_by(AuditEntry.id)
            )
        )


def drain(rt: Any) -> list[str]:
    return [o.status for o in rt.worker().run_once()]


def test_a_head_pushed_with_no_webhook_is_recorded_by_reconcile(rt, deliver, github, cli_env):
    sc = Scenario(deliver, github)
    first = opened_and_validated(rt, sc, github)  # awaiting review on sha a
    pushed = pr_object(sc, NEW_SHA)
    serve_open_pulls(github, pushed)
    serve_pull(github, pushed)
    sc.serve_suites(NEW_SHA, None)  # CI is running on the new head
    mark = len(github.api_requests())

    out = run_reconcile(cli_env)
    assert f"{REPO}#2" in out and "head" in out and f"head {NEW_SHA[:12]} not recorded" in out
    assert "1 repairs queued" in out
    assert github.api_requests()[mark:] == [
        ("GET", f"{R}/pulls?page=1&per_page=100&state=open", None),
    ]
    with rt.database.unit() as s:
        [repair] = s.scalars(select(Delivery).where(Delivery.event == "minipipe.reconcile"))
        assert (repair.order_key, repair.status) == (f"{REPO}#2", "queued")

    assert drain(rt) == ["done"]
    new = only_patch(rt)
    assert (new.patch_id, new.state) == (NEW_SHA, "created")
    with rt.database.unit() as s:
        old = s.get(type(first), first.ledger_id)
        assert (old.state, old.meta["drop_reason"]) == ("dropped", f"superseded by {NEW_SHA[:12]}")
    posted = [
        b for m, p, b in github.api_requests()[mark:] if (m, p) == ("POST", f"{R}/check-runs")
    ]
    assert [(b["head_sha"], b["status"]) for b in posted] == [(NEW_SHA, "in_progress")]
    rows = reconcile_rows(rt)
    moves = [(r.entity_id, r.from_state, r.to_state) for r in rows if r.outcome == "moved"]
    assert (new.ledger_id, None, "created") in moves
    assert (first.ledger_id, "awaiting_review", "dropped") in moves
    [noted] = [r for r in rows if r.outcome == "noted"]
    assert noted.entity_id == new.ledger_id and "not recorded" in noted.reason

    # the next run finds GitHub and the ledger agreeing: nothing to repair
    serve_own_runs(github, NEW_SHA, our_run(NEW_SHA, "in_progress", None))
    assert "0 repairs queued" in run_reconcile(cli_env)


@pytest.mark.parametrize(
    ("on_github", "finding"),
    [
        ((), "no check run on aaaaaaaaaaaa"),
        (
            (our_run("a" * 40, "completed", "success"),),
            "check run says completed/success, the ledger completed/action_required",
        ),
    ],
    ids=["deleted", "contradicting"],
)
def test_a_missing_or_contradicting_check_run_is_published_again(
    on_github, finding, rt, deliver, github, cli_env
):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github)
    assert patch.state == "awaiting_review"
    head = pr_object(sc, sc.sha)
    serve_open_pulls(github, head)
    serve_pull(github, head)
    serve_own_runs(github, sc.sha, *on_github)
    if not on_github:  # deleted on GitHub: updating it is answered 404, so it is made again
        github.rsps.replace(
            "PATCH", github.url(f"{R}/check-runs/555"), json={"message": "Not Found"}, status=404
        )
        github.rsps.replace("POST", github.url(f"{R}/check-runs"), json={"id": 556}, status=201)

    out = run_reconcile(cli_env, "--repo", REPO)
    assert finding in out
    mark = len(github.api_requests())
    assert drain(rt) == ["done"]
    writes = [(m, p, b) for m, p, b in github.api_requests()[mark:] if m != "GET"]
    if on_github:
        [(method, path, body)] = writes
        assert (method, path) == ("PATCH", f"{R}/check-runs/555")
    else:
        assert [(m, p) for m, p, _b in writes] == [
            ("PATCH", f"{R}/check-runs/555"),
            ("POST", f"{R}/check-runs"),
        ]
        body = writes[1][2]
        assert body["head_sha"] == sc.sha
        assert sc.check_run_ref(rt.database).check_run_id == 556
    assert (body["status"], body["conclusion"]) == ("completed", "action_required")
    [noted] = reconcile_rows(rt)
    assert (noted.entity_id, noted.outcome) == (patch.ledger_id, "noted")
    assert finding in noted.reason
    assert only_patch(rt).state == "awaiting_review"  # republished, not moved


def test_a_pr_merged_while_the_app_was_down_moves_its_session_and_patch(
    rt, deliver, github, cli_env
):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github, "docs/guide.md")
    assert patch.state == "queued"
    serve_open_pulls(github)  # no longer open
    merged = pr_object(sc, sc.sha, state="closed", merged=True)
    serve_pull(github, merged)

    out = run_reconcile(cli_env, "--json")
    assert '"kind": "closed"' in out
    assert drain(rt) == ["done"]
    patch = only_patch(rt)
    assert (patch.state, patch.merge_commit_sha) == ("applied", "m" * 40)
    assert "merge_commit_sha" not in patch.meta  # one home: the column
    with rt.database.unit() as s:
        assert s.scalars(select(AgentSession)).one().state == "completed"
    rows = reconcile_rows(rt)
    assert ("queued", "applied", "maintainer") in [
        (r.from_state, r.to_state, r.actor) for r in rows if r.outcome == "moved"
    ]
    assert any(r.entity == "session" and r.to_state == "completed" for r in rows)
    # a closed session is no longer looked at
    mark = len(github.api_requests())
    assert "0 repairs queued" in run_reconcile(cli_env)
    assert github.api_requests()[mark:] == []


def test_an_unchanged_listing_costs_a_304_and_repairs_the_same(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    head = pr_object(sc, sc.sha)
    served: list[int] = []

    def pulls(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        if request.headers.get("If-None-Match") == '"v1"':
            served.append(304)
            return 304, {"ETag": '"v1"'}, ""
        served.append(200)
        return 200, {"ETag": '"v1"'}, json.dumps([head])

    def runs(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        if request.headers.get("If-None-Match") == '"r1"':
            served.append(304)
            return 304, {"ETag": '"r1"'}, ""
        served.append(200)
        body = {"total_count": 1, "check_runs": [our_run(sc.sha, "completed", "success")]}
        return 200, {"ETag": '"r1"'}, json.dumps(body)

    github.rsps.add_callback("GET", github.url(f"{R}/pulls"), callback=pulls)
    github.rsps.add_callback("GET", github.url(f"{R}/commits/{sc.sha}/check-runs"), callback=runs)
    first = reconcile(rt.database, rt.github)
    with rt.database.unit() as s:  # the repair is done (as if the worker had run)
        for d in s.scalars(select(Delivery).where(Delivery.event == "minipipe.reconcile")):
            d.status = "done"
    second = reconcile(rt.database, rt.github)
    assert served == [200, 200, 304, 304]
    assert [r.kind for r in first.repairs] == [r.kind for r in second.repairs] == ["check"]


def test_a_pr_with_a_delivery_pending_is_left_to_it(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    serve_open_pulls(github)
    sc.comment("/minipipe help", login="writer")  # queued, not yet handled
    report = reconcile(rt.database, rt.github)
    assert report.repairs == [] and report.skipped == [f"{REPO}#2: a delivery is pending"]


def test_a_session_on_a_repository_whose_installation_event_never_came_is_created(
    rt, client, github
):
    from tests.test_api import Api

    api = Api(client, make_token(rt, "agent", "agent-bot"))
    github.add(
        "GET",
        f"{R}/installation",
        {"id": 1, "account": user("Codertocat"), "repository_selection": "selected"},
    )
    serve_session_pr(github)
    github.rsps.upsert(
        "GET",
        github.url(R),
        json={"id": 1296269, "full_name": REPO, "private": False, "default_branch": "main"},
    )
    resp = api("POST", "/sessions", NEW_SESSION)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert (body["pr_number"], body["metadata"]["installation_id"]) == (PR_NUMBER, 1)
    sent = github.api_requests()
    assert sent[0] == ("GET", f"{R}/installation", None)  # as the app, before anything else
    assert ("POST", f"{R}/pulls") in [(m, p) for m, p, _b in sent]
    with rt.database.unit() as s:
        inst = s.get(Installation, 1)
        assert (inst.account, inst.repository_selection) == ("Codertocat", "selected")
        row = s.get(InstalledRepository, 1296269)
        assert (row.installation_id, row.full_name) == (1, REPO)
    # recorded: the next session needs no look-up
    mark = len(github.api_requests())
    assert api("POST", "/sessions", {**NEW_SESSION, "title": "another"}).status_code == 201
    assert ("GET", f"{R}/installation", None) not in github.api_requests()[mark:]


def test_a_delivery_naming_an_unknown_repository_records_its_installation(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    with rt.database.unit() as s:
        [row] = s.scalars(select(InstalledRepository))
        assert (row.installation_id, row.full_name) == (1, REPO)
        assert s.get(Installation, 1) is not None


# --- what waits, and since when ---------------------------------------------------------


def test_patches_waiting_says_what_each_waits_for_and_since_when(
    rt, deliver, github, cli_env, client
):
    import json
    from datetime import timedelta

    from minipipe_gh.store.models import utcnow
    from minipipe_gh.store.waiting import waiting

    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github)  # high risk: awaiting review
    later = utcnow() + timedelta(hours=3)
    with rt.database.unit() as s:
        [w] = waiting(s, older_than=timedelta(hours=1), now=later)
        assert waiting(s, older_than=timedelta(hours=4), now=later) == []
        item = w.as_dict(later)
    assert (item["ledger_id"], item["state"]) == (patch.ledger_id, "awaiting_review")
    needs = "Needs 1 approval from a writer: comment `/approve`, or use the button"
    assert item["waits_for"] == needs
    assert item["waiting_for"] == [
        {"kind": "approvals", "summary": needs, "who": [], "details": ["0 of 1 approvals"]}
    ]
    assert 3 * 3600 - 60 <= item["waiting_seconds"] <= 3 * 3600 + 60

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, ["patches", "waiting", *args], env=cli_env)
        assert result.exit_code == 0, result.output
        return result.output

    [now_item] = json.loads(cli("--json"))["items"]
    assert now_item["ledger_id"] == patch.ledger_id and now_item["waiting_seconds"] < 60
    assert json.loads(cli("--older-than", "1h", "--json"))["items"] == []
    table = cli()
    assert (
        "awaiting_review" in table
        and f"{REPO}#2" in table
        and "Needs 1 approval from a writer" in table
    )

    metrics = client.get("/metrics").get_data(as_text=True)
    gauge = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("minipipe_patch_wait_seconds{")
    }
    assert set(gauge) == {"created", "validated", "quarantined", "awaiting_review", "queued"}
    assert 0 < gauge["awaiting_review"] < 60 and gauge["queued"] == 0.0


def test_a_neutral_run_on_the_head_does_not_count_as_the_sessions_check(rt, deliver, github):
    """Our withdrawn "not a session" run may stand on a SHA: only the session's run counts."""
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    serve_open_pulls(github, pr_object(sc, sc.sha))
    neutral = {**our_run(sc.sha, "completed", "cancelled", ident=4040), "external_id": None}
    serve_own_runs(github, sc.sha, neutral)
    report = reconcile(rt.database, rt.github)
    assert [(r.kind, r.detail) for r in report.repairs] == [
        ("check", f"no check run on {sc.sha[:12]}")
    ]
    assert sc.check_run_ref(rt.database).check_run_id == 555  # not pointed at the neutral run
