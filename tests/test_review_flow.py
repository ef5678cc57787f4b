"""The review workflow end to end: signed webhooks in, exact GitHub requests out."""

from __future__ import annotations

from sqlalchemy import select

from minipipe_gh import ledger, registry
from minipipe_gh.models import AgentSession, AuditEntry, Patch
from tests.scenario import REPO, R, Scenario


def drain(rt):
    return rt.worker().run_once()


def only_patch(rt) -> Patch:
    with rt.database.unit(write=False) as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def the_session(rt) -> AgentSession:
    with rt.database.unit(write=False) as s:
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
    github.rsps.replace(
        "GET",
        github.url(f"{R}/commits/{sc.sha}/check-suites"),
        json={
            "total_count": 1,
            "check_suites": [
                {
                    "id": 1,
                    "status": "completed",
                    "conclusion": "success",
                    "app": {"id": 42},
                    "head_sha": sc.sha,
                }
            ],
        },
    )
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
    with rt.database.unit(write=False) as s:
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
    sc.pr_event("closed", merged=True)
    drain(rt)
    assert only_patch(rt).state == "applied"
    assert the_session(rt).state == "completed"
    with rt.database.unit(write=False) as s:
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
    assert registry.find_by_pr  # registry stays importable for the other stories
    assert REPO == "Codertocat/Hello-World"
