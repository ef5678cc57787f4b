"""One session PR on the recorded Codertocat/Hello-World repository, driven by real payloads.

``Scenario`` builds the webhook payloads a PR's life sends (edited copies of
the recorded fixtures) and serves the GitHub API the app reads, so a test
reads as the user story: open → CI → /approve → merge.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

from responses import matchers

from minipipe_gh.store.models import CheckRunRef
from tests.support import APP_ID, INSTALLATION_ID, WIRE, Deliver, FakeGitHub, payload

REPO = "Codertocat/Hello-World"
R = f"/repos/{REPO}"
INSTALLATION = {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
_ids = itertools.count(9000)


def user(login: str, *, bot: bool = False, user_id: int | None = None) -> dict[str, Any]:
    """A GitHub user; one account whatever the case of its login, as on GitHub."""
    uid = user_id if user_id is not None else abs(hash(login.lower())) % 10**8
    return {"login": login, "id": uid, "type": "Bot" if bot else "User"}


def check_run(
    name: str,
    conclusion: str | None = "success",
    *,
    sha: str,
    suite: int,
    app_id: int = 42,
    run_id: int | None = None,
) -> dict[str, Any]:
    """A check run as GitHub lists it: in a check suite, made by an app."""
    return {
        "id": run_id or next(_ids),
        "name": name,
        "head_sha": sha,
        "status": "completed" if conclusion else "in_progress",
        "conclusion": conclusion,
        "check_suite": {"id": suite},
        "app": {"id": app_id, "slug": "minipipe" if app_id == APP_ID else "ci"},
    }


def commit(
    sha: str,
    author: dict[str, Any] | None,
    committer: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    """A commit as ``GET /pulls/{n}/commits`` lists it: GitHub accounts (``user(...)``, or
    None when GitHub links the git identity to no account) and the git identities."""
    committer = author if committer is None else committer
    git_name = name or (author or {}).get("login") or "someone"
    git_email = email or f"{git_name}@example.com"

    def identity(account: dict[str, Any] | None) -> dict[str, str]:
        if account is not None and account.get("login") == "web-flow":
            return {"name": "GitHub", "email": "noreply@github.com", "date": "2026-12-01T10:00:00Z"}
        login = (account or {}).get("login")
        return {
            "name": login or git_name,
            "email": f"{login}@example.com" if login else git_email,
            "date": "2026-12-01T10:00:00Z",
        }

    return {
        "sha": sha,
        "commit": {
            "message": "Fix the login form",
            "author": identity(author),
            "committer": identity(committer),
        },
        "author": author,
        "committer": committer,
        "parents": [],
    }


WEB_FLOW = {"login": "web-flow", "id": 19864447, "type": "User"}


class Scenario:
    def __init__(
        self,
        deliver: Deliver,
        github: FakeGitHub,
        *,
        number: int = 2,
        branch: str = "minipipe/01abc-fix-login",
        author: str = "agent-bot",
    ) -> None:
        self.deliver = deliver
        self.github = github
        self.number = number
        self.branch = branch
        self.author = author
        self.sha = "a" * 40
        self.check_run_id = 555
        github.allow_token_exchange()

    # -- GitHub's side --------------------------------------------------------------------

    def serve_policy(self, text: str | None) -> None:
        path = f"{R}/contents/.github/minipipe.yml"
        if text is None:
            self.github.add("GET", path, {"message": "Not Found"}, status=404)
        else:
            self.github.add(
                "GET",
                path,
                {
                    "type": "file",
                    "sha": "blob1",
                    "encoding": "base64",
                    "content": base64.b64encode(text.encode()).decode(),
                },
            )

    def serve_files(self, *paths: str, sha: str | None = None, lines: int = 10) -> None:
        files = [
            {"filename": p, "additions": lines, "deletions": 0, "status": "modified"} for p in paths
        ]
        self.github.add("GET", f"{R}/pulls/{self.number}/files", files)
        self._default_commits()

    def serve_changes(self, *files: dict[str, Any]) -> None:
        """The PR's files as GitHub lists them (``{"filename": ..., "status": "renamed",
        "previous_filename": ...}``), replacing what was served before."""
        listed = [{"additions": 10, "deletions": 0, "status": "modified", **f} for f in files]
        self.github.rsps.upsert(
            "GET", self.github.url(f"{R}/pulls/{self.number}/files"), json=listed
        )
        self._default_commits()

    def _default_commits(self) -> None:
        """Unless a test served its own: the PR's one commit is its author's (the bot's)."""
        if not getattr(self, "_commits_served", False):
            self.serve_commits(commit(self.sha, user(self.author)))

    def serve_commits(self, *commits: dict[str, Any]) -> None:
        """The PR's commits as GitHub lists them (``commit(...)`` dicts), replacing any;
        more than 100 are served in pages of 100, as GitHub does."""
        self._commits_served = True
        url = self.github.url(f"{R}/pulls/{self.number}/commits")
        listed = list(commits)
        if len(listed) <= 100:
            self.github.rsps.upsert("GET", url, json=listed)
            return
        for page in range(1, len(listed) // 100 + 2):
            self.github.rsps.add(
                "GET",
                url,
                json=listed[(page - 1) * 100 : page * 100],
                match=[matchers.query_param_matcher({"per_page": "100", "page": str(page)})],
            )

    def serve_suites(self, sha: str, *conclusions: str | None, app_id: int = 42) -> None:
        suites = [
            {
                "id": next(_ids),
                "status": "completed" if c else "in_progress",
                "conclusion": c,
                "app": {"id": app_id, "slug": "ci"},
                "head_sha": sha,
                "latest_check_runs_count": 1,
            }
            for c in conclusions
        ]
        self.github.add(
            "GET",
            f"{R}/commits/{sha}/check-suites",
            {"total_count": len(suites), "check_suites": suites},
        )

    def serve_green(self, sha: str | None = None) -> None:
        """CI has passed on ``sha``: one completed, successful check suite of another app."""
        sha = sha or self.sha
        self.github.rsps.upsert(
            "GET",
            self.github.url(f"{R}/commits/{sha}/check-suites"),
            json={
                "total_count": 1,
                "check_suites": [
                    {
                        "id": 1,
                        "status": "completed",
                        "conclusion": "success",
                        "app": {"id": 42},
                        "head_sha": sha,
                    }
                ],
            },
        )

    def serve_runs(self, sha: str, *runs: dict[str, Any]) -> None:
        """The check runs on ``sha`` (``check_run(...)`` dicts), whatever filter is asked."""
        self.github.rsps.upsert(
            "GET",
            self.github.url(f"{R}/commits/{sha}/check-runs"),
            json={"total_count": len(runs), "check_runs": list(runs)},
        )

    def serve_pull(
        self, state: str = "open", *, merged: bool = False, sha: str | None = None
    ) -> None:
        """GitHub's own view of the PR (``GET /pulls/{n}``), as the app re-reads it."""
        self.github.rsps.upsert(
            "GET",
            self.github.url(f"{R}/pulls/{self.number}"),
            json={
                "number": self.number,
                "state": state,
                "merged": merged,
                "merge_commit_sha": "m" * 40 if merged else None,
                "merged_by": user("maintainer") if merged else None,
                "user": user(self.author),
                "head": {"ref": self.branch, "sha": sha or self.sha, "repo": {"full_name": REPO}},
            },
        )

    def serve_permission(self, login: str, role: str) -> None:
        legacy = {"triage": "read", "maintain": "write"}.get(role, role)
        self.github.add(
            "GET",
            f"{R}/collaborators/{login}/permission",
            {"permission": legacy, "role_name": role, "user": user(login)},
        )

    def serve_writes(self) -> None:
        """Check runs, reactions, comments, review requests: the writes the app makes."""
        self.github.add("POST", f"{R}/check-runs", {"id": self.check_run_id}, status=201)
        self.github.add("PATCH", f"{R}/check-runs/{self.check_run_id}", {"id": self.check_run_id})
        self.github.rsps.add(
            "POST",
            re.compile(re.escape(WIRE + R) + r"/issues/comments/\d+/reactions"),
            json={"id": 1, "content": "+1"},
            status=201,
        )
        self.github.add("POST", f"{R}/issues/{self.number}/comments", {"id": 1}, status=201)
        self.github.add("POST", f"{R}/pulls/{self.number}/requested_reviewers", {}, status=201)

    # -- webhook payloads -------------------------------------------------------------------

    def pr_payload(
        self,
        action: str,
        *,
        sha: str | None = None,
        merged: bool = False,
        body: str = "",
        draft: bool = False,
    ) -> dict[str, Any]:
        name = {
            "synchronize": "pull_request.synchronize",
            "closed": "pull_request.closed",
            "reopened": "pull_request.reopened",
            "converted_to_draft": "pull_request.converted_to_draft",
            "ready_for_review": "pull_request.ready_for_review",
        }.get(action, "pull_request.opened")
        data = payload(name, action=action, installation=INSTALLATION, number=self.number)
        pr = data["pull_request"]
        pr.update(
            number=self.number,
            body=body,
            draft=draft,
            merged=merged,
            user=user(self.author),
            title="Fix the login form",
        )
        pr["head"].update(ref=self.branch, sha=sha or self.sha)
        pr["head"]["repo"]["full_name"] = REPO
        pr["merge_commit_sha"] = "m" * 40 if merged else None
        pr["merged_by"] = user("maintainer") if merged else None
        return data

    def pr_event(self, action: str, **kw: Any) -> Any:
        return self.deliver("pull_request", self.pr_payload(action, **kw))

    def suite_completed(
        self, sha: str | None = None, conclusion: str = "success", app_id: int = 42
    ) -> Any:
        data = payload("check_suite.completed", installation=INSTALLATION)
        data["check_suite"].update(
            head_sha=sha or self.sha,
            conclusion=conclusion,
            app={**data["check_suite"]["app"], "id": app_id},
            pull_requests=[{"number": self.number, "head": {}, "base": {}, "id": 1, "url": "x"}],
        )
        return self.deliver("check_suite", data)

    def run_completed(self, run: dict[str, Any]) -> Any:
        """``check_run.completed`` for ``run`` (a ``check_run(...)`` dict)."""
        data = payload("check_run.completed", installation=INSTALLATION)
        data["check_run"].update(run)
        data["check_run"]["pull_requests"] = [
            {"number": self.number, "head": {}, "base": {}, "id": 1, "url": "x"}
        ]
        data["repository"]["full_name"] = REPO
        return self.deliver("check_run", data)

    def policy_pushed(self, *paths: str) -> Any:
        """A push to the default branch whose commit changes ``paths``."""
        data = payload("push", installation=INSTALLATION, ref="refs/heads/master")
        data["commits"] = [{"id": "c" * 40, "added": [], "removed": [], "modified": list(paths)}]
        data["repository"]["full_name"] = REPO
        return self.deliver("push", data)

    def comment(
        self,
        body: str,
        *,
        login: str,
        comment_id: int | None = None,
        bot: bool = False,
        delivery_id: str | None = None,
        user_id: int | None = None,
    ) -> Any:
        data = payload("issue_comment.created.with-installation", installation=INSTALLATION)
        data["issue"].update(
            number=self.number, pull_request={"url": f"https://api.github.com{R}/pulls/2"}
        )
        who = user(login, bot=bot, user_id=user_id)
        data["comment"].update(id=comment_id or next(_ids), body=body, user=who)
        data["comment"]["html_url"] = f"https://github.com/{REPO}/pull/2#issuecomment-1"
        data["sender"] = who
        data["repository"]["full_name"] = REPO
        return self.deliver("issue_comment", data, delivery_id=delivery_id)

    def review(
        self,
        state: str,
        *,
        login: str,
        action: str = "submitted",
        body: str = "",
        commit_id: str | None = None,
    ) -> Any:
        """A review of ``commit_id`` (default: the PR's current head, ``self.sha``)."""
        name = f"pull_request_review.{action}"
        data = payload(name, installation=INSTALLATION)
        data["review"].update(
            state=state, user=user(login), body=body, id=next(_ids), commit_id=commit_id or self.sha
        )
        data["pull_request"]["number"] = self.number
        data["sender"] = user("maintainer" if action == "dismissed" else login)
        return self.deliver("pull_request_review", data)

    def button(self, identifier: str, *, login: str, ledger_id: str) -> Any:
        data = payload(
            "check_run.rerequested", action="requested_action", installation=INSTALLATION
        )
        data["check_run"].update(
            id=self.check_run_id,
            head_sha=self.sha,
            external_id=ledger_id,
            name="minipipe/review",
            app={**data["check_run"]["app"], "id": APP_ID},
        )
        data["requested_action"] = {"identifier": identifier}
        data["sender"] = user(login)
        data["repository"]["full_name"] = REPO
        return self.deliver("check_run", data)

    # -- reading back -----------------------------------------------------------------------

    def check_run_ref(self, database: Any, sha: str | None = None) -> CheckRunRef | None:
        with database.unit() as s:
            return s.get(CheckRunRef, (REPO, sha or self.sha))
