"""The request log on PostgreSQL (``storage.url``): several instances write one log.

The write side is SQLite's (``intake`` batches, ``writer`` plans and writes them) on a
psycopg connection of its own in the worker thread, with PostgreSQL's statements
(``finopsd.log.pg.dialect``). A server that is down or slow never holds a request back
(``intake.SHED``): rows queue in memory up to a bound in rows and bytes, the batch that
failed is written again once a new connection works, and what happens past the bounds
is counted on /metrics. The connection has TCP keepalives and a user timeout, so a
server that vanished without closing it is noticed in seconds, not at the kernel's
retransmission limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import psycopg

from finopsd.config import redact_url
from finopsd.log.intake import SHED, Intake
from finopsd.log.pg.dialect import PostgreSQL
from finopsd.log.pg.schema import migrate
from finopsd.log.writer import Writer

log = logging.getLogger(__name__)

CONNECT: Final = {
    "autocommit": True, "connect_timeout": 5, "application_name": "finopsd",
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}  # fmt: skip


def connect(url: str) -> psycopg.Connection[Any]:
    """A synchronous autocommit connection (call it in a worker thread)."""
    return psycopg.connect(url, **CONNECT)


def _open_writer(url: str) -> tuple[psycopg.Connection[Any], list[str]]:
    db = connect(url)
    try:
        applied = migrate(db)
    except BaseException:
        db.close()
        raise
    return db, applied


class PgLogStore(Intake):
    """Owns the PostgreSQL log's writer connection (and, for reading, its pool)."""

    policy = SHED

    def __init__(
        self, url: str, writer: psycopg.Connection[Any], batch_rows: int, flush_ms: int, max_queue: int,
        max_queue_bytes: int, scrub: Callable[[Any], Any] | None,
    ) -> None:  # fmt: skip
        self._url = url
        self._db = writer
        super().__init__(Writer(PostgreSQL(writer), scrub), batch_rows, flush_ms, max_queue, max_queue_bytes)

    @classmethod
    async def open(
        cls, url: str, *, batch_rows: int = 500, flush_ms: int = 100, max_queue: int = 50_000,
        max_queue_bytes: int = 64 << 20, scrub: Callable[[Any], Any] | None = None,
    ) -> PgLogStore:  # fmt: skip
        """Connect, migrate (once across instances starting together), start the writer."""
        try:
            writer, applied = await asyncio.to_thread(_open_writer, url)
        except psycopg.Error as e:
            # libpq's message names the host and user, never the password; the URL is shown redacted
            raise RuntimeError(f"log database {redact_url(url)}: {e}") from None
        if applied:
            log.info("log database %s: applied %s", redact_url(url), ", ".join(applied))
        return cls(url, writer, batch_rows, flush_ms, max_queue, max_queue_bytes, scrub)

    def _recover(self) -> None:
        if self._writer.sql.connected():
            return
        self._db.close()
        self._db = connect(self._url)
        self._writer.sql = PostgreSQL(self._db)
        self._writer.forget()  # other instances wrote on while this one could not

    async def _close_connections(self) -> None:
        await asyncio.to_thread(self._db.close)
