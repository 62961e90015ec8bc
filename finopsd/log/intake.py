"""The queue in front of a log store's writer thread, the same for SQLite and PostgreSQL.

Handlers call ``submit(row)`` (a ``put_nowait``, never an ``await`` on the database); one
task hands rows in batches to the writer (``finopsd.log.writer``) in a worker thread,
and ``close()`` drains the queue before the connections close. The queue is bounded in
bytes of request body as well as in rows. What happens past a bound is the store's
``policy``: SQLite (``HOLD``) holds new requests back in ``wait_for_room`` until the writer
catches up, so memory stays bounded and at most a flush interval plus one batch of rows
is at risk in a crash; PostgreSQL (``SHED``), a server that may be down, never holds a
request: past the bytes bound a row is queued without its conversation, past the rows
bound it is dropped, each counted (``stripped_rows``, ``dropped_rows``) and logged.

A batch the database could not take at all (``dialect.transient``: PostgreSQL gone or
restarting, a deadlock) is kept and written again, with backoff, once ``recover`` has
a connection again; the rows behind it wait in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from finopsd.log.writer import Writer

log = logging.getLogger(__name__)

_STOP: Final = object()
# A batch stops growing here (or at a quarter of the queue's bytes bound, if less): the queue
# counts a batch's bodies until it is committed, so a batch as big as the bound would fill it
# and hold every new request back for as long as the batch takes to write (at 8 MB, with agents
# sending 100 MB/s of bodies, that was the whole added p99 of bench.run's agent scenario).
BATCH_BYTES: Final = 2 << 20
ROW_BYTES: Final = 1024  # what a row without a known body size counts for
HOLD: Final = "hold"
SHED: Final = "shed"
RETRY_S: Final = (0.1, 5.0)  # first and longest wait between attempts at a batch the database refused
TRIES: Final = 5  # of a batch that lost a conflict (a deadlock); a database that is away gets as long as it takes
CALM_S: Final = 0.001  # a deadline wake-up this late or less: the loop is not saturated
CLOSE_WAIT_S: Final = 10.0  # how long close() keeps trying an unreachable database before dropping the rest
STRIP_NOTE: Final = {"note": "log: conversation not kept (the log queue was past its bytes bound)"}


class Intake:
    """Submit, batch and write rows; the store under it supplies the writer and its connections."""

    policy = HOLD

    def __init__(self, writer: Writer, batch_rows: int, flush_ms: int, max_queue: int, max_queue_bytes: int) -> None:
        self._writer = writer
        self._batch_rows = max(1, batch_rows)
        self._flush_s = max(0, flush_ms) / 1000
        self._max_queue = max_queue
        self._max_bytes = max_queue_bytes
        self._batch_bytes = max(ROW_BYTES, min(BATCH_BYTES, max_queue_bytes // 4))
        # Unbounded as a queue: put_nowait must never fail. The bounds are the policy's.
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queued_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._write_lock = asyncio.Lock()  # one write transaction at a time: batches, prune, responses
        self._closing = False
        self._down_since: float | None = None  # the database refused the last attempt
        self._down = asyncio.Event()  # set while it does: flush() waits no longer
        self.dropped_rows = 0  # past the rows bound (SHED): never written
        self.stripped_rows = 0  # past the bytes bound (SHED): written without their conversation
        # told (rows committed, seconds) after each batch: the metrics' rows written and write latency
        self.on_batch: Callable[[int, float], None] | None = None
        self._task = asyncio.create_task(self._run(), name="logstore-writer")

    @property
    def failed_rows(self) -> int:
        """Rows the writer could not write at all (each also logged with its id)."""
        return self._writer.failed

    @property
    def degraded_rows(self) -> int:
        """Rows written without their conversation or without values the database could not hold."""
        return self._writer.degraded

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the writer."""
        return self._queue.qsize()

    @property
    def database_up(self) -> bool:
        """False while the database refuses writes (rows then wait in the queue)."""
        return self._down_since is None

    # ------------------------------------------------------------------ intake

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one row; returns at once, whatever the database is doing."""
        if self._closing:
            raise RuntimeError(f"log store is closed; row {row.get('id')} not queued")
        size = row.get("body_bytes")
        size = size if isinstance(size, int) and size > 0 else ROW_BYTES
        if self.policy == SHED:
            kept = self._shed(row, size)
            if kept is None:
                return
            row, size = kept
        self._queued_bytes += size
        self._queue.put_nowait((row, size))

    def _shed(self, row: dict[str, Any], size: int) -> tuple[dict[str, Any], int] | None:
        """The row as SHED queues it (None: dropped): at most max_queue rows, and at most
        max_queue_bytes of them with their conversation."""
        if self._queue.qsize() >= self._max_queue:
            self.dropped_rows += 1
            if self.dropped_rows % 1000 == 1:  # a line per thousand, not per row
                log.error("log queue full (%d rows): row %s dropped (%d so far)", self._queue.qsize(), row.get("id"),
                          self.dropped_rows)
            return None
        if self._queued_bytes + size <= self._max_bytes:
            return row, size
        self.stripped_rows += 1
        if self.stripped_rows % 1000 == 1:
            log.warning("log queue past %d bytes: row %s queued without its conversation (%d so far)",
                        self._max_bytes, row.get("id"), self.stripped_rows)
        return {**row, "request": None, "response": None, "content": False,
                "attempts": [*(row.get("attempts") or []), STRIP_NOTE]}, ROW_BYTES  # fmt: skip

    def _full(self) -> bool:
        return self._queue.qsize() > self._max_queue or self._queued_bytes > self._max_bytes

    async def wait_for_room(self) -> None:
        """Return at once unless the queue is past its bounds and the policy holds requests back;
        then wait for the writer."""
        while self.policy == HOLD and self._full() and not self._closing and not self._task.done():
            self._room.clear()
            await self._room.wait()

    async def flush(self) -> None:
        """Wait until every row submitted so far is committed (or logged as failed); while the
        database refuses writes, only until the writer has tried them once (they stay queued)."""
        if self._closing:
            await asyncio.wait((self._task,))
            return
        if self._down.is_set():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(done)
        down = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait((done, self._task, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
        if self._task.done() and not done.done():
            raise RuntimeError("log writer stopped")

    async def close(self) -> None:
        """Drain the queue, stop the writer, close the connections."""
        if self._closing:
            await asyncio.wait((self._task,))
            return
        self._closing = True
        self._room.set()  # nobody waits for room any more
        self._queue.put_nowait(_STOP)
        try:
            await self._task
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ retention

    async def prune(self, retention_days: float) -> int:
        """Delete whole sessions last active more than ``retention_days`` ago, with the content
        nothing else refers to; return how many requests went. Each step is one transaction on
        the writer's connection (``_prune_step``: None when the database refused it), so batches
        are written between steps."""
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        cutoff = time.time() - retention_days * 86_400
        deleted = 0
        while (step := await self._prune_step(cutoff)) is not None:
            count, sessions = step
            for sid in sessions:
                self._writer.drop(sid)
            deleted += count
            if not sessions:
                break
        if deleted:
            await self._after_prune()
        return deleted

    async def _prune_step(self, cutoff: float) -> tuple[int, list[int]] | None:
        raise NotImplementedError

    async def _after_prune(self) -> None:
        """What the database needs after rows went (SQLite: its free pages given back)."""

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
            late = None  # how late the loop woke this task at the batch's deadline
            while True:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, asyncio.Future):
                    waiters.append(item)  # a flush: write what we have now
                    break
                rows.append(item[0])
                size += item[1]
                if len(rows) >= self._batch_rows or size >= self._batch_bytes:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        late = -remaining
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        late = loop.time() - deadline
                        break
            # a loop that woke on time has room: the writer's GIL is then what a request would
            # wait for, so it lets the loop in while it plans; a batch that filled up, or a loop
            # that woke late, is a saturated one, where the hand-overs would cost more than they save
            self._writer.let_in = late is not None and late < CALM_S
            if rows:
                await self._write(rows, waiters)
                self._queued_bytes -= size
            self._release(waiters)
            if not self._full():
                self._room.set()

    @staticmethod
    def _release(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():  # its caller may have been cancelled
                waiter.set_result(None)

    async def _write(self, rows: list[dict[str, Any]], waiters: list[asyncio.Future[None]]) -> None:
        """Write one batch; while the database refuses it, try again with backoff (releasing
        ``waiters`` after the first failure), until it is written or close() gives up."""
        failed = self._writer.failed
        delay, tries, again, gave_up_at = RETRY_S[0], 0, False, None
        while True:
            try:
                async with self._write_lock:
                    started = time.perf_counter()
                    if not self._writer.sql.connected():
                        await asyncio.to_thread(self._recover)
                    await asyncio.to_thread(self._writer.write, rows, again)
                    if self.on_batch is not None:
                        self.on_batch(len(rows) - (self._writer.failed - failed), time.perf_counter() - started)
                if self._down_since is not None:
                    log.warning("log database back after %.1f s", time.monotonic() - self._down_since)
                    self._down_since = None
                    self._down.clear()
                return
            except Exception as e:  # noqa: BLE001 - the writer outlives any one batch
                name = self._writer.sql.error_name(e)
                tries += 1
                if not self._writer.sql.transient(e) or (tries >= TRIES and not self._writer.sql.lasting(e)):
                    self._writer.failed += len(rows)
                    log.error("log batch of %d rows failed (%s): ids %s", len(rows), name, [r.get("id") for r in rows])
                    return
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._down.set()
                log.error("log database refused a batch of %d rows (%s); keeping them and retrying", len(rows), name)
            self._release(waiters)  # as _down does for later flushes
            if self._closing:
                gave_up_at = gave_up_at or time.monotonic() + CLOSE_WAIT_S
                if time.monotonic() >= gave_up_at:
                    self._give_up(rows)
                    return
            await asyncio.sleep(delay)
            delay, again = min(delay * 2, RETRY_S[1]), True

    def _give_up(self, rows: list[dict[str, Any]]) -> None:
        """Closing with the database still gone: this batch and whatever is queued behind it are dropped."""
        left = [item[0] for item in self._drain()]
        self.dropped_rows += len(rows) + len(left)
        log.error("log database unreachable at shutdown: %d rows dropped: ids %s", len(rows) + len(left),
                  [r.get("id") for r in [*rows, *left]])

    def _drain(self) -> list[tuple[dict[str, Any], int]]:
        items = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, tuple):
                items.append(item)
                self._queued_bytes -= item[1]
            elif isinstance(item, asyncio.Future):
                self._release([item])
            else:
                self._queue.put_nowait(item)  # _STOP, for _run to see
                break
        return items

    def _recover(self) -> None:
        """In the worker thread: a working connection for the writer, when it has none."""

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        async with self._write_lock:
            return await asyncio.to_thread(fn, *args)
