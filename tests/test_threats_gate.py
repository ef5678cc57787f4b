"""Nobody walks around the gate: each test is an attack on `minipipe/review` that must fail.

Real recorded payloads, signed as GitHub signs them, through the webhook; GitHub is
faked at the HTTP layer and the tests assert on the requests the app sent.
"""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from minipipe_gh.store import ledger, registry
from minipipe_gh.store.models import AgentSession, AuditEntry, NeutralCheckRun, Patch
from tests.scenario import REPO, R, Scenario, check_run


def drain(rt):
    return rt.worker().run_once()


def latest_patch(rt) -> Patch:
    with rt.database.unit() as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def the_session(rt) -> AgentSession:
    with rt.database.unit() as s:
        return s.scalars(select(AgentSession)).one()


def check_writes(github, since: int = 0) -> list[tuple[str, str, dict]]:
    return [r for r in github.api_requests()[since:] if "/check-runs" in r[1] and r[0] != "GET"]


def conclusions(github, since: int = 0) -> list[str | None]:
    return [body.get("conclusion") for _m, _p, body in check_writes(github, since)]


# --- item 8: a required check can be masked ------------------------------------------------


REQUIRE_TEST = "validation:\n  required_checks: [test]\n"


def test_attack_pr_adds_a_passing_job_named_like_a_failing_required_check_gets_no_green_run(
    rt, deliver, github
):
    """The PR adds a workflow whose job is also called `test`: its newer, passing run must
    not hide the real `test` that failed in CI's own check suite."""
    sc = Scenario(deliver, github)
    sc.serve_policy(REQUIRE_TEST)
    sc.serve_files("src/app.py")
    sc.serve_runs(sc.sha)
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    assert latest_patch(rt).state == "created"

    real = check_run("test", "failure", sha=sc.sha, suite=70, run_id=801)
    mask = check_run("test", "success", sha=sc.sha, suite=71, run_id=802)
    sc.serve_runs(sc.sha, real, mask)
    mark = len(github.api_requests())
    sc.run_completed(mask)
    drain(rt)
    patch = latest_patch(rt)
    assert patch.state == "quarantined"
    assert conclusions(github, mark) == ["failure"]
    read = [p for m, p, _ in github.api_requests()[mark:] if m == "GET"]
    assert [p.split("?")[0] for p in read] == [f"{R}/commits/{sc.sha}/check-runs"]


def test_a_rerun_in_the_same_suite_still_replaces_the_failed_run(rt, deliver, github):
    """De-duplication per suite keeps re-runs working: the newest run of a suite counts."""
    sc = Scenario(deliver, github)
    sc.serve_policy(REQUIRE_TEST)
    sc.serve_files("src/app.py")
    sc.serve_runs(sc.sha)
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    failed = check_run("test", "failure", sha=sc.sha, suite=70, run_id=801)
    rerun = check_run("test", "success", sha=sc.sha, suite=70, run_id=803)
    sc.serve_runs(sc.sha, failed, rerun)
    sc.run_completed(rerun)
    drain(rt)
    assert latest_patch(rt).state == "queued"
    assert conclusions(github)[-1] == "success"


# --- item 9: a replayed body acts again ------------------------------------------------------


def opened_closed_reopened_pushed(rt, sc, github) -> bytes:
    """A session PR closed unmerged, reopened and pushed to again; returns the signed-once
    body of its `closed` delivery, as an attacker who captured it holds it."""
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_suites(sc.sha, None)
    sc.serve_suites("b" * 40, None)
    sc.serve_writes()
    sc.github.add("PATCH", f"{R}/check-runs/556", {"id": 556})
    sc.pr_event("opened")
    drain(rt)
    closed = json.dumps(sc.pr_payload("closed")).encode()
    sc.serve_pull("closed")
    assert sc.deliver("pull_request", closed).status_code == 202
    drain(rt)
    assert latest_patch(rt).state == "dropped"
    sc.serve_pull("open", sha="b" * 40)
    sc.pr_event("reopened")
    sc.github.add("POST", f"{R}/check-runs", {"id": 556}, status=201)
    sc.pr_event("synchronize", sha="b" * 40)
    drain(rt)
    later = latest_patch(rt)
    assert (later.patch_id, later.state) == ("b" * 40, "created")
    return closed


def test_attack_replayed_closed_under_a_new_delivery_id_does_not_drop_a_later_patch(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    closed = opened_closed_reopened_pushed(rt, sc, github)
    mark = len(github.api_requests())
    replay = deliver("pull_request", closed)  # the same bytes, a new X-GitHub-Delivery
    assert replay.status_code == 200 and replay.get_json()["duplicate"] is True
    drain(rt)
    assert latest_patch(rt).state == "created"
    assert github.api_requests()[mark:] == []


def test_attack_closed_that_github_does_not_confirm_moves_nothing(rt, deliver, github):
    """A `closed` body never seen here (another subscription's copy, signed as well) arrives
    after the PR was reopened: GitHub says the PR is open, so nothing moves."""
    sc = Scenario(deliver, github)
    opened_closed_reopened_pushed(rt, sc, github)
    other_copy = sc.pr_payload("closed")
    del other_copy["installation"]["node_id"]  # other bytes than the delivery seen before
    mark = len(github.api_requests())
    assert deliver("pull_request", other_copy).status_code == 202
    drain(rt)
    assert latest_patch(rt).state == "created"
    sent = github.api_requests()[mark:]
    assert [(m, p) for m, p, _ in sent if m != "GET" or "/pulls/2" in p] == [
        ("GET", f"{R}/pulls/2")
    ]


# --- item 2: a green `minipipe/review` on an unapproved head ----------------------------------


def neutral_posts(github, since: int = 0) -> list[dict]:
    return [
        body
        for m, p, body in github.api_requests()[since:]
        if (m, p) == ("POST", f"{R}/check-runs") and body.get("conclusion") == "success"
    ]


def test_attack_session_head_pushed_to_second_branch_gets_no_green_run(rt, deliver, github):
    """The session's unapproved head is pushed to another branch and a PR opened from it:
    that PR is not a session, but its head is the session's patch, so no success is posted."""
    session_pr = Scenario(deliver, github)
    session_pr.serve_policy(None)
    session_pr.serve_files("src/app.py")
    session_pr.serve_suites(session_pr.sha, None)
    session_pr.serve_writes()
    session_pr.pr_event("opened")
    drain(rt)
    assert latest_patch(rt).state == "created"

    copy = Scenario(deliver, github, number=3, branch="copy-of-the-session")
    mark = len(github.api_requests())
    assert copy.pr_event("opened").status_code == 202
    [outcome] = drain(rt)
    assert outcome.status == "done"
    assert neutral_posts(github, mark) == []
    assert check_writes(github, mark) == []


def test_attack_neutral_run_posted_before_the_session_patch_is_withdrawn(rt, deliver, github):
    """The other PR came first and got its neutral success; when the same SHA becomes a
    session's patch, that green run is turned into a failing one (one PATCH, no reads)."""
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_suites(sc.sha, None)
    github.add("POST", f"{R}/check-runs", {"id": 777}, status=201)  # the neutral one
    github.add("PATCH", f"{R}/check-runs/777", {"id": 777})
    sc.serve_writes()
    copy = Scenario(deliver, github, number=3, branch="feature/copy")
    copy.pr_event("opened")
    drain(rt)
    assert [b["head_sha"] for b in neutral_posts(github)] == [sc.sha]

    mark = len(github.api_requests())
    sc.pr_event("opened")
    drain(rt)
    writes = check_writes(github, mark)
    assert [(m, p) for m, p, _ in writes] == [
        ("POST", f"{R}/check-runs"),  # the gate first: the session's run
        ("PATCH", f"{R}/check-runs/777"),  # then the neutral success is withdrawn
    ]
    assert writes[0][2]["status"] == "in_progress"
    assert writes[1][2]["conclusion"] == "cancelled"
    assert "pull request #2" in writes[1][2]["output"]["summary"]
    # withdrawn once: later publishes of the patch leave it alone
    sc.serve_green()
    mark = len(github.api_requests())
    sc.suite_completed()
    drain(rt)
    assert [(m, p) for m, p, _ in check_writes(github, mark)] == [("PATCH", f"{R}/check-runs/555")]


def test_a_pr_that_is_no_session_still_passes_at_once(rt, deliver, github):
    """The neutral run stays for heads no session claims, and is remembered."""
    copy = Scenario(deliver, github, number=3, branch="feature/docs")
    copy.serve_policy(None)
    copy.serve_writes()
    copy.pr_event("opened")
    drain(rt)
    [posted] = neutral_posts(github)
    assert posted["head_sha"] == copy.sha
    assert posted["output"]["title"] == "Not an agent session"
    with rt.database.unit() as s:
        [row] = s.scalars(select(NeutralCheckRun)).all()
    assert (row.head_sha, row.check_run_id, row.withdrawn) == (copy.sha, 555, False)


# --- item 7: a patch may relax the gate itself -----------------------------------------------


def replies(github, since: int = 0) -> list[str]:
    return [
        body["body"]
        for m, p, body in github.api_requests()[since:]
        if m == "POST" and p == f"{R}/issues/2/comments"
    ]


def validated_with(rt, sc, github, *files, policy=None) -> Patch:
    """The session PR opens with ``files`` changed and its CI green."""
    sc.serve_policy(policy)
    sc.serve_changes(*({"filename": f} if isinstance(f, str) else f for f in files))
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    return latest_patch(rt)


GATE_FILES = [
    ".github/minipipe.yml",
    ".github/workflows/ci.yml",
    "CODEOWNERS",
    ".github/CODEOWNERS",
    "AGENTS.md",
    "CLAUDE.md",
]


@pytest.mark.parametrize("path", GATE_FILES)
@pytest.mark.parametrize("policy", [None, "review:\n  required_approvals: 1\n"])
def test_attack_low_risk_patch_rewriting_the_gate_is_not_queued_without_a_decision(
    rt, deliver, github, path, policy
):
    """The default guardrails apply with no `agents:` section (no file, or a file without
    one): a small patch to the gate's own files waits for a maintainer's decision."""
    sc = Scenario(deliver, github)
    patch = validated_with(rt, sc, github, path, "src/app.py", policy=policy)
    assert (patch.state, patch.risk) == ("awaiting_review", "low")
    assert patch.meta["guardrails"]["verdict"] == "review"
    assert patch.meta["approve_permission"] == "maintain"
    [run] = [b for _m, _p, b in check_writes(github)]
    assert run["conclusion"] == "action_required"
    summary = run["output"]["summary"]
    assert f"touches protected paths: {path} (agents.default.on_protected: review" in summary
    assert "Approvers need `maintain` or more" in summary
    with rt.database.unit() as s:
        noted = s.scalars(
            select(AuditEntry.reason).where(
                AuditEntry.entity_id == patch.ledger_id, AuditEntry.outcome == "noted"
            )
        ).all()
    assert noted == [f"guardrails: review: {patch.meta['guardrails']['reasons'][0]}"]


def test_attack_writer_approves_a_patch_to_the_workflows_and_is_refused(rt, deliver, github):
    sc = Scenario(deliver, github)
    validated_with(rt, sc, github, ".github/workflows/release.yml")
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="writer")
    drain(rt)
    assert latest_patch(rt).state == "awaiting_review"
    [why] = replies(github, mark)
    assert "touches protected paths, so approving it needs `maintain` or more" in why
    assert check_writes(github, mark) == []

    sc.serve_permission("lead", "maintain")
    mark = len(github.api_requests())
    sc.comment("/approve", login="lead")
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, patch.meta["reviewed_by"]) == ("queued", "lead")
    assert conclusions(github, mark) == ["success"]


def test_attack_renaming_a_workflow_away_counts_as_touching_it(rt, deliver, github):
    sc = Scenario(deliver, github)
    moved = {
        "filename": "old/ci.yml",
        "status": "renamed",
        "previous_filename": ".github/workflows/ci.yml",
    }
    patch = validated_with(rt, sc, github, moved)
    assert patch.state == "awaiting_review"
    assert patch.paths == ["old/ci.yml", ".github/workflows/ci.yml"]


def test_attack_approval_on_an_earlier_head_is_not_carried_to_a_head_touching_the_gate(
    rt, deliver, github
):
    """With dismiss_stale_approvals off, a writer's approval of a harmless head would carry
    over: not to a head that touches protected paths, which needs a maintainer."""
    sc = Scenario(deliver, github)
    policy = "review:\n  dismiss_stale_approvals: false\n"
    validated_with(rt, sc, github, "src/app.py", policy=policy)
    assert latest_patch(rt).state == "queued"  # low risk: queued automatically
    sc.serve_permission("writer", "write")
    sc.comment("/approve", login="writer")
    drain(rt)
    new_sha = "b" * 40
    sc.serve_changes({"filename": "src/app.py"}, {"filename": "CODEOWNERS"})
    sc.serve_green(new_sha)
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.patch_id, patch.state, patch.meta["approvals"]) == (
        new_sha,
        "awaiting_review",
        [],
    )
    assert patch.meta["stale_approvals"] == [f"@writer approved {sc.sha[:12]}"]


BLOCK = "agents:\n  default:\n    on_protected: block\n"


def test_attack_blocked_patch_cannot_be_queued_by_any_approval(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = validated_with(rt, sc, github, ".github/minipipe.yml", "CODEOWNERS", policy=BLOCK)
    assert patch.state == "quarantined"
    [run] = [b for _m, _p, b in check_writes(github)]
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Blocked by its guardrails")
    assert (
        "touches protected paths: .github/minipipe.yml, CODEOWNERS "
        "(agents.default.on_protected: block)" in run["output"]["summary"]
    )
    sc.serve_permission("owner", "admin")
    mark = len(github.api_requests())
    sc.comment("/approve", login="owner")
    drain(rt)
    [why] = replies(github, mark)
    assert "blocked by its guardrails" in why and "no approval can queue it" in why
    sc.suite_completed()  # CI reports green again: still blocked
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, patch.meta["approvals"]) == ("quarantined", [])
    assert "success" not in conclusions(github)


def test_a_complying_push_releases_a_blocked_session(rt, deliver, github):
    sc = Scenario(deliver, github)
    validated_with(rt, sc, github, ".github/workflows/ci.yml", policy=BLOCK)
    new_sha = "b" * 40
    sc.serve_changes({"filename": "src/app.py"})
    sc.serve_green(new_sha)
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.patch_id, patch.state) == (new_sha, "queued")
    assert patch.meta["guardrails"]["verdict"] == "pass"


def policy_changed_to(sc, text: str | None) -> None:
    """The policy file on the default branch now says ``text`` (None: it was removed),
    and the push that changed it arrives."""
    url = sc.github.url(f"{R}/contents/.github/minipipe.yml")
    if text is None:
        sc.github.rsps.replace("GET", url, status=404, json={"message": "Not Found"})
    else:
        content = base64.b64encode(text.encode()).decode()
        sc.github.rsps.replace("GET", url, json={"type": "file", "sha": "b2", "content": content})
    assert sc.policy_pushed(".github/minipipe.yml").status_code == 202


def test_a_policy_change_on_the_default_branch_releases_a_blocked_patch(rt, deliver, github):
    sc = Scenario(deliver, github)
    validated_with(rt, sc, github, ".github/workflows/ci.yml", policy=BLOCK)
    mark = len(github.api_requests())
    policy_changed_to(sc, None)  # the maintainers dropped the block: defaults (review) apply
    drain(rt)
    patch = latest_patch(rt)
    assert patch.state == "awaiting_review"
    assert patch.meta["guardrails"]["verdict"] == "review"
    assert conclusions(github, mark) == ["action_required"]


ONLY_SRC = """\
agents:
  default:
    max_changed_files: 2
  unknown:
    allowed_paths: ["src/**", "tests/**"]
"""


def test_attack_agent_writes_outside_its_allowed_paths_is_blocked(rt, deliver, github):
    """Keys of an agent type's entry override `default` one by one: the adopted session's
    type (`unknown`) gets allowed_paths, and keeps default's max_changed_files."""
    sc = Scenario(deliver, github)
    patch = validated_with(rt, sc, github, "src/a.py", "docs/b.md", "tests/c.py", policy=ONLY_SRC)
    assert patch.state == "quarantined"
    reasons = patch.meta["guardrails"]["reasons"]
    assert reasons == [
        "outside agents.unknown.allowed_paths: docs/b.md",
        "3 changed files, over agents.default.max_changed_files (2)",
    ]
    [run] = [b for _m, _p, b in check_writes(github)]
    assert run["conclusion"] == "failure"
    for reason in reasons:
        assert reason in run["output"]["summary"]


def test_attack_session_patch_recorded_while_the_neutral_run_is_posted_withdraws_it(
    rt, deliver, github
):
    """The race: the other PR's neutral success is being posted when the session's patch
    of that SHA commits. The executor looks at the ledger again after posting."""
    copy = Scenario(deliver, github, number=3, branch="feature/copy")
    copy.serve_policy(None)

    def post(request):
        with rt.database.unit() as s:  # the session's delivery commits meanwhile
            session = registry.create_session(
                s,
                project_id=REPO,
                agent_type="aider",
                title="Fix",
                actor="agent-bot",
                source="api",
                pr_number=2,
            )
            ledger.record_patch(s, session, copy.sha, actor="agent-bot", source="api")
        return 201, {}, json.dumps({"id": 777})

    github.rsps.add_callback("POST", github.url(f"{R}/check-runs"), callback=post)
    github.add("PATCH", f"{R}/check-runs/777", {"id": 777})
    copy.pr_event("opened")
    [outcome] = drain(rt)
    assert outcome.status == "done"
    writes = check_writes(github)
    assert [(m, p, b.get("conclusion")) for m, p, b in writes] == [
        ("POST", f"{R}/check-runs", "success"),
        ("PATCH", f"{R}/check-runs/777", "cancelled"),
    ]
    with rt.database.unit() as s:
        assert s.get(NeutralCheckRun, (REPO, copy.sha)).withdrawn is True


def test_closed_acts_on_githubs_merge_state_not_the_bodys(rt, deliver, github):
    """GitHub says the PR was merged: the patch is applied, whatever the body claims."""
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("src/app.py")
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    assert latest_patch(rt).state == "queued"
    sc.serve_pull("closed", merged=True)
    sc.pr_event("closed", merged=False)
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, patch.merge_commit_sha) == ("applied", "m" * 40)
    assert "merge_commit_sha" not in patch.meta  # one home: the column
    assert the_session(rt).state == "completed"


def test_a_policy_change_that_still_blocks_moves_nothing(rt, deliver, github):
    sc = Scenario(deliver, github)
    validated_with(rt, sc, github, ".github/workflows/ci.yml", policy=BLOCK)
    mark = len(github.api_requests())
    policy_changed_to(sc, BLOCK + "    max_changed_files: 10\n")  # changed, still blocking
    drain(rt)
    assert latest_patch(rt).state == "quarantined"
    assert check_writes(github, mark) == []
    assert [p.split("?")[0] for m, p, _ in github.api_requests()[mark:]] == [
        f"{R}/contents/.github/minipipe.yml"
    ]


def test_a_policy_change_that_lifts_every_guardrail_queues_a_green_low_risk_patch(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    validated_with(rt, sc, github, ".github/workflows/ci.yml", policy=BLOCK)
    policy_changed_to(sc, "agents:\n  default:\n    protected_paths: []\n")
    drain(rt)
    patch = latest_patch(rt)
    assert (patch.state, patch.meta["guardrails"]["verdict"]) == ("queued", "pass")
    assert conclusions(github)[-1] == "success"
