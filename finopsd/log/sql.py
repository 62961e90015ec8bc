"""One reading path for both log databases: the SQL that differs between SQLite and PostgreSQL.

Every query the readers send (``search``, ``sessionviews``, ``reads``, ``reports.series``) is
written once, with ``?`` placeholders and SQL both engines accept (row values, ``case``,
``on conflict``, ``returning``, ``is not distinct from``, quoted ``"user"``/``"window"``).
What differs is asked of the ``Dialect``: SQLite's ``total()`` (a float, 0.0 over no rows),
its integer cast (PostgreSQL's rounds), dates from epoch seconds, the
JSON list of tags, and the text index: FTS5 ``match`` and ``bm25()`` against
``content.tsv @@ tsquery`` and ``ts_rank`` (``finopsd.log.pg.reader``).

A ``Db`` is what the readers hold: ``fetch`` rows (indexable by position and by column name,
like ``sqlite3.Row``), ``change`` a row or two outside the log's batches (stored responses,
alerts), and ``apply`` a few changes at once, each to exactly one row or none at all (the
dashboard's keys: ``finopsd.keystore``). SQLite's reads go to the query-only aiosqlite
connection where there is one and its changes to the writer's connection, in the writer's
thread, one at a time; PostgreSQL's both go through a pool (``finopsd.log.pg.reader.PgDb``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite

__all__ = ["Db", "Dialect", "SQLITE", "SqliteDb", "Stale", "fts_literal", "marks"]

BOUND = 1e18  # schema.total_of's: a number column's value past this is read as null


@dataclass(frozen=True)
class Dialect:
    """The SQL fragments the two engines spell differently; every method returns SQL text."""

    name: str
    # FTS: the ids of the content pieces that match one ``?`` (the engine's query text), the
    # name of that id column inside it, and (rowid, score) of the matches, lower scores better
    matched: str
    rowid: str
    ranked: str
    # exceptions that mean "the engine rejected this search text"
    bad_query: tuple[type[BaseException], ...]
    # SQLite's unary ``+`` keeps its planner off a column's index where a filter is cheaper;
    # on PostgreSQL it would keep the primary key out of reach altogether
    unindexed: str

    def member(self, column: str, subquery: str) -> str:
        """``column in (subquery)``, the subquery's rows found first. PostgreSQL's planner would
        rather walk the outer rows and test a tsv per piece (300 ms where 20 sessions of 400
        match, at 20,000 requests); ``= any(array(...))`` runs the subquery once, on its indexes."""
        return f"{column} in ({subquery})" if self.name == "sqlite" else f"{column} = any(array({subquery}))"

    def total(self, expr: str) -> str:
        """The sum of ``expr``, 0 (not null) over no rows (SQLite's total(): a float, 0.0 then)."""
        return f"total({expr})" if self.name == "sqlite" else f"coalesce(sum({expr}), 0)"

    def count_if(self, condition: str) -> str:
        return self.total(f"case when {condition} then 1 else 0 end")

    def total_of(self, column: str) -> str:
        """``total(column)`` over its in-range values only (as ``schema.total_of``)."""
        return self.total(f"case when abs({column}) < {BOUND:g} then {column} end")

    def whole(self, expr: str, step: int) -> str:
        """``expr / step`` truncated to an integer (a cast does that in SQLite, rounds in PostgreSQL)."""
        return f"cast({expr} / {step} as integer)" if self.name == "sqlite" else f"trunc({expr} / {step})"

    def day(self, seconds: str) -> str:
        """The UTC day ``YYYY-MM-DD`` of epoch ``seconds``."""
        if self.name == "sqlite":
            return f"date({seconds}, 'unixepoch')"
        return f"to_char(to_timestamp({seconds}) at time zone 'UTC', 'YYYY-MM-DD')"

    def has_tag(self, tags: str) -> str:
        """A condition with one ``?``: the JSON list in ``tags`` holds that string."""
        if self.name == "sqlite":
            return f"exists (select 1 from json_each(iif(json_valid({tags}), {tags}, null)) where value = ?)"
        return f"{tags}::jsonb @> jsonb_build_array(cast(? as text))"

    def each_tag(self, table: str) -> str:
        """``table`` joined with its rows' tags as ``tag.value`` (null for an untagged row)."""
        if self.name == "sqlite":
            return f"{table} left join json_each(iif(json_valid({table}.tags), {table}.tags, null)) tag"
        return (f"{table} left join lateral jsonb_array_elements_text(case when jsonb_typeof({table}.tags::jsonb)"
                f" = 'array' then {table}.tags::jsonb end) tag(value) on true")


SQLITE = Dialect(
    name="sqlite",
    matched="select rowid from content_fts where content_fts match ?",
    rowid="rowid",
    # bm25 weights (prompt_text, response_text): an answer is what the model said, a prompt
    # piece may be boilerplate an agent repeats; 2:1 ranks the request where a term was
    # answered above the one where it was asked. (llm weights its prompt 10:1 because
    # there a prompt is only the newest message.)
    ranked="select rowid, bm25(content_fts, 1.0, 2.0) as score from content_fts where content_fts match ?",
    # FTS5 reports bad syntax as OperationalError ("fts5: syntax error", "unterminated
    # string", "no such column")
    bad_query=(sqlite3.OperationalError,),
    unindexed="+",
)


class Stale(Exception):
    """``Db.apply``: a statement changed no row (its version moved on) or met a duplicate; nothing was applied."""


def fts_literal(q: str) -> str:
    """``q`` as one FTS5 phrase: inside double quotes only ``"`` is special, written twice."""
    return '"' + q.replace('"', '""') + '"'


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for an ``in (...)`` list (callers never pass an empty one: PostgreSQL refuses ``in ()``)."""
    return ", ".join("?" * len(values))


class Db(Protocol):
    dialect: Dialect

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows, each indexable by position and by column name."""

    async def change(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, list[Any]]:
        """Run one statement in its own transaction: (rows changed, rows it returned)."""

    async def apply(self, statements: Sequence[tuple[str, Sequence[Any]]], lock: int | None = None) -> None:
        """Run ``statements`` in one transaction, each changing exactly one row, else raise Stale
        and apply none. ``lock``: writers naming the same number take turns (SQLite's
        ``begin immediate`` always does), so their transactions commit in the order they began."""


def _fetch(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _change(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> tuple[int, list[Any]]:
    cursor = db.execute(sql, params)
    rows = cursor.fetchall()
    return cursor.rowcount, rows


def _apply(db: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    db.execute("begin immediate")
    try:
        for sql, params in statements:
            if db.execute(sql, params).rowcount != 1:
                raise Stale(sql.split(" ", 3)[:3])
        db.execute("commit")
    except BaseException as e:
        db.execute("rollback")
        if isinstance(e, sqlite3.IntegrityError):
            raise Stale("duplicate") from None
        raise


class SqliteDb:
    """Reads on the query-only connection (or the writer's, when there is no other); changes on
    the writer's, through ``on_writer`` (its lock and thread)."""

    dialect = SQLITE

    def __init__(self, writer: sqlite3.Connection, on_writer: Callable[..., Awaitable[Any]],
                 reader: aiosqlite.Connection | None = None) -> None:  # fmt: skip
        self._reader, self._writer, self._on_writer = reader, writer, on_writer

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            rows: list[Any] = await self._on_writer(_fetch, self._writer, sql, params)
            return rows
        return list(await self._reader.execute_fetchall(sql, params))

    async def change(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, list[Any]]:
        result: tuple[int, list[Any]] = await self._on_writer(_change, self._writer, sql, params)
        return result

    async def apply(self, statements: Sequence[tuple[str, Sequence[Any]]], lock: int | None = None) -> None:
        await self._on_writer(_apply, self._writer, statements)
