"""The comment-command grammar (spec: "Commands in PR comments"), example by example.

Plus properties: the parser never raises, a fenced command is never a command,
and a comment written from known commands parses back to exactly those verbs.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipipe_gh.core.commands import BY_VERB, COMMANDS, Command, Problem, Verb, help_text, parse

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_command(body: str) -> Command:
    found = parse(body)
    assert len(found) == 1, found
    assert isinstance(found[0], Command), found
    return found[0]


def only_problem(body: str) -> Problem:
    found = parse(body)
    assert len(found) == 1, found
    assert isinstance(found[0], Problem), found
    return found[0]


# --- every row of the command table -----------------------------------------------


@pytest.mark.parametrize(
    ("body", "verb", "argument"),
    [
        ("/approve", Verb.APPROVE, ""),
        ("/approve looks good to me", Verb.APPROVE, "looks good to me"),
        ("/approve cancel", Verb.APPROVE_CANCEL, ""),
        ("/approve cancelled by mistake", Verb.APPROVE, "cancelled by mistake"),
        ("/reject breaks the login flow", Verb.REJECT, "breaks the login flow"),
        ("/review", Verb.REVIEW, ""),
        ("/review touches billing", Verb.REVIEW, "touches billing"),
        ("/hold", Verb.HOLD, ""),
        ("/hold waiting for the release", Verb.HOLD, "waiting for the release"),
        ("/hold cancel", Verb.HOLD_CANCEL, ""),
        ("/pause", Verb.PAUSE, ""),
        ("/resume", Verb.RESUME, ""),
        ("/minipipe help", Verb.HELP, ""),
    ],
)
def test_every_command_of_the_table(body: str, verb: Verb, argument: str) -> None:
    command = only_command(body)
    assert command == Command(verb, argument, 1)


def test_reject_without_reason_is_a_problem_saying_the_reason_is_required() -> None:
    for body in ("/reject", "/reject   ", "/REJECT\t"):
        problem = only_problem(body)
        assert "reason" in problem.message
        assert "required" in problem.message
        assert problem.line == 1
        assert problem.text.lower().startswith("/reject")


def test_argument_whitespace_is_normalised() -> None:
    assert only_command("/approve   LGTM,\t ship it  ").argument == "LGTM, ship it"


def test_two_word_commands_tolerate_extra_spaces() -> None:
    assert only_command("/approve    cancel").verb == Verb.APPROVE_CANCEL
    assert only_command("/hold\tcancel").verb == Verb.HOLD_CANCEL
    assert only_command("/minipipe   help").verb == Verb.HELP


@pytest.mark.parametrize("body", ["/pause now", "/resume please", "/approve cancel now"])
def test_commands_without_arguments_refuse_one(body: str) -> None:
    problem = only_problem(body)
    assert "takes no argument" in problem.message


# --- where a command may stand ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "verb"),
    [
        ("/APPROVE", Verb.APPROVE),
        ("/Approve Cancel", Verb.APPROVE_CANCEL),
        ("/ReJeCt nope", Verb.REJECT),
        ("/HOLD CANCEL", Verb.HOLD_CANCEL),
        ("/Pause", Verb.PAUSE),
        ("/MiniPipe HELP", Verb.HELP),
    ],
)
def test_commands_are_case_insensitive(body: str, verb: Verb) -> None:
    assert only_command(body).verb == verb


def test_arguments_keep_their_case() -> None:
    assert only_command("/REJECT Breaks CI").argument == "Breaks CI"


@pytest.mark.parametrize("indent", [" ", "   ", "\t", "  \t "])
def test_leading_spaces_are_allowed(indent: str) -> None:
    assert only_command(f"{indent}/approve").verb == Verb.APPROVE


def test_several_commands_in_one_comment_in_order_with_line_numbers() -> None:
    body = (
        "Thanks for the patch!\n"
        "\n"
        "/hold until Monday\n"
        "some prose in between\n"
        "  /approve nice work\n"
        "/hold cancel\r\n"
        "/pause\n"
    )
    assert parse(body) == [
        Command(Verb.HOLD, "until Monday", 3),
        Command(Verb.APPROVE, "nice work", 5),
        Command(Verb.HOLD_CANCEL, "", 6),
        Command(Verb.PAUSE, "", 7),
    ]


def test_problems_and_commands_keep_their_order() -> None:
    found = parse("/foo\n/approve\n/reject\n/resume")
    assert [type(x) for x in found] == [Problem, Command, Problem, Command]
    assert [x.line for x in found] == [1, 2, 3, 4]


def test_empty_and_missing_bodies_have_no_commands() -> None:
    assert parse("") == []
    assert parse(None) == []
    assert parse("just a comment, LGTM") == []


@pytest.mark.parametrize(
    "body",
    [
        "```\n/approve\n```",
        "~~~\n/approve\n~~~",
        "```python\n/approve\n```",
        "````\n/approve\n```\n/reject x\n````",  # a shorter fence does not close a longer one
        "~~~~~\n/approve\n~~~\n```\n/pause\n~~~~~",
        "~~~\n/approve\n```\n/pause\n~~~",  # a backtick line does not close a tilde fence
        "```\n/approve",  # unclosed: the rest of the comment is code
        "text\n```\nstill code\n\n/approve\n/reject no\n",
        "   ```\n/approve\n   ```",  # up to three spaces of indentation
        "```\n/approve\n```python\n/pause",  # a fence line with an info string does not close
    ],
)
def test_commands_inside_fenced_code_are_ignored(body: str) -> None:
    assert parse(body) == []


def test_commands_after_a_closed_fence_count() -> None:
    body = "```\n/approve\n```\n/pause\n~~~~\n/hold\n~~~~~\n/resume"
    assert parse(body) == [Command(Verb.PAUSE, "", 4), Command(Verb.RESUME, "", 8)]


def test_a_longer_closing_fence_closes() -> None:
    assert parse("```\n/approve\n``````\n/pause") == [Command(Verb.PAUSE, "", 4)]


@pytest.mark.parametrize(
    "body",
    [
        "> /approve",
        ">/approve",
        "  > /approve",
        "> > /reject nope",
        "> Someone wrote:\n> /approve\n> /pause",
    ],
)
def test_commands_inside_quotes_are_ignored(body: str) -> None:
    assert parse(body) == []


def test_quote_then_command_counts_the_command() -> None:
    assert parse("> please /approve\n\n/approve") == [Command(Verb.APPROVE, "", 3)]


def test_unknown_command_is_a_problem_pointing_at_help() -> None:
    problem = only_problem("/foo bar")
    assert "/foo" in problem.message
    assert "/minipipe help" in problem.message
    assert problem.text == "/foo bar"


def test_minipipe_without_help_is_unknown() -> None:
    assert "/minipipe help" in only_problem("/minipipe").message


@pytest.mark.parametrize(
    "body",
    [
        "/path/to/file",
        "/approve/please",
        "see /src/app.py for details",
        "a /approve",
        "please /approve this",
        "LGTM /approve",
        "//approve",
        "/ approve",
        "/123",
        "/",
        "http://example.com/approve",
    ],
)
def test_things_that_are_not_commands(body: str) -> None:
    assert parse(body) == []


def test_help_text_lists_every_command() -> None:
    text = help_text()
    for spec in COMMANDS:
        assert spec.usage in text
        assert spec.effect in text
    # One table row per command, in the table's order.
    rows = [line for line in text.splitlines() if line.startswith("| `/")]
    assert len(rows) == len(COMMANDS)
    assert [row.split("`")[1] for row in rows] == [spec.usage for spec in COMMANDS]


def test_every_verb_has_exactly_one_table_row() -> None:
    assert {spec.verb for spec in COMMANDS} == set(Verb)
    assert len(COMMANDS) == len(Verb)
    for spec in COMMANDS:
        assert spec.usage.lower().startswith(f"/{spec.verb}")


# --- properties -------------------------------------------------------------------

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Text on one line: no character str.splitlines would split on.
one_line = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=LINE_BREAKS), max_size=40
)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,!?-", min_size=1, max_size=8)
argument_text = st.lists(words, min_size=1, max_size=4).map(" ".join)


def random_case(draw: st.DrawFn, text: str) -> str:
    mask = draw(st.integers(0, 2 ** len(text) - 1))
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(text))


@st.composite
def command_like_line(draw: st.DrawFn) -> str:
    indent = draw(st.sampled_from(["", " ", "  ", "   ", "    ", "\t"]))
    name = draw(
        st.one_of(
            st.sampled_from([str(v) for v in Verb]),
            st.sampled_from(["foo", "approve/x", "path/to/file", "", "minipipe", "123"]),
            words,
        )
    )
    rest = draw(st.one_of(st.just(""), argument_text.map(lambda a: " " + a), one_line))
    return indent + "/" + random_case(draw, name) + rest


@st.composite
def fence_line(draw: st.DrawFn) -> str:
    indent = draw(st.sampled_from(["", " ", "   ", "    "]))
    fence = draw(st.sampled_from("`~")) * draw(st.integers(2, 6))
    info = draw(st.one_of(st.just(""), words, st.just("  ")))
    return indent + fence + info


@st.composite
def markdown_comment(draw: st.DrawFn) -> str:
    lines = draw(
        st.lists(
            st.one_of(
                command_like_line(),
                fence_line(),
                st.builds(lambda s, x: s + x, st.sampled_from([">", "> ", "  >"]), one_line),
                st.just(""),
                one_line,
            ),
            max_size=25,
        )
    )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines)


def assert_well_formed(found: list[Command | Problem], body: str) -> None:
    assert isinstance(found, list)
    numbers = []
    for item in found:
        assert isinstance(item, Command | Problem)
        if isinstance(item, Command):
            assert isinstance(item.verb, Verb)
            assert isinstance(item.argument, str)
            if BY_VERB[item.verb].needs_argument:
                assert item.argument
            if not BY_VERB[item.verb].takes_argument:
                assert item.argument == ""
        else:
            assert item.message
        numbers.append(item.line)
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= max(1, len(body.splitlines())) for n in numbers)


@PROPERTY
@given(st.text())
def test_parse_never_raises_on_any_text(body: str) -> None:
    assert_well_formed(parse(body), body)


@PROPERTY
@given(markdown_comment())
def test_parse_never_raises_on_markdown_like_comments(body: str) -> None:
    assert_well_formed(parse(body), body)


def closes(line: str, char: str, length: int) -> bool:
    """Whether ``line`` would close a fence of ``length`` ``char``s (CommonMark rule)."""
    stripped = line.strip(" \t")
    indent = len(line) - len(line.lstrip(" \t"))
    run = len(stripped) - len(stripped.lstrip(char))
    return indent <= 3 and run >= length and not stripped.lstrip(char).strip() and stripped != ""


@st.composite
def fenced_command(draw: st.DrawFn) -> tuple[str, str]:
    char = draw(st.sampled_from("`~"))
    length = draw(st.integers(3, 8))
    opening = draw(st.sampled_from(["", " ", "  ", "   "])) + char * length
    opening += draw(st.one_of(st.just(""), words, st.just(" python")))
    inside = st.one_of(one_line, command_like_line(), fence_line(), st.just(""))
    before = draw(st.lists(inside, max_size=5))
    after = draw(st.lists(inside, max_size=5))
    indent = draw(st.sampled_from(["", " ", "  "]))
    command = indent + "/" + random_case(draw, str(draw(st.sampled_from(list(Verb)))))
    body_lines = [x for x in [*before, command, *after] if not closes(x, char, length)]
    closed = draw(st.booleans())
    closing = char * draw(st.integers(length, length + 3)) if closed else None
    lines = ["Here is what I ran:", "", opening, *body_lines]
    if closing:
        lines.append(closing)
    return "\n".join(lines), command


@PROPERTY
@given(fenced_command())
def test_a_command_inside_a_fenced_block_is_never_found(case: tuple[str, str]) -> None:
    body, command = case
    assert len(parse(command)) == 1  # on its own, the line is a command (or a Problem)
    assert parse(body) == []


@st.composite
def comment_of_known_commands(draw: st.DrawFn) -> tuple[str, list[Verb], list[str]]:
    specs = draw(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=10))
    lines: list[str] = []
    arguments: list[str] = []
    for spec in specs:
        indent = draw(st.text(alphabet=" \t", max_size=4))
        name = random_case(draw, str(spec.verb)).replace(" ", draw(st.sampled_from([" ", "  "])))
        argument = ""
        if spec.needs_argument or (spec.takes_argument and draw(st.booleans())):
            argument = draw(argument_text.filter(lambda a: a.split()[0].lower() != "cancel"))
        lines.append(f"{indent}/{name}" + (f" {argument}" if argument else ""))
        arguments.append(argument)
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "some prose", "> quoted /approve"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines), [s.verb for s in specs], arguments


@PROPERTY
@given(comment_of_known_commands())
def test_known_commands_parse_back_in_order(case: tuple[str, list[Verb], list[str]]) -> None:
    body, verbs, arguments = case
    found = parse(body)
    assert all(isinstance(x, Command) for x in found), found
    assert [x.verb for x in found] == verbs
    assert [x.argument for x in found] == arguments


def test_at_most_ten_commands_are_read_and_the_rest_are_named_once() -> None:
    items = parse("\n".join("/approve" for _ in range(15)))
    assert items[:10] == [Command(Verb.APPROVE, "", n) for n in range(1, 11)]
    [rest] = items[10:]
    assert isinstance(rest, Problem) and rest.noise
    assert rest.message == "only the first 10 commands of a comment are read; 5 more were not"


def test_an_unknown_command_is_noise_and_quoted_short() -> None:
    problem = only_problem("/" + "q" * 5_000)
    assert problem.noise
    assert "`/" + "q" * 40 + "…`" in problem.message
    assert len(problem.message) < 100 and len(problem.text) <= 200


def test_a_known_command_used_wrongly_is_not_noise() -> None:
    assert not only_problem("/reject").noise
