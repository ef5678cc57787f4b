"""Nobody walks around the gate: who decides, on which patch, as whom.

Each test is one attack on the review gate, played through the product's
real surfaces (signed webhooks, the bot API, the CLI) with GitHub faked at
the HTTP layer, and asserts that the gate held: the patch did not move, and
the attacker was told why.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from minipipe_gh.cli import main
from minipipe_gh.core.markers import session_marker
from minipipe_gh.store.models import AgentSession, Patch
from tests.scenario import R, Scenario, user
from tests.support import API, APP_ID, FakeGitHub
from tests.test_api import (
    NEW_SESSION,
    Api,
    drain,
    install,
    make_token,
    serve_session_pr,
)

APP_BOT = "minipipe-gh[bot]"  # the installation opens an API session's PR
AUTH = "src/auth/login.py"  # a high-risk path: the patch waits for a human


# --- helpers ---------------------------------------------------------------------------


def patch_at(rt: Any, sha: str) -> Patch:
    with rt.database.unit() as s:
        return s.scalars(
            select(Patch).where(Patch.patch_id == sha).order_by(Patch.ledger_id.desc())
        ).first()


def sessions(rt: Any) -> list[AgentSession]:
    with rt.database.unit() as s:
        return list(s.scalars(select(AgentSession).order_by(AgentSession.session_id)))


def replies(github: FakeGitHub, since: int = 0) -> list[str]:
    return [
        b["body"]
        for m, p, b in github.api_requests()[since:]
        if m == "POST" and p == f"{R}/issues/2/comments"
    ]


def reactions(github: FakeGitHub, since: int = 0) -> list[str]:
    return [
        b["content"]
        for m, p, b in github.api_requests()[since:]
        if m == "POST" and p.endswith("/reactions")
    ]


def check_runs(github: FakeGitHub, since: int = 0) -> list[dict[str, Any]]:
    return [b for m, p, b in github.api_requests()[since:] if "/check-runs" in p and m != "GET"]


def awaiting(rt: Any, sc: Scenario, *, policy: str | None = None, author: str = "agent-bot"):
    """A session PR by ``author`` whose high-risk patch passed CI and awaits review."""
    sc.author = author
    sc.serve_policy(policy)
    sc.serve_files(AUTH)
    sc.serve_green()
    sc.serve_writes()
    assert sc.pr_event("opened").status_code == 202
    drain(rt)
    patch = patch_at(rt, sc.sha)
    assert patch.state == "awaiting_review"
    return patch


def push(rt: Any, sc: Scenario, sha: str) -> Patch:
    sc.sha = sha
    sc.serve_green(sha)
    sc.pr_event("synchronize", sha=sha)
    drain(rt)
    return patch_at(rt, sha)


def api_session_with_pr(rt: Any, client: Any, deliver: Any, github: FakeGitHub):
    """POST /sessions by the bot ``agent-bot``, then its PR opened and CI green."""
    install(rt)
    bot = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github, number=2)
    created = bot("POST", "/sessions", NEW_SESSION)
    assert created.status_code == 201, created.get_json()
    session = created.get_json()
    sc = Scenario(deliver, github, number=2, branch=session["branch"], author=APP_BOT)
    sc.serve_files(AUTH)
    sc.serve_green()
    sc.serve_writes()
    body = f"Agent session `{session['session_id']}`\n\n{session_marker(session['session_id'])}"
    sc.pr_event("opened", body=body, draft=True)
    drain(rt)
    assert patch_at(rt, sc.sha).state == "awaiting_review"
    return bot, sc, session["session_id"]


# --- item 1: the session's bot approves its own patch ---------------------------------------


def test_attack_bot_deletes_session_and_readopts_to_self_approve(rt, client, deliver, github):
    bot, sc, sid = api_session_with_pr(rt, client, deliver, github)
    assert bot("DELETE", f"/sessions/{sid}").status_code == 204
    assert bot("GET", f"/sessions/{sid}").status_code == 404

    new = push(rt, sc, "b" * 40)  # the bot pushes once more

    [only] = sessions(rt)  # the PR stayed bound: nothing was adopted afresh
    assert only.session_id == sid == new.session_id
    assert only.meta["bot_login"] == "agent-bot"
    sc.serve_permission("agent-bot", "write")
    resp = bot("POST", f"/patches/{new.ledger_id}/approve", {"comment": "lgtm"})
    assert resp.status_code in (403, 404)
    mark = len(github.api_requests())
    sc.comment("/approve", login="agent-bot")
    drain(rt)
    assert patch_at(rt, new.patch_id).state == "awaiting_review"
    [reply] = replies(github, mark)
    assert "cannot approve their own patch" in reply
    assert reactions(github, mark) == ["confused"]


def test_attack_lost_pr_response_leaves_the_session_without_its_bot(rt, client, deliver, github):
    """GitHub creates the PR, its webhook binds the session, and the answer is lost (502)."""
    install(rt)
    bot = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github, number=2)
    sc = Scenario(deliver, github, number=2, branch="(set below)", author=APP_BOT)
    sc.serve_files(AUTH)
    sc.serve_green()
    sc.serve_writes()

    def pulls(request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)
        sc.branch = sent["head"]
        sc.pr_event("opened", body=sent["body"])
        drain(rt)
        return 502, {}, json.dumps({"message": "Server Error"})

    github.rsps.remove("POST", github.url(f"{R}/pulls"))
    github.rsps.add_callback("POST", github.url(f"{R}/pulls"), callback=pulls)
    lost = bot("POST", "/sessions", NEW_SESSION, headers={"Idempotency-Key": "k1"})
    assert lost.status_code == 502
    [session] = sessions(rt)
    assert session.pr_number == 2
    assert session.meta["bot_login"] == "agent-bot"
    patch = patch_at(rt, sc.sha)
    assert patch.state == "awaiting_review"

    sc.serve_permission("agent-bot", "write")
    resp = bot("POST", f"/patches/{patch.ledger_id}/approve")
    assert resp.status_code == 403, resp.get_json()
    assert "cannot approve their own patch" in resp.get_json()["error"]["message"]
    assert patch_at(rt, sc.sha).state == "awaiting_review"


def test_attack_token_that_moved_the_session_approves_it(rt, client, deliver, github):
    """A second token (a helper account) drives the session, then approves its patch."""
    bot, sc, sid = api_session_with_pr(rt, client, deliver, github)
    helper = bot.as_(make_token(rt, "helper", "sidekick"))
    sc.serve_permission("sidekick", "write")
    assert helper("POST", f"/sessions/{sid}/pause").status_code == 200
    assert helper("POST", f"/sessions/{sid}/resume").status_code == 200
    patch = patch_at(rt, sc.sha)
    resp = helper("POST", f"/patches/{patch.ledger_id}/approve")
    assert resp.status_code == 403, resp.get_json()
    assert "cannot approve their own patch" in resp.get_json()["error"]["message"]
    assert patch_at(rt, sc.sha).state == "awaiting_review"


# --- item 3: stale decisions land on a newer patch ---------------------------------------


def test_attack_old_check_run_button_approves_the_newer_patch(rt, deliver, github):
    sc = Scenario(deliver, github)
    old = awaiting(rt, sc)
    new = push(rt, sc, "b" * 40)
    assert new.state == "awaiting_review"
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.button("approve", login="writer", ledger_id=old.ledger_id)  # on the old check run
    drain(rt)
    assert patch_at(rt, new.patch_id).state == "awaiting_review"
    assert patch_at(rt, old.patch_id).state == "dropped"
    [reply] = replies(github, mark)
    assert "no longer the open patch" in reply and "aaaaaaaaaaaa" in reply
    assert all(b.get("conclusion") != "success" for b in check_runs(github, mark))


def test_attack_review_of_an_older_commit_approves_the_newer_patch(rt, deliver, github):
    sc = Scenario(deliver, github)
    old = awaiting(rt, sc)
    new = push(rt, sc, "b" * 40)
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.review("approved", login="writer", commit_id=old.patch_id)
    drain(rt)
    now = patch_at(rt, new.patch_id)
    assert (now.state, now.meta["approvals"]) == ("awaiting_review", [])
    [reply] = replies(github, mark)
    assert "no longer the open patch" in reply

    sc.review("approved", login="writer")  # a review of the current head still counts
    drain(rt)
    assert patch_at(rt, new.patch_id).state == "queued"


def test_dismissing_a_review_of_an_older_commit_keeps_the_approval_of_the_newer_one(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    old = awaiting(rt, sc)
    sc.serve_permission("writer", "write")
    sc.review("approved", login="writer")
    drain(rt)
    for sha, tree in ((old.patch_id, "tree-1"), ("b" * 40, "tree-2")):
        github.add("GET", f"{R}/git/commits/{sha}", {"sha": sha, "tree": {"sha": tree}})
    new = push(rt, sc, "b" * 40)
    sc.comment("/approve", login="writer")
    drain(rt)
    assert patch_at(rt, new.patch_id).state == "queued"
    sc.review("approved", login="writer", action="dismissed", commit_id=old.patch_id)
    drain(rt)
    now = patch_at(rt, new.patch_id)
    assert (now.state, now.meta["approvals"]) == ("queued", ["writer"])


# --- item 4: anyone lifts anyone's hold ---------------------------------------------------


@pytest.mark.parametrize("lifter", ["agent-bot", "writer"])
def test_attack_bot_or_lesser_writer_lifts_a_maintainers_hold(rt, deliver, github, lifter):
    sc = Scenario(deliver, github)
    awaiting(rt, sc)
    sc.serve_permission("maint", "maintain")
    sc.serve_permission(lifter, "write")
    sc.comment("/hold security review", login="maint")
    drain(rt)
    mark = len(github.api_requests())
    sc.comment("/hold cancel", login=lifter)
    drain(rt)
    assert reactions(github, mark) == ["confused"]
    [reply] = replies(github, mark)
    assert "@maint" in reply
    sc.serve_permission("writer2", "write")
    sc.comment("/approve", login="writer2")
    drain(rt)
    runs = check_runs(github, mark)
    assert runs[-1]["conclusion"] == "action_required"
    assert runs[-1]["output"]["title"] == "On hold by @maint"
    [session] = sessions(rt)
    assert [h["by"] for h in session.meta["holds"]] == ["maint"]


def test_every_hold_is_kept_and_a_holder_lifts_only_their_own(rt, deliver, github):
    sc = Scenario(deliver, github)
    awaiting(rt, sc)
    sc.serve_permission("maint", "maintain")
    sc.serve_permission("tri", "triage")
    sc.comment("/hold security review", login="maint")
    sc.comment("/hold docs first", login="tri")
    drain(rt)
    mark = len(github.api_requests())
    sc.comment("/hold cancel", login="tri")
    drain(rt)
    assert reactions(github, mark) == ["+1"]
    [run] = check_runs(github, mark)
    assert run["output"]["title"] == "On hold by @maint"  # the maintainer's hold is kept
    assert "- Hold: @maint (`maintain`): security review" in run["output"]["summary"]
    [session] = sessions(rt)
    assert [(h["by"], h["permission"]) for h in session.meta["holds"]] == [("maint", "maintain")]
    sc.comment("/hold cancel", login="maint")
    drain(rt)
    assert "holds" not in sessions(rt)[0].meta
    assert check_runs(github)[-1]["output"]["title"] == "Awaiting review (0 of 1 approvals)"


def test_a_maintainer_lifts_a_writers_hold(rt, deliver, github):
    sc = Scenario(deliver, github)
    awaiting(rt, sc)
    sc.serve_permission("writer", "write")
    sc.serve_permission("maint", "maintain")
    sc.comment("/hold", login="writer")
    sc.comment("/hold cancel", login="maint")
    drain(rt)
    assert "holds" not in sessions(rt)[0].meta


# --- item 5: session moves through the API skip the comment rules ----------------------------


def test_attack_read_only_token_resumes_a_session_a_maintainer_paused(rt, client, deliver, github):
    bot, sc, sid = api_session_with_pr(rt, client, deliver, github)
    sc.serve_permission("maint", "maintain")
    sc.comment("/pause", login="maint")
    drain(rt)
    assert sessions(rt)[0].state == "paused"
    reader = bot.as_(make_token(rt, "reader", "reader"))
    sc.serve_permission("reader", "read")
    resp = reader("POST", f"/sessions/{sid}/resume")
    assert resp.status_code == 403, resp.get_json()
    assert "`read`" in resp.get_json()["error"]["message"]
    assert sessions(rt)[0].state == "paused"


def test_attack_token_fails_and_deletes_another_bots_session(rt, client, deliver, github):
    bot, sc, sid = api_session_with_pr(rt, client, deliver, github)
    other = bot.as_(make_token(rt, "other", "other-bot"))
    sc.serve_permission("other-bot", "write")
    assert other("POST", f"/sessions/{sid}/complete", {"success": False}).status_code == 403
    assert other("DELETE", f"/sessions/{sid}").status_code == 403
    assert bot("GET", f"/sessions/{sid}").get_json()["state"] == "active"
    maint = bot.as_(make_token(rt, "maint", "maint"))
    sc.serve_permission("maint", "maintain")
    assert maint("DELETE", f"/sessions/{sid}").status_code == 204


def test_delete_keeps_the_decided_patch_and_its_rejection_in_stats(rt, client, deliver, github):
    bot, sc, sid = api_session_with_pr(rt, client, deliver, github)
    sc.serve_permission("writer", "write")
    sc.comment("/reject leaks the session cookie", login="writer")
    drain(rt)
    assert bot("DELETE", f"/sessions/{sid}").status_code == 204
    [stats] = bot("GET", "/stats").get_json()["items"]
    assert (stats["agent_type"], stats["patches_decided"], stats["rejection_rate"]) == (
        "claude",
        1,
        1.0,
    )
    assert stats["top_rejection_reasons"] == [{"reason": "leaks the session cookie", "count": 1}]
    with rt.database.unit() as s:
        assert s.scalar(select(func.count()).select_from(Patch)) == 1
    assert bot("GET", "/sessions").get_json()["items"] == []


# --- item 6: the CLI decides with no rules --------------------------------------------------


@pytest.fixture
def cli(rt: Any, private_key_pem: str, tmp_path: Any):
    env = {
        "DATABASE_URL": rt.settings.database_url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "cli-instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_API_URL": API,
    }
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("login", "role", "why"),
    [
        ("reader", "read", "has `read` permission"),
        ("agent-bot", "write", "cannot approve their own patch"),
    ],
)
def test_attack_cli_approves_for_a_reader_or_the_author(rt, deliver, github, cli, login, role, why):
    sc = Scenario(deliver, github)
    patch = awaiting(rt, sc)
    sc.serve_permission(login, role)
    result = cli("reviews", "approve", patch.ledger_id, "--as", login)
    assert result.exit_code == 2
    assert why in result.stderr
    assert patch_at(rt, sc.sha).state == "awaiting_review"


def test_attack_cli_counts_one_approval_when_the_policy_wants_two(rt, deliver, github, cli):
    sc = Scenario(deliver, github)
    patch = awaiting(rt, sc, policy="review:\n  required_approvals: 2\n")
    sc.serve_permission("writer", "write")
    result = cli("reviews", "approve", patch.ledger_id, "--as", "writer")
    assert result.exit_code == 0, result.output
    now = patch_at(rt, sc.sha)
    assert (now.state, now.meta["approvals"]) == ("awaiting_review", ["writer"])


# --- item 10: identity is a mutable, case-varying login ------------------------------------


def test_attack_case_varied_logins_count_as_two_approvers(rt, deliver, github):
    sc = Scenario(deliver, github)
    awaiting(rt, sc, policy="review:\n  required_approvals: 2\n")
    sc.serve_permission("Writer", "write")
    sc.serve_permission("writer", "write")
    sc.comment("/approve", login="Writer")
    sc.comment("/approve", login="writer")
    drain(rt)
    now = patch_at(rt, sc.sha)
    assert now.state == "awaiting_review"
    assert len(now.meta["approvals"]) == 1


def test_attack_renamed_author_escapes_their_own_record(rt, deliver, github):
    sc = Scenario(deliver, github)
    awaiting(rt, sc)  # opened by agent-bot
    renamed = user("agent-bot")["id"]  # the same account, under a new login
    sc.serve_permission("agent-bot-2", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="agent-bot-2", user_id=renamed)
    drain(rt)
    assert patch_at(rt, sc.sha).state == "awaiting_review"
    [reply] = replies(github, mark)
    assert "cannot approve their own patch" in reply


def test_a_deleted_sessions_idempotency_key_does_not_bring_it_back(rt, client, github):
    install(rt)
    bot = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github, number=2)
    key = {"Idempotency-Key": "task-1"}
    sid = bot("POST", "/sessions", NEW_SESSION, headers=key).get_json()["session_id"]
    assert bot("DELETE", f"/sessions/{sid}").status_code == 204
    again = bot("POST", "/sessions", NEW_SESSION, headers=key)
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "deleted")
    assert bot("GET", f"/sessions/{sid}").status_code == 404


def test_attack_bot_account_posing_as_a_person_approves(rt, deliver, github):
    """A comment by a bot account (type Bot, or a ``[bot]`` login) is never a command."""
    sc = Scenario(deliver, github)
    awaiting(rt, sc)
    mark = len(github.api_requests())
    sc.comment("/approve", login="helper[bot]")
    sc.comment("/approve", login="ci-helper", bot=True)
    drain(rt)
    assert patch_at(rt, sc.sha).state == "awaiting_review"
    assert [r for r in github.api_requests()[mark:] if r[0] != "GET"] == []


def test_attack_another_apps_check_run_button_approves(rt, deliver, github):
    """Only the app's own check run has buttons that count."""
    sc = Scenario(deliver, github)
    patch = awaiting(rt, sc)
    sc.serve_permission("writer", "write")
    data = None

    def other_app(event: str, body: dict[str, Any], **kw: Any) -> Any:
        nonlocal data
        body["check_run"]["app"]["id"] = APP_ID + 1
        data = body
        return deliver(event, body, **kw)

    sc.deliver = other_app
    sc.button("approve", login="writer", ledger_id=patch.ledger_id)
    drain(rt)
    assert data is not None and data["check_run"]["app"]["id"] != APP_ID
    assert patch_at(rt, sc.sha).state == "awaiting_review"


def test_attack_renamed_session_bot_approves_its_own_patch(rt, client, deliver, github):
    """The API's bot is kept by its GitHub id from the start: a rename changes nothing."""
    _bot, sc, _sid = api_session_with_pr(rt, client, deliver, github)
    sc.serve_permission("agent-bot-renamed", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="agent-bot-renamed", user_id=user("agent-bot")["id"])
    drain(rt)
    assert patch_at(rt, sc.sha).state == "awaiting_review"
    [reply] = replies(github, mark)
    assert "cannot approve their own patch" in reply
