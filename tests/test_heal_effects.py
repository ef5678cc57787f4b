"""Effects that cannot block the gate: the check run first, refusals skipped, retries partial.

Real recorded payloads through the webhook, GitHub faked at the HTTP layer;
every test asserts on the requests the app sent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from minipipe_gh.delivery.metrics import WRITES_REFUSED
from minipipe_gh.gh.writes import REDUCED
from minipipe_gh.store.models import AuditEntry, CheckRunRef, Delivery
from tests.scenario import REPO, R, Scenario
from tests.test_review_flow import only_patch, opened_and_validated, serve_tree
from tests.test_worker import Clock

NOT_COLLABORATOR = (
    "Reviews may only be requested from collaborators. One or more of the users or teams "
    "you specified is not a collaborator of the Codertocat/Hello-World repository."
)


def statuses(rt: Any) -> dict[str, str]:
    with rt.database.unit() as s:
        return {d.delivery_id: d.status for d in s.scalars(select(Delivery))}


def refusals(rt: Any) -> list[AuditEntry]:
    with rt.database.unit() as s:
        return list(
            s.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity == "delivery", AuditEntry.outcome == "refused"
                )
            )
        )


def writes(github: Any, since: int = 0) -> list[tuple[str, str, Any]]:
    return [r for r in github.api_requests()[since:] if r[0] != "GET"]


def opened_with_check_run_writes(rt: Any, sc: Scenario, github: Any) -> None:
    """A high-risk PR opened with green CI; GitHub takes check-run writes, nothing else yet."""
    sc.serve_policy(None)
    sc.serve_files("src/auth/login.py")
    sc.serve_green()
    github.add("POST", f"{R}/check-runs", {"id": 555}, status=201)
    github.add("PATCH", f"{R}/check-runs/555", {"id": 555})
    sc.pr_event("opened")
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    assert only_patch(rt).state == "awaiting_review"


def approved_by_writer(rt: Any, sc: Scenario, github: Any) -> None:
    opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    sc.comment("/approve", login="writer")
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    assert only_patch(rt).state == "queued"


def test_a_former_reviewer_refused_by_github_does_not_keep_the_new_head_without_its_check(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    approved_by_writer(rt, sc, github)
    # the writer has lost access since: GitHub refuses to request their review
    github.rsps.replace(
        "POST",
        github.url(f"{R}/pulls/2/requested_reviewers"),
        json={"message": NOT_COLLABORATOR},
        status=422,
    )
    new_sha = "b" * 40
    serve_tree(github, sc.sha, "tree-1")
    serve_tree(github, new_sha, "tree-2")
    sc.serve_suites(new_sha, None)
    refused_before = WRITES_REFUSED.labels("request_reviewers", "422")._value.get()
    mark = len(github.api_requests())

    sc.pr_event("synchronize", sha=new_sha)
    assert [o.status for o in rt.worker().run_once()] == ["done"]

    sent = writes(github, mark)
    paths = [(m, p) for m, p, _b in sent]
    # the check runs first (the old head's verdict, the new head's), the review request last
    assert paths == [
        ("PATCH", f"{R}/check-runs/555"),
        ("POST", f"{R}/check-runs"),
        ("POST", f"{R}/pulls/2/requested_reviewers"),
    ]
    new_run = sent[1][2]
    assert (new_run["head_sha"], new_run["status"]) == (new_sha, "in_progress")
    assert sent[2][2] == {"reviewers": ["writer"]}
    assert set(statuses(rt).values()) == {"done"}
    [refusal] = refusals(rt)
    assert refusal.project_id == REPO and refusal.actor == "github"
    assert "request_reviewers skipped: GitHub answered 422" in (refusal.reason or "")
    assert "only be requested from collaborators" in (refusal.reason or "")
    assert WRITES_REFUSED.labels("request_reviewers", "422")._value.get() == refused_before + 1
    assert only_patch(rt).patch_id == new_sha
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).order_by(Delivery.seq.desc())).first()
        assert [(e["kind"], e["result"]) for e in d.effects] == [
            ("check_run", "done"),
            ("check_run", "done"),
            ("request_reviewers", "refused"),
        ]


def test_a_502_on_the_reaction_retries_the_reaction_alone(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_with_check_run_writes(rt, sc, github)
    sc.serve_permission("writer", "write")
    reaction = github.url(f"{R}/issues/comments/4242/reactions")
    github.rsps.add("POST", reaction, json={"message": "Bad Gateway"}, status=502)
    github.rsps.add("POST", reaction, json={"id": 1, "content": "+1"}, status=201)
    clock = Clock()
    w = rt.worker(clock=clock)
    mark = len(github.api_requests())

    sc.comment("/approve", login="writer", comment_id=4242, delivery_id="approve-1")
    assert [o.status for o in w.run_once()] == ["retry"]
    clock.advance(5)
    assert [o.status for o in w.run_once()] == ["done"]

    sent = [(m, p) for m, p, _b in writes(github, mark)]
    assert sent == [
        ("PATCH", f"{R}/check-runs/555"),  # the gate, once: not repeated by the retry
        ("POST", f"{R}/issues/comments/4242/reactions"),  # the 502
        ("POST", f"{R}/issues/comments/4242/reactions"),  # retried alone
    ]
    assert only_patch(rt).state == "queued"
    assert statuses(rt)["approve-1"] == "done"


def test_a_best_effort_write_failing_every_attempt_ends_the_delivery_done_not_dead(
    rt, deliver, github
):
    sc = Scenario(deliver, github)
    opened_with_check_run_writes(rt, sc, github)
    sc.serve_permission("writer", "write")
    github.add("POST", f"{R}/issues/comments/4343/reactions", {"message": "oops"}, status=500)
    clock = Clock()
    w = rt.worker(clock=clock)
    mark = len(github.api_requests())
    sc.comment("/approve", login="writer", comment_id=4343, delivery_id="approve-2")
    outcomes = []
    for _ in range(rt.settings.max_attempts):
        outcomes += [o.status for o in w.run_once()]
        clock.advance(900)
    assert outcomes == ["retry", "retry", "done"]
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == "approve-2")).one()
        assert d.status == "done" and "500" in (d.last_error or "")
        assert [(e["kind"], e["result"]) for e in d.effects] == [
            ("check_run", "done"),
            ("react", "gave_up"),
        ]
    patches = [p for m, p, _b in writes(github, mark) if m == "PATCH"]
    assert patches == [f"{R}/check-runs/555"]  # the gate once, whatever the retries


def test_a_check_run_body_refused_with_422_is_sent_again_as_the_verdict_alone(rt, deliver, github):
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("docs/guide.md")
    sc.serve_green()
    github.add("POST", f"{R}/check-runs", {"message": "Validation Failed"}, status=422)
    github.add("POST", f"{R}/check-runs", {"id": 777}, status=201)
    sc.pr_event("opened")
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    bodies = [b for m, p, b in github.api_requests() if m == "POST" and p.endswith("/check-runs")]
    assert len(bodies) == 2
    assert bodies[0]["output"]["title"] == "Low risk: queued automatically"
    assert bodies[1]["output"] == {"title": REDUCED, "summary": "Low risk: queued automatically"}
    assert (bodies[1]["head_sha"], bodies[1]["conclusion"]) == (sc.sha, "success")
    assert sc.check_run_ref(rt.database).check_run_id == 777


def test_a_check_run_write_github_always_refuses_does_not_loop(rt, deliver, github):
    sc = Scenario(deliver, github)
    sc.serve_policy(None)
    sc.serve_files("docs/guide.md")
    sc.serve_green()
    github.add("POST", f"{R}/check-runs", {"message": "Validation Failed"}, status=422)
    sc.pr_event("opened")
    # the next delivery of the PR is not held back behind minutes of retries
    sc.comment("/minipipe help", login="writer", comment_id=4444)
    github.add("POST", f"{R}/issues/comments/4444/reactions", {"id": 1}, status=201)
    github.add("POST", f"{R}/issues/2/comments", {"id": 1}, status=201)
    assert [o.status for o in rt.worker().run_once()] == ["done", "done"]
    posts = [p for m, p, _b in github.api_requests() if m == "POST" and p.endswith("/check-runs")]
    assert len(posts) == 2  # the full body, then the verdict alone; then no more
    [refusal] = refusals(rt)
    assert "check_run skipped: GitHub answered 422" in (refusal.reason or "")
    assert sc.check_run_ref(rt.database) is None  # reconciliation will find it missing


def test_a_check_run_deleted_on_github_is_created_again(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    github.rsps.replace(
        "PATCH", github.url(f"{R}/check-runs/555"), json={"message": "Not Found"}, status=404
    )
    github.rsps.replace("POST", github.url(f"{R}/check-runs"), json={"id": 556}, status=201)
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="writer")
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    runs = [(m, p) for m, p, _b in writes(github, mark) if "/check-runs" in p]
    assert runs == [("PATCH", f"{R}/check-runs/555"), ("POST", f"{R}/check-runs")]
    with rt.database.unit() as s:
        assert s.get(CheckRunRef, (REPO, sc.sha)).check_run_id == 556
