"""Repository policy from ``.github/minipipe.yml``: parse, validate, assess risk. No I/O.

An invalid file yields ``PolicyError`` naming the key and the line, so the
check run can say exactly what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pathspec
import yaml

PATH = ".github/minipipe.yml"
PERMISSIONS = ("none", "read", "triage", "write", "maintain", "admin")


def permission_at_least(actual: str | None, required: str) -> bool:
    """GitHub's levels are ordered; unknown or missing counts as none."""
    rank = {p: i for i, p in enumerate(PERMISSIONS)}
    return rank.get(actual or "none", 0) >= rank[required]


PROTECTED_PATHS = (
    ".github/workflows/**",
    ".github/minipipe.yml",
    "CODEOWNERS",
    ".github/CODEOWNERS",
    "AGENTS.md",
    "CLAUDE.md",
)
ON_PROTECTED = ("review", "block")
PROTECTED_APPROVER = "maintain"  # who may approve a patch that touches protected paths


@dataclass(frozen=True)
class GuardVerdict:
    """What an agent's guardrails say of a patch: ``pass``, ``review`` or ``block``.

    ``lines`` is each guardrail's verdict (for the check run and the audit trail);
    ``reasons`` what sends the patch to review or blocks it, naming files and rule.
    """

    outcome: str
    lines: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def approve_permission(self) -> str | None:
        return PROTECTED_APPROVER if self.outcome == "review" else None

    def as_meta(self) -> dict[str, Any]:
        return {"verdict": self.outcome, "lines": list(self.lines), "reasons": list(self.reasons)}


def blocked_by_guardrails(patch_meta: dict[str, Any]) -> bool:
    """Whether a patch's recorded guardrail verdict (``GuardVerdict.as_meta``) blocks it."""
    return bool((patch_meta.get("guardrails") or {}).get("verdict") == "block")


@dataclass(frozen=True)
class Guardrails:
    """What one agent type may touch: ``agents.default`` overridden key by key by its entry."""

    protected_paths: tuple[str, ...] = PROTECTED_PATHS
    on_protected: str = "review"
    allowed_paths: tuple[str, ...] = ()
    max_changed_files: int = 0
    origin: tuple[tuple[str, str], ...] = ()  # (key, entry that set it), for the messages

    def rule(self, key: str) -> str:
        """The key as the file spells it: ``agents.aider.allowed_paths``."""
        return f"agents.{dict(self.origin).get(key, 'default')}.{key}"

    def check(self, paths: Sequence[str]) -> GuardVerdict:
        lines: list[str] = []
        review: list[str] = []
        block: list[str] = []
        protected = _matching(self.protected_paths, paths)
        if not protected:
            lines.append("protected paths: none touched")
        else:
            touched = ", ".join(protected)
            if self.on_protected == "block":
                why = f"touches protected paths: {touched} ({self.rule('on_protected')}: block)"
                block.append(why)
                lines.append(f"protected paths: blocked, {why}")
            else:
                why = (
                    f"touches protected paths: {touched} ({self.rule('on_protected')}: review, "
                    f"only `{PROTECTED_APPROVER}` or more may approve)"
                )
                review.append(why)
                lines.append(f"protected paths: review, {why}")
        if not self.allowed_paths:
            lines.append("allowed paths: no limit")
        else:
            inside = set(_matching(self.allowed_paths, paths))
            outside = [p for p in paths if p not in inside]
            if outside:
                why = f"outside {self.rule('allowed_paths')}: {', '.join(outside)}"
                block.append(why)
                lines.append(f"allowed paths: blocked, {why}")
            else:
                lines.append(f"allowed paths: every file is inside {self.rule('allowed_paths')}")
        if not self.max_changed_files:
            lines.append(f"changed files: {len(paths)} (no limit)")
        elif len(paths) > self.max_changed_files:
            why = (
                f"{len(paths)} changed files, over {self.rule('max_changed_files')} "
                f"({self.max_changed_files})"
            )
            block.append(why)
            lines.append(f"changed files: blocked, {why}")
        else:
            lines.append(f"changed files: {len(paths)} of at most {self.max_changed_files}")
        outcome = "block" if block else "review" if review else "pass"
        return GuardVerdict(outcome, tuple(lines), tuple(block or review))


def _matching(globs: Sequence[str], paths: Sequence[str]) -> list[str]:
    spec = pathspec.GitIgnoreSpec.from_lines(globs)
    return [p for p in paths if spec.match_file(p)]


@dataclass(frozen=True)
class Policy:
    required_permission: str = "write"
    reviewers: tuple[str, ...] = ()
    reviewer_teams: tuple[str, ...] = ()
    allow_self_approval: bool = False
    dismiss_stale_approvals: bool = True
    required_approvals: int = 1
    hold_permission: str = "triage"
    require_code_owners: bool = False  # every touched path approved by one of its owners
    high_paths: tuple[str, ...] = ("**/auth/**", "**/security/**")
    max_auto_queue_changes: int = 400
    auto_queue_low_risk: bool = True
    required_checks: tuple[str, ...] = ()
    branch_prefix: str = "minipipe/"
    stale_after: timedelta = timedelta(days=7)
    # ``agents:`` as written: (entry, ((key, value), ...)) pairs, applied by ``guardrails``
    agents: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    source_sha: str | None = field(default=None, compare=False)
    # the default branch's CODEOWNERS (an ``owners.OwnersFile``), read only when required
    code_owners: Any = field(default=None, compare=False)

    def guardrails(self, agent_type: str | None) -> Guardrails:
        """``agents.default`` (the built-in defaults where it is silent), then the entry
        for ``agent_type`` key by key."""
        entries = dict(self.agents)
        rails = Guardrails()
        for entry in dict.fromkeys(("default", agent_type or "default")):
            if entry not in entries:
                continue
            keys = dict(entries[entry])
            origin = dict(rails.origin) | {key: entry for key in keys}
            rails = replace(rails, **keys, origin=tuple(origin.items()))
        return rails

    def assess(self, paths: Sequence[str], changes: int) -> tuple[str, list[str]]:
        """Risk of a patch: ``("high", reasons)`` or ``("low", [])``."""
        reasons: list[str] = []
        spec = pathspec.GitIgnoreSpec.from_lines(self.high_paths)
        hits = [p for p in paths if spec.match_file(p)]
        if hits:
            shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
            reasons.append(f"touches high-risk paths: {shown}")
        if changes > self.max_auto_queue_changes:
            reasons.append(
                f"{changes} changed lines, over max_auto_queue_changes "
                f"({self.max_auto_queue_changes})"
            )
        return ("high" if reasons else "low"), reasons


class PolicyError(ValueError):
    def __init__(self, key: str, line: int | None, message: str) -> None:
        self.key = key
        self.line = line
        where = f"line {line}: " if line else ""
        super().__init__(f"{PATH}: {where}`{key}` {message}")


_SCHEMA: dict[str, dict[str, str]] = {
    "review": {
        "required_permission": "permission",
        "reviewers": "logins",
        "reviewer_teams": "teams",
        "allow_self_approval": "bool",
        "dismiss_stale_approvals": "bool",
        "required_approvals": "positive_int",
        "hold_permission": "permission",
        "require_code_owners": "bool",
    },
    "risk": {
        "high_paths": "globs",
        "max_auto_queue_changes": "non_negative_int",
        "auto_queue_low_risk": "bool",
    },
    "validation": {"required_checks": "strings"},
    "sessions": {"branch_prefix": "prefix", "stale_after": "duration"},
}
_AGENT_SCHEMA: dict[str, str] = {
    "protected_paths": "globs",
    "on_protected": "on_protected",
    "allowed_paths": "globs",
    "max_changed_files": "non_negative_int",
}
# Keys of the spec's ``agents:`` this version does not enforce: refused, never ignored.
_NOT_ENFORCED = ("max_open_sessions",)
SECTIONS = (*_SCHEMA, "agents")
DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 12h or 7d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse(text: str | None, *, source_sha: str | None = None) -> Policy:
    """The policy a file says, defaults for what it leaves out; ``PolicyError`` if invalid."""
    if text is None or not text.strip():
        return Policy(source_sha=source_sha)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise PolicyError(
            "(file)",
            mark.line + 1 if mark else None,
            f"is not valid YAML: {getattr(err, 'problem', err)}",
        ) from None
    if root is None or _is_null(root):
        return Policy(source_sha=source_sha)
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError("(file)", root.start_mark.line + 1, "must be a mapping of sections")
    values: dict[str, Any] = {}
    for key_node, section in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise PolicyError(
                "(file)",
                key_node.start_mark.line + 1,
                "has a section name that is not a plain word",
            )
        name = key_node.value
        if name not in SECTIONS:
            known = ", ".join(SECTIONS)
            line = key_node.start_mark.line + 1
            raise PolicyError(name, line, f"is not a known section ({known})")
        if _is_null(section):
            continue
        if not isinstance(section, yaml.MappingNode):
            raise PolicyError(name, section.start_mark.line + 1, "must be a mapping")
        if name == "agents":
            values["agents"] = _agents(section)
            continue
        for sub_key, node in section.value:
            if not isinstance(sub_key, yaml.ScalarNode):
                raise PolicyError(
                    name, sub_key.start_mark.line + 1, "has a key that is not a plain word"
                )
            key = f"{name}.{sub_key.value}"
            kind = _SCHEMA[name].get(sub_key.value)
            if kind is None:
                raise PolicyError(
                    key, sub_key.start_mark.line + 1, f"is not a known key of `{name}`"
                )
            values[sub_key.value] = _value(key, kind, node)
    return Policy(**values, source_sha=source_sha)


def _agents(section: yaml.MappingNode) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """``agents:``: an entry per agent type (``default`` for all), each a mapping of keys."""
    entries: dict[str, tuple[tuple[str, Any], ...]] = {}
    for name_node, entry in section.value:
        line = name_node.start_mark.line + 1
        if not isinstance(name_node, yaml.ScalarNode) or not re.fullmatch(
            r"[\w.-]+", name_node.value
        ):
            raise PolicyError("agents", line, "has an entry that is not an agent type name")
        agent = name_node.value
        if _is_null(entry):
            entries[agent] = ()
            continue
        if not isinstance(entry, yaml.MappingNode):
            raise PolicyError(f"agents.{agent}", entry.start_mark.line + 1, "must be a mapping")
        keys: dict[str, Any] = {}
        for sub_key, node in entry.value:
            if not isinstance(sub_key, yaml.ScalarNode):
                raise PolicyError(
                    f"agents.{agent}",
                    sub_key.start_mark.line + 1,
                    "has a key that is not a plain word",
                )
            key = f"agents.{agent}.{sub_key.value}"
            kind = _AGENT_SCHEMA.get(sub_key.value)
            if kind is None:
                why = (
                    "is not enforced by this version of minipipe-gh; remove it"
                    if sub_key.value in _NOT_ENFORCED
                    else f"is not a known key of an agent ({', '.join(_AGENT_SCHEMA)})"
                )
                raise PolicyError(key, sub_key.start_mark.line + 1, why)
            keys[sub_key.value] = _value(key, kind, node)
        entries[agent] = tuple(keys.items())
    return tuple(entries.items())


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and (
        node.tag == "tag:yaml.org,2002:null"
        or (node.value in ("", "~", "null") and node.style is None)
    )


def _value(key: str, kind: str, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    try:
        data = yaml.safe_load(yaml.serialize(node))
    except (yaml.YAMLError, ValueError, TypeError, IndexError, OverflowError) as err:
        raise PolicyError(key, line, f"is not a plain YAML value: {err}") from None
    if kind == "bool":
        if not isinstance(data, bool):
            raise PolicyError(key, line, f"must be true or false, not {data!r}")
        return data
    if kind in ("positive_int", "non_negative_int"):
        low = 1 if kind == "positive_int" else 0
        if not isinstance(data, int) or isinstance(data, bool) or data < low:
            raise PolicyError(key, line, f"must be a whole number of at least {low}, not {data!r}")
        return data
    if kind == "permission":
        if data not in PERMISSIONS[1:]:
            raise PolicyError(
                key, line, f"must be one of {', '.join(PERMISSIONS[1:])}, not {data!r}"
            )
        return data
    if kind in ("logins", "teams", "globs", "strings"):
        if not isinstance(data, list) or not all(isinstance(x, str) and x for x in data):
            raise PolicyError(key, line, "must be a list of strings")
        if kind == "teams" and not all(re.fullmatch(r"[\w.-]+/[\w.-]+", t) for t in data):
            raise PolicyError(key, line, 'entries must be "org/team-slug"')
        if kind == "globs":
            try:
                pathspec.GitIgnoreSpec.from_lines(data)
            except Exception as err:  # pathspec raises several types for bad patterns
                raise PolicyError(key, line, f"has an invalid glob: {err}") from None
        if kind == "logins":
            return tuple(x.lower() for x in data)
        return tuple(data)
    if kind == "on_protected":
        if data not in ON_PROTECTED:
            raise PolicyError(key, line, f"must be review or block, not {data!r}")
        return data
    if kind == "prefix":
        if not isinstance(data, str) or not data or " " in data or data.startswith("/"):
            raise PolicyError(key, line, 'must be a branch name prefix such as "minipipe/"')
        return data
    if kind == "duration":
        try:
            return parse_duration(str(data))
        except ValueError as err:
            raise PolicyError(key, line, f"must be a duration: {err}") from None
    raise AssertionError(kind)
