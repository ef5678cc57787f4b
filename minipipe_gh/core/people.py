"""Who is who in a session's review state: one typed reader and writer, no I/O.

GitHub logins are mutable and case-insensitive; a user's numeric id is not.
Everything that asks "is this the same person?" (approvals, authors, bots,
holds) compares ``Person`` values here: by id when both sides know it, else
by the login folded to lower case.

Session metadata keys (the app's own, see ``registry.RESERVED_METADATA``):
``bot_login``/``bot_id`` (the session's own bot: the token user that created
it, or the PR's author for an adopted PR; ``bot_token`` names that token),
``pr_author``/``pr_author_id``,
``token_users`` (everyone whose API token created or moved the session) and
``holds``. Patch metadata: ``approvers`` (who approved which SHA, the record)
and ``approvals`` (their logins, the display list the API has always shown),
``required_approvals``/``decided_by`` (as last published) and
``stale_approvals``/``rerequested`` (approvals of an earlier head not carried over).
A session's installation and a patch's merge commit are columns, not metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minipipe_gh.core.policy import Provenance, permission_at_least


@dataclass(frozen=True)
class Person:
    login: str
    id: int | None = None

    def same(self, other: Person | None) -> bool:
        if other is None:
            return False
        if self.id is not None and other.id is not None:
            return self.id == other.id
        return self.login.lower() == other.login.lower()

    def among(self, people: Iterable[Person | None]) -> bool:
        return any(self.same(p) for p in people)

    def as_json(self) -> dict[str, Any]:
        return {"login": self.login, "id": self.id}


def person(value: Any, user_id: Any = None) -> Person | None:
    """A ``Person`` from a login, a ``{"login", "id"}`` dict (a payload's user) or a Person."""
    if isinstance(value, Person):
        return value
    if isinstance(value, Mapping):
        login, user_id = value.get("login"), value.get("id", user_id)
    else:
        login = value
    if not isinstance(login, str) or not login:
        return None
    return Person(login, user_id if isinstance(user_id, int) else None)


def merged(people: Iterable[Person | None]) -> list[Person]:
    """Distinct people, first spelling kept."""
    out: list[Person] = []
    for p in people:
        if p is not None and not p.among(out):
            out.append(p)
    return out


# -- sessions ----------------------------------------------------------------------------


def session_bot(meta: Mapping[str, Any]) -> Person | None:
    return person(meta.get("bot_login"), meta.get("bot_id"))


def pr_author(meta: Mapping[str, Any]) -> Person | None:
    return person(meta.get("pr_author"), meta.get("pr_author_id"))


def with_bot(meta: Mapping[str, Any], bot: Person, *, token: str | None = None) -> dict[str, Any]:
    """Record the session's own bot (and the API token that names it)."""
    out = {k: v for k, v in meta.items() if k != "bot_id"}
    out["bot_login"] = bot.login
    if bot.id is not None:
        out["bot_id"] = bot.id
    if token is not None:
        out["bot_token"] = token
    return out


def with_bot_id(meta: Mapping[str, Any], user_id: int) -> dict[str, Any]:
    """The bot's GitHub id, learned after its login: it is known by id from now on
    (a renamed bot stays itself), as the session's bot and among its token users."""
    bot = session_bot(meta)
    if bot is None:
        return dict(meta)
    known = Person(bot.login, user_id)
    out = with_bot(meta, known)
    if "token_users" in meta:
        users = [known if u.same(known) else u for u in token_users(meta)]
        out["token_users"] = [u.as_json() for u in users]
    return out


def with_pr_author(meta: Mapping[str, Any], author: Person) -> dict[str, Any]:
    return {**meta, "pr_author": author.login, "pr_author_id": author.id}


def token_users(meta: Mapping[str, Any]) -> list[Person]:
    return merged(person(x) for x in meta.get("token_users") or [])


def with_token_user(meta: Mapping[str, Any], who: Person) -> dict[str, Any]:
    """Remember that ``who``'s API token created or moved the session."""
    users = merged([*token_users(meta), who])
    return {**meta, "token_users": [u.as_json() for u in users]}


def authors(meta: Mapping[str, Any]) -> list[Person]:
    """Everyone who may never approve the session's patches as an independent reviewer."""
    return merged([pr_author(meta), session_bot(meta), *token_users(meta)])


@dataclass(frozen=True)
class Hold:
    by: Person
    permission: str
    reason: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by.login,
            "by_id": self.by.id,
            "permission": self.permission,
            "reason": self.reason,
            "at": self.at,
        }

    def liftable_by(self, who: Person, permission: str) -> bool:
        """The holder, or someone with at least the holder's permission."""
        return self.by.same(who) or permission_at_least(permission, self.permission)


def _hold(raw: Any) -> Hold | None:
    if not isinstance(raw, Mapping):
        return None
    by = person(raw.get("by"), raw.get("by_id"))
    if by is None:
        return None
    # a hold from before holds were kept per holder: nobody below maintain lifts it
    permission = str(raw.get("permission") or "maintain")
    return Hold(by, permission, raw.get("reason"), str(raw.get("at") or ""))


def holds(meta: Mapping[str, Any]) -> list[Hold]:
    raw = list(meta.get("holds") or [])
    if meta.get("hold"):  # the single hold of earlier versions
        raw.insert(0, meta["hold"])
    return [h for h in map(_hold, raw) if h is not None]


def with_holds(meta: Mapping[str, Any], kept: Iterable[Hold]) -> dict[str, Any]:
    out = {k: v for k, v in meta.items() if k not in ("hold", "holds")}
    kept = list(kept)
    if kept:
        out["holds"] = [h.as_json() for h in kept]
    return out


# -- patches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    who: Person
    sha: str | None  # the head SHA the approver saw
    at: str | None = None
    owners: tuple[str, ...] = ()  # the code owners they stand for (``owners.identities``)

    def as_json(self) -> dict[str, Any]:
        out = {"login": self.who.login, "id": self.who.id, "sha": self.sha, "at": self.at}
        if self.owners:
            out["owners"] = list(self.owners)
        return out


def approvals(meta: Mapping[str, Any]) -> list[Approval]:
    recorded = meta.get("approvers")
    if recorded is None:  # rows from before approvers were recorded: logins only
        return [Approval(p, None) for p in merged(person(x) for x in meta.get("approvals") or [])]
    out = []
    for raw in recorded:
        who = person(raw)
        if who is not None and not who.among(a.who for a in out):
            owners = tuple(str(o) for o in raw.get("owners") or ())
            out.append(Approval(who, raw.get("sha"), raw.get("at"), owners))
    return out


def with_approvals(meta: Mapping[str, Any], given: Iterable[Approval]) -> dict[str, Any]:
    given = list(given)
    return {
        **meta,
        "approvers": [a.as_json() for a in given],
        "approvals": [a.who.login for a in given],
    }


def required_approvals(meta: Mapping[str, Any]) -> int:
    """The approvals count the patch was last published with (1 before it was stamped)."""
    value = meta.get("required_approvals")
    return value if isinstance(value, int) and value >= 1 else 1


def decided_by(meta: Mapping[str, Any]) -> list[str]:
    """Who may decide the patch, as last published (empty: anyone who may approve)."""
    return [str(r) for r in meta.get("decided_by") or []]


def with_deciders(
    meta: Mapping[str, Any], required: int, deciders: Iterable[str]
) -> dict[str, Any]:
    """Stamp the approvals count and the reviewer list the patch is published with."""
    return {**meta, "required_approvals": required, "decided_by": list(deciders)}


def stale_approvals(meta: Mapping[str, Any]) -> list[str]:
    """The notes on approvals given to an earlier head that this one did not carry over."""
    return [str(n) for n in meta.get("stale_approvals") or []]


def rerequested(meta: Mapping[str, Any]) -> list[str]:
    """The earlier approvers asked to review the new head again."""
    return [str(login) for login in meta.get("rerequested") or []]


def with_stale_approvals(
    meta: Mapping[str, Any], notes: Iterable[str], asked: Iterable[str]
) -> dict[str, Any]:
    return {**meta, "stale_approvals": list(notes), "rerequested": list(asked)}


def seed_commit(meta: Mapping[str, Any]) -> str | None:
    """The app's own first commit on an API-created session's branch (session metadata)."""
    value = meta.get("seed_commit")
    return value if isinstance(value, str) and value else None


def with_seed_commit(meta: Mapping[str, Any], sha: str | None) -> dict[str, Any]:
    return {**meta, "seed_commit": sha}


# -- commits -----------------------------------------------------------------------------

# GitHub's own committer: commits made in the web UI, by "Update branch" or a merge are
# committed by the ``web-flow`` account (git identity "GitHub <noreply@github.com>"). It
# stands behind nothing: the commit's author, who pressed the button, is who counts.
WEB_FLOW_ID = 19864447
WEB_FLOW_EMAIL = "noreply@github.com"


def _github_itself(account: Any, identity: Mapping[str, Any]) -> bool:
    if isinstance(account, Mapping) and account.get("login"):
        return account.get("id") == WEB_FLOW_ID or str(account["login"]).lower() == "web-flow"
    return str(identity.get("email") or "").lower() == WEB_FLOW_EMAIL


def commit_provenance(
    commits: Iterable[Mapping[str, Any]], bot: Person | None, *, seed: str | None = None
) -> Provenance:
    """Who stands behind the PR's commits (GitHub's commits listing): every author and
    committer with a GitHub account, and everyone who is not the session's bot.

    A git identity GitHub links to no account cannot be shown to be the bot's: it is
    foreign, named by its git name and e-mail. GitHub's own ``web-flow`` committer counts
    as nobody (its commit's author does). ``seed`` is the empty commit the app itself
    started an API-created session's branch with: it stands for no one."""
    everyone: list[Person] = []
    foreign: list[Person] = []
    names: list[str] = []
    for item in commits:
        if seed and item.get("sha") == seed:
            continue
        git = item.get("commit") or {}
        for role in ("author", "committer"):
            account = item.get(role)
            identity = git.get(role) or {}
            if role == "committer" and _github_itself(account, identity):
                continue
            who = person(account) if isinstance(account, Mapping) else None
            if who is None:
                name = f"{identity.get('name') or '?'} <{identity.get('email') or '?'}>"
                label = f"{name} (no GitHub account)"
                if label not in names:
                    names.append(label)
                continue
            if not who.among(everyone):
                everyone.append(who)
            if not who.same(bot) and not who.among(foreign):
                foreign.append(who)
                names.append(f"@{who.login}")
    return Provenance(
        tuple((p.login, p.id) for p in everyone),
        tuple((p.login, p.id) for p in foreign),
        tuple(names),
    )


def recorded_people(pairs: Iterable[tuple[str, int | None]]) -> list[Person]:
    """People recorded on a patch's guardrail verdict (``policy.guard_record``)."""
    return merged(Person(login, uid) for login, uid in pairs)
