"""Keyset pagination: an opaque cursor holding the last key of the previous page.

Ids are ULIDs, sortable by creation, so the id alone is a stable key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from minipipe_gh.core.errors import Invalid

T = TypeVar("T")
MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise Invalid("cursor is not one this server gave out", field="cursor") from None
    if not raw or len(raw) > 64 or not raw.isalnum():
        raise Invalid("cursor is not one this server gave out", field="cursor")
    return raw


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    return limit


def page_of(rows: Sequence[T], limit: int, key: str) -> Page[T]:
    """Rows were fetched with ``limit + 1``; the extra one says there is more."""
    if len(rows) > limit:
        items = rows[:limit]
        return Page(items, encode(getattr(items[-1], key)))
    return Page(rows, None)
