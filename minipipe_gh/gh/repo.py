"""One repository as the rules see it: its API client, and the files the rules read.

``.github/minipipe.yml`` and CODEOWNERS are read from the default branch through
``RepoAPI`` and cached on the ``GitHubApp`` (a few minutes per repository; CODEOWNERS
parsed once per blob SHA).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from minipipe_gh.core import owners
from minipipe_gh.core.policy import PATH, Policy, PolicyError, parse
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.gh.rest import RepoAPI


@dataclass
class Repo:
    """A repository of an installation: its API client and its policy (cached)."""

    app: GitHubApp | None
    installation_id: int | None
    project: str
    default_branch: str | None

    @cached_property
    def api(self) -> RepoAPI:
        assert self.app is not None and self.installation_id is not None
        return self.app.repo(self.installation_id, self.project)

    def policy(self) -> tuple[Policy, str | None]:
        """The policy and, if the file is invalid, what is wrong with it (key, line)."""
        assert self.app is not None
        return load_policy(self.app, self.api, self.default_branch)

    @property
    def own_app_id(self) -> int | None:
        return self.app.app_id if self.app else None


def load_policy(
    app: GitHubApp, api: RepoAPI, default_branch: str | None
) -> tuple[Policy, str | None]:
    """``.github/minipipe.yml`` from the default branch, cached a few minutes per repository.

    A push to the default branch that touches the file drops the cache entry.
    """
    hit = app.policies.get(api.full_name)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    found = api.file(PATH, ref=default_branch)
    result: tuple[Policy, str | None]
    if found is None:
        result = (Policy(), None)
    else:
        sha, text = found
        try:
            result = (parse(text, source_sha=sha), None)
        except PolicyError as err:
            result = (Policy(source_sha=sha), str(err))
    if result[0].require_code_owners and result[1] is None:
        result = load_code_owners(app, api, default_branch, result[0])
    app.policies.put(api.full_name, result)
    return result


def load_code_owners(
    app: GitHubApp, api: RepoAPI, default_branch: str | None, policy: Policy
) -> tuple[Policy, str | None]:
    """The default branch's CODEOWNERS where GitHub looks (first found wins), read with
    the policy and cached with it; parsed once per blob SHA. An unparsable file is an
    error like an invalid policy: nothing moves on it."""
    for path in owners.LOCATIONS:
        found = api.file(path, ref=default_branch)
        if found is None:
            continue
        sha, text = found
        parsed = app.code_owners.get((path, sha))
        if parsed is None:
            try:
                parsed = owners.parse(text, path=path, sha=sha)
            except owners.CodeOwnersError as err:
                parsed = str(err)
            app.code_owners.put((path, sha), parsed)
        if isinstance(parsed, str):
            return policy, parsed
        return replace(policy, code_owners=parsed), None
    return policy, None
