"""A session's whole life: created through the bot API, then driven by its PR's webhooks.

POST /api/v1/sessions opens the branch and the draft PR; GitHub's recorded
webhooks for that PR (same number, same branch, the marker in the body) then
move the session and its patch through the worker, and the API shows it all.
"""

from __future__ import annotations

from typing import Any

from minipipe_gh.core.markers import session_marker
from tests.scenario import R, Scenario
from tests.seed import NEW_SESSION, PR_NUMBER, Api, drain, install, make_token, serve_session_pr

APP_BOT = "minipipe-gh[bot]"  # the installation opens the PR, so the app is its author


def moves(history: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    return [(h["from"], h["to"], h["actor"]) for h in history if h["outcome"] == "moved"]


def test_session_created_through_the_api_lives_through_its_pull_request(
    rt, client, deliver, github
):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github)
    created = api("POST", "/sessions", NEW_SESSION)
    assert created.status_code == 201
    session = created.get_json()
    sid = session["session_id"]
    assert (session["state"], session["pr_number"]) == ("created", PR_NUMBER)

    sc = Scenario(deliver, github, number=PR_NUMBER, branch=session["branch"], author=APP_BOT)
    sc.serve_files("src/auth/login.py", "tests/test_login.py")
    sc.serve_suites(sc.sha, None)  # CI still running when the PR opens
    sc.serve_writes()
    body = f"Agent session `{sid}`\n\n{session_marker(sid)}"
    assert sc.pr_event("opened", body=body, draft=True).status_code == 202
    assert [o.status for o in drain(rt)] == ["done"]

    now = api("GET", f"/sessions/{sid}").get_json()
    assert (now["state"], now["head_sha"], now["pr_number"]) == ("active", sc.sha, PR_NUMBER)
    [patch] = now["patches"]
    lid = patch["ledger_id"]
    assert (patch["state"], patch["patch_id"], patch["risk"]["level"]) == (
        "created",
        sc.sha,
        "high",
    )
    assert patch["paths"] == ["src/auth/login.py", "tests/test_login.py"]
    assert sc.check_run_ref(rt.database).check_run_id == sc.check_run_id

    # CI goes green: a high-risk patch waits for a human
    sc.serve_green()
    sc.suite_completed()
    drain(rt)
    queue = api("GET", "/patches", query_string={"state": "awaiting_review"}).get_json()
    assert [p["ledger_id"] for p in queue["items"]] == [lid]

    # a writer approves in a comment
    sc.serve_permission("writer", "write")
    sc.comment("/approve looks right", login="writer")
    drain(rt)
    assert api("GET", f"/patches/{lid}").get_json()["state"] == "queued"

    # merged: the patch is applied, the session completed
    sc.serve_pull("closed", merged=True)  # the app re-reads the PR before acting on `closed`
    sc.pr_event("closed", merged=True)
    drain(rt)
    final = api("GET", f"/sessions/{sid}").get_json()
    assert final["state"] == "completed"
    assert (final["branch"], final["pr_url"]) == (
        session["branch"],
        f"https://github.com/Codertocat/Hello-World/pull/{PR_NUMBER}",
    )
    [patch] = final["patches"]
    assert patch["state"] == "applied"
    assert patch["metadata"]["reviewed_by"] == "writer"
    assert patch["metadata"]["merge_commit_sha"] == "m" * 40

    history = api("GET", f"/patches/{lid}/history", query_string={"limit": 500}).get_json()
    assert history["next_cursor"] is None
    history = history["items"]
    assert moves(history) == [
        (None, "created", APP_BOT),
        ("created", "validated", "github"),
        ("validated", "awaiting_review", "minipipe"),
        ("awaiting_review", "queued", "writer"),
        ("queued", "applied", "maintainer"),
    ]
    listed = api("GET", "/sessions", query_string={"state": "completed"}).get_json()["items"]
    assert [s["session_id"] for s in listed] == [sid]
    stats = api("GET", "/stats").get_json()["items"]
    assert [(s["agent_type"], s["success_rate"], s["approval_rate"]) for s in stats] == [
        ("claude", 1.0, 1.0)
    ]


def test_a_webhook_that_outruns_the_api_binds_the_session_by_its_marker(
    rt, client, deliver, github
):
    """GitHub may deliver ``opened`` before POST /sessions has stored the PR number."""
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_session_pr(github)
    sc = Scenario(deliver, github, number=PR_NUMBER, branch="(set below)", author=APP_BOT)
    sc.serve_files("src/auth/login.py")
    sc.serve_green()
    sc.serve_writes()
    seen: dict[str, Any] = {}

    def pulls(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        sent = json.loads(request.body)
        sc.branch = sent["head"]
        # the PR exists on GitHub: its webhook is delivered and handled before we answer
        seen["webhook"] = sc.pr_event("opened", body=sent["body"]).status_code
        seen["outcomes"] = [o.status for o in drain(rt)]
        pr = {"number": PR_NUMBER, "html_url": f"https://github.com/x/pull/{PR_NUMBER}"}
        return 201, {}, json.dumps(pr)

    github.rsps.remove("POST", github.url(f"{R}/pulls"))
    github.rsps.add_callback("POST", github.url(f"{R}/pulls"), callback=pulls)

    created = api("POST", "/sessions", NEW_SESSION)
    assert created.status_code == 201, created.get_json()
    assert seen == {"webhook": 202, "outcomes": ["done"]}
    session = created.get_json()
    sid = session["session_id"]
    assert (session["state"], session["pr_number"], session["branch"]) == (
        "active",
        PR_NUMBER,
        sc.branch,
    )
    assert session["metadata"]["bot_login"] == "agent-bot"  # the token's user is the bot
    [patch] = api("GET", f"/sessions/{sid}").get_json()["patches"]
    assert patch["state"] == "awaiting_review"

    # the writer approves through the API; the worker then turns the check run green
    sc.serve_permission("writer", "write")
    writer = api.as_(make_token(rt, "writer", "writer"))
    approved = writer("POST", f"/patches/{patch['ledger_id']}/approve", {"comment": "ok"})
    assert approved.get_json()["state"] == "queued"
    mark = len(github.api_requests())
    drain(rt)
    [update] = [r for r in github.api_requests()[mark:] if r[0] != "GET"]
    assert update[:2] == ("PATCH", f"{R}/check-runs/{sc.check_run_id}")
    assert update[2]["conclusion"] == "success"

    sc.serve_pull("closed", merged=True)  # the app re-reads the PR before acting on `closed`
    sc.pr_event("closed", merged=True)
    drain(rt)
    final = api("GET", f"/sessions/{sid}").get_json()
    assert final["state"] == "completed"
    assert [p["state"] for p in final["patches"]] == ["applied"]
