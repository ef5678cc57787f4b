"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The app runs on a loopback port with GITHUB_WEB_URL and GITHUB_API_URL
pointing at a fake GitHub on another (``fake_github_server``). A user signs
in by clicking, finds the patch awaiting review and approves it; another
user, who cannot read the repository, sees nothing of it. Screenshots of
the main pages land in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Browser, Page, expect

from minipipe_gh.delivery.runtime import Runtime
from tests import browser_support
from tests.browser_support import PHONE, shot, sign_in
from tests.fake_github_server import FakeGitHub
from tests.scenario import REPO
from tests.seed import seed_dead_delivery, seed_installation
from tests.seed import seed_web_patch as seed_patch

# the browser suites' fixtures: Chromium, the fake GitHub, the app on its port, a page
browser, fake_github, settings, site, page = (
    browser_support.browser,
    browser_support.fake_github,
    browser_support.settings,
    browser_support.site,
    browser_support.page,
)


def test_a_reviewer_signs_in_and_approves_the_waiting_patch(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str], browser: Browser
) -> None:
    gh, _url = fake_github
    gh.signing_in_as = "carol"
    gh.repos["carol"] = [REPO]
    gh.roles[(REPO, "carol")] = "write"
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Fix the login form", agent="claude", pr_number=2)
    seed_patch(rt.database, title="Tidy the README", agent="aider", pr_number=3, state="dropped")
    seed_dead_delivery(rt.database)

    sign_in(page, site)
    expect(page.get_by_text("@carol")).to_be_visible()
    row = page.locator("tr", has_text="Fix the login form")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("claude")
    expect(row.get_by_role("link", name="#2")).to_have_attribute(
        "href", re.compile(rf"/{re.escape(REPO)}/pull/2$")
    )
    expect(row.get_by_role("link", name="1 awaiting review")).to_be_visible()
    shot(page, "sessions")

    page.get_by_role("link", name="Review queue").click()
    queued = page.locator("tr", has_text="Fix the login form")
    expect(queued).to_contain_text("touches high-risk paths: src/auth/login.py")
    expect(page.locator("tr", has_text="Tidy the README")).to_have_count(0)
    shot(page, "review-queue")

    queued.get_by_role("link", name="Fix the login form").click()
    expect(page.locator("#patch-state")).to_have_text("awaiting_review")
    timeline = page.locator("#timeline tbody tr")
    expect(timeline).to_have_count(3)
    expect(page.locator("#timeline")).not_to_contain_text("awaiting_review → queued")
    shot(page, "patch-before")

    page.get_by_placeholder("Comment (optional)").fill("Checked the auth change by hand.")
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("status")).to_have_text("Approved by @carol: the patch is queued.")
    expect(page.locator("#patch-state")).to_have_text("queued")
    expect(timeline).to_have_count(4)
    last = timeline.last
    expect(last.locator(".move")).to_have_text("awaiting_review → queued")
    expect(last).to_contain_text("carol (dashboard)")
    expect(last).to_contain_text("Checked the auth change by hand.")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Reject")).to_be_visible()  # queued: still open
    shot(page, "patch-after")
    assert "GET /api/v3/repos/Codertocat/Hello-World/collaborators/carol/permission" in (gh.paths())

    # The check run follows through the worker, as after a /approve comment.
    assert [o.status for o in rt.worker().run_once()] == ["done"]
    posted = [b for m, p, b in gh.requests if m == "POST" and p.endswith("/check-runs")]
    assert posted and posted[-1]["conclusion"] == "success"
    assert posted[-1]["head_sha"] == "a" * 40

    page.get_by_role("link", name="Stats").click()
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.locator("table")).to_contain_text("aider")
    shot(page, "stats")

    page.get_by_role("link", name="Dead deliveries").click()
    # carol writes but does not maintain: Replay would refuse her, so it is not offered
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    expect(page.locator("table")).to_contain_text("Replay needs maintain")
    shot(page, "dead-deliveries")

    phone = browser.new_context(
        viewport=PHONE, storage_state=page.context.storage_state(), is_mobile=True
    )
    try:
        small = phone.new_page()
        small.goto(f"{site}/review")
        expect(small.get_by_text("Nothing awaits review")).to_be_visible()
        small.goto(f"{site}/sessions")
        card = small.locator("tr", has_text="Fix the login form")
        expect(card).to_be_visible()
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
        shot(small, "sessions-phone")
        small.get_by_role("link", name="Fix the login form").click()
        small.get_by_role("link", name=re.compile("^a{12}$")).click()
        expect(small.locator("#patch-state")).to_have_text("queued")
        shot(small, "patch-phone")
    finally:
        phone.close()


def test_a_user_who_cannot_read_the_repository_sees_nothing_of_it(
    page: Page, site: str, rt: Runtime, fake_github: tuple[FakeGitHub, str]
) -> None:
    gh, _url = fake_github
    gh.signing_in_as = "mallory"
    gh.repos["mallory"] = []  # GitHub lists no installation repository for her
    seed_installation(rt.database, REPO)
    _sid, ledger_id = seed_patch(rt.database, title="Fix the login form")
    seed_dead_delivery(rt.database)

    sign_in(page, site)
    expect(page.get_by_text("@mallory")).to_be_visible()
    expect(page.get_by_text("can't see any repository")).to_be_visible()
    body: Any = page.locator("body")
    expect(body).not_to_contain_text("Fix the login form")
    expect(body).not_to_contain_text(REPO)
    shot(page, "no-access")

    for path in ("/review", "/deliveries", "/stats"):
        page.goto(f"{site}{path}")
        expect(body).not_to_contain_text("Fix the login form")
        expect(body).not_to_contain_text(REPO)

    response = page.goto(f"{site}/patches/{ledger_id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading")).to_have_text("404 · Not found")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
