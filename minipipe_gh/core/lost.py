"""What a dead delivery was, in words: event, PR, actor and command; the error in one line.

Pure: it reads the stored payload text and the worker's last error, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minipipe_gh.core.commands import Command, Problem, parse

EFFECT_WORDS = {
    "check_run": "the check run",
    "publish": "the check run",  # the kind's name before 0.2
    "react": "a reaction",
    "reply": "a reply comment",
    "request_reviewers": "a review request",
    "merge_group_check": "the merge-queue check",
    "neutral_check": "the pass-through check",
}
_EVENTS = {
    "issue_comment": "comment",
    "pull_request": "pull request",
    "pull_request_review": "review",
    "check_run": "check run",
    "check_suite": "check suite",
    "merge_group": "merge group",
}
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception))\s*:\s*")
_GITHUB = re.compile(r"^(?:[\w.]+\.)?(?:GithubException|\w+Exception)\s*:\s*(\d{3})\b\s*(.*)$")


@dataclass(frozen=True)
class Lost:
    event: str  # "comment created", "pull request synchronize"
    pr: int | None
    actor: str | None
    command: str | None  # the first command line of a comment, e.g. "/approve"
    error: str  # one line

    @property
    def sentence(self) -> str:
        who = f"@{self.actor}'s " if self.actor else ""
        what = f"`{self.command}`" if self.command else self.event
        where = f" on #{self.pr}" if self.pr is not None else ""
        return f"{who}{what}{where}"


def describe(event: str, action: str | None, payload: str | None, error: str | None) -> Lost:
    try:
        body: Any = json.loads(payload or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, Mapping) else {}
    pr = _number(body)
    actor = _login(body.get("comment")) or _login(body.get("review")) or _login(body.get("sender"))
    command = None
    if event == "issue_comment":
        found = [c for c in parse(str((body.get("comment") or {}).get("body") or "")) if c]
        command = _command_text(found[0]) if found else None
    words = f"{_EVENTS.get(event, event)}{' ' + action if action else ''}"
    return Lost(words, pr, actor, command, summarise(error))


def summarise(error: str | None) -> str:
    """The last error in a line a reviewer reads: no module paths, no traceback."""
    lines = [x.strip() for x in (error or "").strip().splitlines() if x.strip()]
    if not lines:
        return "no error recorded"
    line = lines[-1]
    github = _GITHUB.match(line)
    if github and "Github" in line:
        rest = github[2].strip().strip("{}").strip()
        return f"GitHub answered {github[1]}" + (f": {rest}" if rest else "")[:200]
    return _EXCEPTION.sub(lambda m: f"{m[1]}: ", line)[:200]


def effects_in_words(kinds: Iterable[str]) -> str:
    words = list(dict.fromkeys(EFFECT_WORDS.get(k, k) for k in kinds))
    return ", ".join(words) if words else "nothing on GitHub (its handler runs again)"


def replay_in_words(handled: bool, unsent: Iterable[str]) -> str:
    """What a replay sends to GitHub: a delivery whose handler ran redoes only its writes
    that have not succeeded (``unsent``, their kinds); one that never got that far runs
    its handler again, which decides its writes afresh."""
    kinds = list(unsent)
    if not handled:
        return "nothing it sent before: its handler runs again and writes what it decides now"
    if kinds:
        return effects_in_words(kinds)
    return "nothing: every GitHub write it made already succeeded, so none is repeated"


def _number(body: Mapping[str, Any]) -> int | None:
    for key in ("pull_request", "issue"):
        value = (body.get(key) or {}).get("number") if isinstance(body.get(key), Mapping) else None
        if isinstance(value, int):
            return value
    runs = (body.get("check_run") or {}).get("pull_requests") if body.get("check_run") else None
    if runs and isinstance(runs[0], Mapping) and isinstance(runs[0].get("number"), int):
        return int(runs[0]["number"])
    return None


def _login(value: Any) -> str | None:
    user = value.get("user") if isinstance(value, Mapping) and "user" in value else value
    login = user.get("login") if isinstance(user, Mapping) else None
    return login if isinstance(login, str) and login else None


def _command_text(found: Command | Problem) -> str:
    if isinstance(found, Command):
        return f"/{found.verb} {found.argument}".strip()[:80]
    return found.text[:80]
