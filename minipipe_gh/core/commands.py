"""The command grammar of PR comments: one table, one parser, no I/O.

A command is a line that begins with ``/`` (leading spaces allowed), outside
fenced code blocks and ``>`` quotes; several may stand in one comment; names
are case-insensitive. The parser, the help reply and the README's list all
come from ``COMMANDS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verb(StrEnum):
    APPROVE = "approve"
    APPROVE_CANCEL = "approve cancel"
    REJECT = "reject"
    REVIEW = "review"
    HOLD = "hold"
    HOLD_CANCEL = "hold cancel"
    PAUSE = "pause"
    RESUME = "resume"
    HELP = "minipipe help"


@dataclass(frozen=True)
class Spec:
    verb: Verb
    usage: str
    effect: str
    needs_argument: bool = False  # the argument is required (``/reject <reason>``)
    takes_argument: bool = True


COMMANDS: tuple[Spec, ...] = (
    Spec(Verb.APPROVE, "/approve [comment]", "approve the PR's current patch"),
    Spec(Verb.APPROVE_CANCEL, "/approve cancel", "withdraw your approval", takes_argument=False),
    Spec(
        Verb.REJECT,
        "/reject <reason>",
        "reject the patch; the reason is required",
        needs_argument=True,
    ),
    Spec(Verb.REVIEW, "/review [reason]", "ask for manual review"),
    Spec(Verb.HOLD, "/hold [reason]", "block the merge whatever the approvals"),
    Spec(Verb.HOLD_CANCEL, "/hold cancel", "lift your hold", takes_argument=False),
    Spec(Verb.PAUSE, "/pause", "pause the PR's session", takes_argument=False),
    Spec(Verb.RESUME, "/resume", "resume the PR's session", takes_argument=False),
    Spec(Verb.HELP, "/minipipe help", "reply with this list", takes_argument=False),
)
BY_VERB = {spec.verb: spec for spec in COMMANDS}
# Two-word commands first, so "/approve cancel" is not "/approve" with a comment.
_PHRASES = sorted((str(v) for v in Verb), key=lambda v: -len(v))

COMMAND_LINE = re.compile(r"^[ \t]*/(?P<name>[A-Za-z][\w-]*)(?P<rest>(?:[ \t].*)?)$")
FENCE = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})")


@dataclass(frozen=True)
class Command:
    verb: Verb
    argument: str
    line: int


MAX_COMMANDS = 10  # per comment: more is noise, and each one costs a refusal row and a line
ECHO = 40  # characters of an unknown command's name quoted back


@dataclass(frozen=True)
class Problem:
    """A command line that cannot be carried out as written; ``message`` says why.

    ``noise``: not a command at all (an unknown name, or lines past ``MAX_COMMANDS``).
    Only a user who can read the repository is answered and audited for it.
    """

    text: str
    message: str
    line: int
    noise: bool = False


def _command_lines(body: str) -> list[tuple[int, str]]:
    """Lines that look like commands, skipping fenced code and quotes."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(body.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is not None:
            closing = match and match["fence"][0] == fence[0] and len(match["fence"]) >= len(fence)
            if closing and not line.strip().lstrip(fence[0]).strip():
                fence = None
            continue
        if match:
            fence = match["fence"]
            continue
        if line.lstrip().startswith(">"):
            continue
        if COMMAND_LINE.match(line):
            found.append((number, line.strip()))
    return found


def parse(body: str | None) -> list[Command | Problem]:
    """Every command in a comment, in order, or a ``Problem`` for each one that is wrong.

    At most ``MAX_COMMANDS`` lines are read; one more ``Problem`` says the rest were not.
    """
    results: list[Command | Problem] = []
    lines = _command_lines(body or "")
    for number, line in lines[:MAX_COMMANDS]:
        text = line[1:]
        folded = " ".join(text.split()).lower()
        verb = next((Verb(p) for p in _PHRASES if folded == p or folded.startswith(p + " ")), None)
        if verb is None:
            name = text.split()[0]
            if len(name) > ECHO:
                name = name[:ECHO] + "…"
            results.append(
                Problem(
                    line[:200], f"unknown command `/{name}`: try `/minipipe help`", number, True
                )
            )
            continue
        words = len(str(verb).split())
        argument = " ".join(text.split()[words:]).strip()
        spec = BY_VERB[verb]
        if spec.needs_argument and not argument:
            results.append(
                Problem(line, f"`{spec.usage}` needs an argument: {spec.effect}", number)
            )
        elif not spec.takes_argument and argument:
            results.append(Problem(line, f"`{spec.usage}` takes no argument", number))
        else:
            results.append(Command(verb, argument, number))
    if len(lines) > MAX_COMMANDS:
        number, line = lines[MAX_COMMANDS]
        message = (
            f"only the first {MAX_COMMANDS} commands of a comment are read; "
            f"{len(lines) - MAX_COMMANDS} more were not"
        )
        results.append(Problem(line[:200], message, number, True))
    return results


def help_text() -> str:
    rows = "\n".join(f"| `{s.usage}` | {s.effect} |" for s in COMMANDS)
    return f"| command | effect |\n|---|---|\n{rows}"


if __name__ == "__main__":  # regenerates the README's table
    print(help_text())
