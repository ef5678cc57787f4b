"""What waits, in a real browser (Debian's Chromium via Playwright, as tests/test_browser.py).

A held patch is held in the queue (desktop and phone) and on its page, and
approving it there says it will not land until the hold is lifted; the
sessions list shows each session's state, its open patch's state and what it
waits for, filtered to "waiting on me" (never a reader's); a quarantined patch
names its failing check; the dead-delivery page says what was lost and offers
Replay only to a maintainer; a finished delivery replays only once confirmed on
a page that says what it re-sends. Screenshots land in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from minipipe_gh.core import people
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.store import ledger
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession, Delivery, Patch
from minipipe_gh.store.registry import new_id
from tests import browser_support as browser_suite
from tests.fake_github_server import FakeGitHub
from tests.scenario import REPO
from tests.seed import seed_installation
from tests.seed import seed_web_patch as seed_patch

# the browser suite's fixtures: Chromium, the fake GitHub server, the served app, a page
browser = browser_suite.browser
fake_github = browser_suite.fake_github
settings = browser_suite.settings
site = browser_suite.site
page = browser_suite.page
PHONE, shot, sign_in = browser_suite.PHONE, browser_suite.shot, browser_suite.sign_in

HOLD = Hold(Person("octo-lead", 7), "triage", "wait for the release branch", "2026-12-01T10:00")


def hold(database: Database, session_id: str) -> None:
    with database.unit() as s:
        session = s.get(AgentSession, session_id)
        session.meta = people.with_holds(session.meta, [HOLD])


def move(database: Database, ledger_id: str, *to: str, **meta: Any) -> None:
    with database.unit() as s:
        patch = s.get(Patch, ledger_id)
        for state in to:
            ledger.transition(s, patch, state, actor="github", source="test", reason="seeded")
        patch.meta = {**patch.meta, **meta}


def as_reviewer(gh: FakeGitHub, login: str = "carol", role: str = "write") -> None:
    gh.signing_in_as = login
    gh.repos[login] = [REPO]
    gh.roles[(REPO, login)] = role


def test_a_held_patch_is_held_in_the_queue_and_on_its_page_and_approving_it_says_so(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str], browser: Browser
) -> None:
    gh, _url = fake_github
    as_reviewer(gh)
    seed_installation(rt.database, REPO)
    sid, lid = seed_patch(rt.database, title="Fix the login form", pr_number=2)
    hold(rt.database, sid)

    sign_in(page, site)
    page.get_by_role("link", name="Review queue").click()
    row = page.locator(f"#row-{lid}")
    expect(row.locator(".state.held")).to_have_text("held")
    expect(row).to_contain_text("On hold by @octo-lead: wait for the release branch")
    expect(row).to_contain_text("2 files")
    shot(page, "waits-queue-held")

    phone = browser.new_context(
        viewport=PHONE, storage_state=page.context.storage_state(), is_mobile=True
    )
    try:
        small = phone.new_page()
        small.goto(f"{site}/review")
        expect(small.locator(f"#row-{lid}")).to_contain_text("On hold by @octo-lead")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the queue scrolls sideways on a phone ({width}px)"
        shot(small, "waits-queue-held-phone")
    finally:
        phone.close()

    row.get_by_role("link", name="Fix the login form").click()
    expect(page.locator("#patch-state")).to_contain_text("awaiting_review")
    expect(page.locator("#patch-state .state.held")).to_have_text("held")
    waits = page.locator("#waiting-for")
    expect(waits.locator("li.hold")).to_contain_text("On hold by @octo-lead")
    expect(waits).to_contain_text("Needs 1 approval from a writer")
    shot(page, "waits-patch-held")

    page.get_by_role("button", name="Approve").click()
    flash = page.locator(".ok[role=status], [role=status].ok").first
    expect(flash).to_contain_text("Approved by @carol: the patch is queued.")
    expect(flash).to_contain_text("it will not land until the hold is lifted")
    expect(page.locator("#patch-state")).to_contain_text("queued")
    expect(page.locator("#patch-state .state.held")).to_have_text("held")
    expect(page.locator("#waiting-for > li")).to_have_count(2)
    expect(page.locator("#waiting-for li.hold")).to_be_visible()
    expect(page.locator("#waiting-for li.merge")).to_contain_text("Approved and queued")
    shot(page, "waits-patch-held-approved")

    # approved and queued, but held: it stays in the queue, visibly held, until lifted
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    row = page.locator(f"#row-{lid}")
    expect(row.locator(".state.held")).to_have_text("held")
    expect(row).to_contain_text("On hold by @octo-lead: wait for the release branch")
    expect(row).to_contain_text("Approved and queued")
    shot(page, "waits-queue-held-approved")

    # the check run says the same: still action_required, on hold
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    posted = [b for m, p, b in gh.requests if m in ("POST", "PATCH") and "/check-runs" in p]
    assert posted[-1]["conclusion"] == "action_required"
    assert posted[-1]["output"]["title"] == "On hold by @octo-lead"
    assert "Next: On hold by @octo-lead" in posted[-1]["output"]["summary"]


def test_the_sessions_list_shows_each_state_and_what_it_waits_for(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _url = fake_github
    as_reviewer(gh)
    seed_installation(rt.database, REPO)
    db = rt.database
    _s1, review = seed_patch(db, title="Needs review", pr_number=2, sha="1" * 40)
    s2, held = seed_patch(db, title="Held one", pr_number=3, sha="2" * 40)
    hold(db, s2)
    _s3, failing = seed_patch(db, title="Red CI", pr_number=4, sha="3" * 40, state="created")
    checks = {"verdict": "failure", "failing": ["lint"], "pending": [], "reported": 2}
    move(db, failing, "quarantined", checks={**checks, "required": True})
    _s4, fresh = seed_patch(db, title="No CI yet", pr_number=5, sha="4" * 40, state="created")
    _s5, gone = seed_patch(db, title="Rejected one", pr_number=6, sha="5" * 40)
    move(db, gone, "dropped", review_status="rejected", review_reason="wrong approach")
    _s6, queued = seed_patch(db, title="Queued one", pr_number=7, sha="6" * 40, state="validated")
    move(db, queued, "queued")

    sign_in(page, site)
    cells = {
        "Needs review": ("awaiting_review", "Needs 1 approval from a writer"),
        "Held one": ("held", "On hold by @octo-lead"),
        "Red CI": ("quarantined", "Failing check: lint"),
        "No CI yet": ("created", "no checks reported yet"),
        "Rejected one": ("dropped", "nothing: it has left the gate"),
        "Queued one": ("queued", "lands when the pull request is merged"),
    }
    for title, (state, says) in cells.items():
        row = page.locator("tr", has_text=title)
        expect(row.locator("td[data-label='State']")).to_have_text("active")
        expect(row.locator("td[data-label='Open patch']")).to_contain_text(state)
        expect(row.locator("td[data-label='Waits for']")).to_contain_text(says)
    shot(page, "waits-sessions")

    page.get_by_label("Waiting on me").check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(2)  # approvals anyone may give
    expect(page.locator("tr", has_text="Needs review")).to_contain_text("on you")
    expect(page.locator("tr", has_text="Held one")).to_be_visible()
    expect(page.locator("tr", has_text="Red CI")).to_have_count(0)
    shot(page, "waits-sessions-mine")


def test_a_quarantined_patch_names_its_failing_check(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _url = fake_github
    as_reviewer(gh)
    seed_installation(rt.database, REPO)
    _sid, lid = seed_patch(rt.database, title="Red CI", state="created")
    checks = {"verdict": "failure", "failing": ["lint", "test (3.12)"], "pending": []}
    move(rt.database, lid, "quarantined", checks={**checks, "reported": 3, "required": True})

    sign_in(page, site)
    page.goto(f"{site}/patches/{lid}")
    expect(page.locator("#patch-state")).to_have_text("quarantined")
    expect(page.locator("#waiting-for li.failing_checks")).to_contain_text(
        "Failing checks: lint, test (3.12): fix it and push, or re-run it"
    )
    shot(page, "waits-quarantined")


def test_the_dead_delivery_page_says_what_was_lost_and_who_may_replay_it(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _url = fake_github
    as_reviewer(gh, "mia", "maintain")
    seed_installation(rt.database, REPO)
    body = {
        "action": "created",
        "issue": {"number": 2, "pull_request": {"url": "x"}},
        "comment": {"id": 4242, "body": "Looks right.\n/approve ship it", "user": {"login": "dan"}},
        "sender": {"login": "dan"},
        "repository": {"full_name": REPO},
    }
    with rt.database.unit() as s:
        s.add(
            Delivery(
                delivery_id="lost-1",
                event="issue_comment",
                action="created",
                installation_id=1,
                repository=REPO,
                order_key=f"{REPO}#2",
                payload=json.dumps(body),
                status="dead",
                attempts=3,
                last_error="Traceback (most recent call last):\n  File x\n"
                "github.GithubException.GithubException: 502 Bad Gateway",
                effects=[{"kind": "check_run", "result": "done"}, {"kind": "react"}],
            )
        )

    sign_in(page, site)
    page.get_by_role("link", name="Dead deliveries").click()
    row = page.locator("#delivery-lost-1")
    expect(row.locator(".lost")).to_have_text("@dan's /approve ship it on #2")
    expect(row).to_contain_text("comment created · PR #2 · by @dan")
    expect(row.locator(".error-summary")).to_have_text("GitHub answered 502: Bad Gateway")
    expect(row).to_contain_text("3 attempts")
    expect(row.get_by_role("button", name="Replay")).to_be_visible()
    expect(row).to_contain_text("re-sends a reaction")  # the check run was written already
    shot(page, "waits-dead-deliveries")


def test_waiting_on_me_hides_what_a_reader_cannot_do(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _url = fake_github
    as_reviewer(gh, "bob", "read")
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Needs review", pr_number=2)

    sign_in(page, site)
    row = page.locator("tr", has_text="Needs review")
    expect(row.locator("td[data-label='Waits for']")).to_contain_text(
        "Needs 1 approval from a writer"
    )
    expect(row.locator(".on-me")).to_have_count(0)  # bob reads; an approval needs write

    page.get_by_label("Waiting on me").check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr", has_text="Needs review")).to_have_count(0)
    expect(page.locator("#none-on-me")).to_contain_text("Nothing here waits on you")
    shot(page, "waits-sessions-mine-reader")


def finished_delivery(database: Database) -> str:
    ident = f"done-{new_id()}"
    body = {
        "action": "created",
        "issue": {"number": 2, "pull_request": {"url": "x"}},
        "comment": {"id": 4243, "body": "/approve", "user": {"login": "dan"}},
        "sender": {"login": "dan"},
        "repository": {"full_name": REPO},
    }
    with database.unit() as s:
        s.add(
            Delivery(
                delivery_id=ident,
                event="issue_comment",
                action="created",
                installation_id=1,
                repository=REPO,
                order_key=f"{REPO}#2",
                payload=json.dumps(body),
                status="done",
                attempts=1,
                effects=[
                    {"kind": "check_run", "result": "done"},
                    {"kind": "react", "result": "gave_up"},
                ],
            )
        )
    return ident


def finished_delivery_seen_by(
    rt: Runtime, fake_github: tuple[FakeGitHub, str], login: str, role: str
) -> str:
    """A finished delivery of the repository, and ``login`` with ``role`` on it."""
    gh, _url = fake_github
    as_reviewer(gh, login, role)
    seed_installation(rt.database, REPO)
    return finished_delivery(rt.database)


def test_replaying_a_finished_delivery_asks_to_confirm_and_says_what_it_re_sends(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    done = finished_delivery_seen_by(rt, fake_github, "mia", "maintain")

    sign_in(page, site)
    page.get_by_role("link", name="Dead deliveries").click()
    page.get_by_label("Replay a finished delivery").fill(done)
    page.get_by_role("button", name="Show what it re-sends").click()
    expect(page.locator("h1")).to_contain_text(done)
    expect(page.locator("#delivery-facts .lost")).to_have_text("@dan's /approve on #2")
    expect(page.locator("#delivery-status")).to_have_text("done: it already finished")
    expect(page.locator("#resends")).to_have_text("a reaction")  # the check run was written
    shot(page, "waits-replay-confirm")

    page.get_by_role("button", name="Confirm: replay it").click()
    expect(page.locator(".ok").first).to_contain_text(f"Delivery {done} is queued again")
    with rt.database.unit() as s:
        found = s.scalars(select(Delivery).where(Delivery.delivery_id == done)).one()
        assert (found.status, found.attempts) == ("effects", 0)
    shot(page, "waits-replay-confirmed")


def test_a_reader_sees_what_a_replay_would_re_send_but_no_button(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    done = finished_delivery_seen_by(rt, fake_github, "bob", "read")

    sign_in(page, site)
    page.goto(f"{site}/deliveries/{done}/replay")
    expect(page.locator("#resends")).to_have_text("a reaction")
    expect(page.get_by_role("button", name="Confirm: replay it")).to_have_count(0)
    expect(page.locator("#replay-needs")).to_contain_text("Replay needs maintain or admin")
    shot(page, "waits-replay-reader")
