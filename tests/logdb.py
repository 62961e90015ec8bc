"""A log store of either backend for the store suite (``log_backend``), and plain SQL on its database."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg

from finopsd.log.pg.reader import _pg as translate
from finopsd.log.pg.store import PgLogStore
from finopsd.log.store import LogStore


async def open_store(backend: dict[str, Any], **options: Any) -> Any:
    """``LogStore.open``/``PgLogStore.open`` on the backend's database, with the same options."""
    if backend.get("url"):
        return await PgLogStore.open(backend["url"], **options)
    return await LogStore.open(backend["path"], **options)


def query(backend: dict[str, Any], sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement written with ``?``, on a connection of its own."""
    if backend.get("url"):
        with psycopg.connect(backend["url"], autocommit=True) as db:
            cursor = db.execute(translate(sql), list(args))  # type: ignore[call-overload]
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
    with sqlite3.connect(backend["path"]) as db:
        return [tuple(r) for r in db.execute(sql, args).fetchall()]
