"""Attacks on the first-run setup routes (``/setup/register``, ``/setup/callback``).

A fresh instance must be reachable from the internet for webhooks, so anybody can open
it. The routes that write the app's credentials exist only while it has none, never
overwrite existing ones, and answer only a browser that opened the one-time setup link
``minipipe-gh run`` printed (as Jupyter's token does).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from dotenv import dotenv_values

from minipipe_gh.conf import config
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.web import create_app
from tests.github_fake import API, FakeGitHub

CONVERSION = f"{API}/app-manifests/c0de/conversions"
NO_CSRF = {"TESTING": True, "WTF_CSRF_ENABLED": False}


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return tmp_path / ".env"


@pytest.fixture
def setup_rt(db_url: str, tmp_path: Path, env_file: Path) -> Iterator[Runtime]:
    """An instance with no credentials at all: setup mode."""
    settings = config.load(
        {"DATABASE_URL": db_url, "GITHUB_API_URL": API, "SECRET_KEY": "k"},
        instance_path=tmp_path / "instance",
        env_file=env_file,
    )
    rt = Runtime.build(settings)
    yield rt
    rt.database.dispose()


@pytest.fixture
def gh(github: FakeGitHub, private_key_pem: str) -> responses.RequestsMock:
    """The suite's GitHub, converting the manifest code ``c0de`` into an attacker's app."""
    url = github.serve_manifest_conversion(
        "c0de",
        {
            "id": 4242,
            "pem": private_key_pem,
            "webhook_secret": "attacker-secret",
            "client_id": "Iv1.attacker",
            "client_secret": "attacker-client-secret",
            "html_url": "https://github.com/apps/attacker",
        },
    )
    assert url == CONVERSION
    return github.rsps


def start_registration(client: Any) -> str:
    """POST the register form; return the ``state`` GitHub would carry back."""
    form = client.post("/setup/register")
    assert form.status_code == 200, form.text
    action = form.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return parse_qs(urlparse(action).query)["state"][0]


def conversions(rsps: responses.RequestsMock) -> list[str]:
    return [c.request.url for c in rsps.calls if "/app-manifests/" in c.request.url]


def test_attack_takeover_of_a_configured_app_through_register_and_callback(
    rt: Runtime, env_file: Path, gh: responses.RequestsMock
) -> None:
    """Anyone who can reach a configured app must not register their own app into it."""
    env_file.write_text("GITHUB_APP_ID=29310\n")
    env_file.chmod(0o600)
    rt.settings = dataclasses.replace(rt.settings, env_file=env_file)
    before = (rt.settings.app_id, rt.settings.webhook_secrets)
    client = create_app(runtime_obj=rt, test_config=NO_CSRF).test_client()

    assert client.post("/setup/register").status_code == 404
    with client.session_transaction() as sess:  # even with a state planted in the cookie
        sess["setup_state"] = "s"
        sess["setup_ok"] = True
    assert client.get("/setup/callback?code=c0de&state=s").status_code == 404
    assert conversions(gh) == []
    assert env_file.read_text() == "GITHUB_APP_ID=29310\n"
    assert (rt.settings.app_id, rt.settings.webhook_secrets) == before


def test_attack_first_visitor_without_the_setup_token_registers_an_app(
    setup_rt: Runtime, env_file: Path, gh: responses.RequestsMock
) -> None:
    """On a fresh, internet-reachable instance the first visitor must not win."""
    client = create_app(runtime_obj=setup_rt, test_config=NO_CSRF).test_client()

    home = client.get("/")
    assert home.status_code == 200
    assert "Register a GitHub App" not in home.text
    assert "minipipe-gh run" in home.text and "setup link" in home.text

    assert client.post("/setup/register").status_code == 403
    assert client.get("/?token=guessed").status_code == 403
    assert client.post("/setup/register").status_code == 403
    with client.session_transaction() as sess:
        sess["setup_state"] = "s"
    assert client.get("/setup/callback?code=c0de&state=s").status_code == 403
    assert conversions(gh) == []
    assert not env_file.exists()
    assert not setup_rt.settings.has_app_credentials


def test_the_setup_token_link_lets_the_operator_register(
    setup_rt: Runtime, env_file: Path, gh: responses.RequestsMock
) -> None:
    client = create_app(runtime_obj=setup_rt, test_config=NO_CSRF).test_client()
    opened = client.get(f"/?token={setup_rt.setup_token}")
    assert opened.status_code == 302 and opened.headers["Location"] == "/"  # token off the URL
    assert "Register a GitHub App" in client.get("/").text

    state = start_registration(client)
    done = client.get(f"/setup/callback?code=c0de&state={state}")
    assert done.status_code == 302
    assert done.headers["Location"] == "https://github.com/apps/attacker/installations/new"
    assert conversions(gh) == [CONVERSION]
    written = dotenv_values(env_file)
    assert written["GITHUB_APP_ID"] == "4242"
    assert written["GITHUB_WEBHOOK_SECRET"] == "attacker-secret"
    assert setup_rt.settings.app_id == 4242
    # configured now: the routes are gone, and the token is spent
    assert client.post("/setup/register").status_code == 404


def test_attack_second_registration_overwrites_the_credentials_in_env(
    setup_rt: Runtime, env_file: Path, gh: responses.RequestsMock
) -> None:
    """A second registration (another tab, another process) must not replace the first."""
    client = create_app(runtime_obj=setup_rt, test_config=NO_CSRF).test_client()
    client.get(f"/?token={setup_rt.setup_token}")
    state = start_registration(client)
    env_file.write_text("GITHUB_APP_ID=1\nGITHUB_WEBHOOK_SECRET=first\n")

    refused = client.get(f"/setup/callback?code=c0de&state={state}")
    assert refused.status_code == 409
    assert "already" in refused.text
    assert conversions(gh) == []
    assert env_file.read_text() == "GITHUB_APP_ID=1\nGITHUB_WEBHOOK_SECRET=first\n"


@pytest.mark.parametrize(
    "code", ["../../user/repos?x=", "c0de/../../../orgs/o/hooks", "c0de%2F..", "a b", ""]
)
def test_attack_code_that_rewrites_the_conversion_url(
    setup_rt: Runtime, env_file: Path, gh: responses.RequestsMock, code: str
) -> None:
    client = create_app(runtime_obj=setup_rt, test_config=NO_CSRF).test_client()
    client.get(f"/?token={setup_rt.setup_token}")
    state = start_registration(client)
    resp = client.get("/setup/callback", query_string={"code": code, "state": state})
    assert resp.status_code == 400
    assert list(gh.calls) == []
    assert not env_file.exists()


def test_attack_world_readable_env_file_gets_the_private_key(
    setup_rt: Runtime, env_file: Path, gh: responses.RequestsMock
) -> None:
    """A ``.env`` created 0644 by an editor must not keep that mode with a private key in it."""
    env_file.write_text("PUBLIC_URL=https://example.test\n")
    env_file.chmod(0o644)
    client = create_app(runtime_obj=setup_rt, test_config=NO_CSRF).test_client()
    client.get(f"/?token={setup_rt.setup_token}")
    state = start_registration(client)
    assert client.get(f"/setup/callback?code=c0de&state={state}").status_code == 302
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    assert dotenv_values(env_file)["PUBLIC_URL"] == "https://example.test"
    assert dotenv_values(env_file)["GITHUB_APP_ID"] == "4242"
