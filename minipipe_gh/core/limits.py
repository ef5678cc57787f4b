"""What GitHub accepts: text lengths, ref names, and Markdown that says only what it shows.

Pure functions, no I/O. Text the app sends to GitHub is cut to GitHub's limits
here, so a long comment or reason can never turn a write into a 422 that no
retry fixes; a branch name from a caller is checked against git's rules before
it goes into an API path; caller text put into a body the app writes cannot
add a marker the app reads back, nor notify anyone.
"""

from __future__ import annotations

import re
from typing import Any

# https://docs.github.com/en/rest/checks/runs (output.summary and output.text: 65,535);
# an issue or PR comment body, and a PR body: 65,536 ("body is too long (maximum is 65536
# characters)"). A check run title has no documented cap: 255 keeps it on one line.
COMMENT_BODY = 65_536
PR_TITLE = 256
CHECK_TITLE = 255
CHECK_SUMMARY = 65_535
CHECK_TEXT = 65_535
CUT = "\n\n… (cut to fit GitHub's limit)"


def fit(text: str, limit: int, *, tail: str = "") -> str:
    """``text`` + ``tail`` in at most ``limit`` characters; the tail (a marker) is kept whole."""
    room = limit - len(tail)
    if room <= 0:
        return tail[:limit]
    if len(text) <= room:
        return text + tail
    cut = CUT if room > len(CUT) * 2 else "…"
    return text[: max(room - len(cut), 0)] + cut + tail


def fit_line(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (a title)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fit_check_run(body: dict[str, Any]) -> dict[str, Any]:
    """A check-run request body whose output fits GitHub's limits (a copy when it changes)."""
    output = body.get("output")
    if not isinstance(output, dict):
        return body
    fitted = dict(output)
    if isinstance(fitted.get("title"), str):
        fitted["title"] = fit_line(fitted["title"], CHECK_TITLE)
    if isinstance(fitted.get("summary"), str):
        fitted["summary"] = fit(fitted["summary"], CHECK_SUMMARY)
    if isinstance(fitted.get("text"), str):
        fitted["text"] = fit(fitted["text"], CHECK_TEXT)
    return body if fitted == output else {**body, "output": fitted}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plain(text: str, limit: int = 200) -> str:
    """Caller text for a Markdown body the app writes: one line, shown as written.

    ``<`` and ``>`` become entities (no HTML comment, so no second marker); a
    zero-width space follows ``@`` and ``#`` (no mention, no cross-reference, as
    Renovate writes them); backticks and other Markdown punctuation are
    backslash-escaped (no link, image or code span).
    """
    line = fit_line(_CONTROL.sub(" ", text), limit)
    out = []
    for ch in line:
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _MARKDOWN:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "@": "@&#8203;", "#": "#&#8203;"}
_MARKDOWN = frozenset("\\`*_{}[]()!|~")

# git check-ref-format: no control characters, space, ~ ^ : ? * [ or backslash anywhere;
# no "..", "@{" or "//"; no component that starts with "." or ends with ".lock"; not "@";
# does not start or end with "/", nor end with ".".
_REF_BAD_CHAR = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
BRANCH_MAX = 255


def branch_problem(name: str) -> str | None:
    """Why ``name`` is not a branch name git would accept (None when it is one)."""
    if not name or len(name) > BRANCH_MAX:
        return f"must be 1-{BRANCH_MAX} characters"
    if _REF_BAD_CHAR.search(name):
        return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if ".." in name or "@{" in name or name == "@":
        return 'must not contain "..", "@{" or be "@"'
    if name.startswith("/") or name.endswith(("/", ".")) or "//" in name:
        return 'must not start or end with "/", contain "//" or end with "."'
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return 'no part of it may start with "." or end with ".lock"'
    return None
