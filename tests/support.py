"""Test support: recorded payloads and GitHub's signing (GitHub itself: tests/github_fake.py)."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from minipipe_gh.core import events
from minipipe_gh.store.db import Database, Driver

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "it's a secret to everybody"
OLD_SECRET = "the secret before rotation"


# --- payloads and signing -----------------------------------------------------------


def payload(name: str, **edits: Any) -> dict[str, Any]:
    """A recorded payload with edits: ``payload("issue_comment.created", comment__body="/x")``."""
    data = json.loads((FIXTURES / f"{name}.payload.json").read_text())
    for path, value in edits.items():
        node = data
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return data


def signed_headers(
    event: str, body: bytes, *, secret: str = SECRET, delivery_id: str | None = None
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": events.signature(body, secret),
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
    }


class Deliver:
    """Post a signed delivery through the Flask app, as GitHub would."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(
        self,
        event: str,
        data: dict[str, Any] | bytes,
        *,
        delivery_id: str | None = None,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        sent = signed_headers(event, body, secret=secret, delivery_id=delivery_id)
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        return self.client.post("/webhook", data=body, headers=sent)


# --- what the database is asked ----------------------------------------------------


# A statement that writes, and one that moves a delivery on: by its first word, or the
# first after a common table expression (PostgreSQL's lease locks the due heads in one
# and leases them in the same statement).
WRITES = re.compile(r"\s*(WITH\b.*\)\s*)?(INSERT|UPDATE|DELETE)\b", re.I | re.S)
MOVES = re.compile(r"\s*(WITH\b.*\)\s*)?UPDATE\s+deliveries\b", re.I | re.S)


def in_transaction(tx: Driver, backend: str) -> bool:
    """Whether ``tx``'s connection is inside a transaction now (not in autocommit, or
    not between statements)."""
    conn = tx.conn.dbapi_connection
    if backend == "postgres":
        import psycopg

        return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]
    return bool(conn.in_transaction)  # type: ignore[union-attr]


@contextmanager
def watching_statements(
    database: Database, seen: Callable[[dict[str, Any], str], None]
) -> Iterator[None]:
    """``seen(connection info, SQL)`` for every statement the database runs, through
    SQLAlchemy or on the driver's own cursor (``Database.observers``), and "COMMIT" for
    every commit."""

    def statement(conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen(conn.info, sql)

    def commit(conn: Any) -> None:
        seen(conn.info, "COMMIT")

    engine = database.engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    database.observers.append(seen)
    try:
        yield
    finally:
        database.observers.remove(seen)
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
