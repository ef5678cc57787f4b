"""The real web tier in a process of its own, which can die between storing and answering.

``python -m tests.web_crash_server DB_URL PORT [CRASH_ON_DELIVERY_ID]``

The app is built by ``create_app`` from settings read from the environment
(``GITHUB_APP_ID``, ``GITHUB_PRIVATE_KEY``, ``GITHUB_WEBHOOK_SECRET``,
``GITHUB_API_URL``), with ``DATABASE_URL`` set to DB_URL, and served on
127.0.0.1:PORT by Werkzeug's threaded server.

The crash hook lives here, not in the package: the inbox is wrapped so that,
for the delivery id CRASH_ON_DELIVERY_ID, the delivery is stored (committed)
and then the process kills itself with SIGKILL before the 202 is written.
GitHub sees a dropped connection; whatever was committed stays committed.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from typing import Any

from werkzeug.serving import make_server

from minipipe_gh.conf import config
from minipipe_gh.core.events import Event
from minipipe_gh.delivery.runtime import Runtime
from minipipe_gh.store.inbox import Inbox
from minipipe_gh.web import create_app


class CrashAfterStoring(Inbox):
    """An inbox that dies, hard, right after durably storing one marked delivery."""

    def __init__(self, inbox: Inbox, crash_on: str | None) -> None:
        super().__init__(inbox.database)
        self.crash_on = crash_on

    def store(self, event: Event, raw_body: bytes | None = None) -> bool:
        new = super().store(event, raw_body)  # returns once the row is committed
        if event.delivery_id == self.crash_on:
            os.kill(os.getpid(), signal.SIGKILL)  # no answer, no cleanup, no atexit
        return new


def build(db_url: str, crash_on: str | None) -> Any:
    env = {**os.environ, "DATABASE_URL": db_url}
    settings = config.load(env, instance_path=tempfile.mkdtemp(prefix="minipipe-web-"))
    rt = Runtime.build(settings)
    rt.inbox = CrashAfterStoring(rt.inbox, crash_on)
    return create_app(runtime_obj=rt)


def main(argv: list[str]) -> None:
    db_url, port, *rest = argv
    app = build(db_url, rest[0] if rest else None)
    server = make_server("127.0.0.1", int(port), app, threaded=True)
    print(f"listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
