"""The writer's statements on PostgreSQL (``finopsd.log.dialect`` is SQLite's; the planning is shared).

Several instances write at once, so:
- ids come from the tables' identity sequences, a block per batch (``reserve``);
- a piece is inserted ``on conflict (hash) do nothing`` and, if another instance stored
  it first, referenced by that instance's id;
- a session named by a client's session id is claimed at once (insert ... on conflict on
  the unique (client_session_id, key_name) index), so two instances thread into one;
- the sessions a batch threads into are locked (``select ... for update``, in id order)
  until it commits, and what the writer remembers of one is dropped when its stored
  ``last_request`` says another instance wrote a turn since.
Rows go in as one ``unnest`` of typed arrays per table: one statement for any batch size,
types taken from the table (``information_schema``), values that do not fit a column's
type (text where a number belongs: SQLite keeps it) stored as null.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg.pq import TransactionStatus

from finopsd.log.content import index_text
from finopsd.log.dialect import CANDIDATES, DELTA_COLUMNS, NEW_SESSION, SESSION_COLUMNS, SESSION_SET, SQLite
from finopsd.log.pg.reader import _pg as translate
from finopsd.log.pg.text import indexed, tsv_sql

TABLES: Final = ("content", "sessions", "requests", "request_content", "request_previews")
INT64: Final = 1 << 63
# SQLSTATE classes that say the database, not the batch, failed: connection, insufficient
# resources (disk full), operator intervention (shutdown): as long as it takes; and, a few
# tries each, transaction rollback (deadlock, serialization) and a transaction a failed
# statement ended (25P02)
LASTING: Final = ("08", "53", "57")
IN_LIST: Final = re.compile(r"(\S+) in \(\{\}\)")
# A B-tree entry must fit in a third of a page (2704 bytes), and requests' covering indexes
# hold five of these names each: past KEY_BYTES of UTF-8 a name is cut there (a model name
# a client made up, say), where SQLite would keep it whole.
KEY_BYTES: Final = 400
INDEXED: Final = {"requests": frozenset({"provider", "model", "key_name", "team", "status", "user", "project",
                                         "response_id"}),
                  "sessions": frozenset({"key_name", "team"})}  # fmt: skip


def _text(v: Any) -> Any:
    if v is None or type(v) is str:
        return v if v is None or "\x00" not in v else v.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
    return _text(str(v)) if not isinstance(v, bytes) else _text(v.decode(errors="replace"))


def _bigint(v: Any) -> Any:
    if isinstance(v, int):
        return int(v) if -INT64 <= v < INT64 else None
    if isinstance(v, float):
        return round(v) if math.isfinite(v) and abs(v) < 2**63 else None
    if isinstance(v, str):
        try:
            return _bigint(int(v.strip()))
        except ValueError:
            return None
    return None


def _double(v: Any) -> Any:
    if isinstance(v, (int, float)):
        return float(v) if not isinstance(v, int) or -INT64 <= v < INT64 else None
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _key(v: str | None) -> str | None:
    if v is None or len(v) <= KEY_BYTES // 4:
        return v
    data = v.encode(errors="replace")
    return v if len(data) <= KEY_BYTES else data[:KEY_BYTES].decode(errors="ignore")


def _bytes(v: Any) -> Any:
    return v if v is None or isinstance(v, bytes) else _text(v).encode()


COERCE: Final = {"bigint": _bigint, "double precision": _double, "text": _text, "bytea": _bytes}


def quoted(column: str) -> str:
    return f'"{column}"'  # "user" is a reserved word; every column is quoted alike


class PostgreSQL(SQLite):
    """The writer connection's statements; ``db`` is a psycopg connection in autocommit mode
    (transactions are begun by ``begin``, as on SQLite)."""

    shared = True

    def __init__(self, db: psycopg.Connection[Any], tables: Sequence[str] = TABLES) -> None:
        """``tables``: those whose column types the inserts coerce to (the writer's, or more)."""
        self.db = db
        self.types: dict[str, dict[str, str]] = {t: {} for t in tables}
        for table, column, kind in db.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = current_schema() and table_name = any(%s)", (list(tables),)
        ):
            self.types[table][column] = kind
        self.sequences = {t: db.execute("select pg_get_serial_sequence(%s, 'id')", (t,)).fetchone()[0]
                          for t in ("content", "sessions", "requests")}  # fmt: skip

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.db.execute(translate(sql), _column(list(args)))

    def begin(self) -> None:
        self.db.execute("begin")

    def in_transaction(self) -> bool:
        return self.db.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def columns(self, table: str) -> set[str]:
        return set(self.types[table])

    def connected(self) -> bool:
        return not (self.db.broken or self.db.closed)

    def transient(self, e: BaseException) -> bool:
        state = getattr(e, "sqlstate", None)
        return self.lasting(e) or isinstance(state, str) and (state[:2] == "40" or state == "25P02")

    def lasting(self, e: BaseException) -> bool:
        if isinstance(e, psycopg.InterfaceError) or not self.connected():
            return True
        state = getattr(e, "sqlstate", None)
        if isinstance(e, psycopg.OperationalError) and state is None:
            return True  # the connection failed (no server answer to name)
        return isinstance(state, str) and state[:2] in LASTING

    def reserve(self, table: str, n: int) -> Sequence[int]:
        return [r[0] for r in self.db.execute(
            "select nextval(%s::regclass) from generate_series(1, %s)", (self.sequences[table], n))]

    def select_in(self, sql: str, values: list[Any]) -> Iterator[tuple[Any, ...]]:
        if values:
            yield from self.execute(IN_LIST.sub(r"\1 = any(?)", sql).format(), (_column(values),))

    def candidates(self, marks: list[bytes], floor: float) -> Iterator[tuple[bytes, int, float]]:
        if marks:
            yield from self.db.execute(
                "select m, s.id, s.last_ts from unnest(%s::bytea[]) m cross join lateral (select id, last_ts"
                " from sessions where fingerprint = m and last_ts >= %s order by last_ts desc"
                f" limit {CANDIDATES}) s", (marks, floor))

    def stored_pieces(self, digests: list[bytes]) -> dict[bytes, int]:
        # key share: retention cannot delete a piece between this lookup and the commit that refers to it
        if not digests:
            return {}
        return dict(self.db.execute("select hash, id from content where hash = any(%s) order by id for key share",
                                    (digests,)).fetchall())  # fmt: skip

    def hold(self, sids: Iterable[int]) -> dict[int, int | None]:
        ids = sorted(set(sids))
        if not ids:
            return {}
        return dict(self.db.execute(
            "select id, last_request from sessions where id = any(%s) order by id for update", (ids,)).fetchall())

    def claim(self, session: tuple[Any, ...]) -> int | None:
        columns = (*SESSION_COLUMNS, *NEW_SESSION)
        with self.db.transaction():  # a savepoint: a statement failing here costs its row, not the batch
            row = self.db.execute(
                f"insert into sessions ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})"
                " on conflict (client_session_id, key_name) where client_session_id is not null do nothing"
                " returning id", [c[0] for c in self._coerce("sessions", columns, [(*session, *NEW_SESSION.values())])],
            ).fetchone()
        if row is None:  # another instance's (it committed: the insert waited for it)
            row = self.execute("select id from sessions where client_session_id = ?"
                               " and key_name is not distinct from ?", (session[3], session[4])).fetchone()
        return int(row[0])

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], replace: bool = False) -> None:
        if not rows:
            return
        types = self.types[table]
        arrays = ", ".join(f"%s::{types[c]}[]" for c in columns)
        names = ", ".join(quoted(c) for c in columns)
        tail = ""
        if replace:  # keyed by the first column
            tail = f" on conflict ({quoted(columns[0])}) do update set " + ", ".join(
                f"{quoted(c)} = excluded.{quoted(c)}" for c in columns[1:])
        self.db.execute(f"insert into {table} ({names}) select * from unnest({arrays}){tail}",
                        self._coerce(table, columns, rows))

    def insert_content(self, rows: list[tuple[int, bytes, str, int, bytes, Any]]) -> dict[bytes, int]:
        if not rows:
            return {}
        index = [index_text(r[2], r[5]) for r in rows]
        columns = [*zip(*(r[:5] for r in rows)), [indexed(p) for p, _ in index], [indexed(a) for _, a in index]]
        inserted = {r[0] for r in self.db.execute(
            "insert into content (id, hash, kind, size, body, tsv) select id, hash, kind, size, body,"
            f" {tsv_sql('p', 'a')} from unnest(%s::bigint[], %s::bytea[], %s::text[], %s::bigint[], %s::bytea[],"
            " %s::text[], %s::text[]) v(id, hash, kind, size, body, p, a) order by hash"
            " on conflict (hash) do nothing returning hash", [list(c) for c in columns])}
        lost = [r[1] for r in rows if r[1] not in inserted]
        return self.stored_pieces(lost) if lost else {}

    def update_sessions(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        types = self.types["sessions"]
        arrays = ", ".join(f"%s::{types[c]}[]" for c in DELTA_COLUMNS)
        self.db.execute(
            f"update sessions set {SESSION_SET.format(least='least', greatest='greatest')}"
            f" from unnest({arrays}) v({', '.join(DELTA_COLUMNS)}) where sessions.id = v.id",
            self._coerce("sessions", DELTA_COLUMNS, sorted(rows, key=lambda r: r[0])))

    def _coerce(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> list[list[Any]]:
        """The rows as one list per column, each value as the column's type holds it (or None)."""
        types, indexed = self.types[table], INDEXED.get(table, frozenset())
        out = []
        for column, values in zip(columns, zip(*rows)):
            kind = types[column]
            fits = {"bigint": int, "double precision": float, "text": str, "bytea": bytes}[kind]
            got = [v if v is None or type(v) is fits and (fits is not str or "\x00" not in v) and (
                fits is not int or -INT64 <= v < INT64) else COERCE[kind](v) for v in values]
            if column in indexed:
                got = [_key(v) for v in got]
            out.append(got)
        return out

    def error_name(self, e: BaseException) -> str:
        # the SQLSTATE and class name: the message may quote a row's values
        state = getattr(e, "sqlstate", None)
        return f"{type(e).__name__} ({state})" if state else type(e).__name__


def _column(values: list[Any]) -> list[Any]:
    return [_text(v) if isinstance(v, str) else v for v in values]
