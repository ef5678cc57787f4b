"""Every feature's handlers, combined in one router (as bedevere does)."""

from __future__ import annotations

from ..routing import Router
from . import installations

router = Router(installations.router)
