"""Reading the PostgreSQL log: the dialect, rows like ``sqlite3.Row``, and a pool of async connections.

psycopg 3's ``AsyncConnectionPool`` serves the readers (pages, the API, governance's
spend, the dashboard's keys): a few connections per instance, each statement in its own
transaction (autocommit), each bounded by ``STATEMENT_TIMEOUT_MS`` so that a slow search
frees its connection. A database that is down or a pool that stays busy answers 503
("the log database is unavailable"), never a 500 and never the URL, whose password the
driver's messages could carry.

The shared SQL is written with ``?``: ``_pg`` turns it into psycopg's ``%s`` (and a
literal ``%`` into ``%%``) once per statement text. ``sum()`` over a ``bigint`` is a
``numeric`` here; read back as an ``int`` (or a float when it has a fraction), as
SQLite's integers are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from finopsd.config import redact_url
from finopsd.errors import GatewayError
from finopsd.log.pg import schema
from finopsd.log.pg.text import RANK_WEIGHTS, TS_CONFIG
from finopsd.log.sql import Dialect, Stale

__all__ = ["POSTGRES", "PgDb", "Row", "migrate", "open_keys", "open_pool"]

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS: Final = 30_000
CONNECT_TIMEOUT_S: Final = 10
POOL_WAIT_S: Final = 10.0  # a request waits this long for a free connection, then 503

POSTGRES = Dialect(
    name="postgresql",
    matched=f"select id from content where tsv @@ to_tsquery('{TS_CONFIG}', ?)",
    rowid="id",
    # ts_rank is higher for a better match; negated, so lower is better as with bm25(); a
    # float8, whose text a cursor carries exactly (a real's shortest text is not its value)
    ranked=(f"select c.id as rowid, -ts_rank('{RANK_WEIGHTS}', c.tsv, q)::float8 as score"
            f" from content c, to_tsquery('{TS_CONFIG}', ?) q where c.tsv @@ q"),
    bad_query=(psycopg.errors.SyntaxError,),
    unindexed="",
)


class Row(tuple[Any, ...]):
    """A row read by position, by column name, or as ``dict(row)``, like ``sqlite3.Row``."""

    __slots__ = ()
    names: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


@functools.lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"__slots__": (), "names": {n: i for i, n in enumerate(names)}})


def _rows(cursor: Any) -> Any:
    """psycopg's row factory: one Row class per shape of result."""
    if cursor.description is None:
        return tuple
    return _row_class(tuple(d.name for d in cursor.description))


class _Numeric(Loader):
    def load(self, data: Any) -> int | float:
        text = bytes(data)
        try:
            return int(text)
        except ValueError:
            return float(text)


@functools.lru_cache(maxsize=1024)
def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    conn.adapters.register_loader("numeric", _Numeric)


def unavailable() -> GatewayError:
    return GatewayError("the log database is unavailable; try again shortly", status=503,
                        type="server_error", code="log_database_unavailable")


async def open_pool(url: str, *, max_size: int = 4, name: str = "finopsd-read") -> AsyncConnectionPool:
    """A pool of autocommit connections to ``url``, its first one made: callers open it after a
    connection of their own worked, and a first query that waits for the pool's first
    connection is where Python 3.11's ``wait_for`` can lose a cancellation (see ``connection``)."""
    pool = AsyncConnectionPool(
        url, min_size=1, max_size=max_size, name=name, open=False, timeout=POOL_WAIT_S, configure=_configure,
        # a connection is checked as it is handed out: after a server restart none is stale
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True, "row_factory": _rows, "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}", "application_name": name},
    )  # fmt: skip
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    except PoolTimeout:
        raise RuntimeError(f"cannot reach PostgreSQL at {redact_url(url)} (no connection within"
                           f" {CONNECT_TIMEOUT_S} s)") from None
    return pool


class PgDb:
    """``finopsd.log.sql.Db`` on a pool: reads and single-statement changes alike."""

    dialect = POSTGRES

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self.pool.connection() as conn:
                # A connection handed over as the task was cancelled: Python 3.11's wait_for
                # (inside the pool) returns it and drops the cancellation, and a shutdown
                # then waits forever for a task that carries on. Cancelled it is.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as e:
            # the type only: a connection error's text names the host and user
            log.warning("log database: %s", type(e).__name__)
            raise unavailable() from None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.connection() as conn:
            cursor = await conn.execute(_pg(sql), params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def change(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, list[Any]]:
        async with self.connection() as conn:
            cursor = await conn.execute(_pg(sql), params)
            rows = await cursor.fetchall() if cursor.description is not None else []
            return cursor.rowcount, rows

    async def apply(self, statements: Sequence[tuple[str, Sequence[Any]]], lock: int | None = None) -> None:
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    if lock is not None:
                        await conn.execute("select pg_advisory_xact_lock(%s)", (lock,))
                    for sql, params in statements:
                        if (await conn.execute(_pg(sql), params)).rowcount != 1:
                            raise Stale(sql.split(" ", 3)[:3])
            except psycopg.errors.UniqueViolation:
                raise Stale("duplicate") from None


def _migrate(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                         application_name="finopsd-migrate") as conn:  # fmt: skip
        return schema.migrate(conn)


async def migrate(url: str) -> list[str]:
    """Bring the database at ``url`` up to date (once, whoever of several instances gets there first)."""
    try:
        return await asyncio.to_thread(_migrate, url)
    except psycopg.OperationalError as e:
        # the driver's text can name the host and user; the URL shown has no password
        raise RuntimeError(f"cannot reach PostgreSQL at {redact_url(url)} ({type(e).__name__})") from None


async def open_keys(url: str) -> tuple[str, PgDb, Callable[[], Awaitable[None]]]:
    """The dashboard's tables at ``url``: (where, as messages may name it, the Db, its close)."""
    await migrate(url)
    pool = await open_pool(url, max_size=2, name="finopsd-keys")
    return redact_url(url), PgDb(pool), pool.close
