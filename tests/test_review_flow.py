"""The review workflow end to end: signed webhooks in, exact GitHub requests out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from minipipe_gh.store import ledger
from minipipe_gh.store.models import AgentSession, AuditEntry, Patch, utcnow
from tests.scenario import R, Scenario


def drain(rt):
    return rt.worker().run_once()


def only_patch(rt) -> Patch:
    with rt.database.unit() as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def the_session(rt) -> AgentSession:
    with rt.database.unit() as s:
        return s.scalars(select(AgentSession)).one()


def writes(github, since=0):
    return [r for r in github.api_requests()[since:] if r[0] != "GET"]


def test_story_1_high_risk_patch_approved_by_a_writer_then_merged(rt, deliver, github):
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("src/auth/login.py", "README.md")
    sc.serve_suites(sc.sha, None)  # CI still running when the PR opens
    sc.serve_writes()

    assert sc.pr_event("opened").status_code == 202
    assert [o.status for o in drain(rt)] == ["done"]
    session, patch = the_session(rt), only_patch(rt)
    assert (session.state, session.branch, session.pr_number) == ("active", sc.branch, 2)
    assert session.agent_type == "unknown"  # adopted from the prefix
    assert (patch.state, patch.risk) == ("created", "high")
    assert patch.risk_reasons == ["touches high-risk paths: src/auth/login.py"]
    created = [r for r in github.api_requests() if r[0] == "POST"]
    assert created[0][:2] == ("POST", f"{R}/check-runs")
    assert created[0][2]["status"] == "in_progress"
    assert created[0][2]["head_sha"] == sc.sha

    # CI succeeds → validated → high risk → awaiting review with buttons
    sc.serve_green()
    mark = len(github.api_requests())
    sc.suite_completed()
    drain(rt)
    assert only_patch(rt).state == "awaiting_review"
    [update] = writes(github, mark)
    assert update[:2] == ("PATCH", f"{R}/check-runs/555")
    assert update[2]["conclusion"] == "action_required"
    assert [a["identifier"] for a in update[2]["actions"]] == ["approve", "reject"]
    assert "touches high-risk paths" in update[2]["output"]["summary"]

    # a reader's /approve is refused: 😕 and one reply with the reason
    sc.serve_permission("reader", "read")
    mark = len(github.api_requests())
    sc.comment("/approve", login="reader")
    drain(rt)
    assert only_patch(rt).state == "awaiting_review"
    sent = writes(github, mark)
    assert sent[0][0] == "POST" and sent[0][1].endswith("/reactions")
    assert sent[0][2] == {"content": "confused"}
    assert sent[1][:2] == ("POST", f"{R}/issues/2/comments")
    assert "needs `write`" in sent[1][2]["body"]
    assert len(sent) == 2
    with rt.database.unit() as s:
        refused = s.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused")).all()
    assert [(r.actor, r.entity) for r in refused] == [("reader", "patch")]

    # a writer's /approve: check run green, ledger queued, 👍 — at most 3 requests
    sc.serve_permission("writer", "write")
    mark = len(github.requests)
    sc.comment("/approve ship it", login="writer")
    drain(rt)
    patch = only_patch(rt)
    assert patch.state == "queued"
    assert patch.meta["reviewed_by"] == "writer"
    assert patch.meta["review_status"] == "approved"
    sent = github.requests[mark:]
    assert [(m, p) for m, p, _ in sent] == [
        ("GET", f"{R}/collaborators/writer/permission"),
        ("PATCH", f"{R}/check-runs/555"),
        ("POST", sent[2][1]),
    ]
    assert sent[1][2]["conclusion"] == "success"
    assert sent[2][2] == {"content": "+1"}

    # merged → applied, session completed
    sc.serve_pull("closed", merged=True)  # the app re-reads the PR before acting on `closed`
    mark = len(github.api_requests())
    sc.pr_event("closed", merged=True)
    drain(rt)
    assert ("GET", f"{R}/pulls/2", None) in github.api_requests()[mark:]
    assert only_patch(rt).state == "applied"
    assert the_session(rt).state == "completed"
    with rt.database.unit() as s:
        history = [
            (h.from_state, h.to_state)
            for h in ledger.history(s, patch.ledger_id)
            if h.outcome == "moved"
        ]
    assert history == [
        (None, "created"),
        ("created", "validated"),
        ("validated", "awaiting_review"),
        ("awaiting_review", "queued"),
        ("queued", "applied"),
    ]


def opened_and_validated(rt, sc, github, *paths, policy=None):
    sc.serve_policy(policy)
    sc.serve_files(*(paths or ("src/auth/login.py",)))
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    return only_patch(rt)


def check_run_bodies(github, since=0):
    return [b for m, p, b in github.api_requests()[since:] if "/check-runs" in p and m != "GET"]


def test_story_2_low_risk_patch_is_queued_automatically(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github, "docs/guide.md")
    assert (patch.state, patch.risk) == ("queued", "low")
    [body] = check_run_bodies(github)
    assert (body["status"], body["conclusion"]) == ("completed", "success")
    assert body["output"]["title"] == "Low risk: queued automatically"


def test_story_2b_auto_queue_off_sends_low_risk_to_review(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(
        rt, sc, github, "docs/guide.md", policy="risk:\n  auto_queue_low_risk: false\n"
    )
    assert patch.state == "awaiting_review"


def test_story_3_reject_with_a_reason_drops_the_patch(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.comment("/reject\n", login="writer")  # no reason: refused, nothing moves
    drain(rt)
    assert only_patch(rt).state == "awaiting_review"
    sent = writes(github, mark)
    assert sent[0][2] == {"content": "confused"}
    assert "needs an argument" in sent[1][2]["body"]

    mark = len(github.api_requests())
    sc.comment("/reject this breaks the session cookie", login="writer")
    drain(rt)
    patch = only_patch(rt)
    assert patch.state == "dropped"
    assert patch.meta["review_reason"] == "this breaks the session cookie"
    [update] = check_run_bodies(github, mark)
    assert update["conclusion"] == "failure"
    assert "this breaks the session cookie" in update["output"]["title"]


def serve_tree(github, sha, tree):
    github.add("GET", f"{R}/git/commits/{sha}", {"sha": sha, "tree": {"sha": tree}})


def test_story_4_a_push_after_approval_supersedes_it(rt, deliver, github):
    sc = Scenario(deliver, github)
    first = opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    sc.comment("/approve", login="writer")
    drain(rt)
    assert only_patch(rt).state == "queued"

    new_sha = "b" * 40
    serve_tree(github, sc.sha, "tree-1")
    serve_tree(github, new_sha, "tree-2")
    sc.serve_suites(new_sha, None)
    mark = len(github.api_requests())
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    with rt.database.unit() as s:
        old = s.get(Patch, first.ledger_id)
        assert (old.state, old.meta["drop_reason"]) == ("dropped", f"superseded by {new_sha[:12]}")
    new = only_patch(rt)
    assert (new.patch_id, new.state, new.meta["approvals"]) == (new_sha, "created", [])
    sent = writes(github, mark)
    review_request = [b for m, p, b in sent if p.endswith("/requested_reviewers")]
    assert review_request == [{"reviewers": ["writer"]}]
    new_runs = [b for b in check_run_bodies(github, mark) if b.get("head_sha") == new_sha]
    assert new_runs and all(b.get("conclusion") != "success" for b in new_runs)
    assert "@writer approved aaaaaaaaaaaa" in new_runs[-1]["output"]["summary"]


def test_story_4b_same_tree_carries_the_approval_over(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    sc.comment("/approve", login="writer")
    drain(rt)
    new_sha = "c" * 40
    serve_tree(github, sc.sha, "same-tree")
    serve_tree(github, new_sha, "same-tree")
    sc.serve_green(new_sha)
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    new = only_patch(rt)
    assert (new.patch_id, new.state, new.meta["approvals"]) == (new_sha, "queued", ["writer"])
    with rt.database.unit() as s:
        reasons = [h.reason or "" for h in ledger.history(s, new.ledger_id)]
    assert any("carried over" in r and "same tree" in r for r in reasons)


def test_story_5_approving_review_then_dismissed(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("Codertocat", "write")
    sc.review("approved", login="Codertocat")
    drain(rt)
    assert only_patch(rt).state == "queued"
    mark = len(github.api_requests())
    sc.review("approved", login="Codertocat", action="dismissed")
    drain(rt)
    patch = only_patch(rt)
    assert (patch.state, patch.meta["approvals"]) == ("awaiting_review", [])
    [update] = check_run_bodies(github, mark)
    assert update["conclusion"] == "action_required"


def test_story_5b_changes_requested_review_asks_for_manual_review(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github, "docs/guide.md")
    assert only_patch(rt).state == "queued"
    sc.serve_permission("Codertocat", "write")
    sc.review("changes_requested", login="Codertocat", body="please split this")
    drain(rt)
    patch = only_patch(rt)
    assert patch.state == "awaiting_review"
    assert patch.meta["review_reason"] == "please split this"


def test_story_6_button_press_approves_for_the_presser(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.button("approve", login="writer", ledger_id=patch.ledger_id)
    drain(rt)
    patch = only_patch(rt)
    assert (patch.state, patch.meta["reviewed_by"]) == ("queued", "writer")
    [update] = check_run_bodies(github, mark)
    assert update["conclusion"] == "success"


def test_story_6b_reject_button(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    sc.button("reject", login="writer", ledger_id=patch.ledger_id)
    drain(rt)
    assert only_patch(rt).state == "dropped"


def test_story_7_self_approval_is_refused(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("agent-bot", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="agent-bot")
    drain(rt)
    assert only_patch(rt).state == "awaiting_review"
    sent = writes(github, mark)
    assert sent[0][2] == {"content": "confused"}
    assert "cannot approve their own patch" in sent[1][2]["body"]
    with rt.database.unit() as s:
        [row] = s.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused")).all()
    assert row.actor == "agent-bot" and "own patch" in row.reason


def test_story_8_invalid_config_is_reported_and_nothing_moves(rt, deliver, github):
    sc = Scenario(deliver, github)
    patch = opened_and_validated(
        rt, sc, github, "docs/guide.md", policy="review:\n  required_approvals: zero\n"
    )
    assert patch.state == "created"  # CI is green, but nothing moves on a broken policy
    [body] = check_run_bodies(github)
    assert body["conclusion"] == "action_required"
    assert "line 2" in body["output"]["summary"]
    assert "review.required_approvals" in body["output"]["summary"]
    assert body["actions"] == []  # no buttons while the policy is broken


def test_story_9_the_same_delivery_twice_posts_nothing_twice(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("reader", "read")
    mark = len(github.api_requests())
    assert (
        sc.comment("/approve", login="reader", comment_id=77, delivery_id="x1").status_code == 202
    )
    assert (
        sc.comment("/approve", login="reader", comment_id=77, delivery_id="x1").status_code == 200
    )
    # the same comment under another delivery id (repo hook and app both subscribed)
    assert (
        sc.comment("/approve", login="reader", comment_id=77, delivery_id="x2").status_code == 200
    )
    drain(rt)
    drain(rt)
    sent = writes(github, mark)
    assert [p.rsplit("/", 1)[-1] for _, p, _ in sent] == ["reactions", "comments"]


def test_story_9b_a_retried_delivery_does_not_reply_twice(rt, deliver, github):
    """The reply reached GitHub but its answer was lost (502): the retry finds the marker."""
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("reader", "read")
    github.rsps.upsert("POST", github.url(f"{R}/issues/2/comments"), json={}, status=502)
    sc.comment("/approve", login="reader", delivery_id="flaky")
    [first] = drain(rt)
    assert first.status == "retry"
    github.add(
        "GET",
        f"{R}/issues/2/comments",
        [{"id": 1, "body": "@reader not done\n\n<!-- minipipe:reply=flaky -->"}],
    )
    later = rt.worker(clock=lambda: utcnow() + timedelta(hours=1))
    [second] = later.run_once()
    assert second.status == "done"
    posts = [r for r in github.api_requests() if r[:2] == ("POST", f"{R}/issues/2/comments")]
    assert len(posts) == 1  # the first attempt's; the retry saw its marker and did not post
    reactions = [r for r in github.api_requests() if r[1].endswith("/reactions")]
    assert [r[2] for r in reactions] == [{"content": "confused"}]  # done: not repeated
