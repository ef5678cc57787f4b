"""A worker process that hangs inside its first delivery, for ``test_worker_crash``.

``python -m tests.crash_worker DB_URL MARKER_DIR WORKER_ID LEASE_SECONDS HANG_SECONDS``

The handler writes an audit row (flushed, so it is in the open transaction),
drops a marker file ``started-<delivery>-<pid>`` and sleeps: the test kills the
process there with SIGKILL and checks that nothing of it was committed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import Worker
from minipipe_gh.review.context import Context
from minipipe_gh.store import audit
from minipipe_gh.store.db import Database


def build_router(marker_dir: Path, hang_s: float) -> Router:
    router = Router()

    @router.register("pull_request")
    def handle(ctx: Context) -> None:
        ident = ctx.event.delivery_id
        audit.record(
            ctx.db,
            entity="delivery",
            entity_id=ident,
            actor="crash-test",
            source="worker",
            outcome="noted",
        )
        ctx.db.flush()  # written inside the delivery's transaction, not yet committed
        (marker_dir / f"started-{ident}-{os.getpid()}").touch()
        time.sleep(hang_s)

    return router


def main(argv: list[str]) -> None:
    db_url, marker_dir, worker_id, lease_s, hang_s = argv
    worker = Worker(
        Database(db_url),
        build_router(Path(marker_dir), float(hang_s)),
        None,
        lease_seconds=int(lease_s),
        worker_id=worker_id,
    )
    worker.run_once()


if __name__ == "__main__":
    main(sys.argv[1:])
