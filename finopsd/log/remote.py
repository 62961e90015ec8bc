"""The gateway's handle on the log writer's process (``finopsd.log.child``).

Every call blocks until the process answers, so ``Intake`` makes them in a worker thread
and one at a time (its write lock). Rows cross the socket pickled: pickle keeps every
value as the writer would have seen it in this process (big integers, sets, bytes), and
it costs the worker thread ~40 µs for a 400 KB request; the planning, hashing, deflating
and SQL that follow (~0.5 ms a row) run in the other process.

The process is a fresh interpreter (``python -c``), not a fork: a fork would copy the
gateway's threads, sockets and heap, and ``multiprocessing``'s fork server would add two
more processes. It imports only the writer's modules (~0.1 s, ~25 MB). What to open (the
database URL may hold a password) goes over the socket, never on its command line. Its
start is not waited for: the first call reads its greeting, so opening the log costs the
gateway's start-up no time.

A process that died (killed, out of memory) is a refused batch like a database that went
away: ``Intake`` keeps the batch, and the next call starts a new process and writes the
batch again, leaving out the rows the old one had committed.
"""

from __future__ import annotations

import logging
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Final

from finopsd.log.child import PICKLE, PgSide, SqliteSide
from finopsd.scrub import Scrubber

log = logging.getLogger(__name__)

STOP_WAIT_S: Final = 10.0
GONE: Final = "log writer process exited"
CHILD: Final = "from finopsd.log.child import main; main()"
UNPICKLABLE: Final = (RecursionError, pickle.PicklingError, TypeError)  # a row nested past the recursion limit


class Refused(Exception):
    """The process could not do what it was asked; classified there, where the driver is."""

    def __init__(self, name: str, transient: bool, lasting: bool) -> None:
        super().__init__(name)
        self.name, self.transient, self.lasting = name, transient, lasting


class RemoteWriter:
    """What ``Intake`` asks of a writer; not thread-safe (one caller at a time)."""

    def __init__(self, side: SqliteSide | PgSide, scrubber: Callable[[], Scrubber] | None) -> None:
        self.side = side
        self._scrubber = scrubber
        self._sent = -1  # the scrubber generation the process has
        self._forget: list[int] = []
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._greeted = False
        self.failed = 0  # rows lost: not even their metadata could be written
        self.degraded = 0  # rows written without their conversation or some values
        self.restarts = 0  # processes that died and were replaced

    def start(self) -> None:
        """A new process, told what to open; its greeting is read by the first call."""
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._conn = Connection(ours.detach())
        self._greeted = False
        self._conn.send_bytes(pickle.dumps((self.side, self._secrets()), PICKLE))

    def _greet(self) -> None:
        assert self._conn is not None
        try:
            status, error, records = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            status, error, records = "refused", GONE, []
        self._relog(records)
        if status != "ready":
            self._end()
            raise RuntimeError(f"log writer: {error}")
        self._greeted = True

    def _secrets(self) -> list[str]:
        if self._scrubber is None:
            return []
        scrubber = self._scrubber()
        self._sent = scrubber.generation
        return scrubber.secrets()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ------------------------------------------------------------------ calls

    def write(self, rows: list[dict[str, Any]], again: bool = False) -> None:
        """One batch in one transaction; ``again``: leave out rows an earlier attempt committed."""
        changed = self._scrubber is not None and self._scrubber().generation != self._sent
        forget, self._forget = self._forget, []
        secrets = self._secrets() if changed else None
        try:
            request = pickle.dumps(("write", (rows, again, forget, secrets)), PICKLE)
        except UNPICKLABLE:
            request = pickle.dumps(("write", ([self._portable(r) for r in rows], again, forget, secrets)), PICKLE)
        self._send(request)

    def _portable(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row, or (nested past pickle's recursion limit) the row without its conversation."""
        try:
            pickle.dumps(row, PICKLE)
            return row
        except UNPICKLABLE as e:
            log.warning("log row %s: %s; writing it without its conversation", row.get("id"), type(e).__name__)
            self.degraded += 1
            return {**row, "request": None, "response": None, "content": False}

    def drop(self, sid: int) -> None:
        """Have the process forget a session before the next batch."""
        self._forget.append(sid)

    def prune_step(self, cutoff: float) -> tuple[int, bool]:
        """One retention step: (requests deleted, whether there may be more)."""
        result: tuple[int, bool] = self._call("prune", cutoff)
        return result

    def vacuum(self) -> None:
        self._call("vacuum")

    def stop(self) -> None:
        if not self.alive():
            self._end()
            return
        try:
            self._call("stop")
        except Refused:
            pass  # gone already
        self._end()

    def _call(self, op: str, *args: Any) -> Any:
        return self._send(pickle.dumps((op, args), PICKLE))

    def _send(self, request: bytes) -> Any:
        try:
            if not self.alive():
                if self._process is not None:
                    self.restarts += 1
                    log.warning("%s (status %s); starting a new one", GONE, self._process.returncode)
                self._end()
                self.start()
            if not self._greeted:
                self._greet()
        except (RuntimeError, OSError) as e:  # the database is away: Intake keeps the batch and tries again
            raise Refused(str(e), True, True) from None
        assert self._conn is not None
        try:
            self._conn.send_bytes(request)
            answer, (failed, degraded), records = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            self._end()
            raise Refused(GONE, True, True) from None
        self.failed += failed
        self.degraded += degraded
        self._relog(records)
        if answer[0] != "ok":
            raise Refused(*answer[1:])
        return answer[1]

    def _end(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            try:
                self._process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._conn = self._process = None

    @staticmethod
    def _relog(records: list[tuple[str, int, str]]) -> None:
        for name, level, text in records:
            logging.getLogger(name).log(level, "%s", text)

    # ------------------------------------------------------------------ what Intake asks of a failure

    @staticmethod
    def error_name(e: BaseException) -> str:
        return e.name if isinstance(e, Refused) else type(e).__name__

    @staticmethod
    def transient(e: BaseException) -> bool:
        return isinstance(e, Refused) and e.transient

    @staticmethod
    def lasting(e: BaseException) -> bool:
        return isinstance(e, Refused) and e.lasting
