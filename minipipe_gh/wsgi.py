"""The production web tier's WSGI callable: ``gunicorn minipipe_gh.wsgi:app``.

The repository's ``app.py`` re-exports it (``gunicorn app:app`` in the app's folder);
an installed wheel has this module only. Start-up stops with one message naming any
missing or malformed setting, no traceback.
"""

from __future__ import annotations

from minipipe_gh.conf.startup import stop_server
from minipipe_gh.core.errors import ConfigError
from minipipe_gh.delivery.runtime import freeze_startup_heap
from minipipe_gh.web import create_app

try:
    app = create_app(production=True)
except ConfigError as err:
    stop_server(err)
freeze_startup_heap()
