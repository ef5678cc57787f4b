"""Every feature's handlers, combined in one router (as bedevere does)."""

from __future__ import annotations

from minipipe_gh.delivery.handlers import (
    checks,
    comments,
    installations,
    internal,
    pulls,
    reconcile,
)
from minipipe_gh.delivery.routing import Router

router = Router(
    installations.router,
    pulls.router,
    comments.router,
    checks.router,
    internal.router,
    reconcile.router,
)
