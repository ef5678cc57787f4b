"""The README's command table comes from the one command table in the code."""

from __future__ import annotations

from pathlib import Path

from minipipe_gh.commands import help_text

README = Path(__file__).resolve().parent.parent / "README.md"


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
