"""A small event router, as gidgethub's: register per event and action, combine routers.

Handlers run in registration order (a list), so behaviour is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minipipe_gh.review.context import Context

Handler = Callable[["Context"], None]


class Router:
    def __init__(self, *others: Router) -> None:
        self._routes: list[tuple[str, str | None, Handler]] = []
        for other in others:
            self._routes.extend(other._routes)

    def register(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@router.register("pull_request", action="opened")``."""

        def add(handler: Handler) -> Handler:
            self._routes.append((event, action, handler))
            return handler

        return add

    def handlers_for(self, event: str, action: str | None) -> list[Handler]:
        return [h for e, a, h in self._routes if e == event and (a is None or a == action)]

    def dispatch(self, ctx: Context) -> int:
        handlers = self.handlers_for(ctx.event.name, ctx.event.action)
        for handler in handlers:
            handler(ctx)
        return len(handlers)
