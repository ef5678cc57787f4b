"""The GitHub edge: app authentication, every REST call (``rest.py``), the writes
performed after a delivery commits (``writes.py``, run by ``effects.py``), the
repository's own files, installations, and opening a session's PR."""
