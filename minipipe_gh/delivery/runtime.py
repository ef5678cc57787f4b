"""The process-wide pieces an edge needs (settings, database, inbox, GitHub app, router)."""

from __future__ import annotations

import gc
import secrets
import threading
from dataclasses import dataclass, field

from minipipe_gh.conf import config
from minipipe_gh.conf.config import Settings
from minipipe_gh.delivery.handlers import router as default_router
from minipipe_gh.delivery.metrics import install_github_counter
from minipipe_gh.delivery.routing import Router
from minipipe_gh.delivery.worker import Worker
from minipipe_gh.gh import writes
from minipipe_gh.gh.client import GitHubApp
from minipipe_gh.store import migrate
from minipipe_gh.store.db import Database
from minipipe_gh.store.inbox import Inbox


def freeze_startup_heap() -> None:
    """Move everything start-up made (modules, the app, the ORM's mappers) to the
    permanent generation, once a long-running process is ready to serve.

    A full collection otherwise walks that whole heap (~110k objects, ~100 ms
    here) in the middle of some acknowledgement; frozen, it walks only what
    requests allocated. The ``gc.freeze()`` advice of the gc module's docs.
    """
    gc.collect()
    gc.freeze()


@dataclass
class Runtime:
    settings: Settings
    database: Database
    inbox: Inbox
    github: GitHubApp
    router: Router
    worker_thread: threading.Thread | None = field(default=None)
    stop: threading.Event = field(default_factory=threading.Event)
    # Setup mode's one-time token: ``minipipe-gh run`` prints the link that carries it.
    setup_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        *,
        router: Router | None = None,
        threads: int | None = None,
    ) -> Runtime:
        """``threads``: how many threads will use the database at once (a worker's
        ``--threads``): the connection pool holds that many, so none waits for another's."""
        settings = settings or config.load()
        settings.instance_path.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": threads + 1, "max_overflow": 4} if threads else {}
        database = Database(settings.database_url, **pool)
        install_github_counter()
        return cls(
            settings=settings,
            database=database,
            inbox=Inbox(database),
            github=GitHubApp(
                settings.app_id, settings.private_key, settings.api_url, settings.public_url
            ),
            router=router or default_router,
        )

    def reconfigure(self, settings: Settings) -> None:
        """After the setup flow wrote credentials: carry on as a configured app."""
        self.settings = settings
        self.github = GitHubApp(
            settings.app_id, settings.private_key, settings.api_url, settings.public_url
        )

    def worker(self, **kw: object) -> Worker:
        kw.setdefault("executors", writes.EXECUTORS)
        return Worker(
            self.database,
            self.router,
            self.github,
            max_attempts=self.settings.max_attempts,
            lease_seconds=self.settings.lease_seconds,
            reconcile_every_s=self.settings.reconcile_seconds,
            recover_every_s=self.settings.recover_seconds,
            **kw,  # type: ignore[arg-type]
        )

    def upgrade_db(self) -> None:
        migrate.upgrade(self.settings.database_url)

    def start_worker_thread(self) -> threading.Thread:
        """The development server's in-process worker."""
        worker = self.worker()
        self.inbox.listeners.append(worker.wakeup.set)  # no polling delay in-process
        self.worker_thread = threading.Thread(
            target=worker.run_forever,
            args=(self.stop,),
            kwargs={"threads": 2},
            name="minipipe-worker",
            daemon=True,
        )
        self.worker_thread.start()
        return self.worker_thread
