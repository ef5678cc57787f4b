"""Code owners: which owners each touched path needs, and which approvals cover it. No I/O.

The format is GitHub's CODEOWNERS, parsed by the ``codeowners`` package (a port
of hmarr/codeowners: GitHub's precedence, the last matching pattern wins). The
package skips what it cannot read; this wrapper refuses it instead, with its
line, as GitHub's own CODEOWNERS errors do, so a typo never silently drops an
owner. Owners are ``@login`` and ``@org/team``; email owners cannot be matched
to a GitHub account here, so they are noted as unsupported and own nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codeowners import CodeOwners, path_to_regex

from minipipe_gh.core import people

# Where GitHub looks, in its order: the first that exists is the file.
LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")
META = "code_owners"  # the patch metadata key: the owners of each touched path
_USER = re.compile(r"^@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_TEAM = re.compile(r"^@[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MASK = "\x00"


class CodeOwnersError(ValueError):
    """What is wrong with a CODEOWNERS file, and where (reported like an invalid policy)."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}: line {line}: {message}")


@dataclass(frozen=True)
class Owned:
    """The rule that owns one path: its owners (lower case), email owners, line."""

    owners: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class OwnersFile:
    path: str
    sha: str | None
    parsed: CodeOwners = field(compare=False, repr=False)

    def owner_of(self, path: str) -> Owned:
        """GitHub's rule: the last matching line decides; a line with no owners owns it
        for nobody."""
        found, line, _pattern, _section = self.parsed.matching_line(path)
        owners = tuple(dict.fromkeys(o.lower() for kind, o in found if kind != "EMAIL"))
        emails = tuple(o for kind, o in found if kind == "EMAIL")
        return Owned(owners, emails, line)


def parse(text: str, *, path: str = LOCATIONS[0], sha: str | None = None) -> OwnersFile:
    """The file, or ``CodeOwnersError`` naming the first line GitHub would refuse."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.replace("\\ ", _MASK).split()
        pattern = tokens[0].replace(_MASK, "\\ ")
        if pattern.startswith("!"):
            raise CodeOwnersError(path, number, f"`{pattern}`: negated patterns are not supported")
        if re.search(r"(?<!\\)\[", pattern):
            raise CodeOwnersError(
                path, number, f"`{pattern}`: character ranges ([ ]) are not supported"
            )
        try:
            path_to_regex(pattern)
        except (ValueError, re.error) as err:
            why = f"`{pattern}` is not a valid pattern: {err}"
            raise CodeOwnersError(path, number, why) from None
        for owner in tokens[1:]:
            if owner.startswith("#"):
                break  # a trailing comment
            if not (_USER.match(owner) or _TEAM.match(owner) or _EMAIL.match(owner)):
                raise CodeOwnersError(
                    path, number, f"`{owner}` is not an owner (@login, @org/team or an email)"
                )
    # the package would read a trailing comment's words as owners: drop them first
    cleaned = "\n".join(_strip_comment(raw) for raw in text.splitlines())
    return OwnersFile(path, sha, CodeOwners(cleaned))


def _strip_comment(raw: str) -> str:
    tokens = raw.split()
    if not tokens or tokens[0].startswith("#"):
        return raw
    for i, token in enumerate(tokens[1:], start=1):
        if token.startswith("#"):
            return " ".join(tokens[:i])
    return raw


def assign(file: OwnersFile | None, paths: Sequence[str]) -> dict[str, Any]:
    """What a patch records (``patch.meta[META]``): the owners of each touched path,
    from the default branch's file when the patch was recorded."""
    out: dict[str, Any] = {
        "file": file.path if file else None,
        "sha": file.sha if file else None,
        "paths": {},
        "emails": {},
    }
    for path in paths:
        owned = file.owner_of(path) if file else Owned()
        out["paths"][path] = list(owned.owners)
        if owned.emails:
            out["emails"][path] = list(owned.emails)
    return out


def identities(login: str, teams: Iterable[str]) -> tuple[str, ...]:
    """The owners someone stands for: ``@login`` and ``@org/team`` of each team they are in."""
    return tuple(dict.fromkeys([f"@{login.lower()}", *(f"@{t.lower()}" for t in teams)]))


def teams_of(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``org/team`` owners of a patch's paths: whose membership an approval needs."""
    recorded = (meta.get(META) or {}).get("paths") or {}
    owners = {o for found in recorded.values() for o in found}
    return tuple(sorted(o[1:] for o in owners if "/" in o))


# -- coverage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """Paths that wait for the same owners: any one of ``owners`` covers them all."""

    owners: tuple[str, ...]
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Coverage:
    """Which touched paths the approvals cover, which wait (grouped by owner set), and
    which no supported owner owns."""

    covered: tuple[tuple[str, str], ...] = ()  # (path, approver login)
    waiting: tuple[Waiting, ...] = ()
    unowned: tuple[str, ...] = ()
    emails: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (path, email owners ignored)
    file: str | None = None

    @property
    def complete(self) -> bool:
        return not self.waiting

    @property
    def waiting_paths(self) -> tuple[str, ...]:
        return tuple(p for group in self.waiting for p in group.paths)


def coverage(
    owners_of: Mapping[str, Sequence[str]],
    approvals: Sequence[tuple[str, Collection[str]]],
    *,
    emails: Mapping[str, Sequence[str]] | None = None,
    file: str | None = None,
) -> Coverage:
    """Pure: ``owners_of`` maps each touched path to its owners; ``approvals`` is each
    approver's login and the owners they stand for (``identities``). A path is covered
    by the first approver who is one of its owners; a path with no owner needs none."""
    covered: list[tuple[str, str]] = []
    groups: dict[tuple[str, ...], list[str]] = {}
    unowned: list[str] = []
    for path, owners in owners_of.items():
        if not owners:
            unowned.append(path)
            continue
        wanted = {o.lower() for o in owners}
        by = next((login for login, ids in approvals if wanted & {i.lower() for i in ids}), None)
        if by is not None:
            covered.append((path, by))
        else:
            groups.setdefault(tuple(owners), []).append(path)
    return Coverage(
        covered=tuple(covered),
        waiting=tuple(Waiting(o, tuple(p)) for o, p in groups.items()),
        unowned=tuple(unowned),
        emails=tuple((p, tuple(e)) for p, e in (emails or {}).items()),
        file=file,
    )


def patch_coverage(meta: Mapping[str, Any]) -> Coverage | None:
    """The coverage of a patch from its metadata (its owners and its approvals), or None
    when the patch was recorded without ``review.require_code_owners``."""
    recorded = meta.get(META)
    if not isinstance(recorded, Mapping):
        return None
    approvals = [(a.who.login, a.owners) for a in people.approvals(meta)]
    return coverage(
        recorded.get("paths") or {},
        approvals,
        emails=recorded.get("emails") or {},
        file=recorded.get("file"),
    )


def suggest(cov: Coverage, authors: Collection[str], asked: Sequence[str] = ()) -> tuple[str, ...]:
    """A small set of owners that covers every waiting path (greedy set cover, as Prow's
    approvers suggestion): owners already ``asked`` who still cover something first, so a
    request is not moved about; never a patch's author."""
    excluded = {f"@{a.lower()}" for a in authors}
    left = set(cov.waiting_paths)
    owns: dict[str, set[str]] = {}
    for group in cov.waiting:
        for owner in group.owners:
            if owner.lower() not in excluded:
                owns.setdefault(owner.lower(), set()).update(group.paths)
    chosen: list[str] = []
    for owner in asked:
        if left & owns.get(owner.lower(), set()):
            chosen.append(owner.lower())
            left -= owns[owner.lower()]
    while left:
        best = max(sorted(owns), key=lambda o: len(owns[o] & left), default=None)
        if best is None or not owns[best] & left:
            break  # what is left is owned only by authors
        chosen.append(best)
        left -= owns[best]
    return tuple(chosen)


def split(owners: Iterable[str]) -> tuple[list[str], list[str]]:
    """Users and team slugs, as the requested-reviewers API takes them."""
    users = [o[1:] for o in owners if "/" not in o]
    teams = [o.split("/", 1)[1] for o in owners if "/" in o]
    return users, teams
