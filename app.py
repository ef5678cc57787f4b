"""The production web tier: ``gunicorn app:app`` (or ``granian --interface wsgi app:app``).

The same callable as ``minipipe_gh.wsgi:app``, which an installed wheel serves. Start-up
stops with one message naming any missing or malformed setting, no traceback.
"""

from minipipe_gh.wsgi import app

__all__ = ["app"]
