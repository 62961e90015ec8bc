"""The request log: SQLite in WAL mode, each piece of content once, one writer fed by a queue.

Handlers call ``submit(row)`` (a ``put_nowait``, never an ``await`` on SQLite); the
queue and its batches are ``intake``'s, shared with the PostgreSQL store; each batch is
written in one transaction on the writer's own connection (``writer``). Past the queue's
bounds ``wait_for_room`` holds new requests back until the writer catches up. Readers
use a second, query-only connection, so a slow search never holds up the writer (WAL
lets both run).

The schema and its migrations live in ``schema``; content addressing in ``content``;
the session rule in ``sessions``; request search in ``search``, session pages in
``sessionviews``; retention in ``retention``.

``new_request_id()`` gives UUIDv7 strings (36 characters, time-ordered to the
millisecond); it lives in ``finopsd.exchange`` and is re-exported here so there is one
implementation. Paging never relies on it: the keyset is ``(ts, id)``.

References:
- FTS5 (contentless tables and their 'delete' command, query syntax, bm25()):
  https://www.sqlite.org/fts5.html
- auto_vacuum / incremental_vacuum / journal_mode / synchronous:
  https://www.sqlite.org/pragma.html
- WAL: https://www.sqlite.org/wal.html ; row values in keyset comparisons:
  https://www.sqlite.org/rowvalue.html
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiosqlite

from finopsd.exchange import new_request_id
from finopsd.log.dialect import SQLite
from finopsd.log.intake import Intake
from finopsd.log.reads import LogReads
from finopsd.log.retention import prune_step
from finopsd.log.schema import MIGRATIONS, migrate
from finopsd.log.sql import SqliteDb
from finopsd.log.text import prompt_text, response_text
from finopsd.log.writer import Writer
from finopsd.scrub import Scrubber

__all__ = ["LogStore", "MIGRATIONS", "migrate", "new_request_id", "prompt_text", "response_text"]

log = logging.getLogger(__name__)

WRITER_CACHE_KB: Final = 2 * 1024
READER_CACHE_KB: Final = 16 * 1024


def _open_writer(path: str) -> tuple[sqlite3.Connection, list[str]]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # auto_vacuum only takes effect if set before the first table is created.
        db.execute("pragma auto_vacuum = incremental")
        db.execute("pragma journal_mode = wal")
        db.execute("pragma synchronous = normal")  # durable at checkpoints; a process crash loses nothing
        db.execute("pragma busy_timeout = 5000")
        db.execute(f"pragma cache_size = -{WRITER_CACHE_KB}")  # the hash and session lookups stay in memory
        applied = migrate(db)
        if "m007_content_and_sessions" in applied:
            db.executescript("pragma incremental_vacuum")  # give back what the old text took
    except BaseException:
        db.close()
        raise
    return db, applied


class LogStore(LogReads, Intake):
    """Owns the database file: a writer connection (migrations, batches, prune) and a reader
    (what it answers is ``LogReads``')."""

    def __init__(
        self, writer: sqlite3.Connection, reader: aiosqlite.Connection, batch_rows: int, flush_ms: int,
        max_queue: int, max_queue_bytes: int, scrubber: Callable[[], Scrubber] | None,
    ) -> None:  # fmt: skip
        self._db = writer
        self._reader = reader
        self._read = SqliteDb(writer, self._on_writer, reader)
        super().__init__(Writer(SQLite(writer), scrubber), batch_rows, flush_ms, max_queue, max_queue_bytes)

    @classmethod
    async def open(
        cls, path: str, *, batch_rows: int = 500, flush_ms: int = 100, max_queue: int = 10_000,
        max_queue_bytes: int = 8 << 20, scrubber: Callable[[], Scrubber] | None = None,
    ) -> LogStore:  # fmt: skip
        """Open (or create) the log database at ``path``, migrate it, and start the writer;
        ``scrubber``'s secrets are taken out of what rows store."""
        writer, applied = await asyncio.to_thread(_open_writer, path)
        if applied:
            log.info("log database %s: applied %s", path, ", ".join(applied))
        reader: aiosqlite.Connection | None = None
        try:
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("pragma query_only = 1")
            await reader.execute("pragma busy_timeout = 5000")
            # A text match looks up each matching piece's requests: at 100,000 requests SQLite's
            # default 2 MB cache makes that 3x slower (bench/search.py). Allocated as pages are read.
            await reader.execute(f"pragma cache_size = -{READER_CACHE_KB}")
            reader.row_factory = sqlite3.Row
        except BaseException:
            writer.close()
            if reader is not None:
                await reader.close()
            raise
        return cls(writer, reader, batch_rows, flush_ms, max_queue, max_queue_bytes, scrubber)

    async def _close_connections(self) -> None:
        await self._reader.close()
        await asyncio.to_thread(self._db.close)  # the last close checkpoints the WAL

    # ------------------------------------------------------------------ retention

    async def _prune_step(self, cutoff: float) -> tuple[int, list[int]]:
        result: tuple[int, list[int]] = await self._on_writer(prune_step, self._db, cutoff)
        return result

    async def _after_prune(self) -> None:
        # give the pages back: executescript steps the pragma to the end; execute() stops after
        # its first step, which frees a single page
        await self._on_writer(self._db.executescript, "pragma incremental_vacuum")

