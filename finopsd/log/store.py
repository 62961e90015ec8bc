"""The request log: SQLite in WAL mode, each piece of content once, one writer fed by a queue.

Handlers call ``submit(row)`` (a ``put_nowait``, never an ``await`` on SQLite); one
task hands rows in batches to a worker thread that writes each batch in one
transaction on its own connection (``writer``), and ``close()`` drains the queue
before the database closes. The queue is bounded in bytes of request body as well as
in rows: past either bound ``wait_for_room`` holds new requests back until the writer
catches up, so memory stays bounded and at most a flush interval plus one batch of
rows is at risk in a crash. Readers use a second, query-only connection, so a slow
search never holds up the writer (WAL lets both run).

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiosqlite

from finopsd.exchange import new_request_id
from finopsd.log.reads import LogReads
from finopsd.log.retention import prune_step
from finopsd.log.schema import MIGRATIONS, migrate
from finopsd.log.sql import SqliteDb
from finopsd.log.text import prompt_text, response_text
from finopsd.log.writer import Writer

__all__ = ["LogStore", "MIGRATIONS", "migrate", "new_request_id", "prompt_text", "response_text"]

log = logging.getLogger(__name__)

_STOP: Final = object()
BATCH_BYTES: Final = 8 << 20  # a batch stops growing here, so one transaction stays short
ROW_BYTES: Final = 1024  # what a row without a known body size counts for
WRITER_CACHE_KB: Final = 8 * 1024
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


class LogStore(LogReads):
    """Owns the database file: a writer connection (migrations, batches, prune) and a reader
    (what it answers is ``LogReads``')."""

    def __init__(
        self, writer: sqlite3.Connection, reader: aiosqlite.Connection, batch_rows: int, flush_ms: int,
        max_queue: int, max_queue_bytes: int, scrub: Callable[[Any], Any] | None,
    ) -> None:  # fmt: skip
        self._db = writer
        self._writer = Writer(writer, scrub)
        self._reader = reader
        self._read = SqliteDb(writer, self._on_writer, reader)
        self._batch_rows = max(1, batch_rows)
        self._flush_s = max(0, flush_ms) / 1000
        self._max_queue = max_queue
        self._max_bytes = max_queue_bytes
        # Unbounded on purpose: put_nowait must never fail, a row is never dropped.
        # The bounds are where wait_for_room starts to slow intake.
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queued_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._write_lock = asyncio.Lock()  # one write transaction at a time: batches, prune, responses
        self._closing = False
        # told (rows committed, seconds) after each batch: the metrics' rows written and write latency
        self.on_batch: Callable[[int, float], None] | None = None
        self._task = asyncio.create_task(self._run(), name="logstore-writer")

    @classmethod
    async def open(
        cls, path: str, *, batch_rows: int = 500, flush_ms: int = 100, max_queue: int = 10_000,
        max_queue_bytes: int = 8 << 20, scrub: Callable[[Any], Any] | None = None,
    ) -> LogStore:  # fmt: skip
        """Open (or create) the log database at ``path``, migrate it, and start the writer;
        ``scrub`` (``Scrubber.value``) takes secrets out of what rows store."""
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
        return cls(writer, reader, batch_rows, flush_ms, max_queue, max_queue_bytes, scrub)

    @property
    def failed_rows(self) -> int:
        """Rows the writer could not write at all (each also logged with its id)."""
        return self._writer.failed

    @property
    def degraded_rows(self) -> int:
        """Rows written without their conversation or without values SQLite could not hold."""
        return self._writer.degraded

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the writer."""
        return self._queue.qsize()

    # ------------------------------------------------------------------ intake

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one row; returns at once, whatever SQLite is doing."""
        if self._closing:
            raise RuntimeError(f"log store is closed; row {row.get('id')} not queued")
        size = row.get("body_bytes")
        size = size if isinstance(size, int) and size > 0 else ROW_BYTES
        self._queued_bytes += size
        self._queue.put_nowait((row, size))

    def _full(self) -> bool:
        return self._queue.qsize() > self._max_queue or self._queued_bytes > self._max_bytes

    async def wait_for_room(self) -> None:
        """Return at once unless the queue is past its bounds; then wait for the writer."""
        while self._full() and not self._closing and not self._task.done():
            self._room.clear()
            await self._room.wait()

    async def flush(self) -> None:
        """Wait until every row submitted so far is committed (or logged as failed)."""
        if self._closing:
            await asyncio.wait((self._task,))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(done)
        await asyncio.wait((done, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise RuntimeError("log writer stopped")

    async def close(self) -> None:
        """Drain the queue, stop the writer, close both connections."""
        if self._closing:
            await asyncio.wait((self._task,))
            return
        self._closing = True
        self._room.set()  # nobody waits for room any more
        self._queue.put_nowait(_STOP)
        try:
            await self._task
        finally:
            await self._reader.close()
            await asyncio.to_thread(self._db.close)  # the last close checkpoints the WAL

    # ------------------------------------------------------------------ the writer

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            item = await self._queue.get()
            rows: list[dict[str, Any]] = []
            size = 0
            waiters: list[asyncio.Future[None]] = []
            deadline = loop.time() + self._flush_s
            while True:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, asyncio.Future):
                    waiters.append(item)  # a flush: write what we have now
                    break
                rows.append(item[0])
                size += item[1]
                if len(rows) >= self._batch_rows or size >= BATCH_BYTES:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
            if rows:
                await self._write(rows)
                self._queued_bytes -= size
            for waiter in waiters:
                if not waiter.done():  # its caller may have been cancelled
                    waiter.set_result(None)
            if not self._full():
                self._room.set()

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        failed = self._writer.failed
        try:
            async with self._write_lock:
                started = time.perf_counter()
                await asyncio.to_thread(self._writer.write, rows)
                if self.on_batch is not None:
                    self.on_batch(len(rows) - (self._writer.failed - failed), time.perf_counter() - started)
        except Exception as e:  # noqa: BLE001 - the writer outlives any one batch
            self._writer.failed += len(rows)
            log.error("log batch of %d rows failed (%s): ids %s", len(rows), _err(e), [r.get("id") for r in rows])

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        async with self._write_lock:
            return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ retention

    async def prune(self, retention_days: float) -> int:
        """Delete whole sessions last active more than ``retention_days`` ago, with the content
        nothing else refers to; give the pages back; return how many requests went."""
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        cutoff = time.time() - retention_days * 86_400
        deleted = 0
        while True:
            count, sessions = await self._on_writer(prune_step, self._db, cutoff)
            for sid in sessions:
                self._writer.threads.pop(sid, None)
            self._writer.cached_bytes = sum(t.size for t in self._writer.threads.values())
            deleted += count
            if not sessions:
                break
        if deleted:
            # executescript steps the pragma to the end; execute() stops after its first
            # step, which frees a single page.
            await self._on_writer(self._db.executescript, "pragma incremental_vacuum")
        return deleted


def _err(e: BaseException) -> str:
    # SQLite's error name (SQLITE_CONSTRAINT_UNIQUE…) carries no row content.
    return getattr(e, "sqlite_errorname", None) or type(e).__name__
