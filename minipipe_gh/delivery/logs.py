"""Logging that carries the delivery id on every line handled for a delivery."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

delivery_id: contextvars.ContextVar[str] = contextvars.ContextVar("delivery_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [delivery=%(delivery_id)s] %(message)s"


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PlainFormatter(logging.Formatter):
    """Colour codes (the development server paints status codes) are for terminals:
    a log file or a journal gets the words alone."""

    def format(self, record: logging.LogRecord) -> str:
        return ANSI.sub("", super().format(record))


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _DeliveryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.delivery_id = delivery_id.get()
        return True


def setup(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    root = logging.getLogger()
    if any(isinstance(f, _DeliveryFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(stream)
    tty = is_terminal(handler.stream) and is_terminal(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT) if tty else PlainFormatter(FORMAT))
    if not tty:
        from werkzeug import serving

        serving._log_add_style = False  # its request lines carry no colour codes then
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
