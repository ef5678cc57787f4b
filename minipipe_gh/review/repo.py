"""The repository a delivery concerns, as its handlers see it: client, policy, source."""

from __future__ import annotations

from dataclasses import dataclass

from minipipe_gh.core.policy import Policy
from minipipe_gh.gh.repo_files import load_policy
from minipipe_gh.gh.rest import RepoAPI
from minipipe_gh.review.context import Context


@dataclass
class Repo:
    """The repository a delivery concerns: its API client and its policy (cached)."""

    ctx: Context
    project: str
    default_branch: str | None

    @classmethod
    def of(cls, ctx: Context) -> Repo:
        repo = ctx.payload["repository"]
        return cls(ctx, repo["full_name"], repo.get("default_branch"))

    @property
    def api(self) -> RepoAPI:
        if not hasattr(self, "_api"):
            assert self.ctx.app is not None and self.ctx.event.installation_id is not None
            self._api = self.ctx.app.repo(self.ctx.event.installation_id, self.project)
        return self._api

    def policy(self) -> tuple[Policy, str | None]:
        """The policy and, if the file is invalid, what is wrong with it (key, line)."""
        assert self.ctx.app is not None
        return load_policy(self.ctx.app, self.api, self.default_branch)

    @property
    def own_app_id(self) -> int | None:
        return self.ctx.app.app_id if self.ctx.app else None


def source(ctx: Context) -> str:
    if ctx.event.delivery_id.startswith("reconcile-"):  # ids GitHub never sends: ours
        return "reconcile"
    return f"delivery:{ctx.event.delivery_id}"
