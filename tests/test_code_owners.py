"""Code owners: every touched path approved by one of its owners (``review.require_code_owners``).

The precedence tests read GitHub's documented example CODEOWNERS file; the
story tests drive a PR with signed webhooks and assert on the requests sent.
"""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from minipipe_gh.core import owners
from minipipe_gh.store.models import Patch, ReviewRequest
from tests.scenario import R, Scenario

# GitHub's "Example of a CODEOWNERS file" (docs: About code owners), as published.
GITHUB_EXAMPLE = """\
# This is a comment.
# Each line is a file pattern followed by one or more owners.

# These owners will be the default owners for everything in
# the repo. Unless a later match takes precedence,
# @global-owner1 and @global-owner2 will be requested for
# review when someone opens a pull request.
*       @global-owner1 @global-owner2

# Order is important; the last matching pattern takes the most
# precedence. When someone opens a pull request that only
# modifies JS files, only @js-owner and not the global
# owner(s) will be requested for a review.
*.js    @js-owner #This is an inline comment.

# You can also use email addresses if you prefer. They'll be
# used to look up users just like we do for commit author
# emails.
*.go docs@example.com

# Teams can be specified as code owners as well. Teams should
# be identified in the format @org/team-name. Teams must have
# explicit write access to the repository. In this example,
# the octocats team in the octo-org organization owns all .txt files.
*.txt @octo-org/octocats

# In this example, @doctocat owns any files in the build/logs
# directory at the root of the repository and any of its
# subdirectories.
/build/logs/ @doctocat

# The `docs/*` pattern will match files like
# `docs/getting-started.md` but not further nested files like
# `docs/build-app/troubleshooting.md`.
docs/*  docs@example.com

# In this example, @octocat owns any file in an apps directory
# anywhere in your repository.
apps/ @octocat

# In this example, @doctocat owns any file in the `/docs`
# directory in the root of your repository and any of its
# subdirectories.
/docs/ @doctocat

# In this example, any change inside the `/scripts` directory
# will require approval from @doctocat or @octocat.
/scripts/ @doctocat @octocat

# In this example, @octocat owns any file in a `/logs` directory such as
# `/build/logs`, `/scripts/logs`, and `/deeply/nested/logs`. Any changes
# in a `/logs` directory will require approval from @octocat.
**/logs @octocat

# In this example, @octocat owns any file in the `/apps`
# directory in the root of your repository except for the `/apps/github`
# subdirectory, as its owners are left empty.
/apps/ @octocat
/apps/github
"""

GLOBAL = ("@global-owner1", "@global-owner2")


def owner_of(text: str, path: str) -> tuple[str, ...]:
    return owners.parse(text).owner_of(path).owners


# -- precedence against GitHub's documented examples ----------------------------------------


@pytest.mark.parametrize(
    ("section", "path", "expected"),
    [
        # `*` is the default; `*.js` later takes precedence (inline comment not an owner)
        ("*       @global-owner1 @global-owner2", "README.md", GLOBAL),
        ("*.js    @js-owner #This is an inline comment.", "src/app/index.js", ("@js-owner",)),
        ("*.txt @octo-org/octocats", "notes/todo.txt", ("@octo-org/octocats",)),
        ("/build/logs/ @doctocat", "build/logs/today.log", ("@doctocat",)),
        ("/build/logs/ @doctocat", "build/logs/2024/01/today.log", ("@doctocat",)),
        ("/build/logs/ @doctocat", "src/build/logs/today.log", GLOBAL),  # anchored at root
        ("docs/*  @docs-owner", "docs/getting-started.md", ("@docs-owner",)),
        ("docs/*  @docs-owner", "docs/build-app/troubleshooting.md", GLOBAL),  # not nested
        ("apps/ @octocat", "apps/web/main.py", ("@octocat",)),
        ("apps/ @octocat", "services/apps/worker.py", ("@octocat",)),  # anywhere
        ("/docs/ @doctocat", "docs/build-app/troubleshooting.md", ("@doctocat",)),
        ("/docs/ @doctocat", "src/docs/readme.md", GLOBAL),  # only the root's docs
        ("/scripts/ @doctocat @octocat", "scripts/deploy.sh", ("@doctocat", "@octocat")),
        ("**/logs @octocat", "build/logs/a.log", ("@octocat",)),
        ("**/logs @octocat", "scripts/logs/b.log", ("@octocat",)),
        ("**/logs @octocat", "deeply/nested/logs/c.log", ("@octocat",)),
        ("/apps/ @octocat\n/apps/github", "apps/web/main.py", ("@octocat",)),
        ("/apps/ @octocat\n/apps/github", "apps/github/ci.yml", ()),  # no owners: owned by none
        ("/apps/ @octocat\n/apps/github @doctocat", "apps/github/ci.yml", ("@doctocat",)),
    ],
)
def test_github_documented_precedence(section: str, path: str, expected: tuple[str, ...]) -> None:
    text = f"*       @global-owner1 @global-owner2\n{section}\n"
    assert owner_of(text, path) == expected


def test_the_whole_documented_file_last_match_wins() -> None:
    parsed = owners.parse(GITHUB_EXAMPLE)
    assert parsed.owner_of("src/index.js").owners == ("@js-owner",)
    # `/docs/` comes after `docs/*`: the later line wins for docs/ files
    assert parsed.owner_of("docs/getting-started.md").owners == ("@doctocat",)
    line = GITHUB_EXAMPLE.splitlines().index("/docs/ @doctocat") + 1
    assert parsed.owner_of("docs/getting-started.md").line == line
    # `**/logs` comes after `/build/logs/`
    assert parsed.owner_of("build/logs/today.log").owners == ("@octocat",)
    assert parsed.owner_of("apps/github/workflow.yml").owners == ()
    assert parsed.owner_of("services/apps/x.py").owners == ("@octocat",)
    assert parsed.owner_of("notes.txt").owners == ("@octo-org/octocats",)
    assert parsed.owner_of("Makefile").owners == GLOBAL


def test_email_owners_are_noted_and_own_nothing() -> None:
    owned = owners.parse(GITHUB_EXAMPLE).owner_of("cmd/main.go")
    assert (owned.owners, owned.emails) == ((), ("docs@example.com",))
    meta = owners.assign(owners.parse(GITHUB_EXAMPLE), ["cmd/main.go", "a.js"])
    cov = owners.coverage(meta["paths"], [], emails=meta["emails"])
    assert cov.unowned == ("cmd/main.go",)
    assert cov.emails == (("cmd/main.go", ("docs@example.com",)),)
    assert cov.waiting == (owners.Waiting(("@js-owner",), ("a.js",)),)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("* @a\n\n!*.js @b\n", 3, "negated patterns are not supported"),
        ("* @a\nsrc/ alice\n", 2, "`alice` is not an owner"),
        ("# c\n*.[ch] @a\n", 2, "character ranges"),
        ("* @a\n/docs/ @org/\n", 2, "`@org/` is not an owner"),
    ],
)
def test_an_unparsable_file_names_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(owners.CodeOwnersError) as err:
        owners.parse(text, path="CODEOWNERS")
    assert err.value.line == line
    assert str(err.value).startswith(f"CODEOWNERS: line {line}: ")
    assert words in str(err.value)


def test_set_cover_is_small_stable_and_never_an_author() -> None:
    cov = owners.coverage(
        {
            "a.py": ["@alice", "@bob"],
            "b.py": ["@bob"],
            "c.py": ["@bob", "@carol"],
            "d.py": ["@agent-bot", "@dave"],
            "e.py": ["@agent-bot"],
        },
        [],
    )
    assert owners.suggest(cov, ["agent-bot"]) == ("@bob", "@dave")  # e.py: only its author
    # an owner asked before who still covers something is kept first
    assert owners.suggest(cov, ["agent-bot"], ["@carol"]) == ("@carol", "@bob", "@dave")
    assert owners.split(["@bob", "@org/core"]) == (["bob"], ["core"])


def test_coverage_through_identities() -> None:
    cov = owners.coverage(
        {"x": ["@org/core"], "y": ["@alice"], "z": []},
        [("carol", owners.identities("Carol", ["org/core"]))],
    )
    assert cov.covered == (("x", "carol"),)
    assert cov.waiting_paths == ("y",)
    assert cov.unowned == ("z",)
    assert not cov.complete


# -- the story on GitHub ------------------------------------------------------------------

POLICY = "review:\n  require_code_owners: true\n"
CODEOWNERS = """\
# default owner, overridden by later rules
*               @default-owner
/src/           @alice
/src/auth/      @Codertocat/security
/docs/          @bob @alice
/src/vendor/
"""
TOUCHED = (
    "src/app.py",
    "src/util.py",
    "src/auth/login.py",
    "docs/guide.md",
    "src/vendor/lib.py",
    "README.md",
)


def drain(rt):
    return rt.worker().run_once()


def newest(rt) -> Patch:
    with rt.database.unit() as s:
        return s.scalars(select(Patch).order_by(Patch.ledger_id.desc())).first()


def serve_owners(github, text: str, *, path: str = ".github/CODEOWNERS", sha: str = "owners1"):
    for earlier in owners.LOCATIONS[: owners.LOCATIONS.index(path)]:
        github.add("GET", f"{R}/contents/{earlier}", {"message": "Not Found"}, status=404)
    github.rsps.upsert(
        "GET",
        github.url(f"{R}/contents/{path}"),
        json={
            "type": "file",
            "sha": sha,
            "encoding": "base64",
            "content": base64.b64encode(text.encode()).decode(),
        },
    )


def serve_team(github, org: str, slug: str, *members: str) -> None:
    github.add("GET", f"/orgs/{org}/teams/{slug}/members", [{"login": m} for m in members])


def serve_review_writes(github, number: int = 2) -> None:
    github.add("DELETE", f"{R}/pulls/{number}/requested_reviewers", {}, status=200)


def last_check(github, since: int = 0) -> dict:
    bodies = [b for m, p, b in github.api_requests()[since:] if "/check-runs" in p and m != "GET"]
    return bodies[-1]


def review_requests(github, since: int = 0) -> list[tuple[str, dict]]:
    return [
        (m, b)
        for m, p, b in github.api_requests()[since:]
        if p == f"{R}/pulls/2/requested_reviewers"
    ]


def opened(rt, deliver, github, *paths, policy=POLICY, codeowners=CODEOWNERS):
    sc = Scenario(deliver, github)
    sc.serve_policy(policy)
    serve_owners(github, codeowners)
    sc.serve_files(*paths)
    sc.serve_green()
    sc.serve_writes()
    serve_review_writes(github)
    sc.pr_event("opened")
    drain(rt)
    return sc


def test_every_touched_path_needs_one_of_its_owners(rt, deliver, github):
    sc = opened(rt, deliver, github, *TOUCHED)
    patch = newest(rt)
    assert patch.state == "awaiting_review"  # low risk, but paths wait for their owners
    assert patch.meta["code_owners"]["paths"] == {
        "src/app.py": ["@alice"],
        "src/util.py": ["@alice"],
        "src/auth/login.py": ["@codertocat/security"],
        "docs/guide.md": ["@bob", "@alice"],
        "src/vendor/lib.py": [],  # a pattern with no owners: nobody's
        "README.md": ["@default-owner"],
    }
    check = last_check(github)
    assert check["conclusion"] == "action_required"
    assert check["output"]["title"] == (
        "Awaiting review (0 of 1 approvals, 5 paths waiting for code owners)"
    )
    summary = check["output"]["summary"]
    assert "- Code owners (.github/CODEOWNERS): 0 of 5 owned paths covered" in summary
    assert "  - waiting: `src/app.py`, `src/util.py`: any of @alice" in summary
    assert "  - waiting: `src/auth/login.py`: any of @codertocat/security" in summary
    assert "  - waiting: `docs/guide.md`: any of @bob, @alice" in summary
    assert "  - waiting: `README.md`: any of @default-owner" in summary
    assert "  - no owner: `src/vendor/lib.py`" in summary
    # what it waits for names each owner set, on the check run as in the API's waiting_for
    assert "- 2 paths waiting for code owners: an approval by any of @alice covers them" in summary
    assert "- 1 path waiting for code owners: an approval by any of @bob, @alice covers them" in (
        summary
    )
    # one request covers every waiting path: alice (also a docs owner), the team, the default
    assert review_requests(github) == [
        ("POST", {"reviewers": ["alice", "default-owner"], "team_reviewers": ["security"]})
    ]
    # the check run is written before the review request
    kinds = [p for m, p, _ in github.api_requests() if m != "GET"]
    assert kinds.index(f"{R}/check-runs") < kinds.index(f"{R}/pulls/2/requested_reviewers")
    # reading the file: .github/CODEOWNERS first, once for the whole delivery
    reads = [p.split("?")[0] for m, p, _ in github.api_requests() if "/contents/" in p]
    assert reads == [f"{R}/contents/.github/minipipe.yml", f"{R}/contents/.github/CODEOWNERS"]

    # alice covers her src/ files and docs/ (as a docs owner): still waiting, not re-requested
    # (whether she is in the owning team is looked up once, then cached for everyone)
    serve_team(github, "codertocat", "security", "Carol", "erin")
    sc.serve_permission("alice", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="alice")
    drain(rt)
    assert newest(rt).state == "awaiting_review"
    check = last_check(github, mark)
    assert check["output"]["title"] == (
        "Awaiting review (1 of 1 approvals, 2 paths waiting for code owners)"
    )
    summary = check["output"]["summary"]
    assert "- Code owners (.github/CODEOWNERS): 3 of 5 owned paths covered" in summary
    assert "  - covered: `src/app.py` by @alice" in summary
    assert "  - covered: `docs/guide.md` by @alice" in summary
    assert "  - waiting: `src/auth/login.py`: any of @codertocat/security" in summary
    assert "@bob" not in summary.split("Recent transitions")[0].replace("any of @bob, @alice", "")
    # alice covers nothing more: her request is withdrawn, nothing is sent again
    assert review_requests(github, mark) == [
        ("DELETE", {"reviewers": ["alice"], "team_reviewers": []})
    ]

    # dave is no owner: his approval covers nothing; the team is looked up once
    sc.serve_permission("dave", "write")
    sc.serve_permission("carol", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="dave")
    drain(rt)
    assert "2 of 2 approvals, 2 paths waiting" in last_check(github, mark)["output"]["title"]
    assert review_requests(github, mark) == []

    # carol is in the owning team: her /approve covers the team's path
    mark = len(github.api_requests())
    sc.comment("/approve", login="carol")
    drain(rt)
    check = last_check(github, mark)
    assert "  - covered: `src/auth/login.py` by @carol" in check["output"]["summary"]
    assert check["output"]["title"].endswith("1 path waiting for code owners)")
    team_reads = [p.split("?")[0] for m, p, _ in github.api_requests() if "/teams/" in p]
    assert team_reads == ["/orgs/codertocat/teams/security/members"]  # cached
    assert review_requests(github, mark) == [
        ("DELETE", {"reviewers": [], "team_reviewers": ["security"]})
    ]

    # a review by the default owner covers README.md: every path covered → queued
    sc.serve_permission("default-owner", "write")
    mark = len(github.api_requests())
    sc.review("approved", login="default-owner")
    drain(rt)
    patch = newest(rt)
    assert patch.state == "queued"
    check = last_check(github, mark)
    assert check["conclusion"] == "success"
    assert "5 of 5 owned paths covered" in check["output"]["summary"]
    assert review_requests(github, mark) == [
        ("DELETE", {"reviewers": ["default-owner"], "team_reviewers": []})
    ]
    with rt.database.unit() as s:
        assert s.scalars(select(ReviewRequest)).all() == []  # nothing left asked

    # withdrawing the owner's approval uncovers README.md: back to review
    sc.comment("/approve cancel", login="default-owner")
    drain(rt)
    assert newest(rt).state == "awaiting_review"


def test_two_paths_one_owner_and_requests_never_to_the_author(rt, deliver, github):
    text = "*  @default-owner\n/lib/ @agent-bot @erin\n/tools/ @agent-bot\n"
    sc = opened(rt, deliver, github, "lib/a.py", "lib/b.py", "tools/x.sh", codeowners=text)
    assert newest(rt).state == "awaiting_review"
    # erin covers both lib files; tools/ is owned only by the author: nobody to ask
    assert review_requests(github) == [("POST", {"reviewers": ["erin"]})]
    summary = last_check(github)["output"]["summary"]
    assert "  - waiting: `lib/a.py`, `lib/b.py`: any of @agent-bot, @erin" in summary
    # the author may not approve their own patch, owner or not
    sc.serve_permission("agent-bot", "write")
    sc.comment("/approve", login="agent-bot")
    drain(rt)
    patch = newest(rt)
    assert patch.meta["approvals"] == []
    sc.serve_permission("erin", "write")
    mark = len(github.api_requests())
    sc.comment("/approve", login="erin")
    drain(rt)
    summary = last_check(github, mark)["output"]["summary"]
    assert "  - covered: `lib/a.py` by @erin" in summary
    assert "  - covered: `lib/b.py` by @erin" in summary
    assert "  - waiting: `tools/x.sh`: any of @agent-bot" in summary
    assert newest(rt).state == "awaiting_review"


def test_a_push_that_changes_the_paths_is_judged_again(rt, deliver, github):
    policy = POLICY + "  dismiss_stale_approvals: false\n"
    sc = opened(rt, deliver, github, "src/app.py", policy=policy)
    assert newest(rt).state == "awaiting_review"
    assert review_requests(github) == [("POST", {"reviewers": ["alice"]})]
    sc.serve_permission("alice", "write")
    sc.comment("/approve", login="alice")
    drain(rt)
    assert newest(rt).state == "queued"

    # the push adds README.md: the approval carried over keeps its coverage of src/app.py,
    # and the new path waits for its own owner
    new_sha = "b" * 40
    sc.serve_changes({"filename": "src/app.py"}, {"filename": "README.md"})
    sc.serve_green(new_sha)
    mark = len(github.api_requests())
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    patch = newest(rt)
    assert (patch.patch_id, patch.state) == (new_sha, "awaiting_review")
    assert patch.meta["code_owners"]["paths"] == {
        "src/app.py": ["@alice"],
        "README.md": ["@default-owner"],
    }
    summary = last_check(github, mark)["output"]["summary"]
    assert "- Approvals: 1 of 1 (@alice on aaaaaaaaaaaa)" in summary
    assert "  - covered: `src/app.py` by @alice" in summary
    assert "  - waiting: `README.md`: any of @default-owner" in summary
    # alice's request was withdrawn once she covered her path; only the default owner asked
    assert review_requests(github, mark) == [("POST", {"reviewers": ["default-owner"]})]

    # the next push leaves README.md again: covered by the carried approval alone → queued
    third = "c" * 40
    sc.serve_changes({"filename": "src/app.py"})
    sc.serve_green(third)
    mark = len(github.api_requests())
    sc.pr_event("synchronize", sha=third)
    drain(rt)
    assert (newest(rt).patch_id, newest(rt).state) == (third, "queued")
    assert review_requests(github, mark) == [
        ("DELETE", {"reviewers": ["default-owner"], "team_reviewers": []})
    ]


def test_a_push_drops_stale_coverage(rt, deliver, github):
    sc = opened(rt, deliver, github, "src/app.py")
    sc.serve_permission("alice", "write")
    sc.comment("/approve", login="alice")
    drain(rt)
    assert newest(rt).state == "queued"
    assert review_requests(github)[-1] == ("DELETE", {"reviewers": ["alice"], "team_reviewers": []})
    new_sha = "b" * 40
    github.add("GET", f"{R}/git/commits/{sc.sha}", {"sha": sc.sha, "tree": {"sha": "t1"}})
    github.add("GET", f"{R}/git/commits/{new_sha}", {"sha": new_sha, "tree": {"sha": "t2"}})
    sc.serve_green(new_sha)
    mark = len(github.api_requests())
    sc.pr_event("synchronize", sha=new_sha)
    drain(rt)
    assert newest(rt).state == "awaiting_review"  # approvals belong to a SHA
    summary = last_check(github, mark)["output"]["summary"]
    assert "  - waiting: `src/app.py`: any of @alice" in summary
    # asked again once, by the stale-approval rule: the owner request is not sent twice
    assert review_requests(github, mark) == [("POST", {"reviewers": ["alice"]})]
    with rt.database.unit() as s:
        assert [r.reviewer for r in s.scalars(select(ReviewRequest))] == ["@alice"]


def test_an_unparsable_codeowners_is_reported_like_an_invalid_policy(rt, deliver, github):
    opened(rt, deliver, github, "src/app.py", codeowners="* @a\nsrc/ alice\n")
    patch = newest(rt)
    assert patch.state == "created"  # nothing moves on it
    check = last_check(github)
    assert check["conclusion"] == "action_required"
    assert check["output"]["title"] == ".github/CODEOWNERS is invalid"
    assert (
        "Policy error: .github/CODEOWNERS: line 2: `alice` is not an owner"
        in check["output"]["summary"]
    )


def test_codeowners_found_where_github_looks_and_read_once_per_blob(rt, deliver, github):
    sc = opened(rt, deliver, github, "src/app.py", codeowners="* @alice\n")
    del sc
    # the file at .github/CODEOWNERS shadows the others; without it, CODEOWNERS, then docs/
    calls = [p.split("?")[0] for m, p, _ in github.api_requests() if "CODEOWNERS" in p]
    assert calls == [f"{R}/contents/.github/CODEOWNERS"]


def test_without_the_key_codeowners_is_never_read(rt, deliver, github):
    opened(rt, deliver, github, "src/app.py", policy=None)
    assert newest(rt).state == "queued"
    assert not [p for m, p, _ in github.api_requests() if "CODEOWNERS" in p]
    assert "code_owners" not in newest(rt).meta


def test_a_team_owner_approving_through_the_api_covers_its_paths(rt, deliver, github, client):
    from tests.test_api import Api, install, make_token

    text = "*  @default-owner\n/src/auth/  @Codertocat/security\n"
    install(rt)  # the API's tokens act on installed repositories
    sc = opened(rt, deliver, github, "src/auth/login.py", codeowners=text)
    patch = newest(rt)
    assert patch.state == "awaiting_review"
    assert review_requests(github) == [("POST", {"reviewers": [], "team_reviewers": ["security"]})]
    sc.serve_permission("carol", "write")
    serve_team(github, "codertocat", "security", "carol")
    carol = Api(client, make_token(rt, "carol-token", "carol"))
    resp = carol("POST", f"/patches/{patch.ledger_id}/approve")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["state"] == "queued"
    mark = len(github.api_requests())
    drain(rt)  # the API's publish, through the worker: check run, then the request withdrawn
    assert last_check(github, mark)["conclusion"] == "success"
    assert (
        "  - covered: `src/auth/login.py` by @carol"
        in last_check(github, mark)["output"]["summary"]
    )
    assert review_requests(github, mark) == [
        ("DELETE", {"reviewers": [], "team_reviewers": ["security"]})
    ]


def test_a_push_changing_codeowners_on_the_default_branch_drops_the_cache(rt, deliver, github):
    sc = opened(rt, deliver, github, "src/app.py", codeowners="* @alice\n")
    reads = lambda: [p for m, p, _ in github.api_requests() if "CODEOWNERS" in p]  # noqa: E731
    assert len(reads()) == 1
    sc.serve_permission("bob", "write")
    sc.comment("/approve", login="bob")  # cached: not read again
    drain(rt)
    assert len(reads()) == 1
    serve_owners(github, "* @bob\n", sha="owners2")
    sc.policy_pushed(".github/CODEOWNERS")
    drain(rt)
    sc.comment("/approve cancel", login="bob")
    drain(rt)
    assert len(reads()) == 2  # read again after the push, once


def test_require_code_owners_is_validated_like_the_rest() -> None:
    from minipipe_gh.core.policy import PolicyError, parse

    assert parse("review:\n  require_code_owners: true\n").require_code_owners is True
    assert parse(None).require_code_owners is False
    with pytest.raises(PolicyError) as err:
        parse("review:\n  require_code_owners: yes please\n")
    assert (err.value.key, err.value.line) == ("review.require_code_owners", 2)


def test_0012_adds_review_requests_and_keeps_existing_rows(empty_db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect, text

    from minipipe_gh.store import migrate
    from minipipe_gh.store.db import Database, make_engine

    command.upgrade(migrate.alembic_config(empty_db_url), "0008")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO check_runs (project_id, head_sha, check_run_id)"
                    " VALUES ('o/r', :s, 5)"
                ),
                {"s": "a" * 40},
            )
        migrate.upgrade(empty_db_url)
        assert {c["name"] for c in inspect(engine).get_columns("review_requests")} == {
            "project_id",
            "pr_number",
            "reviewer",
            "created_at",
        }
        with engine.connect() as conn:
            assert conn.execute(text("SELECT check_run_id FROM check_runs")).scalar() == 5
    finally:
        engine.dispose()
    database = Database(empty_db_url)
    try:
        with database.unit() as s:
            s.add(ReviewRequest(project_id="o/r", pr_number=2, reviewer="@org/core"))
        with database.unit() as s:
            assert s.get(ReviewRequest, ("o/r", 2, "@org/core")) is not None
    finally:
        database.dispose()


def test_a_team_review_request_github_refuses_is_audited_and_skipped(rt, deliver, github):
    from minipipe_gh.store.models import AuditEntry, Delivery

    sc = Scenario(deliver, github)
    sc.serve_policy(POLICY)
    serve_owners(github, "/src/auth/  @Codertocat/security\n")
    sc.serve_files("src/auth/login.py")
    sc.serve_green()
    sc.github.add("POST", f"{R}/check-runs", {"id": sc.check_run_id}, status=201)
    # a user-owned repository has no teams: GitHub answers 422
    github.add(
        "POST",
        f"{R}/pulls/2/requested_reviewers",
        {"message": "Reviews may only be requested from collaborators."},
        status=422,
    )
    sc.pr_event("opened")
    drain(rt)
    assert newest(rt).state == "awaiting_review"
    assert last_check(github)["conclusion"] == "action_required"  # the gate stands
    with rt.database.unit() as s:
        assert [d.status for d in s.scalars(select(Delivery))] == ["done"]
        refused = s.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "delivery", AuditEntry.outcome == "refused"
            )
        ).all()
        assert len(refused) == 1 and "owner_reviews" in (refused[0].reason or "")
        assert s.scalars(select(ReviewRequest)).all() == []  # not recorded as asked
