"""The files that travel with the code are found inside the package (a wheel) or beside
it (a checkout); the wheel's build maps the top-level ones in (checked end to end by the
CI's wheel smoke run, ``.ci/smoke_wheel.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minipipe_gh.conf import resources

ROOT = Path(__file__).resolve().parent.parent


def fake_install(tmp_path: Path, *, inside: bool, beside: bool) -> Path:
    package = tmp_path / "site" / "minipipe_gh"
    package.mkdir(parents=True)
    if inside:
        (package / "templates").mkdir()
    if beside:
        (package.parent / "templates").mkdir()
    return package


def test_a_wheel_finds_its_own_copy_first(tmp_path):
    package = fake_install(tmp_path, inside=True, beside=True)
    assert resources.find("templates", package=package) == package / "templates"


def test_a_checkout_finds_the_top_level_folder(tmp_path):
    package = fake_install(tmp_path, inside=False, beside=True)
    assert resources.find("templates", package=package) == package.parent / "templates"


def test_a_broken_install_says_what_is_missing_and_how_to_fix_it(tmp_path):
    package = fake_install(tmp_path, inside=False, beside=False)
    with pytest.raises(FileNotFoundError, match="missing its app.yml .* reinstall the package"):
        resources.find("app.yml", package=package)


def test_this_checkout_resolves_templates_and_the_manifest_at_the_top_level():
    assert resources.find("templates") == ROOT / "templates"
    assert resources.find("app.yml") == ROOT / "app.yml"


def test_the_build_carries_every_top_level_resource_the_code_finds():
    """setup.py copies what ``resources.find`` is asked for; MANIFEST.in keeps it in the sdist."""
    setup_py = (ROOT / "setup.py").read_text()
    manifest_in = (ROOT / "MANIFEST.in").read_text()
    for name in ("templates", "app.yml"):
        assert f'"{name}"' in setup_py
        assert name in manifest_in
