"""The production web tier: ``gunicorn app:app`` (or ``granian --interface wsgi app:app``).

Start-up stops with a message naming any missing or malformed setting.
"""

from minipipe_gh.runtime import freeze_startup_heap
from minipipe_gh.web import create_app

app = create_app(production=True)
freeze_startup_heap()
