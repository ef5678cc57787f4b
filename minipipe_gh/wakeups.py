"""Workers in other processes hear of new deliveries at once, on PostgreSQL.

The inbox sends ``NOTIFY`` in the transaction that stores new deliveries
(PostgreSQL delivers it at commit, and folds repeats within one transaction);
each worker process keeps one connection that ``LISTEN``s and wakes its loops.
Without it a worker in another process found new work only at its next poll.
SQLite has no such channel: there workers poll, and the in-process inbox wakes
its own worker directly (``Inbox.listeners``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import URL

log = logging.getLogger(__name__)

CHANNEL = "minipipe_deliveries"
NOTIFY_SQL = f"NOTIFY {CHANNEL}"
RECONNECT_MAX_S = 30.0


def libpq_url(url: URL) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://``) as libpq takes it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen(url: URL, wake: Callable[[], None], stop: threading.Event) -> None:
    """Call ``wake`` for every notification until ``stop``; reconnect after errors.

    ``wake`` is also called on each (re)connection: deliveries stored while no
    one was listening are found at once rather than at the next poll.
    """
    pause = 1.0
    while not stop.is_set():
        try:
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                pause = 1.0
                wake()
                while not stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        wake()
        except psycopg.Error:
            log.warning("listening for new deliveries failed; retrying in %.0fs", pause)
            stop.wait(pause)
            pause = min(pause * 2, RECONNECT_MAX_S)


def start_listener(url: URL, wake: Callable[[], None], stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(
        target=listen, args=(url, wake, stop), name="minipipe-wakeups", daemon=True
    )
    thread.start()
    return thread
