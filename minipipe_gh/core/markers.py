"""What the app writes into GitHub text so it can find its own again.

A session PR's body carries the session's marker (how a PR opened elsewhere is adopted
after a crash); a reply carries its delivery's marker (how a retried reply is not posted
twice).
"""

from __future__ import annotations

import re

MARKER = re.compile(r"<!--\s*minipipe:session=([0-9a-z]{26})\s*-->")


def session_marker(session_id: str) -> str:
    return f"<!-- minipipe:session={session_id} -->"


def reply_marker(delivery_id: str) -> str:
    return f"<!-- minipipe:reply={delivery_id} -->"
