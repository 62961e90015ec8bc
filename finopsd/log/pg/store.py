"""The request log on PostgreSQL (``storage.url``): several instances write one log.

The write side is SQLite's (``intake`` batches, ``writer`` plans and writes them) on a
psycopg connection of its own in the worker thread, with PostgreSQL's statements
(``finopsd.log.pg.dialect``). A server that is down or slow never holds a request back
(``intake.SHED``): rows queue in memory up to a bound in rows and bytes, the batch that
failed is written again once a new connection works, and what happens past the bounds
is counted on /metrics. The connection has TCP keepalives and a user timeout, so a
server that vanished without closing it is noticed in seconds, not at the kernel's
retransmission limit; and the server ends a batch left idle for a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from finopsd.config import redact_url
from finopsd.log.intake import SHED, Intake
from finopsd.log.pg.dialect import PostgreSQL
from finopsd.log.pg.reader import PgDb, open_pool
from finopsd.log.pg.retention import prune_step
from finopsd.log.pg.schema import migrate
from finopsd.log.reads import LogReads
from finopsd.log.writer import Writer
from finopsd.scrub import Scrubber

log = logging.getLogger(__name__)

IDLE_IN_BATCH_MS: Final = 60_000

CONNECT: Final = {
    "autocommit": True, "connect_timeout": 5, "application_name": "finopsd",
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
    # a frozen instance (a paused VM) in the middle of a batch holds its sessions' locks:
    # the server ends its transaction after a minute, so the other instances' writers go on
    "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_BATCH_MS}",
}  # fmt: skip


def connect(url: str) -> psycopg.Connection[Any]:
    """A synchronous autocommit connection (call it in a worker thread)."""
    return psycopg.connect(url, **CONNECT)


def _open_writer(url: str) -> psycopg.Connection[Any]:
    """A connection on a migrated database."""
    db = connect(url)
    try:
        applied = migrate(db)
    except BaseException:
        db.close()
        raise
    if applied:
        log.info("log database %s: applied %s", redact_url(url), ", ".join(applied))
    return db


class PgLogStore(LogReads, Intake):
    """Owns the PostgreSQL log's writer connection and, for reading (``LogReads``), a pool."""

    policy = SHED

    def __init__(
        self, url: str, writer: psycopg.Connection[Any], pool: AsyncConnectionPool, batch_rows: int,
        flush_ms: int, max_queue: int, max_queue_bytes: int, scrubber: Callable[[], Scrubber] | None,
    ) -> None:  # fmt: skip
        self._url = url
        self._pool = pool
        self._read = PgDb(pool)
        super().__init__(Writer(PostgreSQL(writer), scrubber), batch_rows, flush_ms, max_queue, max_queue_bytes)

    @classmethod
    async def open(
        cls, url: str, *, batch_rows: int = 500, flush_ms: int = 100, max_queue: int = 50_000,
        max_queue_bytes: int = 64 << 20, scrubber: Callable[[], Scrubber] | None = None,
    ) -> PgLogStore:  # fmt: skip
        """Connect, migrate (once across instances starting together), start the writer. The server
        must answer now (libpq reports an unreachable server and a wrong password alike, and the
        dashboard's keys are read at startup too); after that, it may come and go."""
        try:
            writer = await asyncio.to_thread(_open_writer, url)
        except psycopg.Error as e:
            # libpq's message names the host and user, never the password; the URL is shown redacted
            raise RuntimeError(f"log database {redact_url(url)}: {e}") from None
        try:
            pool = await open_pool(url)
        except BaseException:
            await asyncio.to_thread(writer.close)
            raise
        return cls(url, writer, pool, batch_rows, flush_ms, max_queue, max_queue_bytes, scrubber)

    def _recover(self) -> None:
        self._writer.sql.db.close()
        self._writer.use(PostgreSQL(_open_writer(self._url)))  # migrated: the server may be a new one

    async def _close_connections(self) -> None:
        await self._pool.close()
        await asyncio.to_thread(self._writer.sql.db.close)

    async def _prune_step(self, cutoff: float) -> tuple[int, list[int]] | None:
        try:
            result: tuple[int, list[int]] = await self._on_writer(prune_step, self._writer.sql, cutoff)
        except psycopg.Error as e:  # down: the next hourly run catches up
            log.warning("log retention: %s", self._writer.sql.error_name(e))
            return None
        return result
