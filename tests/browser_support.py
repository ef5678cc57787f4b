"""The browser tests' side: Debian's Chromium under Playwright, the app on a loopback
port against the fake GitHub on another, a signed-in page, and screenshots."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from minipipe_gh.conf.config import Settings
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.web import create_app
from tests.fake_github_server import FakeGitHub, Served
from tests.fake_github_server import create_app as create_fake_github

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `apt-get install chromium` (.ci/run installs it)"
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def fake_github() -> Iterator[tuple[FakeGitHub, str]]:
    gh = FakeGitHub()
    with Served(create_fake_github(gh)) as served:
        yield gh, served.url


@pytest.fixture
def settings(settings: Settings, fake_github: tuple[FakeGitHub, str]) -> Settings:
    _gh, url = fake_github
    return dataclasses.replace(
        settings,
        api_url=f"{url}/api/v3",
        web_url=url,
        client_id="Iv1.browser",
        client_secret="browser-secret",
    )


@pytest.fixture
def site(rt: Runtime) -> Iterator[str]:
    """The app as gunicorn would serve it, minus gunicorn: a real HTTP server."""
    with Served(create_app(runtime_obj=rt)) as served:
        yield served.url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, site: str) -> None:
    page.goto(f"{site}/")
    page.get_by_role("link", name="Sign in with GitHub").first.click()
    page.wait_for_url(f"{site}/sessions")
