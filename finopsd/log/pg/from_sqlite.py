"""``finopsd migrate``: copy a SQLite log into an empty PostgreSQL one, table by table.

The PostgreSQL schema mirrors SQLite's (``finopsd.log.pg.schema``), so a table is copied
column for column, ids included (rows refer to one another by them), in batches of
``BATCH`` rows: one ``insert … select from unnest(…)`` a batch. What differs:

- ``content.tsv``, the search index, is built from each piece as the writer builds it
  (SQLite's FTS5 index is contentless: there is nothing to copy).
- Inserting requests fires the roll-up trigger, which rolls up only the rows still in the
  log; the roll-ups (spend_by_day, usage_*) are then replaced by SQLite's, which also hold
  what retention pruned.
- A number column's value SQLite holds but PostgreSQL's type cannot (text or infinity,
  which old versions could store, and which every read treats as null) becomes null (0
  where the column is ``not null``); NUL characters, which PostgreSQL text cannot hold,
  become U+FFFD.
- Afterwards each identity sequence is set past the largest id copied.

The whole copy is one transaction on PostgreSQL and one read transaction (a snapshot) on
SQLite: a gateway may keep writing the SQLite log meanwhile (what it writes after the
snapshot is not copied), and a copy that fails leaves the target as empty as it found it.
A target that already holds a row is refused before anything is written.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from finopsd.config import url_password
from finopsd.log.content import index_text, unpack
from finopsd.log.pg import schema as pg_schema
from finopsd.log.pg.text import fold, tsv_sql
from finopsd.log.store import _open_writer as open_writer

# the order a row's references are copied in does not matter (no foreign keys), except that
# the roll-ups come after requests, whose trigger writes them
TABLES: Final = ("content", "sessions", "requests", "request_content", "request_previews", "stored_responses",
                 "dashboard_keys", "dashboard_teams", "audit", "alerts")  # fmt: skip
ROLLUPS: Final = ("spend_by_day", "usage_dims", "usage_rollup", "usage_errors", "usage_latency")
DERIVED: Final = {"content": {"tsv"}}  # columns built here, not copied
BATCH: Final = 2000
_INT64: Final = 2**63
_BOUND: Final = 1e18  # beyond it a number reads as null (finopsd.log.schema.shown)

Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in all)


class MigrateError(Exception):
    """Why nothing was copied: the message names no password."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL's data_type: bigint, double precision, text, bytea
    nullable: bool


def migrate_file(path: str, url: str, progress: Progress) -> dict[str, int]:
    """Copy the SQLite log at ``path`` (upgraded to this version's schema first, as
    ``finopsd serve`` would) into the PostgreSQL database at ``url``."""
    source, _ = open_writer(path)
    try:
        with psycopg.connect(url, autocommit=True) as target:
            return copy_log(source, target, progress)
    except psycopg.Error as e:
        password = url_password(url)
        raise MigrateError(str(e).replace(password, "***") if password else str(e)) from None
    finally:
        source.close()


def copy_log(source: sqlite3.Connection, target: psycopg.Connection[Any], progress: Progress) -> dict[str, int]:
    """Copy every table of ``source`` (migrated to the latest SQLite schema) into ``target``
    (autocommit; migrated here); return the rows copied per table."""
    pg_schema.migrate(target)
    tables = TABLES + ROLLUPS
    holding = [t for t in tables if target.execute(f"select exists (select 1 from {t})").fetchone()[0]]  # type: ignore[index]
    if holding:
        raise MigrateError(f"the target database already holds a log ({', '.join(holding)} not empty);"
                       " finopsd migrate copies into an empty database only")
    copied: dict[str, int] = {}
    source.execute("begin")  # one snapshot of the whole file
    try:
        with target.transaction():
            for table in tables:
                if table in ROLLUPS:
                    target.execute(f"delete from {table}")  # what the trigger rolled up from requests
                copied[table] = _copy_table(source, target, table, progress)
            _set_sequences(target)
    finally:
        source.execute("rollback")
    return copied


def _columns(target: psycopg.Connection[Any], table: str) -> list[Column]:
    rows = target.execute(
        "select column_name, data_type, is_nullable = 'YES' from information_schema.columns"
        " where table_schema = current_schema() and table_name = %s order by ordinal_position", (table,))
    return [Column(*r) for r in rows if r[0] not in DERIVED.get(table, ())]


def _copy_table(source: sqlite3.Connection, target: psycopg.Connection[Any], table: str, progress: Progress) -> int:
    columns = _columns(target, table)
    have = {r[1] for r in source.execute(f"pragma table_info({table})")}
    wanted = {c.name for c in columns}
    if have != wanted:  # a column one side lacks would be lost or left empty
        raise MigrateError(f"{table}: the SQLite and PostgreSQL columns differ"
                         f" ({', '.join(sorted(have ^ wanted))}); upgrade finopsd on both sides")
    (total,) = source.execute(f"select count(*) from {table}").fetchone()
    names = ", ".join(f'"{c.name}"' for c in columns)
    arrays = [f"%s::{c.type}[]" for c in columns]
    values = [f'u."{c.name}"' for c in columns]
    into = names
    if table == "content":  # the search index, from each piece's text (see finopsd.log.pg.text)
        arrays += ["%s::text[]", "%s::text[]"]
        values.append(tsv_sql("u.prompt_text", "u.response_text"))
        into += ", tsv"
    aliases = ", ".join([f'"{c.name}"' for c in columns] + (["prompt_text", "response_text"] if table == "content" else []))
    insert = (f"insert into {table} ({into}) overriding system value select {', '.join(values)}"
              f" from unnest({', '.join(arrays)}) as u({aliases})")
    convert = [_converter(c) for c in columns]
    done = 0
    progress(table, done, total)
    for batch in _batches(source.execute(f"select {names} from {table}")):
        rows = [[f(v) for f, v in zip(convert, row)] for row in batch]
        params: list[list[Any]] = [list(col) for col in zip(*rows)]
        if table == "content":
            texts = [_index_text(row[2], row[3], row[4]) for row in batch]  # kind, size, body
            params += [[p for p, _ in texts], [a for _, a in texts]]
        target.execute(insert, params)  # type: ignore[arg-type]
        done += len(batch)
        progress(table, done, total)
    return done


def _batches(cursor: sqlite3.Cursor) -> Iterator[list[tuple[Any, ...]]]:
    while batch := cursor.fetchmany(BATCH):
        yield batch


def _index_text(kind: str, size: int, body: bytes) -> tuple[str, str]:
    prompt, answer = index_text(kind, unpack(size, body))
    return fold(prompt), fold(answer)


def _set_sequences(target: psycopg.Connection[Any]) -> None:
    """Each identity past the largest id copied, so that the gateway's next row collides with none."""
    identities = list(target.execute(
        "select table_name, column_name from information_schema.columns"
        " where table_schema = current_schema() and is_identity = 'YES'"))
    for table, column in identities:
        target.execute(f'select setval(pg_get_serial_sequence(%s, %s), coalesce((select max("{column}")'
                       f" from {table}), 0) + 1, false)", (table, column))


def _converter(column: Column) -> Callable[[Any], Any]:
    """SQLite's value as the PostgreSQL column's type takes it."""
    empty = None if column.nullable else 0

    def bigint(v: Any) -> Any:
        if isinstance(v, int) and -_INT64 <= v < _INT64:
            return v
        if isinstance(v, float) and math.isfinite(v) and abs(v) < _BOUND:
            return round(v)
        return empty

    def double(v: Any) -> Any:
        if isinstance(v, int | float) and math.isfinite(v) and abs(v) < _BOUND:
            return float(v)
        return empty

    def text(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return str(v).replace("\x00", "\ufffd")

    def bytea(v: Any) -> Any:
        return v.encode() if isinstance(v, str) else v

    kinds: dict[str, Callable[[Any], Any]] = {"bigint": bigint, "double precision": double, "text": text,
                                              "bytea": bytea}
    if column.type not in kinds:
        raise ValueError(f"no conversion to {column.type} ({column.name})")
    return kinds[column.type]
