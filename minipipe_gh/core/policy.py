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
FOREIGN_COMMITS = ("review", "block", "allow")
PROTECTED_APPROVER = "maintain"  # who may approve a patch that touches protected paths


@dataclass(frozen=True)
class RuleVerdict:
    """One guardrail's verdict on a patch: ``rule`` is the key as the file spells it
    (``agents.aider.allowed_paths``, ``provenance.foreign_commits``), ``verdict`` one of
    ``pass``, ``review``, ``block`` or ``unknown``, ``detail`` the sentence shown."""

    guardrail: str  # protected_paths | allowed_paths | max_changed_files | foreign_commits
    rule: str
    verdict: str
    detail: str

    def as_meta(self) -> dict[str, str]:
        return {
            "guardrail": self.guardrail,
            "rule": self.rule,
            "verdict": self.verdict,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GuardVerdict:
    """What an agent's guardrails say of a patch: ``pass``, ``review`` or ``block``.

    Recorded on the patch as ``metadata["guardrails"]`` (``as_meta``) and read back
    only through ``guard_record``: ``rules`` is each guardrail's verdict, ``lines``
    the same as sentences (check run, dashboard), ``reasons`` what sends the patch to
    review or blocks it, naming files, people and rule. ``people`` is every GitHub
    account that authored or committed one of the patch's commits (each counts as
    an author), ``foreign`` those of them who are not the session's bot, and
    ``foreign_names`` how the check names every foreign identity (git identities
    with no GitHub account included).
    """

    outcome: str
    lines: tuple[str, ...]
    reasons: tuple[str, ...]
    rules: tuple[RuleVerdict, ...] = ()
    people: tuple[tuple[str, int | None], ...] = ()
    foreign: tuple[tuple[str, int | None], ...] = ()
    foreign_names: tuple[str, ...] = ()
    commits_read: bool = False

    @property
    def approve_permission(self) -> str | None:
        """Protected paths under ``review`` ask for ``maintain`` or more of an approver."""
        protected = any(
            r.guardrail == "protected_paths" and r.verdict == "review" for r in self.rules
        )
        return PROTECTED_APPROVER if protected and self.outcome == "review" else None

    @property
    def blocked(self) -> bool:
        return self.outcome == "block"

    def rule_for(self, guardrail: str) -> RuleVerdict | None:
        return next((r for r in self.rules if r.guardrail == guardrail), None)

    def as_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": self.outcome,
            "lines": list(self.lines),
            "reasons": list(self.reasons),
            "rules": [r.as_meta() for r in self.rules],
        }
        if self.commits_read:
            out["commits_read"] = True
            out["people"] = [{"login": login, "id": uid} for login, uid in self.people]
            out["foreign"] = [{"login": login, "id": uid} for login, uid in self.foreign]
            out["foreign_names"] = list(self.foreign_names)
        return out


def guard_record(patch_meta: dict[str, Any]) -> GuardVerdict | None:
    """The guardrail verdict recorded on a patch (``metadata["guardrails"]``), typed;
    ``None`` for a patch recorded before guardrails were judged."""
    raw = patch_meta.get("guardrails")
    if not isinstance(raw, dict) or "verdict" not in raw:
        return None

    def _people(key: str) -> tuple[tuple[str, int | None], ...]:
        out = []
        for p in raw.get(key) or []:
            if isinstance(p, dict) and isinstance(p.get("login"), str):
                out.append((p["login"], p["id"] if isinstance(p.get("id"), int) else None))
        return tuple(out)

    rules = tuple(
        RuleVerdict(
            str(r.get("guardrail", "")),
            str(r.get("rule", "")),
            str(r.get("verdict", "")),
            str(r.get("detail", "")),
        )
        for r in raw.get("rules") or []
        if isinstance(r, dict)
    )
    return GuardVerdict(
        str(raw["verdict"]),
        tuple(raw.get("lines") or ()),
        tuple(raw.get("reasons") or ()),
        rules,
        _people("people"),
        _people("foreign"),
        tuple(raw.get("foreign_names") or ()),
        bool(raw.get("commits_read")),
    )


def blocked_by_guardrails(patch_meta: dict[str, Any]) -> bool:
    """Whether a patch's recorded guardrail verdict (``GuardVerdict.as_meta``) blocks it."""
    return bool((patch_meta.get("guardrails") or {}).get("verdict") == "block")


@dataclass(frozen=True)
class Provenance:
    """Who stands behind a patch's commits, as ``people.commit_provenance`` found them:
    every GitHub account among authors and committers, the foreign ones (not the
    session's bot) and how each foreign identity is named."""

    people: tuple[tuple[str, int | None], ...] = ()
    foreign: tuple[tuple[str, int | None], ...] = ()
    foreign_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Guardrails:
    """What one agent type may touch: ``agents.default`` overridden key by key by its entry,
    with the repository's ``provenance.foreign_commits``."""

    protected_paths: tuple[str, ...] = PROTECTED_PATHS
    on_protected: str = "review"
    allowed_paths: tuple[str, ...] = ()
    max_changed_files: int = 0
    max_open_sessions: int = 0
    foreign_commits: str = "review"
    origin: tuple[tuple[str, str], ...] = ()  # (key, entry that set it), for the messages

    def rule(self, key: str) -> str:
        """The key as the file spells it: ``agents.aider.allowed_paths``."""
        if key == "foreign_commits":
            return "provenance.foreign_commits"
        return f"agents.{dict(self.origin).get(key, 'default')}.{key}"

    def check(self, paths: Sequence[str], provenance: Provenance | None = None) -> GuardVerdict:
        """Each guardrail's verdict on a patch touching ``paths`` whose commits are
        ``provenance`` (``None``: not read, the provenance rule says so and passes)."""
        rules: list[RuleVerdict] = []
        protected = _matching(self.protected_paths, paths)
        rule = self.rule("on_protected")
        if not protected:
            rules.append(RuleVerdict("protected_paths", rule, "pass", "none touched"))
        else:
            touched = ", ".join(protected)
            if self.on_protected == "block":
                why = f"touches protected paths: {touched} ({rule}: block)"
            else:
                why = (
                    f"touches protected paths: {touched} ({rule}: review, "
                    f"only `{PROTECTED_APPROVER}` or more may approve)"
                )
            rules.append(RuleVerdict("protected_paths", rule, self.on_protected, why))
        rule = self.rule("allowed_paths")
        if not self.allowed_paths:
            rules.append(RuleVerdict("allowed_paths", rule, "pass", "no limit"))
        else:
            inside = set(_matching(self.allowed_paths, paths))
            outside = [p for p in paths if p not in inside]
            if outside:
                why = f"outside {rule}: {', '.join(outside)}"
                rules.append(RuleVerdict("allowed_paths", rule, "block", why))
            else:
                why = f"every file is inside {rule}"
                rules.append(RuleVerdict("allowed_paths", rule, "pass", why))
        rule = self.rule("max_changed_files")
        if not self.max_changed_files:
            rules.append(RuleVerdict("max_changed_files", rule, "pass", f"{len(paths)} (no limit)"))
        elif len(paths) > self.max_changed_files:
            why = f"{len(paths)} changed files, over {rule} ({self.max_changed_files})"
            rules.append(RuleVerdict("max_changed_files", rule, "block", why))
        else:
            why = f"{len(paths)} of at most {self.max_changed_files}"
            rules.append(RuleVerdict("max_changed_files", rule, "pass", why))
        rules.append(self._provenance(provenance))
        lines = tuple(_line(r) for r in rules)
        block = tuple(r.detail for r in rules if r.verdict == "block")
        review = tuple(r.detail for r in rules if r.verdict == "review")
        outcome = "block" if block else "review" if review else "pass"
        found = provenance or Provenance()
        return GuardVerdict(
            outcome,
            lines,
            block or review,
            tuple(rules),
            found.people,
            found.foreign if self.foreign_commits != "allow" else (),
            found.foreign_names,
            commits_read=provenance is not None,
        )

    def _provenance(self, provenance: Provenance | None) -> RuleVerdict:
        rule = self.rule("foreign_commits")
        if provenance is None:
            return RuleVerdict("foreign_commits", rule, "unknown", "commits not read")
        if not provenance.foreign_names:
            return RuleVerdict(
                "foreign_commits", rule, "pass", "every commit is the session's bot's"
            )
        names = ", ".join(provenance.foreign_names)
        if self.foreign_commits == "allow":
            why = f"foreign commits by {names} ({rule}: allow)"
            return RuleVerdict("foreign_commits", rule, "pass", why)
        if self.foreign_commits == "block":
            why = f"foreign commits by {names} ({rule}: block)"
            return RuleVerdict("foreign_commits", rule, "block", why)
        why = f"foreign commits by {names} ({rule}: review, never approved by them)"
        return RuleVerdict("foreign_commits", rule, "review", why)


_TITLES = {
    "protected_paths": "protected paths",
    "allowed_paths": "allowed paths",
    "max_changed_files": "changed files",
    "foreign_commits": "provenance",
}


def _line(rule: RuleVerdict) -> str:
    """``protected paths: blocked, touches ...``: the sentence the check run lists."""
    title = _TITLES[rule.guardrail]
    if rule.verdict == "block":
        return f"{title}: blocked, {rule.detail}"
    if rule.verdict == "review":
        return f"{title}: review, {rule.detail}"
    return f"{title}: {rule.detail}"


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
    foreign_commits: str = "review"  # provenance.foreign_commits
    source_sha: str | None = field(default=None, compare=False)
    # the default branch's CODEOWNERS (an ``owners.OwnersFile``), read only when required
    code_owners: Any = field(default=None, compare=False)

    def guardrails(self, agent_type: str | None) -> Guardrails:
        """``agents.default`` (the built-in defaults where it is silent), then the entry
        for ``agent_type`` key by key."""
        entries = dict(self.agents)
        rails = Guardrails(foreign_commits=self.foreign_commits)
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
    "provenance": {"foreign_commits": "foreign_commits"},
}
_AGENT_SCHEMA: dict[str, str] = {
    "protected_paths": "globs",
    "on_protected": "on_protected",
    "allowed_paths": "globs",
    "max_changed_files": "non_negative_int",
    "max_open_sessions": "non_negative_int",
}
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
                why = f"is not a known key of an agent ({', '.join(_AGENT_SCHEMA)})"
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
    if kind == "foreign_commits":
        if data not in FOREIGN_COMMITS:
            raise PolicyError(key, line, f"must be review, block or allow, not {data!r}")
        return data
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
