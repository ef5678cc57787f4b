"""Repository policy (spec: "Repository policy: `.github/minipipe.yml`"): parse, validate, risk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipipe_gh.core.policy import (
    PATH,
    PERMISSIONS,
    Policy,
    PolicyError,
    parse,
    parse_duration,
    permission_at_least,
)

SPEC_EXAMPLE = """\
review:
  required_permission: write      # read | triage | write | maintain | admin
  reviewers: []                   # logins allowed to decide high-risk patches
  reviewer_teams: []              # "org/team-slug"
  allow_self_approval: false
  dismiss_stale_approvals: true
  required_approvals: 1           # distinct approvers a patch needs
  hold_permission: triage         # who may /hold
risk:
  high_paths: ["**/auth/**", "**/security/**"]   # gitignore-style globs
  max_auto_queue_changes: 400     # larger patches are high risk
  auto_queue_low_risk: true
validation:
  required_checks: []             # check-run names; empty = every check suite on the SHA
sessions:
  branch_prefix: "minipipe/"
  stale_after: "7d"
"""

CUSTOM = """\
review:
  required_permission: maintain
  reviewers: [Alice, bob]
  reviewer_teams: ["acme/core", "acme/security-team"]
  allow_self_approval: true
  dismiss_stale_approvals: false
  required_approvals: 2
  hold_permission: write
risk:
  high_paths:
    - "infra/**"
    - "*.sql"
  max_auto_queue_changes: 50
  auto_queue_low_risk: false
validation:
  required_checks: ["ci/test", "lint"]
sessions:
  branch_prefix: "agents/"
  stale_after: 36h
"""


# --- defaults -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   \n\n", "# only a comment\n"])
def test_missing_or_empty_file_gives_defaults(text: str | None) -> None:
    policy = parse(text, source_sha="abc")
    assert policy == Policy()
    assert policy.source_sha == "abc"


def test_a_file_with_only_a_document_marker_and_comments_gives_defaults() -> None:
    # "---" then everything commented out is an empty YAML document, like an empty file.
    assert parse("---\n# review:\n#   required_approvals: 2\n") == Policy()


def test_defaults_are_the_spec_values() -> None:
    policy = Policy()
    assert policy.required_permission == "write"
    assert policy.reviewers == ()
    assert policy.reviewer_teams == ()
    assert policy.allow_self_approval is False
    assert policy.dismiss_stale_approvals is True
    assert policy.required_approvals == 1
    assert policy.hold_permission == "triage"
    assert policy.high_paths == ("**/auth/**", "**/security/**")
    assert policy.max_auto_queue_changes == 400
    assert policy.auto_queue_low_risk is True
    assert policy.required_checks == ()
    assert policy.branch_prefix == "minipipe/"
    assert policy.stale_after == timedelta(days=7)


def test_the_spec_example_is_the_defaults() -> None:
    assert parse(SPEC_EXAMPLE) == Policy()


def test_every_key_is_read() -> None:
    policy = parse(CUSTOM, source_sha="blob1")
    assert policy.required_permission == "maintain"
    assert policy.reviewers == ("alice", "bob")  # logins compare case-insensitively
    assert policy.reviewer_teams == ("acme/core", "acme/security-team")
    assert policy.allow_self_approval is True
    assert policy.dismiss_stale_approvals is False
    assert policy.required_approvals == 2
    assert policy.hold_permission == "write"
    assert policy.high_paths == ("infra/**", "*.sql")
    assert policy.max_auto_queue_changes == 50
    assert policy.auto_queue_low_risk is False
    assert policy.required_checks == ("ci/test", "lint")
    assert policy.branch_prefix == "agents/"
    assert policy.stale_after == timedelta(hours=36)
    assert policy.source_sha == "blob1"


def test_a_partial_file_keeps_defaults_for_the_rest() -> None:
    policy = parse("review:\n  required_approvals: 3\n")
    assert policy.required_approvals == 3
    assert policy == Policy(required_approvals=3)


def test_an_empty_section_keeps_defaults() -> None:
    assert parse("review:\nrisk: ~\n") == Policy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12))]
    + [("7d", timedelta(days=7)), ("2w", timedelta(weeks=2))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse(f"sessions:\n  stale_after: {text}\n").stale_after == expected


# --- invalid files name the key and the line -------------------------------------


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        # wrong types
        ("review:\n  required_approvals: two\n", "review.required_approvals", 2, "whole number"),
        ("review:\n  required_approvals: 1.5\n", "review.required_approvals", 2, "whole number"),
        ("review:\n  required_approvals: true\n", "review.required_approvals", 2, "whole number"),
        ("review:\n  allow_self_approval: maybe\n", "review.allow_self_approval", 2, "true or"),
        ("review:\n  reviewers: alice\n", "review.reviewers", 2, "list of strings"),
        ("review:\n  reviewers:\n    - 1\n", "review.reviewers", 3, "list of strings"),
        ("risk:\n  max_auto_queue_changes: -1\n", "risk.max_auto_queue_changes", 2, "at least 0"),
        ("risk:\n  high_paths: '**/auth/**'\n", "risk.high_paths", 2, "list of strings"),
        ("risk:\n  auto_queue_low_risk: 1\n", "risk.auto_queue_low_risk", 2, "true or false"),
        ("validation:\n  required_checks: [ci, '']\n", "validation.required_checks", 2, "list"),
        ("sessions:\n  branch_prefix: /abs\n", "sessions.branch_prefix", 2, "prefix"),
        ("review: [1, 2]\n", "review", 1, "mapping"),
        ("- review\n", "(file)", 1, "mapping"),
        # unknown section and unknown key
        ("review:\n  required_approvals: 1\nreveiw:\n  x: 1\n", "reveiw", 3, "known section"),
        ("\n\nrisk:\n  max_changes: 3\n", "risk.max_changes", 4, "known key"),
        # bad permission level
        ("review:\n  required_permission: owner\n", "review.required_permission", 2, "owner"),
        ("review:\n  hold_permission: none\n", "review.hold_permission", 2, "one of"),
        ("review:\n  required_permission: Write\n", "review.required_permission", 2, "one of"),
        # required_approvals 0
        ("review:\n  required_approvals: 0\n", "review.required_approvals", 2, "at least 1"),
        # bad team format
        ("review:\n  reviewer_teams: [core]\n", "review.reviewer_teams", 2, "org/team-slug"),
        ("review:\n  reviewer_teams: ['a/b/c']\n", "review.reviewer_teams", 2, "org/team-slug"),
        # bad duration
        ("sessions:\n  stale_after: 7 days\n", "sessions.stale_after", 2, "duration"),
        ("sessions:\n  stale_after: 7\n", "sessions.stale_after", 2, "duration"),
        ("sessions:\n  stale_after: 3y\n", "sessions.stale_after", 2, "duration"),
    ],
)
def test_invalid_values_name_key_and_line(text: str, key: str, line: int, words: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert err.line == line
    message = str(err)
    assert message.startswith(PATH)
    assert f"line {line}" in message
    assert f"`{key}`" in message
    assert words in message


def test_bad_yaml_syntax_names_the_file_and_line() -> None:
    err = error_of("review:\n  reviewers: [alice\nrisk:\n  max_auto_queue_changes: 3\n")
    assert err.key == "(file)"
    assert isinstance(err.line, int) and err.line >= 2
    assert "not valid YAML" in str(err)
    assert f"line {err.line}" in str(err)


def test_bad_yaml_indentation_is_reported() -> None:
    err = error_of("review:\n  required_approvals: 1\n   hold_permission: write\n")
    assert err.key == "(file)"
    assert err.line == 3
    assert "not valid YAML" in str(err)


def test_wrong_value_type_message_shows_the_value() -> None:
    assert "'two'" in str(error_of("review:\n  required_approvals: two\n"))


def test_the_first_error_wins_and_is_a_value_error() -> None:
    err = error_of("review:\n  required_approvals: 0\n  hold_permission: nobody\n")
    assert err.key == "review.required_approvals"
    assert isinstance(err, ValueError)


# Tags and complex keys are valid YAML but not a valid policy: they must be reported
# as a PolicyError (key and line), not escape as some other exception.
@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("review:\n  required_approvals: !custom 2\n", "review.required_approvals", 2),
        ("review:\n  required_approvals: !!int abc\n", "review.required_approvals", 2),
        ("review:\n  required_approvals: !!int\n", "review.required_approvals", 2),
        ("review:\n  ? [a, b]\n  : 1\n", "review", 2),
    ],
)
def test_odd_but_valid_yaml_is_a_policy_error(text: str, key: str, line: int) -> None:
    err = error_of(text)
    assert err.key.startswith(key)
    assert err.line == line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("review:\n  reviewers:\n", "review.reviewers"),
        (
            "review:\n  required_approvals:\nrisk:\n  auto_queue_low_risk: true\n",
            "review.required_approvals",
        ),
    ],
)
def test_a_key_left_empty_is_a_policy_error(text: str, key: str) -> None:
    # `reviewers: ~` is reported as "must be a list of strings"; a bare `reviewers:`
    # is the same null value and must be reported the same way.
    err = error_of(text)
    assert err.key == key
    assert err.line == 2


yaml_ish = st.text(alphabet="abc:-[]{}!&*?#'\"\n 12.~/", max_size=80)
KEYS = [
    ("review", "required_permission"),
    ("review", "reviewers"),
    ("review", "reviewer_teams"),
    ("review", "allow_self_approval"),
    ("review", "required_approvals"),
    ("risk", "high_paths"),
    ("risk", "max_auto_queue_changes"),
    ("validation", "required_checks"),
    ("sessions", "branch_prefix"),
    ("sessions", "stale_after"),
]


@st.composite
def policy_files(draw: st.DrawFn) -> str:
    """A known section and key with an arbitrary YAML-ish value."""
    section, key = draw(st.sampled_from(KEYS))
    value = draw(
        st.one_of(
            st.text(alphabet="abc:-[]{},!&*?#'\" 12.~/", max_size=20),
            st.sampled_from(["!!int x", "!tag 1", "[!x a]", "{a: 1}", "&a 1", "*a", "? x"]),
        )
    )
    return f"{section}:\n  {key}: {value}\n"


@settings(max_examples=300, deadline=None)
@given(st.one_of(yaml_ish, st.text(max_size=80), policy_files()))
def test_parse_only_ever_raises_policy_error(text: str) -> None:
    try:
        policy = parse(text)
    except PolicyError as err:
        assert str(err).startswith(PATH)
    else:
        assert isinstance(policy, Policy)


# --- risk -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "high"),
    [
        ("auth/x.py", True),
        ("src/auth/x.py", True),
        ("a/b/c/auth/deep/x.py", True),
        ("security/policy.md", True),
        ("pkg/security/keys.py", True),
        ("authors.md", False),
        ("src/authz.py", False),
        ("src/oauth/x.py", False),
        ("docs/auth.md", False),
        ("README.md", False),
    ],
)
def test_default_high_paths(path: str, high: bool) -> None:
    risk, reasons = Policy().assess([path], 1)
    assert risk == ("high" if high else "low")
    if high:
        assert reasons == [f"touches high-risk paths: {path}"]
    else:
        assert reasons == []


def test_low_risk_patch_has_no_reasons() -> None:
    assert Policy().assess(["src/app.py", "README.md"], 400) == ("low", [])


def test_patch_over_max_auto_queue_changes_is_high_with_the_reason() -> None:
    risk, reasons = Policy().assess(["src/app.py"], 401)
    assert risk == "high"
    assert len(reasons) == 1
    assert "401" in reasons[0]
    assert "max_auto_queue_changes" in reasons[0]
    assert "400" in reasons[0]


def test_size_limit_comes_from_the_policy() -> None:
    policy = parse("risk:\n  max_auto_queue_changes: 10\n")
    assert policy.assess(["a.py"], 10) == ("low", [])
    assert policy.assess(["a.py"], 11)[0] == "high"
    zero = parse("risk:\n  max_auto_queue_changes: 0\n")
    assert zero.assess(["a.py"], 0) == ("low", [])
    assert zero.assess(["a.py"], 1)[0] == "high"


def test_both_reasons_are_given() -> None:
    risk, reasons = Policy().assess(["src/auth/login.py"], 1000)
    assert risk == "high"
    assert len(reasons) == 2
    assert any("src/auth/login.py" in r for r in reasons)
    assert any("1000" in r for r in reasons)


def test_many_high_risk_paths_are_summarised() -> None:
    paths = [f"auth/f{i}.py" for i in range(8)]
    risk, reasons = Policy().assess(paths, 1)
    assert risk == "high"
    assert "auth/f0.py" in reasons[0]
    assert "auth/f4.py" in reasons[0]
    assert "auth/f5.py" not in reasons[0]
    assert "and 3 more" in reasons[0]


def test_negation_patterns_follow_gitignore_semantics() -> None:
    policy = parse('risk:\n  high_paths: ["docs/**", "!docs/public/**", "*.sql", "!seed.sql"]\n')
    assert policy.assess(["docs/internal/x.md"], 1)[0] == "high"
    assert policy.assess(["docs/public/x.md"], 1) == ("low", [])
    assert policy.assess(["db/migrate.sql"], 1)[0] == "high"
    assert policy.assess(["seed.sql"], 1) == ("low", [])
    assert policy.assess(["db/seed.sql"], 1) == ("low", [])


def test_later_pattern_wins_over_negation() -> None:
    policy = Policy(high_paths=("docs/**", "!docs/public/**", "docs/public/keys/**"))
    assert policy.assess(["docs/public/keys/a.pem"], 1)[0] == "high"
    assert policy.assess(["docs/public/readme.md"], 1)[0] == "low"


def test_anchored_and_unanchored_patterns() -> None:
    policy = Policy(high_paths=("/infra/", "Makefile"))
    assert policy.assess(["infra/main.tf"], 1)[0] == "high"
    assert policy.assess(["src/infra/main.tf"], 1)[0] == "low"
    assert policy.assess(["Makefile"], 1)[0] == "high"
    assert policy.assess(["sub/Makefile"], 1)[0] == "high"


def test_no_high_paths_means_only_size_matters() -> None:
    policy = parse("risk:\n  high_paths: []\n")
    assert policy.assess(["auth/x.py"], 1) == ("low", [])


# --- permissions ------------------------------------------------------------------


def test_permission_levels_are_ordered() -> None:
    order = ["read", "triage", "write", "maintain", "admin"]
    for i, actual in enumerate(order):
        for j, required in enumerate(order):
            assert permission_at_least(actual, required) is (i >= j), (actual, required)


@pytest.mark.parametrize("actual", [None, "none", "", "owner", "WRITE"])
def test_unknown_or_missing_permission_counts_as_none(actual: str | None) -> None:
    assert permission_at_least(actual, "read") is False
    assert permission_at_least(actual, "none") is True


def test_permission_list_matches_github_levels() -> None:
    assert PERMISSIONS == ("none", "read", "triage", "write", "maintain", "admin")


# --- agents: guardrails ------------------------------------------------------------------


def test_guardrail_defaults_apply_with_no_agents_section() -> None:
    rails = Policy().guardrails("aider")
    assert rails.protected_paths == (
        ".github/workflows/**",
        ".github/minipipe.yml",
        "CODEOWNERS",
        ".github/CODEOWNERS",
        "AGENTS.md",
        "CLAUDE.md",
    )
    assert (rails.on_protected, rails.allowed_paths, rails.max_changed_files) == ("review", (), 0)
    verdict = rails.check(["src/app.py", ".github/workflows/ci.yml"])
    assert verdict.outcome == "review"
    assert verdict.approve_permission == "maintain"
    assert verdict.reasons == (
        "touches protected paths: .github/workflows/ci.yml (agents.default.on_protected: "
        "review, only `maintain` or more may approve)",
    )
    assert Policy().guardrails(None).check(["src/app.py"]).outcome == "pass"


def test_an_agent_type_entry_overrides_default_key_by_key() -> None:
    policy = parse(
        "agents:\n"
        "  default:\n"
        "    on_protected: block\n"
        "    max_changed_files: 5\n"
        "  aider:\n"
        '    allowed_paths: ["src/**", "tests/**"]\n'
        "    max_changed_files: 0\n"
    )
    aider = policy.guardrails("aider")
    assert (aider.on_protected, aider.allowed_paths, aider.max_changed_files) == (
        "block",
        ("src/**", "tests/**"),
        0,
    )
    assert aider.rule("on_protected") == "agents.default.on_protected"
    assert aider.rule("allowed_paths") == "agents.aider.allowed_paths"
    other = policy.guardrails("claude")
    assert (other.on_protected, other.allowed_paths, other.max_changed_files) == ("block", (), 5)
    assert other.protected_paths == Policy().guardrails(None).protected_paths


def test_block_names_every_offending_file_and_the_rule() -> None:
    rails = parse(
        "agents:\n  default:\n    on_protected: block\n"
        '    allowed_paths: ["src/**"]\n    max_changed_files: 2\n'
    ).guardrails("x")
    verdict = rails.check(["src/a.py", "CODEOWNERS", "docs/x.md"])
    assert verdict.outcome == "block"
    assert verdict.approve_permission is None
    assert verdict.reasons == (
        "touches protected paths: CODEOWNERS (agents.default.on_protected: block)",
        "outside agents.default.allowed_paths: CODEOWNERS, docs/x.md",
        "3 changed files, over agents.default.max_changed_files (2)",
    )
    assert len(verdict.lines) == 4
    assert verdict.lines[3] == "provenance: commits not read"


def test_protected_paths_can_be_replaced() -> None:
    rails = parse('agents:\n  default:\n    protected_paths: ["infra/**"]\n').guardrails("x")
    assert rails.check(["CODEOWNERS"]).outcome == "pass"
    assert rails.check(["infra/main.tf"]).outcome == "review"


D = "agents:\n  default:\n"  # the default entry, its keys on line 3


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        (D + "    on_protected: ask\n", "agents.default.on_protected", 3, "review or block"),
        (D + "    allowed_paths: src\n", "agents.default.allowed_paths", 3, "list of strings"),
        (D + "    protected_paths: ['!']\n", "agents.default.protected_paths", 3, "invalid glob"),
        (D + "    max_changed_files: -2\n", "agents.default.max_changed_files", 3, "at least 0"),
        (D + "    protect: []\n", "agents.default.protect", 3, "known key"),
        ("agents:\n  aider:\n    max_open_sessions: many\n", "agents.aider.max_open_sessions",
         3, "at least 0"),
        ("agents:\n  default: [a]\n", "agents.default", 2, "mapping"),
        ("agents: [default]\n", "agents", 1, "mapping"),
        ("\nagents:\n  'two words':\n    on_protected: block\n", "agents", 3, "agent type"),
        ("provenance:\n  foreign_commits: maybe\n", "provenance.foreign_commits", 2,
         "review, block or allow"),
        ("provenance:\n  foreign: review\n", "provenance.foreign", 2, "known key"),
    ],
)  # fmt: skip
def test_invalid_agents_name_key_and_line(text: str, key: str, line: int, words: str) -> None:
    err = error_of(text)
    assert (err.key, err.line) == (key, line)
    assert words in str(err)
