"""The log writer's work, run in a worker thread on its own connection (SQLite's or PostgreSQL's: ``dialect``).

Per row it threads the request into a session, finds how much of its message list the
session's previous request already stored (Python equality on the parsed messages:
no re-encoding of the history), and encodes, hashes, compresses and indexes only the
rest. What it remembers of each recent session (its newest messages and their content
ids) is a bounded cache; a session it forgot is read back from the database.

A batch is planned in memory and written with a few statements (``batch``). If that
fails, the batch is rolled back and written again row by row, each row in its own
savepoint: a row that fails is rolled back alone and retried once without its
conversation and with the values SQLite cannot hold (integers past 64 bits,
infinities) cleared; only if that fails too is it lost, and counted. An error that says
the database itself failed (PostgreSQL gone, a deadlock: ``dialect.transient``) is no
row's fault: the batch is rolled back and raised, for the store to write again later.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from finopsd.log.batch import Batch, Thread, load_thread
from finopsd.log.content import encode
from finopsd.log.dialect import SQLite
from finopsd.log.schema import LATE_COLUMNS
from finopsd.scrub import Scrubber

log = logging.getLogger(__name__)

CACHE_SESSIONS: Final = 256
CACHE_BYTES: Final = 8 << 20
# Planning a batch is Python from end to end, and an event loop that wants the GIL meanwhile
# waits for it up to the 5 ms switch interval, at each of the several times a request takes
# it back: with ``let_in`` set, past STRETCH_S of planning the writer (always in a worker
# thread, never on the loop) sleeps LET_IN_S, which lets a waiting loop in (a sleep(0) would
# not: the writer takes the GIL back before the loop's thread wakes). Each hand-over costs
# both threads; the store sets ``let_in`` only while the loop keeps time (``intake``).
STRETCH_S: Final = 0.0005
LET_IN_S: Final = 0.0001


class Writer:
    """Owns the write connection's session cache and failure counts; not thread-safe (one caller at a time).

    ``scrubber``'s secrets are taken out of what is stored. That runs here, in the worker
    thread, on the row's own fields and on each new piece only: a whole conversation scrubbed
    per request would cost the event loop time that grows with the history."""

    def __init__(self, sql: SQLite, scrubber: Callable[[], Scrubber] | None = None) -> None:
        self._scrubber = scrubber
        self.threads: OrderedDict[int, Thread] = OrderedDict()
        self.cached_bytes = 0
        self.use(sql)
        self.failed = 0  # rows lost: not even their metadata could be written
        self.degraded = 0  # rows written without their conversation or some values
        self.let_in = False  # yield the GIL while planning (see STRETCH_S)

    @property
    def scrubber(self) -> Scrubber | None:
        return None if self._scrubber is None else self._scrubber()

    def scrub(self, value: Any) -> Any:
        """``value`` without secrets (a copy where it held one); walked only when its JSON text may hold one."""
        scrubber = self.scrubber
        if scrubber is None:
            return value
        try:
            if not scrubber.may_hold(encode(value)):
                return value
        except (TypeError, ValueError, RecursionError):  # not JSON at all: walk it
            pass
        return scrubber.value(value)

    # ------------------------------------------------------------------ batches

    def write(self, rows: list[dict[str, Any]], again: bool = False) -> None:
        """One transaction for the batch; ``again`` after an attempt whose commit may have landed
        unacknowledged (the connection died): the rows stored then are left out."""
        self.sql.begin()
        try:
            if again:
                ids = [str(r.get("id")) for r in rows]
                stored = {r[0] for r in self.sql.select_in("select request_id from requests where request_id in ({})",
                                                           ids)}  # fmt: skip
                rows = [r for r in rows if str(r.get("id")) not in stored]
            self.write_rows(rows)
            self.sql.execute("commit")
        except BaseException:
            if self.sql.in_transaction():
                self.sql.execute("rollback")
            self.forget()  # the cache may name rows that were just rolled back
            raise

    def use(self, sql: SQLite) -> None:
        """Write through ``sql`` (a new connection: what was remembered may have changed meanwhile)."""
        self.sql = sql
        columns = sql.columns("requests")
        self.late = tuple(c for c in LATE_COLUMNS if c in columns)  # none while m007 rewrites old logs
        self.forget()

    def forget(self) -> None:
        self.threads.clear()
        self.cached_bytes = 0

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write rows inside the caller's transaction; never raises for a bad row."""
        try:
            self._write(rows, None)
            return
        except Exception as e:  # noqa: BLE001 - whatever one row holds, the others are written
            self._unless_transient(e)
            log.warning("log batch of %d rows: %s; writing it row by row", len(rows), self.sql.error_name(e))
        for row in rows:
            try:
                self._write([row], True)
                continue
            except Exception as e:  # noqa: BLE001
                self._unless_transient(e)
                log.warning("log row %s: %s; writing it without its conversation", row.get("id"),
                            self.sql.error_name(e))
            try:
                self._write([row], False)
            except Exception as e:  # noqa: BLE001
                self._unless_transient(e)
                self.failed += 1
                log.error("log row %s not written (%s)", row.get("id"), self.sql.error_name(e))

    def _unless_transient(self, e: Exception) -> None:
        if self.sql.transient(e):
            raise e

    def _write(self, rows: list[dict[str, Any]], strict: bool | None) -> None:
        """Plan and write ``rows`` in a savepoint; with ``strict`` None each row is tried whole,
        then without its conversation."""
        batch = Batch(self, rows)
        stretch = time.perf_counter()
        for row in rows:
            if self.let_in and time.perf_counter() - stretch > STRETCH_S:
                time.sleep(LET_IN_S)
                stretch = time.perf_counter()
            if strict is not None:
                batch.add(row, strict)
                continue
            try:
                batch.add(row, True)
            except Exception as e:  # noqa: BLE001
                self._unless_transient(e)
                log.warning("log row %s: %s; writing it without its conversation", row.get("id"),
                            self.sql.error_name(e))
                try:
                    batch.add(row, False)
                except Exception as e:  # noqa: BLE001
                    self._unless_transient(e)
                    batch.failed += 1
                    log.error("log row %s not written (%s)", row.get("id"), self.sql.error_name(e))
        self.sql.execute("savepoint log_rows")
        try:
            batch.flush()
        except BaseException:
            self.sql.execute("rollback to log_rows")
            self.sql.execute("release log_rows")
            raise
        self.sql.execute("release log_rows")
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
        thread = load_thread(self.sql, sid)
        self._remember(thread)
        return thread

    def drop(self, sid: int) -> None:
        """Forget one session (another instance wrote to it, or retention deleted it)."""
        old = self.threads.pop(sid, None)
        if old is not None:
            self.cached_bytes -= old.size

    def _remember(self, thread: Thread) -> None:
        self.drop(thread.rowid)
        self.threads[thread.rowid] = thread
        self.cached_bytes += thread.size
        while len(self.threads) > CACHE_SESSIONS or (self.cached_bytes > CACHE_BYTES and len(self.threads) > 1):
            _, evicted = self.threads.popitem(last=False)
            self.cached_bytes -= evicted.size

