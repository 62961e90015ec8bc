"""The log writer's work, run in a worker thread on its own sqlite3 connection.

Per row it threads the request into a session, finds how much of its message list the
session's previous request already stored (Python equality on the parsed messages:
no re-encoding of the history), and encodes, hashes, compresses and indexes only the
rest. What it remembers of each recent session (its newest messages and their content
ids) is a bounded cache; a session it forgot is read back from the database.

A batch is planned in memory and written with a few statements (``batch``). If that
fails, the batch is rolled back and written again row by row, each row in its own
savepoint: a row that fails is rolled back alone and retried once without its
conversation and with the values SQLite cannot hold (integers past 64 bits,
infinities) cleared; only if that fails too is it lost, and counted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from finopsd.log.batch import Batch, Thread, load_thread
from finopsd.log.schema import LATE_COLUMNS

log = logging.getLogger(__name__)

CACHE_SESSIONS: Final = 256
CACHE_BYTES: Final = 12 << 20


def _as_is(value: Any) -> Any:
    return value


class Writer:
    """Owns the write connection's session cache and failure counts; not thread-safe (one caller at a time).

    ``scrub`` takes secrets out of what is stored (``Scrubber.value``). It runs here, in the
    worker thread, on the row's own fields and on each new piece only: a whole conversation
    scrubbed per request would cost the event loop time that grows with the history."""

    def __init__(self, db: sqlite3.Connection, scrub: Callable[[Any], Any] | None = None) -> None:
        self.db = db
        self.scrub = scrub or _as_is
        self.max_vars = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.threads: OrderedDict[int, Thread] = OrderedDict()
        self.cached_bytes = 0
        columns = {r[1] for r in db.execute("pragma table_info(requests)")}
        self.late = tuple(c for c in LATE_COLUMNS if c in columns)  # none while m007 rewrites old logs
        self.failed = 0  # rows lost: not even their metadata could be written
        self.degraded = 0  # rows written without their conversation or some values

    # ------------------------------------------------------------------ batches

    def write(self, rows: list[dict[str, Any]]) -> None:
        """One transaction for the batch."""
        self.db.execute("begin immediate")
        try:
            self.write_rows(rows)
            self.db.execute("commit")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("rollback")
            self.forget()  # the cache may name rows that were just rolled back
            raise

    def forget(self) -> None:
        self.threads.clear()
        self.cached_bytes = 0

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write rows inside the caller's transaction; never raises for a bad row."""
        try:
            self._write(rows, None)
            return
        except Exception as e:  # noqa: BLE001 - whatever one row holds, the others are written
            log.warning("log batch of %d rows: %s; writing it row by row", len(rows), _err(e))
        for row in rows:
            try:
                self._write([row], True)
                continue
            except Exception as e:  # noqa: BLE001
                log.warning("log row %s: %s; writing it without its conversation", row.get("id"), _err(e))
            try:
                self._write([row], False)
            except Exception as e:  # noqa: BLE001
                self.failed += 1
                log.error("log row %s not written (%s)", row.get("id"), _err(e))

    def _write(self, rows: list[dict[str, Any]], strict: bool | None) -> None:
        """Plan and write ``rows`` in a savepoint; with ``strict`` None each row is tried whole,
        then without its conversation."""
        batch = Batch(self, rows)
        for row in rows:
            if strict is not None:
                batch.add(row, strict)
                continue
            try:
                batch.add(row, True)
            except Exception as e:  # noqa: BLE001
                log.warning("log row %s: %s; writing it without its conversation", row.get("id"), _err(e))
                try:
                    batch.add(row, False)
                except Exception as e:  # noqa: BLE001
                    batch.failed += 1
                    log.error("log row %s not written (%s)", row.get("id"), _err(e))
        self.db.execute("savepoint log_rows")
        try:
            batch.flush()
        except BaseException:
            self.db.execute("rollback to log_rows")
            self.db.execute("release log_rows")
            raise
        self.db.execute("release log_rows")
        for thread in batch.threads.values():
            self._remember(thread)
        self.failed += batch.failed
        self.degraded += batch.degraded

    # ------------------------------------------------------------------ the session cache

    def thread(self, sid: int) -> Thread:
        """A session's newest request, from the cache or read back."""
        thread = self.threads.get(sid)
        if thread is not None:
            self.threads.move_to_end(sid)
            return thread
        thread = load_thread(self.db, sid)
        self._remember(thread)
        return thread

    def _remember(self, thread: Thread) -> None:
        old = self.threads.pop(thread.rowid, None)
        if old is not None:
            self.cached_bytes -= old.size
        self.threads[thread.rowid] = thread
        self.cached_bytes += thread.size
        while len(self.threads) > CACHE_SESSIONS or (self.cached_bytes > CACHE_BYTES and len(self.threads) > 1):
            _, evicted = self.threads.popitem(last=False)
            self.cached_bytes -= evicted.size


def _err(e: BaseException) -> str:
    # SQLite's error name (SQLITE_CONSTRAINT_UNIQUE…) carries no row content.
    return getattr(e, "sqlite_errorname", None) or type(e).__name__
