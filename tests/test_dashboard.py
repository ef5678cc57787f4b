"""The dashboard through Flask's test client, GitHub faked at the HTTP layer (``responses``).

Sign-in is GitHub's web flow; a user sees only the repositories GitHub says
they can read among the app's installations; every form carries a CSRF token;
decisions follow the comment rules (``off_github.decide``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.review.refresh import EVENT as REFRESH_EVENT
from minipipe_gh.store import ledger, registry, signins, stats
from minipipe_gh.store.models import (
    AuditEntry,
    DashboardLogin,
    Delivery,
    Patch,
    utcnow,
)
from minipipe_gh.web import charts, create_app, dashboard, oauth
from tests import dashboard_support
from tests.dashboard_support import CSRF_RE, OTHER, patch_row, post, sign_in
from tests.github_fake import INSTALLATION_ID, WEB
from tests.scenario import REPO, R, commit, user
from tests.seed import seed_dead_delivery, seed_installation
from tests.seed import seed_web_patch as seed_patch

# the dashboard's fixtures: sign-in through GitHub's web flow, the repository's side
settings, users, sc = dashboard_support.settings, dashboard_support.users, dashboard_support.sc


# -- sign-in -----------------------------------------------------------------------------------


def test_login_sends_the_browser_to_githubs_authorize_page_with_a_state(client):
    resp = client.get("/auth/github/login?next=/review")

    assert resp.status_code == 302
    url = urlsplit(resp.headers["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{WEB}/login/oauth/authorize"
    query = parse_qs(url.query)
    assert query["client_id"] == ["Iv1.dashboard"]
    assert query["redirect_uri"] == ["http://localhost/auth/github/callback"]
    with client.session_transaction() as cookie:
        assert cookie["oauth_state"] == query["state"][0]
        assert len(query["state"][0]) >= 32


def test_the_callback_url_follows_the_public_url(rt, client):
    rt.settings = dataclasses.replace(rt.settings, public_url="https://pipe.example.com/")
    resp = client.get("/auth/github/login")
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["redirect_uri"] == ["https://pipe.example.com/auth/github/callback"]


def test_sign_in_reads_the_users_repositories_and_keeps_the_token_off_the_cookie(
    client, users, github, rt
):
    sign_in(client, users, "carol")

    with client.session_transaction() as cookie:
        assert set(cookie) == {"sid"}  # state used up; no token in the cookie
    assert "gho_carol" not in (client.get_cookie("session").value)
    with rt.database.unit() as s:
        row = s.scalars(select(DashboardLogin)).one()
    assert row.login == "carol"
    assert row.repositories == [{"full_name": REPO, "installation_id": INSTALLATION_ID}]
    assert row.token != "gho_carol"  # encrypted at rest
    assert signins.token_of(row, "test") == "gho_carol"
    paths = [urlsplit(c.request.url).path for c in github.rsps.calls]
    assert paths == [
        "/login/oauth/access_token",
        "/api/v3/user",
        "/api/v3/user/installations",
        f"/api/v3/user/installations/{INSTALLATION_ID}/repositories",
    ]
    assert "@carol" in client.get("/sessions").text


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(client, users):
    users.visible["carol"] = [REPO]
    for asked, landed in (
        ("/review", "/review"),
        ("//evil.example/x", "/sessions"),
        ("https://evil.example/", "/sessions"),
        ("/\\evil.example", "/sessions"),
    ):
        start = client.get("/auth/github/login", query_string={"next": asked})
        state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
        back = client.get(f"/auth/github/callback?code=carol&state={state}")
        assert back.headers["Location"] == landed, asked


@pytest.mark.parametrize(
    "query",
    ["code=carol&state=forged", "code=carol", "code=carol&state="],
    ids=["wrong-state", "missing-state", "empty-state"],
)
def test_a_callback_whose_state_does_not_match_is_refused(client, users, github, rt, query):
    users.visible["carol"] = [REPO]
    client.get("/auth/github/login")

    resp = client.get(f"/auth/github/callback?{query}")

    assert resp.status_code == 400
    assert "state does not match" in resp.text
    assert not any("access_token" in c.request.url for c in github.rsps.calls)
    with rt.database.unit() as s:
        assert s.scalars(select(DashboardLogin)).first() is None
    assert client.get("/sessions").status_code == 401


def test_a_callback_that_was_never_started_here_is_refused(client, users):
    users.visible["carol"] = [REPO]
    resp = client.get("/auth/github/callback?code=carol&state=anything")
    assert resp.status_code == 400
    assert "not started here" in resp.text


def test_a_state_works_once(client, users):
    users.visible["carol"] = [REPO]
    start = client.get("/auth/github/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    assert client.get(f"/auth/github/callback?code=carol&state={state}").status_code == 302
    assert client.get(f"/auth/github/callback?code=carol&state={state}").status_code == 400


def test_a_callback_without_a_code_is_refused(client, users):
    start = client.get("/auth/github/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    resp = client.get(f"/auth/github/callback?state={state}")
    assert resp.status_code == 400
    assert "no code" in resp.text


def test_a_user_who_declines_on_github_is_told_so(client):
    client.get("/auth/github/login")
    resp = client.get(
        "/auth/github/callback?error=access_denied&error_description=The+user+has+denied"
    )
    assert resp.status_code == 403
    assert "GitHub did not sign you in: the request to sign in was declined" in resp.text
    assert "The user has denied" not in resp.text  # the query's own text is never shown


def test_a_code_github_refuses_is_a_clear_error(client, users):
    start = client.get("/auth/github/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    resp = client.get(f"/auth/github/callback?code=expired&state={state}")
    assert resp.status_code == 502
    assert "GitHub refused the sign-in code (bad_verification_code)" in resp.text


def test_github_unreachable_during_sign_in_is_a_clear_error(client, github):
    start = client.get("/auth/github/login")  # no Users: nothing answers at GitHub
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    resp = client.get(f"/auth/github/callback?code=carol&state={state}")
    assert resp.status_code == 502
    assert "GitHub could not be reached" in resp.text


def test_github_failing_after_the_code_exchange_is_a_clear_error(client, users, rt):
    users.visible["carol"] = [REPO]
    users.down = True
    start = client.get("/auth/github/login")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]

    resp = client.get(f"/auth/github/callback?code=carol&state={state}")

    assert resp.status_code == 502
    assert "GitHub answered 500: Server Error" in resp.text
    with rt.database.unit() as s:
        assert s.scalars(select(DashboardLogin)).first() is None


def test_sign_in_without_an_oauth_client_says_what_to_set(rt, client):
    rt.settings = dataclasses.replace(rt.settings, client_id=None, client_secret=None)
    resp = client.get("/auth/github/login")
    assert resp.status_code == 503
    assert "GITHUB_CLIENT_ID" in resp.text and "GITHUB_CLIENT_SECRET" in resp.text


def test_pages_ask_to_sign_in_first(client):
    for path in ("/sessions", "/review", "/deliveries", "/stats", "/patches/x", "/sessions/x"):
        resp = client.get(path)
        assert resp.status_code == 401, path
        assert "Sign in with GitHub" in resp.text
        assert f'href="/auth/github/login?next={path}"' in resp.text


def test_sign_out_ends_the_server_side_session(client, users, rt):
    sign_in(client, users, "carol")
    with client.session_transaction() as cookie:
        sid = cookie["sid"]

    resp = post(client, "/auth/logout", token_from="/sessions")

    assert resp.status_code == 302
    with rt.database.unit() as s:
        assert signins.find(s, sid) is None
    assert client.get("/sessions").status_code == 401
    # A copy of the old cookie is worth nothing either.
    with client.session_transaction() as cookie:
        cookie["sid"] = sid
    assert client.get("/sessions").status_code == 401


def test_sign_out_without_the_csrf_token_is_refused(client, users):
    sign_in(client, users, "carol")
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/sessions").status_code == 200


def test_an_expired_sign_in_asks_to_sign_in_again(client, users, rt, monkeypatch):
    sign_in(client, users, "carol")
    later = utcnow() + signins.LIFETIME + timedelta(seconds=1)
    monkeypatch.setattr(signins, "utcnow", lambda: later)
    assert client.get("/sessions").status_code == 401


def test_the_repository_list_is_read_again_and_revoked_access_disappears(
    client, users, rt, monkeypatch
):
    seed_installation(rt.database, REPO)
    seed_patch(rt.database)
    sign_in(client, users, "carol")
    assert "Fix the login form" in client.get("/sessions").text

    users.visible["carol"] = []  # an owner removed carol from the repository
    assert "Fix the login form" in client.get("/sessions").text  # still within REFRESH_AFTER
    later = utcnow() + signins.REFRESH_AFTER + timedelta(seconds=1)
    monkeypatch.setattr(signins, "utcnow", lambda: later)

    page = client.get("/sessions")
    assert "Fix the login form" not in page.text
    assert "can't see any repository" in page.text


def test_github_down_at_refresh_keeps_the_last_known_list(client, users, rt, monkeypatch):
    seed_patch(rt.database)
    sign_in(client, users, "carol")
    users.down = True
    later = utcnow() + signins.REFRESH_AFTER + timedelta(seconds=1)
    monkeypatch.setattr(signins, "utcnow", lambda: later)
    assert "Fix the login form" in client.get("/sessions").text


def test_a_revoked_token_ends_the_sign_in_at_the_next_refresh(client, users, monkeypatch):
    sign_in(client, users, "carol")
    users.revoked.add("gho_carol")
    later = utcnow() + signins.REFRESH_AFTER + timedelta(seconds=1)
    monkeypatch.setattr(signins, "utcnow", lambda: later)
    assert client.get("/sessions").status_code == 401


def test_a_sign_in_made_under_another_secret_key_is_dropped_at_refresh(
    rt, client, users, monkeypatch
):
    sign_in(client, users, "carol")
    client.application.config["SECRET_KEY"] = "rotated"  # cookies signed with "test" are void
    assert client.get("/sessions").status_code == 401

    with rt.database.unit() as s:
        row = s.scalars(select(DashboardLogin)).one()
    assert signins.token_of(row, "rotated") is None


# -- visibility --------------------------------------------------------------------------------


def test_a_user_without_access_sees_nothing_of_the_repository(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    session_id, ledger_id = seed_patch(rt.database)
    dead = seed_dead_delivery(rt.database)
    sign_in(client, users, "mallory", repos=[])

    sessions = client.get("/sessions")
    assert sessions.status_code == 200
    assert "Fix the login form" not in sessions.text and REPO not in sessions.text
    assert "can't see any repository" in sessions.text
    review = client.get("/review")
    assert ledger_id not in review.text and "Nothing awaits review" in review.text
    assert dead not in client.get("/deliveries").text
    assert client.get(f"/patches/{ledger_id}").status_code == 404
    assert client.get(f"/sessions/{session_id}").status_code == 404
    assert client.get(f"/stats?repo={REPO}").status_code == 404
    approve = post(client, f"/patches/{ledger_id}/approve", {"comment": "lgtm"})
    assert approve.status_code == 404
    assert post(client, f"/patches/{ledger_id}/reject", {"reason": "no"}).status_code == 404
    assert post(client, f"/deliveries/{dead}/replay").status_code == 404
    assert patch_row(rt.database, ledger_id).state == "awaiting_review"
    with rt.database.unit() as s:
        published = s.scalars(select(Delivery).where(Delivery.event == REFRESH_EVENT))
        assert published.first() is None


def test_a_user_sees_only_the_repositories_they_can_read(client, users, rt):
    seed_installation(rt.database, REPO, OTHER)
    seed_patch(rt.database, title="Visible work", pr_number=2)
    _sid, hidden = seed_patch(rt.database, repo=OTHER, title="Secret work", pr_number=7)
    sign_in(client, users, "carol", repos=[REPO])

    sessions = client.get("/sessions").text
    assert "Visible work" in sessions and "Secret work" not in sessions
    assert OTHER not in sessions  # not even in the repository filter
    assert "Secret work" not in client.get("/review").text
    assert client.get(f"/sessions?repo={OTHER}").text.count("Secret work") == 0
    assert client.get(f"/patches/{hidden}").status_code == 404
    assert "claude" in client.get("/stats").text


def test_repository_names_compare_case_insensitively(client, users, rt):
    seed_patch(rt.database, repo=REPO.lower(), title="Lower-case project id")
    sign_in(client, users, "carol", repos=[REPO])
    assert "Lower-case project id" in client.get("/sessions").text


# -- CSRF -------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    resp = client.post(f"/patches/{ledger_id}/approve", data={"comment": "lgtm"})

    assert resp.status_code == 400
    assert "CSRF token is missing" in resp.text
    forged = client.post(f"/patches/{ledger_id}/approve", data={"csrf_token": "forged"})
    assert forged.status_code == 400
    assert patch_row(rt.database, ledger_id).state == "awaiting_review"


def test_the_setup_form_carries_its_csrf_token(rt, client):
    rt.settings = dataclasses.replace(rt.settings, app_id=None, private_key=None)
    assert "Register a GitHub App" not in client.get("/").text  # not without the setup link
    client.get(f"/?token={rt.setup_token}")
    page = client.get("/")
    assert "Register a GitHub App" in page.text
    assert CSRF_RE.search(page.text)
    assert client.post("/setup/register").status_code == 400


def test_the_bot_api_needs_no_csrf_token(client):
    resp = client.post("/api/v1/sessions", json={})
    assert resp.status_code == 401  # refused for the bearer token, not for CSRF
    assert resp.json["error"]["code"] == "unauthorized"


# -- decisions ----------------------------------------------------------------------------------


def test_a_reader_is_refused_with_the_reason_on_the_page(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "bob")
    sc.serve_permission("bob", "read")

    resp = post(client, f"/patches/{ledger_id}/approve", {"comment": "looks fine"})

    assert resp.status_code == 403
    assert (
        "@bob has <code>read</code> permission; <code>/approve</code> needs "
        "<code>write</code> or more" in resp.text
    )
    assert "looks fine" in resp.text  # the comment is kept for another try
    assert patch_row(rt.database, ledger_id).state == "awaiting_review"
    with rt.database.unit() as s:
        refused = s.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused")).one()
        published = s.scalars(select(Delivery).where(Delivery.event == REFRESH_EVENT)).all()
    assert (refused.actor, refused.source) == ("bob", "dashboard")
    assert published == []


def test_a_writer_approves_and_the_check_run_update_is_queued(client, users, rt, sc, github):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    resp = post(client, f"/patches/{ledger_id}/approve", {"comment": "ship it"})

    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/patches/{ledger_id}"
    page = client.get(f"/patches/{ledger_id}")
    assert "Approved by @carol: the patch is queued." in page.text
    assert "awaiting_review → queued" in page.text
    assert ">Approve</button>" not in page.text and ">Reject</button>" in page.text
    patch = patch_row(rt.database, ledger_id)
    assert patch.state == "queued"
    assert patch.meta["reviewed_by"] == "carol" and patch.meta["review_comment"] == "ship it"
    with rt.database.unit() as s:
        moved = s.scalars(select(AuditEntry).where(AuditEntry.to_state == "queued")).one()
        published = s.scalars(select(Delivery).where(Delivery.event == REFRESH_EVENT)).one()
    assert (moved.actor, moved.source) == ("carol", "dashboard")
    assert published.status == "queued"
    assert json.loads(published.payload)["ledger_id"] == ledger_id
    asked = [urlsplit(c.request.url).path for c in github.rsps.calls]
    assert f"/api/v3{R}/collaborators/carol/permission" in asked


def test_a_writer_rejects_with_a_reason(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    resp = post(client, f"/patches/{ledger_id}/reject", {"reason": "breaks the login"})

    assert resp.status_code == 303
    patch = patch_row(rt.database, ledger_id)
    assert patch.state == "dropped"
    assert patch.meta["review_reason"] == "breaks the login"
    page = client.get(f"/patches/{ledger_id}").text
    assert "Rejected by @carol: the patch is dropped." in page
    assert "nothing left to decide" in page


def test_a_rejection_without_a_reason_is_refused(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")

    resp = post(client, f"/patches/{ledger_id}/reject", {"reason": "   "})

    assert resp.status_code == 400
    assert "A rejection needs a reason." in resp.text
    assert patch_row(rt.database, ledger_id).state == "awaiting_review"


def test_the_author_may_not_approve_their_own_patch(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "agent-bot")
    sc.serve_permission("agent-bot", "write")

    resp = post(client, f"/patches/{ledger_id}/approve")

    assert resp.status_code == 403
    assert "@agent-bot cannot approve their own patch" in resp.text


def test_a_decided_patch_cannot_be_decided_again(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database, state="dropped")
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")
    assert "nothing left to decide" in client.get(f"/patches/{ledger_id}").text

    resp = post(client, f"/patches/{ledger_id}/approve")

    assert resp.status_code == 409
    assert "cannot move from dropped to queued" in resp.text


def test_a_page_left_open_while_someone_else_decided_is_a_conflict(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")
    stale = patch_row(rt.database, ledger_id).version - 1

    resp = post(client, f"/patches/{ledger_id}/approve", {"version": str(stale)})

    assert resp.status_code == 409
    assert "someone else changed it first" in resp.text
    assert patch_row(rt.database, ledger_id).state == "awaiting_review"


def test_a_session_without_an_installation_is_explained(client, users, rt):
    _sid, ledger_id = seed_patch(rt.database, installation_id=None)
    sign_in(client, users, "carol")
    resp = post(client, f"/patches/{ledger_id}/approve")
    assert resp.status_code == 409
    assert "not linked to a GitHub installation" in resp.text


def test_github_failing_during_a_decision_is_a_clear_error(client, users, rt, sc):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    sc.github.add(
        "GET", f"{R}/collaborators/carol/permission", {"message": "Server Error"}, status=500
    )
    resp = post(client, f"/patches/{ledger_id}/approve")
    assert resp.status_code == 502
    assert "GitHub answered 500: Server Error" in resp.text


def test_an_unknown_decision_is_404(client, users, rt):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")
    assert post(client, f"/patches/{ledger_id}/merge").status_code == 404


# -- pages ------------------------------------------------------------------------------------


def test_empty_states(client, users):
    sign_in(client, users, "carol")
    assert "No sessions yet" in client.get("/sessions").text
    assert "Nothing awaits review" in client.get("/review").text
    assert "No dead deliveries" in client.get("/deliveries").text
    assert f"No sessions in {REPO} yet" in client.get("/stats").text
    assert "No sessions match these filters" in client.get("/sessions?state=failed").text


def test_the_sessions_list_shows_state_agent_branch_pr_and_patch_counts(client, users, rt):
    session_id, _ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")

    page = client.get("/sessions").text

    assert '<span class="state active">active</span>' in page
    assert "claude" in page and "minipipe/00002-fix-login" in page
    assert f'href="{WEB}/{REPO}/pull/2">#2</a>' in page
    assert "javascript:" not in page
    assert "1 · " in page and "1 awaiting review</a>" in page
    detail = client.get(f"/sessions/{session_id}").text
    assert "created → active" in detail and "a" * 12 in detail


def test_sessions_filter_by_state_agent_and_repository(client, users, rt):
    seed_patch(rt.database, title="Work by claude", agent="claude", pr_number=2)
    seed_patch(rt.database, title="Work by aider", agent="aider", pr_number=3)
    sign_in(client, users, "carol")

    by_agent = client.get("/sessions?agent=aider").text
    assert "Work by aider" in by_agent and "Work by claude" not in by_agent
    assert "Work by claude" not in client.get("/sessions?state=paused").text
    assert "Work by aider" in client.get(f"/sessions?repo={REPO.upper()}").text


def test_an_unknown_state_filter_is_a_400_page(client, users):
    sign_in(client, users, "carol")
    resp = client.get("/sessions?state=exploded")
    assert resp.status_code == 400
    assert "unknown session state" in resp.text


def test_sessions_are_paged_newest_first_with_the_registrys_cursors(client, users, rt, app):
    app.config["DASHBOARD_PAGE_SIZE"] = 2
    ids = [seed_patch(rt.database, title=f"Session {i}", pr_number=10 + i)[0] for i in range(5)]
    sign_in(client, users, "carol")

    seen: list[str] = []
    path = "/sessions?agent=claude"
    for _ in range(5):
        page = client.get(path).text
        seen += re.findall(r'href="/sessions/([0-9a-z]{26})"', page)
        more = re.search(r'rel="next" href="([^"]+)"', page)
        if more is None:
            break
        path = more.group(1).replace("&amp;", "&")
        assert "agent=claude" in path  # filters carry over
    assert seen == sorted(ids, reverse=True)
    assert "First page" in page


def test_the_review_queue_is_oldest_first_and_paged(client, users, rt, app):
    app.config["DASHBOARD_PAGE_SIZE"] = 2
    ids = [seed_patch(rt.database, title=f"Patch {i}", pr_number=10 + i)[1] for i in range(3)]
    sign_in(client, users, "carol")

    first = client.get("/review").text
    assert re.findall(r'href="/patches/([0-9a-z]{26})"', first) == sorted(ids)[:2]
    assert "touches high-risk paths: src/auth/login.py" in first
    cursor = re.search(r'rel="next" href="([^"]+)"', first).group(1)
    second = client.get(cursor.replace("&amp;", "&")).text
    assert re.findall(r'href="/patches/([0-9a-z]{26})"', second) == sorted(ids)[2:]
    assert 'rel="next"' not in second


def test_a_bad_cursor_is_a_400_page(client, users):
    sign_in(client, users, "carol")
    for path in ("/sessions", "/review", "/deliveries"):
        resp = client.get(f"{path}?cursor=!!not-ours")
        assert resp.status_code == 400, path
        assert "cursor is not one this server gave out" in resp.text


def test_the_patch_page_shows_risk_and_timeline(client, users, rt):
    _sid, ledger_id = seed_patch(rt.database)
    sign_in(client, users, "carol")

    page = client.get(f"/patches/{ledger_id}").text

    assert "touches high-risk paths: src/auth/login.py" in page
    assert "∅ → created" in page and "created → validated" in page
    assert "validated → awaiting_review" in page
    assert 'name="reason" required' in page and ">Approve</button>" in page


def test_stats_draw_an_svg_chart_per_agent(client, users, rt):
    seed_patch(rt.database, agent="claude", pr_number=2)
    seed_patch(rt.database, agent="aider", pr_number=3)
    sign_in(client, users, "carol")

    page = client.get("/stats").text

    assert page.count('<svg class="chart"') == 1  # no decisions yet: one chart
    assert "No patch of these agents has been approved or rejected yet." in page
    assert "<title>aider: 1 active</title>" in page and "<title>claude: 1 active</title>" in page


def test_the_patch_page_shows_each_guardrail_and_its_verdict(client, users, rt, sc):
    """A patch touching AGENTS.md, with a commit a person pushed onto the session branch."""
    sc.serve_commits(commit("c" * 40, user("agent-bot")), commit(sc.sha, user("alice")))
    sc.serve_changes({"filename": "AGENTS.md"})
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    rt.worker().run_once()
    with rt.database.unit() as s:
        ledger_id = s.scalars(select(Patch.ledger_id)).one()
    sign_in(client, users, "carol")

    page = client.get(f"/patches/{ledger_id}").text

    assert 'aria-label="Guardrails"' in page
    assert "Guardrails: <span" in page and ">review</span>" in page
    assert "<code>agents.default.on_protected</code>" in page
    assert "touches protected paths: AGENTS.md" in page
    assert "<code>provenance.foreign_commits</code>" in page
    assert "foreign commits by @alice" in page
    assert "Approvers need <code>maintain</code> or more." in page
    assert "none of them may approve it): @agent-bot, @alice" in page


def test_the_stats_page_shows_each_agents_open_sessions_against_its_limit(
    client, users, rt, github
):
    limits = "agents:\n  default:\n    max_open_sessions: 4\n  aider:\n    max_open_sessions: 1\n"
    policy_url = github.url(f"{R}/contents/.github/minipipe.yml")
    content = base64.b64encode(limits.encode()).decode()
    github.rsps.upsert("GET", policy_url, json={"type": "file", "sha": "b1", "content": content})
    github.allow_token_exchange()
    seed_patch(rt.database, agent="aider", pr_number=2)
    seed_patch(rt.database, agent="claude", pr_number=3)
    sign_in(client, users, "carol")

    page = client.get("/stats").text

    cells = re.findall(
        r'<td data-label="Agent">(.*?)</td>.*?data-label="Open sessions"([^>]*)>(.*?)</td>',
        page,
        re.S,
    )
    shown = {agent: (re.sub(r"<[^>]+>", "", text).strip(), attrs) for agent, attrs, text in cells}
    assert shown["aider"] == (
        "1 of 1 (agents.aider.max_open_sessions)",
        ' class="at-limit"',  # aider holds all it may
    )
    assert shown["claude"] == ("1 of 4 (agents.default.max_open_sessions)", "")


def test_stats_show_what_each_agents_work_cost_per_merged_patch(client, users, rt):
    landed, lid = seed_patch(rt.database, agent="claude", pr_number=2)
    seed_patch(rt.database, agent="aider", pr_number=3, sha="b" * 40)
    with rt.database.unit() as s:
        stats.record_usage(s, landed, tokens_in=1000, tokens_out=200, cost_usd=1.5)
        stats.record_usage(s, landed, cost_usd=0.75, model="other")
        patch = ledger.get_patch(s, lid)
        ledger.transition(s, patch, "queued", actor="carol", source="test", reason="approved")
        ledger.transition(s, patch, "applied", actor="github", source="test", reason="merged")
    sign_in(client, users, "carol")

    page = client.get("/stats").text

    assert "<th>Cost per merged patch</th>" in page
    claude = page.split('<td data-label="Agent">claude</td>', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="Reported cost">$2.25</td>' in claude
    assert '<td data-label="Merged patches">1</td>' in claude
    assert '<td data-label="Cost per merged patch">$2.25</td>' in claude
    aider = page.split('<td data-label="Agent">aider</td>', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="Reported cost">—</td>' in aider
    assert '<td data-label="Cost per merged patch">—</td>' in aider


def test_error_pages_are_html_and_the_api_keeps_json(client, users):
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert "404 · Not Found" in missing.text
    api = client.get("/api/v1/no/such/thing")
    assert api.status_code == 404 and api.json["error"]["code"] == "not_found"
    sign_in(client, users, "carol")
    gone = client.get("/patches/01jzzzzzzzzzzzzzzzzzzzzzzz")
    assert gone.status_code == 404 and "patch 01jzzzzzzzzzzzzzzzzzzzzzzz not found" in gone.text


def test_a_crash_is_a_500_page_without_details(rt):
    app = create_app(runtime_obj=rt, test_config={"TESTING": True, "PROPAGATE_EXCEPTIONS": False})

    def boom() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", view_func=boom)
    app.add_url_rule("/api/v1/boom", endpoint="api_boom", view_func=boom)
    resp = app.test_client().get("/boom")
    assert resp.status_code == 500 and "Something went wrong" in resp.text
    assert "secret internals" not in resp.text
    assert app.test_client().get("/api/v1/boom").json["error"]["code"] == "internal_server_error"


# -- dead deliveries -----------------------------------------------------------------------------


def test_an_admin_replays_a_dead_delivery(client, users, rt, sc):
    dead = seed_dead_delivery(rt.database)
    sign_in(client, users, "alice")
    sc.serve_permission("alice", "admin")
    assert dead in client.get("/deliveries").text

    resp = post(client, f"/deliveries/{dead}/replay")

    assert resp.status_code == 303
    assert "is queued again" in client.get("/deliveries").text
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == dead)).one()
    assert (d.status, d.attempts) == ("queued", 0)


def test_a_maintainer_may_replay_too(client, users, rt, sc):
    dead = seed_dead_delivery(rt.database)
    sign_in(client, users, "mia")
    sc.serve_permission("mia", "maintain")
    assert post(client, f"/deliveries/{dead}/replay").status_code == 303


def test_a_writer_may_not_replay(client, users, rt, sc):
    dead = seed_dead_delivery(rt.database)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    resp = post(client, f"/deliveries/{dead}/replay")

    assert resp.status_code == 403
    assert (
        f"@carol has <code>write</code> permission on {REPO}; replaying a delivery needs "
        "<code>maintain</code> or <code>admin</code>" in resp.text
    )
    with rt.database.unit() as s:
        assert s.scalars(select(Delivery.status).where(Delivery.delivery_id == dead)).one() == (
            "dead"
        )


def test_only_dead_deliveries_are_replayed_here(client, users, rt, sc):
    done = seed_dead_delivery(rt.database, status="done")
    sign_in(client, users, "alice")
    sc.serve_permission("alice", "admin")
    assert done not in client.get("/deliveries").text

    resp = post(client, f"/deliveries/{done}/replay")

    assert resp.status_code == 409
    assert "only dead deliveries are replayed from here" in resp.text


def test_dead_deliveries_are_paged(client, users, rt, app):
    app.config["DASHBOARD_PAGE_SIZE"] = 2
    ids = [seed_dead_delivery(rt.database) for _ in range(3)]
    sign_in(client, users, "carol")
    first = client.get("/deliveries").text
    assert ids[2] in first and ids[1] in first and ids[0] not in first
    cursor = re.search(r'rel="next" href="([^"]+)"', first).group(1)
    assert ids[0] in client.get(cursor.replace("&amp;", "&")).text


# -- pure helpers ---------------------------------------------------------------------------


def test_safe_next_keeps_only_local_paths():
    assert oauth.safe_next("/patches/x?y=1") == "/patches/x?y=1"
    for bad in (None, "", "https://evil.example", "//evil.example", "/\\evil", "javascript:x"):
        assert oauth.safe_next(bad) == "/sessions"


def test_ticks_escape_then_mark_code():
    assert (
        str(dashboard.ticks("<b>@x</b> has `read`"))
        == "&lt;b&gt;@x&lt;/b&gt; has <code>read</code>"
    )


def test_ago_is_short():
    now = utcnow()
    assert dashboard.ago(now, now) == "just now"
    assert dashboard.ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert dashboard.ago(now - timedelta(days=2, hours=3), now) == "2 d ago"
    assert dashboard.ago(None, now) == "—"


def test_stacked_bars_share_one_scale():
    chart = charts.stacked(
        [("claude", {"active": 2, "failed": 2}), ("aider", {"completed": 1}), ("codex", {})],
        charts.SESSION_COLORS,
    )
    claude, aider, codex = chart.rows
    assert [s.key for s in claude.segments] == ["active", "failed"]  # the legend's order
    full = sum(s.width for s in claude.segments)
    assert aider.segments[0].width == pytest.approx(full / 4)
    assert claude.segments[1].x == pytest.approx(claude.segments[0].x + claude.segments[0].width)
    assert codex.total == 0 and codex.segments == ()
    assert not chart.empty and charts.stacked([], charts.SESSION_COLORS).empty


def test_create_app_registers_the_dashboard(app: Flask):
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert {"/auth/github/login", "/auth/github/callback", "/auth/logout"} <= rules
    assert {"/sessions", "/review", "/patches/<ledger_id>", "/deliveries", "/stats"} <= rules
    assert isinstance(app.extensions["minipipe"], Runtime)


def test_the_session_page_shows_every_hold_with_its_holder_and_reason(client, users, rt):
    session_id, _ledger_id = seed_patch(rt.database)
    holds = [
        {"by": "maint", "by_id": 1, "permission": "maintain", "reason": "release freeze"},
        {"by": "tri", "by_id": 2, "permission": "triage", "reason": None},
    ]
    with rt.database.unit() as s:
        session = registry.get_session(s, session_id)
        session.meta = {**session.meta, "holds": holds}
    sign_in(client, users, "carol")
    detail = client.get(f"/sessions/{session_id}").text
    assert "by @maint (maintain): release freeze" in detail
    assert "by @tri (triage): no reason" in detail
