"""Repository policy from ``.github/minipipe.yml``: parse, validate, assess risk. No I/O.

An invalid file yields ``PolicyError`` naming the key and the line, so the
check run can say exactly what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Policy:
    required_permission: str = "write"
    reviewers: tuple[str, ...] = ()
    reviewer_teams: tuple[str, ...] = ()
    allow_self_approval: bool = False
    dismiss_stale_approvals: bool = True
    required_approvals: int = 1
    hold_permission: str = "triage"
    high_paths: tuple[str, ...] = ("**/auth/**", "**/security/**")
    max_auto_queue_changes: int = 400
    auto_queue_low_risk: bool = True
    required_checks: tuple[str, ...] = ()
    branch_prefix: str = "minipipe/"
    stale_after: timedelta = timedelta(days=7)
    source_sha: str | None = field(default=None, compare=False)

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
    },
    "risk": {
        "high_paths": "globs",
        "max_auto_queue_changes": "non_negative_int",
        "auto_queue_low_risk": "bool",
    },
    "validation": {"required_checks": "strings"},
    "sessions": {"branch_prefix": "prefix", "stale_after": "duration"},
}
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
        if name not in _SCHEMA:
            raise PolicyError(
                name, key_node.start_mark.line + 1, f"is not a known section ({', '.join(_SCHEMA)})"
            )
        if _is_null(section):
            continue
        if not isinstance(section, yaml.MappingNode):
            raise PolicyError(name, section.start_mark.line + 1, "must be a mapping")
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
