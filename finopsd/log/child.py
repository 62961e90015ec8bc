"""The log writer's own process: it plans and writes every batch, so that work never holds the
event loop's GIL or shares its core.

The gateway (``finopsd.log.remote``) starts it with one end of a socket pair and sends it,
pickled, what to open and then one request at a time: a batch to write, a retention step,
a vacuum, stop. It answers each with its outcome, the
rows it lost or degraded meanwhile, and the log records it made, which the gateway logs
as its own (so they reach the journal and the secret scrub of the gateway's handlers).
It owns the batch connection and the writer's session cache (``writer``); the gateway
keeps its own connections for everything else (migrations, stored responses, keys, reads).

It ignores SIGINT, SIGTERM and SIGHUP: systemd and a terminal send them to the whole group, and
the gateway drains its queue into this process before it says stop. When the gateway
dies, the pipe closes and this process exits.

A side (``SqliteSide``, ``PgSide``) says how to open the batch connection and how retention
deletes on it; it is all this process is told of the database.
"""

from __future__ import annotations

import logging
import pickle
import signal
import sqlite3
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final

from finopsd.log import retention
from finopsd.log.dialect import SQLite
from finopsd.log.writer import Writer
from finopsd.scrub import Scrubber

PICKLE: Final = pickle.HIGHEST_PROTOCOL
WRITER_CACHE_KB: Final = 2 * 1024  # the batch's hash and session lookups go through indexes: few pages


def connect_sqlite(path: str, cache_kb: int) -> sqlite3.Connection:
    """A write connection on an existing log file (WAL is the file's; these are the connection's)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("pragma synchronous = normal")  # durable at checkpoints; a process crash loses nothing
    db.execute("pragma busy_timeout = 5000")
    db.execute(f"pragma cache_size = -{cache_kb}")
    return db


@dataclass(frozen=True)
class SqliteSide:
    path: str

    def connect(self) -> SQLite:
        return SQLite(connect_sqlite(self.path, WRITER_CACHE_KB))

    def prune_step(self, sql: Any, cutoff: float) -> tuple[int, list[int]]:
        return retention.prune_step(sql.db, cutoff)

    def vacuum(self, sql: Any) -> None:
        # executescript steps the pragma to the end; execute() stops after its first step,
        # which frees a single page
        sql.db.executescript("pragma incremental_vacuum")


@dataclass(frozen=True)
class PgSide:
    url: str = field(repr=False)

    def connect(self) -> SQLite:
        from finopsd.log.pg.dialect import PostgreSQL
        from finopsd.log.pg.store import open_writer

        return PostgreSQL(open_writer(self.url))  # migrated: after a reconnect the server may be a new one

    def prune_step(self, sql: Any, cutoff: float) -> tuple[int, list[int]]:
        from finopsd.log.pg.retention import prune_step

        return prune_step(sql, cutoff)

    def vacuum(self, sql: Any) -> None:
        """PostgreSQL's autovacuum gives the space back."""


class Records(logging.Handler):
    """Keeps this process's log records until the next answer carries them to the gateway."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.kept: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.kept.append((record.name, record.levelno, text))

    def take(self) -> list[tuple[str, int, str]]:
        kept, self.kept = self.kept, []
        return kept


class Serve:
    """One request at a time, in the order sent."""

    def __init__(self, side: SqliteSide | PgSide, secrets: list[str]) -> None:
        self.side = side
        self.scrubber = Scrubber(secrets)
        self.writer = Writer(side.connect(), self.scrubber.value)
        self.counted = (0, 0)

    def write(self, rows: list[dict[str, Any]], again: bool, forget: list[int], secrets: list[str] | None) -> None:
        if secrets is not None:
            self.scrubber.use(secrets)
        for sid in forget:
            self.writer.drop(sid)
        if not self.writer.sql.connected():
            self.writer.sql.db.close()
            self.writer.use(self.side.connect())
        self.writer.write(rows, again)

    def prune(self, cutoff: float) -> tuple[int, bool]:
        count, sessions = self.side.prune_step(self.writer.sql, cutoff)
        for sid in sessions:
            self.writer.drop(sid)
        return count, bool(sessions)

    def vacuum(self) -> None:
        self.side.vacuum(self.writer.sql)

    def outcome(self, op: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        sql = self.writer.sql
        try:
            return ("ok", getattr(self, op)(*args))
        except Exception as e:  # noqa: BLE001 - told to the gateway, which decides
            return ("refused", sql.error_name(e), sql.transient(e), sql.lasting(e))

    def lost(self) -> tuple[int, int]:
        """Rows failed and degraded since the last answer."""
        now = (self.writer.failed, self.writer.degraded)
        delta = (now[0] - self.counted[0], now[1] - self.counted[1])
        self.counted = now
        return delta


def main() -> None:
    """The process's whole life (``python -c ... FD``): read what to open from the pipe, open it,
    then serve until told to stop or the gateway is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a terminal's hang-up reaches the group too
        signal.signal(sig, signal.SIG_IGN)
    records = Records()
    root = logging.getLogger()
    root.handlers[:] = [records]
    root.setLevel(logging.INFO)
    with Connection(int(sys.argv[1])) as conn:
        try:
            side, secrets = pickle.loads(conn.recv_bytes())
            serve = Serve(side, secrets)
        except EOFError:
            return
        except Exception as e:  # noqa: BLE001 - the gateway raises it
            conn.send_bytes(pickle.dumps(("refused", f"{type(e).__name__}: {e}", records.take()), PICKLE))
            return
        conn.send_bytes(pickle.dumps(("ready", None, records.take()), PICKLE))
        while True:
            try:
                op, args = pickle.loads(conn.recv_bytes())
            except EOFError:
                return
            if op == "stop":
                serve.writer.sql.db.close()  # SQLite's last close checkpoints the WAL
                conn.send_bytes(pickle.dumps((("ok", None), (0, 0), records.take()), PICKLE))
                return
            answer = serve.outcome(op, args)
            conn.send_bytes(pickle.dumps((answer, serve.lost(), records.take()), PICKLE))
