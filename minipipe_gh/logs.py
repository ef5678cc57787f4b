"""Logging that carries the delivery id on every line handled for a delivery."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

delivery_id: contextvars.ContextVar[str] = contextvars.ContextVar("delivery_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [delivery=%(delivery_id)s] %(message)s"


class _DeliveryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.delivery_id = delivery_id.get()
        return True


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(isinstance(f, _DeliveryFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_DeliveryFilter())
    root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def for_delivery(ident: str) -> Iterator[None]:
    token = delivery_id.set(ident)
    try:
        yield
    finally:
        delivery_id.reset(token)
