"""GitHub App authentication: the app's JWT and cached installation tokens.

One token exchange per installation per hour (tokens live an hour; we renew
five minutes early), not per event. ``GITHUB_API_URL`` is honoured everywhere.
PyGithub's own in-process retries are off: the worker reschedules a failed
delivery instead, so a rate limit never blocks a worker thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from github import Auth, Github, GithubIntegration

from minipipe_gh.core.errors import ConfigError
from minipipe_gh.gh.rest import PERMISSION_TTL_S, TIMEOUT_S, AppAPI, ETagCache, RepoAPI, TTLCache

RENEW_BEFORE_S = 300
POLICY_TTL_S = 300.0  # a push to the default branch touching the file drops it sooner
TEAM_TTL_S = 300.0  # team memberships, for reviewer teams and code-owner teams
BLOB_TTL_S = 86400.0  # parsed CODEOWNERS by blob SHA: a blob never changes
# PyGithub sleeps between requests (0.25 s, and 1 s between writes) by default. A
# worker handles one delivery's few requests in sequence and reschedules on a
# secondary rate limit (Retry-After) instead, so the sleeps only add latency.
NO_THROTTLE = {"seconds_between_requests": None, "seconds_between_writes": None}


@dataclass
class _Token:
    token: str
    expires_at: float


class GitHubApp:
    """One per process: signs app JWTs and hands out installation clients."""

    def __init__(
        self,
        app_id: int | None,
        private_key: str | None,
        api_url: str,
        public_url: str | None = None,
    ) -> None:
        self.app_id = app_id
        self.public_url = public_url  # where check runs link to (their ``details_url``)
        self.private_key = private_key
        self.api_url = api_url
        self._tokens: dict[int, _Token] = {}
        self._lock = threading.Lock()
        self._gates: dict[int, threading.Lock] = {}
        self._local = threading.local()
        self.permissions = TTLCache(PERMISSION_TTL_S)
        self.policies = TTLCache(POLICY_TTL_S)
        self.etags = ETagCache()
        self.teams = TTLCache(TEAM_TTL_S)
        self.code_owners = TTLCache(BLOB_TTL_S)

    def _app_auth(self) -> Auth.AppAuth:
        if self.app_id is None or not self.private_key:
            raise ConfigError(
                "GitHub App credentials are not configured: set GITHUB_APP_ID and "
                "GITHUB_PRIVATE_KEY_PATH (or register the app from the setup page)"
            )
        return Auth.AppAuth(self.app_id, self.private_key)

    def integration(self) -> GithubIntegration:
        return GithubIntegration(
            auth=self._app_auth(), base_url=self.api_url, timeout=TIMEOUT_S, retry=0, **NO_THROTTLE
        )

    def installation_token(self, installation_id: int) -> str:
        """A cached token; concurrent callers wait for one exchange, not one each."""
        with self._lock:
            gate = self._gates.setdefault(installation_id, threading.Lock())
        with gate:
            now = time.time()
            with self._lock:
                cached = self._tokens.get(installation_id)
            if cached and cached.expires_at - RENEW_BEFORE_S > now:
                return cached.token
            grant = self.integration().get_access_token(installation_id)
            expires = grant.expires_at.timestamp() if grant.expires_at else now + 3600
            with self._lock:
                self._tokens[installation_id] = _Token(grant.token, expires)
            return grant.token

    def forget_token(self, installation_id: int) -> None:
        """After a 401: the next client exchanges a fresh token."""
        with self._lock:
            self._tokens.pop(installation_id, None)

    def client(self, installation_id: int) -> Github:
        """One client per installation, token and thread: its HTTP connections are kept
        alive between requests instead of a new TLS handshake for each."""
        token = self.installation_token(installation_id)
        clients = self._local.__dict__.setdefault("clients", {})
        key = (installation_id, token)
        if key not in clients:
            for stale in [k for k in clients if k[0] == installation_id]:
                del clients[stale]
            clients[key] = Github(
                auth=Auth.Token(token),
                base_url=self.api_url,
                timeout=TIMEOUT_S,
                retry=0,
                lazy=True,
                **NO_THROTTLE,
            )
        return clients[key]  # type: ignore[no-any-return]

    def user_client(self, token: str) -> Github:
        """Acting for a signed-in user (dashboard), with their OAuth token."""
        return Github(
            auth=Auth.Token(token),
            base_url=self.api_url,
            timeout=TIMEOUT_S,
            retry=0,
            lazy=True,
            **NO_THROTTLE,
        )

    def repo(self, installation_id: int, full_name: str) -> RepoAPI:
        return RepoAPI(
            self.client(installation_id),
            full_name,
            permissions=self.permissions,
            etags=self.etags,
            teams=self.teams,
        )

    def as_app(self) -> AppAPI:
        """Calls made with the app's JWT (installation lookup, the webhook delivery log)."""
        return AppAPI(self.integration().requester)
