"""``finopsd migrate``: copy a SQLite log into an empty PostgreSQL one, table by table.

The PostgreSQL schema mirrors SQLite's (``finopsd.log.pg.schema``), so a table is copied
column for column, ids included (rows refer to one another by them), in batches of
``BATCH`` rows, each inserted as the writer inserts its batches (``finopsd.log.pg.dialect``:
one ``unnest`` of typed arrays, values coerced to the column's type as the writer's are).
What differs from a plain copy:

- ``content.tsv``, the search index, is built from each piece as the writer builds it
  (SQLite's FTS5 index is contentless: there is nothing to copy).
- Inserting requests fires the roll-up trigger, which rolls up only the rows still in the
  log; the roll-ups (spend_by_day, usage_*) are then replaced by SQLite's, which also hold
  what retention pruned.
- Afterwards each identity sequence is set past the largest id copied.

The whole copy is one transaction on PostgreSQL and one read transaction (a snapshot) on
SQLite: a gateway may keep writing the SQLite log meanwhile (what it writes after the
snapshot is not copied), and a copy that fails leaves the target as empty as it found it.
A target that already holds a row is refused before anything is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import psycopg

from finopsd.config import POSTGRES_SCHEMES, ConfigError, redact_text, resolve_env
from finopsd.log.content import unpack
from finopsd.log.pg import schema as pg_schema
from finopsd.log.pg.dialect import PostgreSQL, quoted
from finopsd.log.store import _open_writer as open_writer

# the order a row's references are copied in does not matter (no foreign keys), except that
# the roll-ups come after requests, whose trigger writes them
TABLES: Final = ("content", "sessions", "requests", "request_content", "request_previews", "stored_responses",
                 "dashboard_keys", "dashboard_teams", "audit", "alerts")  # fmt: skip
ROLLUPS: Final = ("spend_by_day", "usage_dims", "usage_rollup", "usage_errors", "usage_latency")
DERIVED: Final = {"content": {"tsv"}}  # columns built here, not copied
BATCH: Final = 2000
PROGRESS_EVERY: Final = 20_000  # rows of a table between two progress lines (and one at its end)


class MigrateError(Exception):
    """Why nothing was copied: the message names no password."""


def target_url(value: str, env: Mapping[str, str]) -> str:
    """``--to`` as given (``env:NAME`` allowed), checked to be a PostgreSQL URL."""
    try:
        url = resolve_env(value, env, ConfigError)
    except ConfigError as e:
        raise MigrateError(f"--to: {e}") from None
    if not url.startswith(POSTGRES_SCHEMES):
        raise MigrateError("--to: must be a postgresql:// URL")
    return url


def migrate_file(path: str, url: str, say: Callable[[str], None]) -> dict[str, int]:
    """Copy the SQLite log at ``path`` (upgraded to this version's schema first, as
    ``finopsd serve`` would) into the PostgreSQL database at ``url``; ``say`` gets the progress lines."""
    if not Path(path).exists():
        raise MigrateError(f"no request log at {path}")
    source, _ = open_writer(path)
    try:
        with psycopg.connect(url, autocommit=True) as target:
            return copy_log(source, target, say)
    except psycopg.Error as e:
        raise MigrateError(redact_text(str(e), url)) from None
    finally:
        source.close()


def copy_log(source: sqlite3.Connection, target: psycopg.Connection[Any],
             say: Callable[[str], None]) -> dict[str, int]:
    """Copy every table of ``source`` (migrated to the latest SQLite schema) into ``target``
    (autocommit; migrated here); return the rows copied per table."""
    pg_schema.migrate(target)
    tables = TABLES + ROLLUPS
    holding = [t for t in tables
               if target.execute(f"select exists (select 1 from {t})").fetchone()[0]]  # type: ignore[index]
    if holding:
        raise MigrateError(f"the target database already holds a log ({', '.join(holding)} not empty);"
                           " finopsd migrate copies into an empty database only")
    dialect = PostgreSQL(target, tables)
    copied: dict[str, int] = {}
    source.execute("begin")  # one snapshot of the whole file
    try:
        with target.transaction():
            for table in tables:
                if table in ROLLUPS:
                    target.execute(f"delete from {table}")  # what the trigger rolled up from requests
                copied[table] = _copy_table(source, dialect, table, say)
            _set_sequences(target)
    finally:
        source.execute("rollback")
    return copied


def _copy_table(source: sqlite3.Connection, dialect: PostgreSQL, table: str, say: Callable[[str], None]) -> int:
    columns = [c for c in dialect.types[table] if c not in DERIVED.get(table, ())]
    have = {r[1] for r in source.execute(f"pragma table_info({table})")}
    if have != set(columns):  # a column one side lacks would be lost or left empty
        raise MigrateError(f"{table}: the SQLite and PostgreSQL columns differ"
                           f" ({', '.join(sorted(have ^ set(columns)))}); upgrade finopsd")
    if table == "content":
        columns = ["id", "hash", "kind", "size", "body"]  # insert_content's order
    (total,) = source.execute(f"select count(*) from {table}").fetchone()
    done = 0
    cursor = source.execute(f"select {', '.join(quoted(c) for c in columns)} from {table}")
    while batch := cursor.fetchmany(BATCH):
        if table == "content":  # with each piece's value, which its search index is built from
            dialect.insert_content([(*row, unpack(row[3], row[4])) for row in batch])
        else:
            dialect.insert(table, columns, batch)
        done += len(batch)
        if done % PROGRESS_EVERY == 0 and done < total:
            say(f"{table}: {done:,} of {total:,} rows")
    say(f"{table}: {total:,} of {total:,} rows")
    return done


def _set_sequences(target: psycopg.Connection[Any]) -> None:
    """Each identity past the largest id copied, so that the gateway's next row collides with none."""
    identities = list(target.execute(
        "select table_name, column_name from information_schema.columns"
        " where table_schema = current_schema() and is_identity = 'YES'"))
    for table, column in identities:
        target.execute(f"select setval(pg_get_serial_sequence(%s, %s), coalesce((select max({quoted(column)})"
                       f" from {table}), 0) + 1, false)", (table, column))
