"""The production web tier: ``gunicorn app:app`` (or ``granian --interface wsgi app:app``).

Start-up stops with one message naming any missing or malformed setting, no traceback.
"""

from minipipe_gh.errors import ConfigError
from minipipe_gh.runtime import freeze_startup_heap
from minipipe_gh.startup import stop_server
from minipipe_gh.web import create_app

try:
    app = create_app(production=True)
except ConfigError as err:
    stop_server(err)
freeze_startup_heap()
