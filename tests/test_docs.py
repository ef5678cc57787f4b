"""The README and docs/ come from the code's own tables where they can, and stand alone.

- the README's command table is the parser's table;
- ``docs/reference.md`` is exactly what ``minipipe_gh.reference`` renders from the code
  (commands, settings, policy keys with defaults, check-run states, app.yml, the CLI);
- the README's example policy is the defaults, and every setting ``config.load`` reads
  is in the settings table;
- they point to no file a user does not have.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from minipipe_gh import reference
from minipipe_gh.conf import config
from minipipe_gh.core import policy
from minipipe_gh.core.commands import help_text

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_readme_command_table_is_the_parser_table() -> None:
    text = README.read_text()
    start = text.index("<!-- commands:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- commands:end -->")
    assert text[start:end].strip() == help_text().strip()


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert ".venv/bin/minipipe-gh run" in text
    assert ".venv/bin/pytest" in text


def test_the_reference_is_what_the_code_says() -> None:
    """Regenerate with ``python -m minipipe_gh.reference --write`` when this fails."""
    assert (ROOT / "docs" / "reference.md").read_text() == reference.render()


def test_every_policy_key_and_check_run_state_is_in_the_reference() -> None:
    text = reference.render()
    for section, keys in policy._SCHEMA.items():
        for key in keys:
            assert f"| `{section}.{key}` |" in text
    from minipipe_gh.core.patch_states import PatchState

    for state in PatchState:
        assert f"| `{state}` |" in text


def test_every_setting_config_reads_is_in_the_settings_table() -> None:
    source = inspect.getsource(config)
    read = set(re.findall(r'env(?:\.get\(|\[)"([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'_int\(env, "([A-Z][A-Z0-9_]+)"', source))
    assert read and read == {name for name, _default, _meaning in config.SETTINGS}


def test_the_readme_example_policy_is_the_defaults() -> None:
    text = README.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed, defaults = policy.parse(block), policy.Policy()
    assert dataclasses.replace(parsed, agents=()) == defaults
    for agent_type in ("unknown", "aider"):  # ``agents:`` as written, applied the same way
        assert parsed.guardrails(agent_type).check(["x"]) == defaults.guardrails(agent_type).check(
            ["x"]
        )
        assert parsed.guardrails(agent_type).protected_paths == (
            defaults.guardrails(agent_type).protected_paths
        )


def test_readme_and_docs_point_to_nothing_a_user_does_not_have() -> None:
    for doc in [README, *DOCS]:
        text = doc.read_text()
        for word in ("SPEC.md", "steering", "../shared", "/work/"):
            assert word not in text, f"{doc.name} mentions {word}"
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_the_readme_lists_every_permission_and_event_of_app_yml() -> None:
    import yaml

    text = README.read_text()
    manifest = yaml.safe_load((ROOT / "app.yml").read_text())
    for event in manifest["default_events"]:
        assert f"`{event}`" in text
    words = {"pull_requests": "pull requests"}
    for permission, access in manifest["default_permissions"].items():
        assert words.get(permission, permission) in text and access in text
