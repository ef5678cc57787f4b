"""Settings: every problem names the setting and says how to fix it; setup mode when unset."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from minipipe_gh.conf import config
from minipipe_gh.core.errors import ConfigError
from minipipe_gh.web import create_app
from tests.github_fake import APP_ID
from tests.support import SECRET


@pytest.fixture
def env(db_url: str, private_key_pem: str) -> dict[str, str]:
    """A complete configuration; tests spoil one setting at a time."""
    return {
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": db_url,
        "SECRET_KEY": "a-shared-secret",
    }


def problem(env: dict[str, str], tmp_path: Path) -> str:
    settings = config.load(env, instance_path=tmp_path)
    with pytest.raises(ConfigError) as err:
        settings.require_app()
    return str(err.value)


def test_a_complete_configuration_passes(env, tmp_path, private_key_pem):
    settings = config.load(env, instance_path=tmp_path)
    settings.require_app()
    assert settings.has_app_credentials
    assert (settings.app_id, settings.private_key) == (APP_ID, private_key_pem.strip())
    assert settings.problems == ()


def test_a_bad_pem_names_github_private_key_and_how_to_fix_it(env, tmp_path):
    env["GITHUB_PRIVATE_KEY"] = "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n"
    message = problem(env, tmp_path)
    assert "GITHUB_PRIVATE_KEY is not a PEM private key" in message
    assert "paste the whole .pem" in message
    assert "not a key" not in message  # the secret itself is never echoed


def test_a_one_line_pem_with_escaped_newlines_is_accepted(env, tmp_path, private_key_pem):
    env["GITHUB_PRIVATE_KEY"] = private_key_pem.strip().replace("\n", "\\n")
    settings = config.load(env, instance_path=tmp_path)
    settings.require_app()
    assert settings.private_key == private_key_pem.strip()


def test_a_key_that_is_not_rsa_is_refused(env, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    env["GITHUB_PRIVATE_KEY"] = pem
    assert "GITHUB_PRIVATE_KEY must be an RSA key" in problem(env, tmp_path)


def test_the_key_is_read_from_github_private_key_path(env, tmp_path, private_key_pem):
    pem_file = tmp_path / "app.pem"
    pem_file.write_text(private_key_pem)
    del env["GITHUB_PRIVATE_KEY"]
    env["GITHUB_PRIVATE_KEY_PATH"] = str(pem_file)
    settings = config.load(env, instance_path=tmp_path)
    settings.require_app()
    assert settings.private_key == private_key_pem


def test_an_unreadable_key_path_names_the_setting_and_the_path(env, tmp_path):
    missing = tmp_path / "nowhere" / "app.pem"
    del env["GITHUB_PRIVATE_KEY"]
    env["GITHUB_PRIVATE_KEY_PATH"] = str(missing)
    message = problem(env, tmp_path)
    assert f"GITHUB_PRIVATE_KEY_PATH ({missing}) cannot be read" in message
    assert "check the path" in message
    # one problem with the key, not a second "is not set" line about it
    assert message.count("PRIVATE_KEY") == 1


def test_a_key_path_to_a_file_that_is_not_a_key(env, tmp_path):
    junk = tmp_path / "app.pem"
    junk.write_text("hello")
    del env["GITHUB_PRIVATE_KEY"]
    env["GITHUB_PRIVATE_KEY_PATH"] = str(junk)
    assert f"GITHUB_PRIVATE_KEY_PATH ({junk}) is not a PEM private key" in problem(env, tmp_path)


def test_a_non_numeric_app_id_is_named(env, tmp_path):
    env["GITHUB_APP_ID"] = "my-app"
    message = problem(env, tmp_path)
    assert "GITHUB_APP_ID must be a number (the App ID), not 'my-app'" in message
    assert message.count("GITHUB_APP_ID") == 1


def test_a_missing_webhook_secret_is_named(env, tmp_path):
    del env["GITHUB_WEBHOOK_SECRET"]
    message = problem(env, tmp_path)
    assert "GITHUB_WEBHOOK_SECRET is not set" in message
    assert "webhook secret from the app's settings page" in message


def test_every_problem_is_reported_at_once(db_url, tmp_path):
    message = problem({"DATABASE_URL": db_url, "MINIPIPE_MAX_ATTEMPTS": "zero"}, tmp_path)
    assert message.startswith("minipipe-gh cannot start:")
    for name in (
        "GITHUB_APP_ID is not set",
        "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is not set",
        "GITHUB_WEBHOOK_SECRET is not set",
        "MINIPIPE_MAX_ATTEMPTS must be a positive whole number, not 'zero'",
    ):
        assert name in message


def test_comma_separated_secrets_are_all_kept_for_rotation(env, tmp_path):
    env["GITHUB_WEBHOOK_SECRET"] = " new-secret , old-secret,, "
    settings = config.load(env, instance_path=tmp_path)
    assert settings.webhook_secrets == ("new-secret", "old-secret")


def test_api_url_defaults_to_github_and_loses_a_trailing_slash(env, tmp_path):
    assert config.load(env, instance_path=tmp_path).api_url == "https://api.github.com"
    env["GITHUB_API_URL"] = "https://ghe.example.com/api/v3/"
    settings = config.load(env, instance_path=tmp_path)
    assert settings.api_url == "https://ghe.example.com/api/v3"
    env["GITHUB_WEB_URL"] = "https://ghe.example.com/"
    assert config.load(env, instance_path=tmp_path).web_url == "https://ghe.example.com"


def test_database_url_defaults_to_sqlite_in_the_instance_folder(tmp_path):
    settings = config.load({}, instance_path=tmp_path / "inst")
    assert settings.database_url == f"sqlite:///{tmp_path / 'inst' / 'minipipe.db'}"


def test_production_refuses_to_start_without_credentials(db_url, tmp_path):
    settings = config.load({"DATABASE_URL": db_url}, instance_path=tmp_path)
    with pytest.raises(ConfigError, match="GITHUB_APP_ID is not set"):
        create_app(settings, production=True)


def test_production_starts_with_full_credentials(env, tmp_path):
    app = create_app(config.load(env, instance_path=tmp_path), production=True)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    app.extensions["minipipe"].database.dispose()


def test_setup_mode_starts_and_offers_to_register_the_app(db_url, tmp_path):
    settings = config.load({"DATABASE_URL": db_url}, instance_path=tmp_path)
    app = create_app(settings, test_config={"TESTING": True})
    client = app.test_client()

    assert "Register a GitHub App" not in client.get("/").text  # only with the setup link
    client.get(f"/?token={app.extensions['minipipe'].setup_token}")
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Setup mode" in html
    assert "Register a GitHub App" in html
    for name in (
        "GITHUB_APP_ID",
        "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
    ):
        assert f"<code>{name}</code>" in html

    hook = client.post("/webhook", data=b"{}", headers={"X-GitHub-Event": "ping"})
    assert hook.status_code == 503
    assert "setup mode" in hook.json["error"]
    app.extensions["minipipe"].database.dispose()


def test_a_malformed_setting_is_a_start_up_error_not_setup_mode(db_url, tmp_path):
    """It was listed on the setup page; a credential present but wrong now stops start-up."""
    settings = config.load({"DATABASE_URL": db_url, "GITHUB_APP_ID": "abc"}, instance_path=tmp_path)
    with pytest.raises(ConfigError) as err:
        create_app(settings, test_config={"TESTING": True})
    assert "GITHUB_APP_ID must be a number (the App ID), not 'abc'" in str(err.value)
    assert "GITHUB_WEBHOOK_SECRET is not set" in str(err.value)


def test_production_needs_a_shared_secret_key(env: dict[str, str], tmp_path: Path) -> None:
    del env["SECRET_KEY"]
    message = problem(env, tmp_path)
    assert "SECRET_KEY is not set" in message and "secrets.token_hex" in message
