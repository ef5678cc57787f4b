"""Every feature's handlers, combined in one router (as bedevere does)."""

from __future__ import annotations

from .. import publish  # noqa: F401  (registers the effect executors)
from ..routing import Router
from . import checks, comments, installations, internal, pulls, reconcile

router = Router(
    installations.router,
    pulls.router,
    comments.router,
    checks.router,
    internal.router,
    reconcile.router,
)
