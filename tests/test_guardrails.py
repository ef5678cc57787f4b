"""Agent guardrails: what an agent may touch, who stands behind its commits, how many
sessions it holds. Enforced by `minipipe/review`, the one check that blocks the merge.

Real recorded payloads, signed as GitHub signs them, through the webhook and the worker;
GitHub faked at the HTTP layer, and the tests assert on the requests the app sent.
(The attacks on the gate's own files live in tests/test_threats_gate.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from minipipe_gh.core.policy import guard_record
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch
from tests.scenario import WEB_FLOW, R, Scenario, commit, user
from tests.test_api import (
    NEW_SESSION,
    PR_INSTALLATION,
    PR_META,
    Api,
    error,
    install,
    make_token,
    seed_session,
    serve_session_pr,
)


def drain(rt: Any) -> Any:
    return rt.worker().run_once()


def latest_patch(rt: Any) -> Patch:
    with rt.database.unit() as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def check_writes(github: Any, since: int = 0) -> list[dict[str, Any]]:
    return [
        body
        for m, p, body in github.api_requests()[since:]
        if "/check-runs" in p and m in ("POST", "PATCH")
    ]


def replies(github: Any, since: int = 0, number: int = 2) -> list[str]:
    return [
        body["body"]
        for m, p, body in github.api_requests()[since:]
        if m == "POST" and p == f"{R}/issues/{number}/comments"
    ]


def noted(rt: Any, ledger_id: str) -> list[str]:
    with rt.database.unit() as s:
        return list(
            s.scalars(
                select(AuditEntry.reason)
                .where(AuditEntry.entity_id == ledger_id, AuditEntry.outcome == "noted")
                .order_by(AuditEntry.id)
            )
        )


def opened(rt: Any, sc: Scenario, *files: str, policy: str | None = None) -> Patch:
    """The session PR opens with ``files`` changed and CI green."""
    sc.serve_policy(policy)
    sc.serve_changes(*({"filename": f} for f in files))
    sc.serve_green()
    sc.serve_writes()
    assert sc.pr_event("opened").status_code == 202
    drain(rt)
    return latest_patch(rt)


def pushed(rt: Any, sc: Scenario, sha: str, *files: str) -> Patch:
    sc.serve_changes(*({"filename": f} for f in files))
    sc.serve_green(sha)
    sc.sha = sha
    sc.pr_event("synchronize", sha=sha)
    drain(rt)
    return latest_patch(rt)


BOT = user("agent-bot")  # the adopted session's bot: its PR's author (Scenario's default)


# --- protected paths --------------------------------------------------------------------

BLOCK_WORKFLOWS = "agents:\n  default:\n    on_protected: block\n"


def test_a_workflow_file_under_block_refuses_a_maintainer_and_a_complying_push_releases_it(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    patch = opened(rt, sc, ".github/workflows/ci.yml", "src/app.py", policy=BLOCK_WORKFLOWS)
    assert patch.state == "quarantined"
    [run] = check_writes(github)
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Blocked by its guardrails")
    summary = run["output"]["summary"]
    # every guardrail is listed with its verdict
    assert "- Guardrails: `block`" in summary
    assert (
        "  - protected paths: blocked, touches protected paths: .github/workflows/ci.yml "
        "(agents.default.on_protected: block)" in summary
    )
    assert "  - allowed paths: no limit" in summary
    assert "  - changed files: 2 (no limit)" in summary
    assert "  - provenance: every commit is the session's bot's" in summary
    assert noted(rt, patch.ledger_id) == [
        "guardrails: block: touches protected paths: .github/workflows/ci.yml "
        "(agents.default.on_protected: block)"
    ]

    sc.serve_permission("lead", "maintain")
    mark = len(github.api_requests())
    sc.comment("/approve", login="lead")
    drain(rt)
    [why] = replies(github, mark)
    assert "blocked by its guardrails" in why and "no approval can queue it" in why
    assert check_writes(github, mark) == []  # the check stays failed
    assert latest_patch(rt).state == "quarantined"
    with rt.database.unit() as s:
        refused = s.scalars(
            select(AuditEntry.reason).where(
                AuditEntry.entity_id == patch.ledger_id, AuditEntry.outcome == "refused"
            )
        ).all()
    assert len(refused) == 1 and "blocked by its guardrails" in refused[0]

    mark = len(github.api_requests())
    new = pushed(rt, sc, "b" * 40, "src/app.py")
    assert (new.patch_id, new.state) == ("b" * 40, "queued")
    assert guard_record(new.meta).outcome == "pass"
    assert [b.get("conclusion") for b in check_writes(github, mark)][-1] == "success"


@pytest.mark.parametrize("path", ["AGENTS.md", "CLAUDE.md"])
def test_an_agent_instruction_file_under_review_needs_a_maintainer_whatever_its_risk(
    rt, deliver, github, path
):
    sc = Scenario(deliver, github)
    patch = opened(rt, sc, path)
    assert (patch.state, patch.risk) == ("awaiting_review", "low")
    record = guard_record(patch.meta)
    assert record.outcome == "review"
    assert [(r.guardrail, r.verdict) for r in record.rules] == [
        ("protected_paths", "review"),
        ("allowed_paths", "pass"),
        ("max_changed_files", "pass"),
        ("foreign_commits", "pass"),
    ]

    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="writer")
    drain(rt)
    [why] = replies(github, mark)
    assert "approving it needs `maintain` or more" in why
    assert latest_patch(rt).state == "awaiting_review"

    sc.serve_permission("lead", "maintain")
    mark = len(github.api_requests())
    sc.comment("/approve", login="lead")
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, patch.meta["reviewed_by"]) == ("queued", "lead")
    assert [b.get("conclusion") for b in check_writes(github, mark)] == ["success"]


# --- allowed paths and the file limit ----------------------------------------------------

PER_AGENT = """\
agents:
  default:
    max_changed_files: 3
  aider:
    allowed_paths: ["src/**", "tests/**"]
    max_changed_files: 1
"""


def bound_session(rt: Any, agent_type: str) -> str:
    """A session of ``agent_type`` whose PR (#2, by its bot agent-bot) is about to open."""
    return seed_session(
        rt, agent_type=agent_type, pr_number=2, meta=PR_META, installation_id=PR_INSTALLATION
    )


def test_allowed_paths_are_per_agent_type(rt, deliver, github):
    bound_session(rt, "aider")
    sc = Scenario(deliver, github)
    patch = opened(rt, sc, "docs/guide.md", policy=PER_AGENT)
    assert patch.state == "quarantined"
    assert guard_record(patch.meta).reasons == (
        "outside agents.aider.allowed_paths: docs/guide.md",
    )
    [run] = check_writes(github)
    assert run["conclusion"] == "failure"
    assert (
        "allowed paths: blocked, outside agents.aider.allowed_paths: docs/guide.md"
        in (run["output"]["summary"])
    )


def test_another_agent_type_may_touch_what_aider_may_not(rt, deliver, github):
    bound_session(rt, "claude")
    sc = Scenario(deliver, github)
    patch = opened(rt, sc, "docs/guide.md", policy=PER_AGENT)
    assert (patch.state, guard_record(patch.meta).outcome) == ("queued", "pass")
    allowed = guard_record(patch.meta).rule_for("allowed_paths")
    assert (allowed.rule, allowed.detail) == ("agents.default.allowed_paths", "no limit")


@pytest.mark.parametrize(
    ("agent", "files", "state", "reason"),
    [
        ("claude", ["src/a.py", "src/b.py", "src/c.py"], "queued", None),
        (
            "claude",
            ["src/a.py", "src/b.py", "src/c.py", "src/d.py"],
            "quarantined",
            "4 changed files, over agents.default.max_changed_files (3)",
        ),
        ("aider", ["src/a.py"], "queued", None),
        (
            "aider",
            ["src/a.py", "tests/test_a.py"],
            "quarantined",
            "2 changed files, over agents.aider.max_changed_files (1)",
        ),
    ],
)
def test_the_file_limit_blocks_one_file_over_and_names_the_rule(
    rt, deliver, github, agent, files, state, reason
):
    bound_session(rt, agent)
    sc = Scenario(deliver, github)
    patch = opened(rt, sc, *files, policy=PER_AGENT)
    assert patch.state == state
    record = guard_record(patch.meta)
    assert record.reasons == ((reason,) if reason else ())
    [run] = check_writes(github)
    assert run["conclusion"] == ("failure" if reason else "success")
    if reason:
        assert f"changed files: blocked, {reason}" in run["output"]["summary"]


# --- provenance -------------------------------------------------------------------------

ALICE = user("alice")


def test_a_persons_commit_on_a_session_branch_is_theirs_and_they_cannot_approve_it(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    sc.serve_commits(commit("c" * 40, BOT), commit(sc.sha, ALICE))
    patch = opened(rt, sc, "src/app.py")
    assert (patch.state, patch.risk) == ("awaiting_review", "low")
    record = guard_record(patch.meta)
    assert record.outcome == "review"
    assert record.foreign_names == ("@alice",)
    assert [p[0] for p in record.people] == ["agent-bot", "alice"]
    [run] = check_writes(github)
    assert run["conclusion"] == "action_required"
    assert (
        "provenance: review, foreign commits by @alice (provenance.foreign_commits: review, "
        "never approved by them)" in run["output"]["summary"]
    )
    assert patch.meta.get("approve_permission") is None  # any writer but alice may approve
    assert noted(rt, patch.ledger_id) == [
        "guardrails: review: foreign commits by @alice (provenance.foreign_commits: review, "
        "never approved by them)"
    ]

    sc.serve_permission("alice", "admin")
    mark = len(github.api_requests())
    sc.comment("/approve", login="alice")
    drain(rt)
    [why] = replies(github, mark)
    assert "@alice authored or committed a commit of this patch" in why
    assert latest_patch(rt).state == "awaiting_review"

    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="writer")
    drain(rt)
    assert latest_patch(rt).state == "queued"
    assert [b.get("conclusion") for b in check_writes(github, mark)] == ["success"]
    # the commits were listed once, when the patch was recorded
    listed = [p for m, p, _ in github.api_requests() if m == "GET" and "/commits?" in p]
    assert [p.split("?")[0] for p in listed] == [f"{R}/pulls/2/commits"]


def test_a_committer_counts_as_an_author_even_when_foreign_commits_are_allowed(rt, deliver, github):
    """Under `allow` a person's commit asks for no review, but they are still one of the
    patch's authors: the self-approval rule keeps them from approving it."""
    sc = Scenario(deliver, github)
    sc.serve_commits(commit(sc.sha, BOT, ALICE))  # the bot's commit, rebased by alice
    policy = "provenance:\n  foreign_commits: allow\n"
    patch = opened(rt, sc, "src/auth/login.py", policy=policy)  # high risk: a review
    assert (patch.state, guard_record(patch.meta).outcome) == ("awaiting_review", "pass")
    assert guard_record(patch.meta).rule_for("foreign_commits").detail == (
        "foreign commits by @alice (provenance.foreign_commits: allow)"
    )
    sc.serve_permission("alice", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="alice")
    drain(rt)
    [why] = replies(github, mark)
    assert "@alice cannot approve their own patch" in why


def test_a_second_commit_by_another_bot_is_foreign_and_blocks_under_block(rt, deliver, github):
    sc = Scenario(deliver, github)
    other = user("dependabot[bot]", bot=True)
    sc.serve_commits(commit("c" * 40, BOT), commit(sc.sha, other))
    patch = opened(rt, sc, "src/app.py", policy="provenance:\n  foreign_commits: block\n")
    assert patch.state == "quarantined"
    assert guard_record(patch.meta).reasons == (
        "foreign commits by @dependabot[bot] (provenance.foreign_commits: block)",
    )
    [run] = check_writes(github)
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Blocked by its guardrails")

    # the bot's own push, without the other bot's commit, releases it
    sc.serve_commits(commit("d" * 40, BOT))
    new = pushed(rt, sc, "d" * 40, "src/app.py")
    assert (new.state, guard_record(new.meta).foreign_names) == ("queued", ())


def test_githubs_web_flow_committer_is_nobody_and_an_unlinked_git_identity_is_foreign(
    rt, deliver, github
):
    """A merge from the "Update branch" button: authored by who pressed it, committed by
    web-flow. The bot's own commit committed by web-flow (a web-UI edit by the bot's
    account) stands for the bot alone; a git identity GitHub links to no account is foreign."""
    sc = Scenario(deliver, github)
    sc.serve_commits(
        commit("c" * 40, BOT, WEB_FLOW),
        commit(sc.sha, None, name="Agent Laptop", email="agent@laptop.local"),
    )
    patch = opened(rt, sc, "src/app.py")
    record = guard_record(patch.meta)
    assert record.foreign_names == ("Agent Laptop <agent@laptop.local> (no GitHub account)",)
    assert [p[0] for p in record.people] == ["agent-bot"]  # web-flow is nobody
    assert patch.state == "awaiting_review"


def test_the_commits_of_a_long_pr_are_read_in_pages_of_100(rt, deliver, github):
    sc = Scenario(deliver, github)
    many = [commit(f"{i:040x}", BOT) for i in range(150)] + [commit(sc.sha, ALICE)]
    sc.serve_commits(*many)
    patch = opened(rt, sc, "src/app.py")
    assert guard_record(patch.meta).foreign_names == ("@alice",)  # on the second page
    pages = [p for m, p, _ in github.api_requests() if m == "GET" and "/pulls/2/commits" in p]
    assert pages == [
        f"{R}/pulls/2/commits?page=1&per_page=100",
        f"{R}/pulls/2/commits?page=2&per_page=100",
    ]


def test_an_api_sessions_first_commit_is_the_apps_own_not_a_foreign_one(
    rt, client, deliver, github
):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github)
    created = api("POST", "/sessions", NEW_SESSION).get_json()
    from minipipe_gh.core.markers import session_marker
    from tests.test_api import START_SHA

    sc = Scenario(deliver, github, number=created["pr_number"], branch=created["branch"])
    sc.author = "minipipe-gh[bot]"  # the installation opened the PR
    app_bot = user("minipipe-gh[bot]", bot=True)
    sc.serve_commits(commit(START_SHA, app_bot), commit(sc.sha, BOT))
    sc.serve_changes({"filename": "src/app.py"})
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened", body=session_marker(created["session_id"]))
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, guard_record(patch.meta).foreign_names) == ("queued", ())


# --- the open-session limit -------------------------------------------------------------

LIMITED = "agents:\n  default:\n    max_open_sessions: 5\n  aider:\n    max_open_sessions: 2\n"


def test_the_bot_api_refuses_a_session_over_the_agents_limit(rt, client, github):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github, policy=LIMITED)
    first = seed_session(rt, agent_type="aider", state="active")
    second = seed_session(rt, agent_type="aider", state="paused")
    seed_session(rt, agent_type="aider", state="completed")  # ended: not open
    seed_session(rt, agent_type="aider", state="failed")
    mark = len(github.api_requests())
    resp = api("POST", "/sessions", {**NEW_SESSION, "agent_type": "aider"})
    err = error(resp, 409, "too_many_sessions")
    assert err["limit"] == 2
    assert err["open_sessions"] == [
        {"session_id": first, "state": "active"},
        {"session_id": second, "state": "paused"},
    ]
    assert "agents.aider.max_open_sessions" in err["message"]
    assert first in err["message"] and second in err["message"]
    with rt.database.unit() as s:
        assert len(s.scalars(select(AgentSession)).all()) == 4  # nothing was made
    writes = [(m, p) for m, p, _ in github.api_requests()[mark:] if m != "GET"]
    assert writes == []  # no branch, no PR

    # another agent type has its own limit (default's 5): it may start
    made = api("POST", "/sessions", {**NEW_SESSION, "agent_type": "claude"})
    assert made.status_code == 201


def test_the_cli_shows_each_agents_open_sessions_against_its_limit(
    rt, github, settings, tmp_path, private_key_pem
):
    from click.testing import CliRunner

    from minipipe_gh.cli import main
    from tests.support import API, APP_ID
    from tests.test_api import serve_policy

    install(rt)
    github.allow_token_exchange()
    serve_policy(github, LIMITED)
    seed_session(rt, agent_type="aider", state="active")
    seed_session(rt, agent_type="aider", state="created")
    seed_session(rt, agent_type="claude", state="completed")  # ended: not counted
    seed_session(rt, agent_type="claude", state="paused")
    env = {
        "DATABASE_URL": settings.database_url,
        "MINIPIPE_INSTANCE_PATH": str(tmp_path / "cli-instance"),
        "MINIPIPE_ENV_FILE": str(tmp_path / "no.env"),
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_API_URL": API,
    }
    args = ["sessions", "limits", "--project", "codertocat/hello-world"]
    out = CliRunner().invoke(main, [*args, "--json"], env=env, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    items = {i["agent_type"]: i for i in json.loads(out.output)["items"]}
    assert items["aider"] == {
        "agent_type": "aider",
        "open": 2,
        "limit": 2,
        "open_sessions": "2 of 2",
        "rule": "agents.aider.max_open_sessions",
    }
    assert (items["claude"]["open"], items["claude"]["limit"]) == (1, 5)
    assert items["claude"]["rule"] == "agents.default.max_open_sessions"
    table = CliRunner().invoke(main, args, env=env, catch_exceptions=False).output
    assert "2 of 2" in table and "agents.aider.max_open_sessions" in table


# --- an invalid agents: block ----------------------------------------------------------


def test_an_invalid_agents_block_is_reported_on_the_check_run_with_its_line(rt, deliver, github):
    sc = Scenario(deliver, github)
    text = "review:\n  required_approvals: 1\nagents:\n  aider:\n    allowed_path: [src/**]\n"
    patch = opened(rt, sc, "src/app.py", policy=text)
    assert patch.state == "created"  # nothing moves on an invalid policy
    [run] = check_writes(github)
    assert (run["conclusion"], run["output"]["title"]) == (
        "action_required",
        ".github/minipipe.yml is invalid",
    )
    assert (
        ".github/minipipe.yml: line 5: `agents.aider.allowed_path` is not a known key of an "
        "agent" in run["output"]["summary"]
    )


def test_a_policy_change_releases_a_patch_blocked_for_a_foreign_commit_without_rereading(
    rt, deliver, github
):
    """The commits were read once, when the patch was recorded: a policy change judges
    the recorded provenance again, and the person stays unable to approve it."""
    from tests.test_threats_gate import policy_changed_to

    sc = Scenario(deliver, github)
    sc.serve_commits(commit(sc.sha, ALICE))
    blocked = opened(rt, sc, "src/app.py", policy="provenance:\n  foreign_commits: block\n")
    assert blocked.state == "quarantined"
    mark = len(github.api_requests())
    policy_changed_to(sc, "provenance:\n  foreign_commits: review\n")
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.ledger_id, patch.state) == (blocked.ledger_id, "awaiting_review")
    assert guard_record(patch.meta).foreign_names == ("@alice",)
    assert not [p for m, p, _ in github.api_requests()[mark:] if "/pulls/2/commits" in p]
    assert noted(rt, patch.ledger_id)[-1].startswith(
        "guardrails: review under the changed policy: released"
    )
    sc.serve_permission("alice", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="alice")
    drain(rt)
    [why] = replies(github, mark)
    assert "@alice authored or committed a commit of this patch" in why


def test_a_retry_of_the_session_that_reached_the_limit_still_answers_it(rt, client, github):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github, policy="agents:\n  aider:\n    max_open_sessions: 1\n")
    body = {**NEW_SESSION, "agent_type": "aider"}
    first = api("POST", "/sessions", body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    again = api("POST", "/sessions", body, headers={"Idempotency-Key": "k1"})
    assert (again.status_code, again.get_json()["session_id"]) == (
        200,
        first.get_json()["session_id"],
    )
    other = api("POST", "/sessions", body, headers={"Idempotency-Key": "k2"})
    err = error(other, 409, "too_many_sessions")
    assert err["open_sessions"] == [
        {"session_id": first.get_json()["session_id"], "state": "created"}
    ]


def test_a_retry_that_takes_over_a_failed_create_is_checked_against_the_limit(rt, client, github):
    """GitHub unreachable: the row is made unchecked and the create fails (502). The
    retry with the key is checked; over the limit it is refused and the row failed."""
    import requests

    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    held = [seed_session(rt, agent_type="aider", state="active") for _ in range(2)]
    github.rsps.add(
        "POST",
        github.url("/app/installations/1/access_tokens"),
        body=requests.ConnectionError("no route to host"),
    )
    body, key = {**NEW_SESSION, "agent_type": "aider"}, {"Idempotency-Key": "net"}
    error(api("POST", "/sessions", body, headers=key), 502, "github_error")
    serve_session_pr(github, policy="agents:\n  aider:\n    max_open_sessions: 2\n")
    err = error(api("POST", "/sessions", body, headers=key), 409, "too_many_sessions")
    assert [o["session_id"] for o in err["open_sessions"]] == held
    with rt.database.unit() as s:
        taken = s.scalars(select(AgentSession).where(AgentSession.session_id.not_in(held))).one()
        assert taken.state == "failed"
    writes = [(m, p) for m, p, _ in github.api_requests() if m != "GET" and "/git/" in p]
    assert writes == []  # no branch was made
